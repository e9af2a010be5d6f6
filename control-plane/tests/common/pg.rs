//! The tests' PostgreSQL: one private server per test binary, started by
//! `scripts/pg.sh while <this process>` (so it stops and is removed once the
//! binary exits) unless `KEYGATE_TEST_POSTGRES` names one, and one fresh
//! database per test (`CREATE DATABASE`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tokio_postgres::NoTls;

static SERVER: OnceLock<String> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// True when the tests run on PostgreSQL (`KEYGATE_TEST_BACKEND=postgres`).
pub fn selected() -> bool {
    std::env::var("KEYGATE_TEST_BACKEND").is_ok_and(|v| v == "postgres")
}

/// The URL of the server (its `postgres` database), started on first use.
pub fn server_url() -> &'static str {
    SERVER.get_or_init(|| std::env::var("KEYGATE_TEST_POSTGRES").unwrap_or_else(|_| start()))
}

// The script outlives this process on purpose: it stops and removes the
// server once the test binary has exited, so it is never waited for here.
#[allow(clippy::zombie_processes)]
fn start() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh");
    let mut child = Command::new(script)
        .arg("while")
        .arg(std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("scripts/pg.sh");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("postgres://"),
        "scripts/pg.sh did not start PostgreSQL"
    );
    println!("PostgreSQL for this test binary started by scripts/pg.sh");
    line.trim().to_string()
}

/// The URL of database `name` on the server of `url`.
pub fn on_database(url: &str, name: &str) -> String {
    let (server, _) = url.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

/// The password in `url`.
pub fn password(url: &str) -> &str {
    let (_, rest) = url.split_once("://").unwrap();
    let (userinfo, _) = rest.rsplit_once('@').unwrap();
    userinfo.split_once(':').unwrap().1
}

/// Runs `sql` on the database of `url`.
pub async fn execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = driver.await;
}

/// The text of every row `sql` returns (one column of text or bytea; bytea
/// comes back as its bytes).
pub async fn rows(url: &str, sql: &str) -> Vec<u8> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut out = Vec::new();
    for row in client.query(sql, &[]).await.unwrap() {
        let value: Vec<u8> = row
            .try_get::<_, Vec<u8>>(0)
            .or_else(|_| row.try_get::<_, String>(0).map(String::into_bytes))
            .unwrap();
        out.extend(value);
        out.push(b'\n');
    }
    drop(client);
    let _ = driver.await;
    out
}

/// A new, empty database on the server; its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let n = DATABASES.fetch_add(1, Ordering::Relaxed);
    let name = format!("test_{}_{n}", std::process::id());
    execute(server, &format!("CREATE DATABASE {name}")).await;
    on_database(server, &name)
}

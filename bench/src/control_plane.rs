//! The real control plane for the bench: started on SQLite or on a private
//! PostgreSQL, talked to over its JSON API, and its key-creation rate.

use crate::child::Guard;
use crate::http::{self, Conn};
use crate::stats::{self, percentile};
use crate::{envoy, Bench, FEED_TOKEN};
use serde_json::json;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Concurrent clients of the creation row.
const CLIENTS: usize = 8;

/// The built-in plans of `--tiers free,pro` without a management-rate
/// limit: the bench measures the control plane, not a plan's rate.
const UNTHROTTLED_PLANS: &str = "[[plan]]\nname = \"free\"\ntiers = [\"free\"]\n\
    management = { rate = 1000000, burst = 1000000 }\n\
    [[plan]]\nname = \"pro\"\ntiers = [\"free\", \"pro\"]\n\
    management = { rate = 1000000, burst = 1000000 }\n";

/// A running control plane.
pub struct ControlPlane {
    pub addr: SocketAddr,
    pub guard: Guard,
}

impl ControlPlane {
    /// `keygate-control-plane serve` on `database` (a file or a postgres:// URL).
    pub fn start(bench: &Bench, name: &str, database: &str) -> io::Result<ControlPlane> {
        let addr = SocketAddr::from(([127, 0, 0, 1], envoy::free_port()?));
        let log = bench.dir.path().join(format!("{name}.log"));
        let listen = addr.to_string();
        let plans = bench.dir.path().join("plans.toml");
        std::fs::write(&plans, UNTHROTTLED_PLANS)?;
        let plans = plans.display().to_string();
        let args = [
            "--plans",
            &plans,
            "serve",
            "--listen",
            &listen,
            "--database",
            database,
            "--feed-token",
            FEED_TOKEN,
        ];
        let mut guard = Guard::spawn(&bench.control_plane, &args, bench.all_cpus.as_deref(), &log)?;
        guard.wait_port(addr, Duration::from_secs(30), &log)?;
        Ok(ControlPlane { addr, guard })
    }

    /// A SQLite file in the bench's directory.
    pub fn sqlite(bench: &Bench, name: &str) -> String {
        bench
            .dir
            .path()
            .join(format!("{name}.sqlite"))
            .display()
            .to_string()
    }
}

/// A private PostgreSQL (`scripts/pg.sh while`), stopped when dropped.
pub struct Postgres {
    child: Child,
    pub url: String,
}

impl Postgres {
    pub fn start() -> io::Result<Postgres> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .args(["while", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut url = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut url)?;
        }
        let url = url.trim().to_string();
        if !url.starts_with("postgres://") {
            let _ = child.kill();
            return Err(io::Error::other("scripts/pg.sh did not start PostgreSQL"));
        }
        Ok(Postgres { child, url })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGTERM: the script stops the server and removes its directory.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One API call with an optional bearer token, on `conn`.
pub fn call(
    conn: &mut Conn,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> io::Result<http::Response> {
    let auth = format!("Bearer {token}");
    let headers: Vec<(&str, &str)> = if token.is_empty() {
        vec![]
    } else {
        vec![("authorization", auth.as_str())]
    };
    let body = body.map(|b| b.to_string());
    conn.request(method, path, &headers, body.as_deref().map(str::as_bytes))
}

/// One API call on a fresh connection.
pub fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> io::Result<http::Response> {
    call(&mut Conn::connect(addr)?, method, path, token, body)
}

pub fn string_field(value: &serde_json::Value, field: &str) -> io::Result<String> {
    value
        .get(field)
        .and_then(|v| v.as_str())
        .map(String::from)
        .ok_or_else(|| io::Error::other(format!("no {field:?} in {value}")))
}

/// Checks the status of an answer, returning its JSON.
pub fn expect(r: &http::Response, status: u16, what: &str) -> io::Result<serde_json::Value> {
    if r.status != status {
        return Err(io::Error::other(format!(
            "{what}: {} {}",
            r.status,
            r.text()
        )));
    }
    r.json()
}

/// Creates a tenant; its admin key.
pub fn create_tenant(cp: SocketAddr) -> io::Result<String> {
    let body = json!({"name": "bench", "email": "bench@example.com"});
    let r = api(cp, "POST", "/api/v1/tenants", "", Some(body))?;
    string_field(&expect(&r, 201, "create tenant")?, "api_key")
}

/// Creates one key on `conn`; its id and secret.
pub fn create_key(conn: &mut Conn, admin: &str, name: &str) -> io::Result<(String, String)> {
    let body = json!({"name": name, "scopes": ["memory:read"]});
    let r = call(conn, "POST", "/api/v1/api-keys", admin, Some(body))?;
    let v = expect(&r, 201, "create key")?;
    Ok((string_field(&v, "id")?, string_field(&v, "api_key")?))
}

/// Latencies of `per_client` creations by each of CLIENTS keep-alive clients, and the wall time.
fn create_concurrently(
    cp: SocketAddr,
    admin: &str,
    per_client: usize,
) -> io::Result<(Vec<Duration>, Duration)> {
    let t0 = Instant::now();
    let results: Vec<io::Result<Vec<Duration>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    let mut conn = Conn::connect(cp)?;
                    let mut took = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        let start = Instant::now();
                        create_key(&mut conn, admin, &format!("bench-{c}-{i}"))?;
                        took.push(start.elapsed());
                    }
                    Ok(took)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("client panicked")))
            })
            .collect()
    });
    let wall = t0.elapsed();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok((all, wall))
}

/// One creation row: `total` keys by CLIENTS clients on `database`.
fn creation_row(bench: &Bench, backend: &str, database: &str, total: usize) -> io::Result<String> {
    let cp = ControlPlane::start(bench, &format!("creations-{backend}"), database)?;
    let admin = create_tenant(cp.addr)?;
    let per_client = total.div_ceil(CLIENTS);
    let (took, wall) = create_concurrently(cp.addr, &admin, per_client)?;
    let rate = took.len() as f64 / wall.as_secs_f64();
    Ok(format!(
        "  {backend:<11} {:>6} keys in {:>6.2} s: {rate:>7.0} creations/s  p50 {:>9}  p99 {:>9}  max {:>9}",
        took.len(),
        wall.as_secs_f64(),
        stats::show(percentile(&took, 50.0)),
        stats::show(percentile(&took, 99.0)),
        stats::show(percentile(&took, 100.0)),
    ))
}

/// The key-creation rows, SQLite then PostgreSQL.
pub fn creations(bench: &Bench) -> io::Result<()> {
    let total = if bench.options.quick { 400 } else { 2000 };
    println!("## Key creations (real control plane, {CLIENTS} concurrent keep-alive clients, POST /api/v1/api-keys)");
    println!(
        "{}",
        creation_row(
            bench,
            "SQLite",
            &ControlPlane::sqlite(bench, "creations"),
            total
        )?
    );
    let pg = Postgres::start()?;
    println!("{}", creation_row(bench, "PostgreSQL", &pg.url, total)?);
    println!("  (PostgreSQL: private server from scripts/pg.sh, fsync=off; SQLite: the control plane's defaults)\n");
    Ok(())
}

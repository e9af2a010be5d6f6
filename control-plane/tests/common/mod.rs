//! Test harness: runs the real `keygate-control-plane` binary on a free
//! loopback port with a temporary SQLite file, or a fresh PostgreSQL
//! database when `KEYGATE_TEST_BACKEND=postgres` ([`pg`]), and talks HTTP
//! to it.
#![allow(dead_code)]

pub mod pg;
pub mod plans;
pub mod receiver;

use keygate::feed::{check_snapshot_page, FeedEntry, PageSummary, RawOp, Reader};
use keygate::ids::{KeyId, OrgId};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_keygate-control-plane");
pub const FEED_TOKEN: &str = "test-feed-token-0123456789abcdef";
/// Generous: the machine is small and shared.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running control plane and its database.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    dir: TempDir,
    /// `--database`: the SQLite file, or the PostgreSQL URL.
    database: String,
    extra: Vec<String>,
    /// Started with [`plans::OPERATOR_TOKEN`] (`KEYGATE_OPERATOR_TOKEN`).
    operator: bool,
    child: Mutex<Child>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.bytes))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-keygate-version` of a feed answer.
    pub fn version(&self) -> u64 {
        self.header("x-keygate-version")
            .expect("version header")
            .parse()
            .unwrap()
    }
}

/// A tenant and its first (all-scope) key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Starts with extra `serve` flags, on a new database of the backend
    /// the tests run on.
    pub async fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let database = if pg::selected() {
            pg::fresh_database().await
        } else {
            db_path(dir.path()).to_string_lossy().into_owned()
        };
        Server::launched(dir, database, extra).await
    }

    /// Starts on `database` (a replica of another server on PostgreSQL).
    pub async fn start_on(database: &str, extra: &[&str]) -> Server {
        Server::launched(tempfile::tempdir().unwrap(), database.to_string(), extra).await
    }

    /// Starts with no operator token: the operator API is off.
    pub async fn start_without_operator() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let database = db_path(dir.path()).to_string_lossy().into_owned();
        Server::launched_with(dir, database, &[], false).await
    }

    async fn launched(dir: TempDir, database: String, extra: &[&str]) -> Server {
        Server::launched_with(dir, database, extra, true).await
    }

    async fn launched_with(
        dir: TempDir,
        database: String,
        extra: &[&str],
        operator: bool,
    ) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, base) = launch(dir.path(), &database, &extra, operator).await;
        Server {
            base,
            client: reqwest::Client::new(),
            dir,
            database,
            extra,
            operator,
            child: Mutex::new(child),
        }
    }

    /// The `--database` value.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// True on a PostgreSQL database.
    pub fn on_postgres(&self) -> bool {
        self.database.starts_with("postgres://")
    }

    /// Runs SQL statements on the database (stopped server on SQLite).
    pub async fn sql(&self, statements: &str) {
        if self.on_postgres() {
            pg::execute(&self.database, statements).await;
        } else {
            let conn = rusqlite::Connection::open(&self.database).unwrap();
            conn.execute_batch(statements).unwrap();
        }
    }

    /// Everything the database stores, to look for secrets in: the SQLite
    /// files, or every row of every table as text (key hashes as bytes).
    pub async fn stored(&self) -> Vec<u8> {
        if !self.on_postgres() {
            let mut stored = Vec::new();
            for entry in std::fs::read_dir(self.db_path().parent().unwrap()).unwrap() {
                stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            return stored;
        }
        let mut stored = Vec::new();
        for table in [
            "tenants",
            "api_keys",
            "key_revisions",
            "feed_state",
            "key_set",
            "dashboard_accounts",
            "dashboard_sessions",
        ] {
            let sql = format!("SELECT t::text FROM {table} t");
            stored.extend(pg::rows(&self.database, &sql).await);
        }
        stored.extend(pg::rows(&self.database, "SELECT key_hash FROM api_keys").await);
        stored
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        db_path(self.dir.path())
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&self) {
        let mut child = self.child.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A new process on the same database (after [`Server::kill9`]).
    pub async fn restart(&mut self) {
        let (child, base) =
            launch(self.dir.path(), &self.database, &self.extra, self.operator).await;
        *self.child.lock().unwrap() = child;
        self.base = base;
    }

    /// A new process on the same database with `extra` flags instead.
    pub async fn restart_with(&mut self, extra: &[&str]) {
        self.kill9();
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart().await;
    }

    /// One request; `key` goes in `Authorization: Bearer`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        self.call_with(method, path, key, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        self.send(request).await.expect("request failed")
    }

    /// Sends a request; `None` if the connection failed (server killed).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Option<Reply> {
        let response = request.send().await.ok()?;
        Some(Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.ok()?.to_vec(),
        })
    }

    pub async fn create_tenant(&self, name: &str) -> Tenant {
        let body = json!({"name": name, "email": format!("{name}@example.test")}).to_string();
        let reply = self
            .call("POST", "/api/v1/tenants", None, Some(&body))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let v = reply.json();
        Tenant {
            id: v["tenant_id"].as_str().unwrap().into(),
            key: v["api_key"].as_str().unwrap().into(),
            key_id: v["key_id"].as_str().unwrap().into(),
        }
    }

    /// Creates a key with `admin`; asserts 201 and returns the answer.
    pub async fn create_key(&self, admin: &str, body: Value) -> Value {
        self.try_create_key(admin, &body)
            .await
            .expect("request failed")
    }

    /// Like [`Server::create_key`], but `None` if the connection failed.
    pub async fn try_create_key(&self, admin: &str, body: &Value) -> Option<Value> {
        let request = self
            .client
            .post(format!("{}/api/v1/api-keys", self.base))
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        let reply = self.send(request).await?;
        assert_eq!(reply.status, 201, "{}", reply.text());
        Some(reply.json())
    }

    /// Every key `key`'s tenant has, page by page (`next_cursor`).
    pub async fn list_all(&self, key: &str) -> Vec<Value> {
        let mut keys = Vec::new();
        let mut path = "/api/v1/api-keys?limit=100".to_string();
        loop {
            let reply = self.call("GET", &path, Some(key), None).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let page = reply.json();
            keys.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/api-keys?limit=100&cursor={cursor}"),
                None => return keys,
            }
        }
    }

    /// `GET /v1/key-table?{query}` with the feed token.
    pub async fn feed(&self, query: &str) -> Reply {
        let path = format!("/v1/key-table?{query}");
        self.call("GET", &path, Some(FEED_TOKEN), None).await
    }

    /// Every page of a snapshot, from `since=0` on, each next one `after`
    /// the last hash of the one before, until a kind-1 page. Asserts 200s and
    /// checks every page (order, chaining, no empty page before the last).
    pub async fn snapshot_pages(&self) -> Vec<(Reply, PageSummary)> {
        self.more_pages(Vec::new()).await
    }

    /// The pages after `pages` (the first ones of a snapshot), as
    /// [`Server::snapshot_pages`] fetches them; returns them all.
    pub async fn more_pages(
        &self,
        mut pages: Vec<(Reply, PageSummary)>,
    ) -> Vec<(Reply, PageSummary)> {
        if pages.last().is_some_and(|(_, page)| !page.more) {
            return pages;
        }
        loop {
            let after = pages.last().and_then(|(_, page)| page.last_hash);
            let query = match &after {
                None => "since=0".to_string(),
                Some(hash) => format!("since=0&after={}", hex(hash)),
            };
            let reply = self.feed(&query).await;
            assert_eq!(reply.status, 200, "{query}: {}", reply.text());
            let page = check_snapshot_page(&reply.bytes, after.as_ref())
                .unwrap_or_else(|e| panic!("{query}: bad page: {e}"));
            assert_eq!(page.version, reply.version(), "{query}");
            let more = page.more;
            pages.push((reply, page));
            if !more {
                return pages;
            }
            assert!(pages.len() < 100_000, "the pages never end");
        }
    }

    /// `GET /metrics` (no token); asserts a 200 in the Prometheus text format.
    pub async fn metrics(&self) -> String {
        let reply = self.call("GET", "/metrics", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4")
        );
        reply.text()
    }

    /// One sample of `/metrics`, by its name and labels as written.
    pub async fn metric(&self, sample: &str) -> u64 {
        let text = self.metrics().await;
        metric_value(&text, sample).unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
    }

    /// An admin command on this server's database, ready to run.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--database")
            .arg(&self.database)
            .args(args)
            .env("RUST_LOG", "warn");
        command
    }

    /// Runs an admin command on this server's database.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.admin_command(args).output().unwrap()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("data").join("keygate.db")
}

/// Starts the binary and waits for `/healthz` (retrying on a lost port race).
async fn launch(dir: &Path, database: &str, extra: &[String], operator: bool) -> (Child, String) {
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let mut command = Command::new(BIN);
        if operator {
            command.env("KEYGATE_OPERATOR_TOKEN", plans::OPERATOR_TOKEN);
        }
        let mut child = command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database")
            .arg(database)
            .args(extra)
            .env("KEYGATE_FEED_TOKEN", FEED_TOKEN)
            // The tests' receivers are on loopback (a test's own
            // `--webhook-allow-cidr` replaces this).
            .env("KEYGATE_WEBHOOK_ALLOW_CIDR", "127.0.0.0/8,::1/128")
            // Every test signs up from 127.0.0.1; tests/signup.rs sets its own.
            .env("KEYGATE_SIGNUP_PER_HOUR", "1000000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status() == 200 {
                    return (child, base);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    panic!("the control plane did not start:\n{log}");
}

/// The value of the sample `name` (labels included) in a Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok())?
    })
}

/// The ops of a feed body (snapshot or delta), with its header.
pub fn raw_ops(body: &[u8]) -> (keygate::feed::Header, Vec<RawOp>) {
    let (header, mut reader) = Reader::header(body).unwrap();
    reader.dictionary().unwrap();
    let n = reader.op_count().unwrap();
    let ops = (0..n).map(|_| reader.op().unwrap()).collect();
    reader.finish().unwrap();
    (header, ops)
}

/// Decodes a snapshot body into a table.
pub fn snapshot(body: &[u8]) -> keygate::table::KeyTable {
    match keygate::table::decode(body).unwrap() {
        keygate::table::Update::Snapshot(table) => *table,
        keygate::table::Update::Delta(_) => panic!("expected a snapshot, got a delta"),
    }
}

/// The keys of a snapshot body or page, strings resolved.
pub fn page_entries(body: &[u8]) -> Vec<FeedEntry> {
    let (header, mut reader) = Reader::header(body).unwrap();
    assert!(header.snapshot, "not a snapshot page");
    let strings = reader.dictionary().unwrap();
    let n = reader.op_count().unwrap();
    let entries = (0..n)
        .map(|_| match reader.op().unwrap() {
            RawOp::Upsert(e) => FeedEntry {
                hash: e.hash,
                key_id: KeyId(e.key_id),
                org_id: OrgId(e.org_id),
                expires_at: e.expires_at,
                scopes: strings[e.scopes as usize].to_string(),
                tier: strings[e.tier as usize].to_string(),
                environment: e.environment,
                status: e.status,
                limits: e.limits,
                external_id: e.external_id.map(|i| strings[i as usize].to_string()),
            },
            RawOp::Remove(_) => panic!("a remove in a snapshot page"),
        })
        .collect();
    reader.finish().unwrap();
    entries
}

/// The table snapshot pages assemble: every key of every page, at the
/// smallest of their versions (docs/feed-protocol.md).
pub fn assemble(pages: &[(Reply, PageSummary)]) -> keygate::table::KeyTable {
    let version = pages.iter().map(|(_, p)| p.version).min().unwrap();
    let entries: Vec<FeedEntry> = pages
        .iter()
        .flat_map(|(reply, _)| page_entries(&reply.bytes))
        .collect();
    let key_set = pages.first().unwrap().1.key_set;
    snapshot(&keygate::feed::encode_snapshot(key_set, version, &entries))
}

/// Lowercase hex of a hash, as `after` takes it.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a key, as the feed carries it.
pub fn hash(key: &str) -> [u8; 32] {
    keygate::key::hash(key)
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// RFC 3339 of `secs`.
pub fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Polls `check` every 100 ms until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A future being joined, and its output once ready.
type Slot<F> = (
    std::pin::Pin<Box<F>>,
    Option<<F as std::future::Future>::Output>,
);

/// Runs futures concurrently on the current task, collecting their outputs.
pub async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut slots: Vec<Slot<F>> = futures.into_iter().map(|f| (Box::pin(f), None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in slots.iter_mut().filter(|(_, out)| out.is_none()) {
            match future.as_mut().poll(cx) {
                std::task::Poll::Ready(value) => *out = Some(value),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().filter_map(|(_, out)| out).collect()
}

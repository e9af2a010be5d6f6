//! One keygate stack on loopback: Envoy + filter, control plane, demo upstream
//! (and more Envoys on the same control plane if a test asks).

use crate::adapter::Adapter;
use crate::api::{Reply, Tenant};
use crate::config::{render_adapter_config, Ports};
use crate::paths::{envoy_bin, release_bin, repo_root};
use crate::process::{read_log, Process};
use crate::{FEED_TOKEN, FEED_TOKEN_ENV};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any startup step may take before the test fails.
const STARTUP: Duration = Duration::from_secs(60);
/// Answers in a row that show every worker agrees (2 workers; each new
/// connection lands on either).
pub const STEADY: usize = 10;
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(20);

/// What to change from the default stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Start the control plane (and wait for the first table).
    pub control_plane: bool,
    /// `(from, to)` text replacements in `envoy/envoy.yaml`.
    pub replacements: Vec<(String, String)>,
    /// Extra arguments after `keygate-control-plane serve …`.
    pub control_plane_args: Vec<String>,
    /// Extra arguments on Envoy's command line.
    pub envoy_args: Vec<String>,
    /// Turns the rendered Envoy config into the one Envoy runs, given the
    /// stack's directory (see [`crate::dynamic`]).
    pub envoy_config: Option<fn(String, &std::path::Path) -> String>,
    /// The control planes' `--database` (`postgres://…`) instead of the
    /// stack's SQLite file.
    pub database: Option<String>,
    /// Envoy's `--concurrency` (worker threads).
    pub concurrency: u32,
    /// The feed token in Envoy's environment (`None`: the shared [`FEED_TOKEN`]).
    pub feed_token: Option<String>,
    /// The control planes' `--webhook-allow-cidr`s (default: loopback, for
    /// the tests' receivers).
    pub webhook_allow: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            control_plane: true,
            replacements: Vec::new(),
            control_plane_args: Vec::new(),
            envoy_args: Vec::new(),
            envoy_config: None,
            database: None,
            concurrency: 2,
            feed_token: None,
            webhook_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
        }
    }
}

impl StackOptions {
    /// Adds a replacement in the Envoy config (must match exactly once).
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        self.replacements.push((from.to_string(), to.to_string()));
        self
    }
}

/// A running stack; everything is killed when it drops.
pub struct Stack {
    pub ports: Ports,
    pub client: reqwest::Client,
    /// The tenant registered to prove the key table is loaded (if started with a control plane).
    pub tenant: Option<Tenant>,
    envoy: Process,
    /// Envoys started by [`Stack::start_another_envoy`].
    more_envoys: Vec<Process>,
    control_plane: Option<Process>,
    /// Replicas started by [`Stack::start_replica`], by port.
    replicas: Vec<(u16, Process)>,
    /// The control plane's database file, in the stack's directory.
    database: String,
    _upstream: Process,
    options: StackOptions,
    dir: Option<tempfile::TempDir>,
    _permit: Permit,
}

impl Stack {
    /// The default stack, with its key table loaded.
    pub async fn start() -> Stack {
        Stack::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Stack {
        let permit = Permit::acquire();
        let dir = tempfile::Builder::new()
            .prefix("keygate-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let ports = Ports {
            envoy: free_port(),
            operator: free_port(),
            admin: free_port(),
            control_plane: free_port(),
            upstream: free_port(),
        };
        let upstream = spawn_upstream(&dir, ports);
        let envoy = spawn_envoy(&dir, "envoy", ports, &options);
        let start_control_plane = options.control_plane;
        let mut stack = Stack {
            ports,
            client: http_client(),
            tenant: None,
            envoy,
            more_envoys: Vec::new(),
            control_plane: None,
            replicas: Vec::new(),
            database: "keygate.db".to_string(),
            _upstream: upstream,
            options,
            dir: Some(dir),
            _permit: permit,
        };
        stack.wait_envoy_ready().await;
        if start_control_plane {
            stack.start_control_plane().await;
            let tenant = stack.new_tenant("readiness").await;
            stack.tenant = Some(tenant);
        }
        stack
    }

    /// The first tenant (panics on a stack started without a control plane).
    pub fn tenant(&self) -> &Tenant {
        self.tenant
            .as_ref()
            .unwrap_or_else(|| panic!("this stack has no tenant"))
    }

    /// `http://127.0.0.1:<envoy>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.envoy)
    }

    /// `ws://127.0.0.1:<envoy>/<path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.ports.envoy)
    }

    /// The stack's directory (configs, logs, database).
    pub fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// Sends a request built by the caller and reads the reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        Reply::read(response).await
    }

    /// A request through Envoy.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends raw bytes to Envoy's listener and returns everything it
    /// answers before closing (for requests no HTTP client would send).
    pub async fn raw(&self, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.ports.envoy))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to Envoy: {e}"));
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// `GET path` with `Authorization: Bearer key`.
    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.get_on(self.ports.envoy, path, key).await
    }

    /// `GET path` with `Authorization: Bearer key` through the Envoy
    /// listening on `envoy` (this stack's, or another one's).
    pub async fn get_on(&self, envoy: u16, path: &str, key: &str) -> Reply {
        let url = format!("http://127.0.0.1:{envoy}{path}");
        self.send(self.client.get(url).bearer_auth(key)).await
    }

    /// A JSON call with a bearer key.
    pub async fn call(&self, method: Method, path: &str, key: &str, body: Value) -> Reply {
        self.send(self.request(method, path).bearer_auth(key).json(&body))
            .await
    }

    /// Registers a tenant and waits until its key passes Envoy. Retries
    /// while the control plane is unreachable (5xx); any other answer than
    /// 201 fails the test.
    pub async fn new_tenant(&self, name: &str) -> Tenant {
        let n = TENANTS.fetch_add(1, Ordering::Relaxed);
        let body = json!({"name": format!("{name} {n}"), "email": format!("dev{n}@example.com")});
        let reply = self
            .retry_until(|| async {
                let reply = self
                    .send(self.request(Method::POST, "/api/v1/tenants").json(&body))
                    .await;
                (reply.status < 500).then_some(reply)
            })
            .await;
        let tenant = Tenant::from_reply(&reply);
        self.wait_key_works(&tenant.api_key).await;
        tenant
    }

    /// Creates a key with `admin_key`; returns the 201 body. Waits until it works.
    pub async fn create_key(&self, admin_key: &str, body: Value) -> Reply {
        let reply = self
            .call(Method::POST, "/api/v1/api-keys", admin_key, body)
            .await;
        reply.expect(201);
        self.wait_key_works(reply.str("api_key")).await;
        reply
    }

    /// Polls `GET /keygate/ready` with `key` until every worker lets it
    /// through (a steady run of 200s). Returns how long that took.
    pub async fn wait_key_works(&self, key: &str) -> Duration {
        self.wait_steady("/keygate/ready", key, 200, STARTUP)
            .await
            .1
    }

    /// Polls `GET path` with `key` until the status is `status` on every
    /// worker: [`STEADY`] answers in a row, each on a new connection (Envoy
    /// spreads connections over its workers, each with its own copy of the
    /// table). Returns the first reply of that run and the time from the
    /// call to it. Fails after `limit`.
    pub async fn wait_steady(
        &self,
        path: &str,
        key: &str,
        status: u16,
        limit: Duration,
    ) -> (Reply, Duration) {
        self.wait_steady_on(self.ports.envoy, path, key, status, limit)
            .await
    }

    /// [`Stack::wait_steady`] through the Envoy listening on `envoy`.
    pub async fn wait_steady_on(
        &self,
        envoy: u16,
        path: &str,
        key: &str,
        status: u16,
        limit: Duration,
    ) -> (Reply, Duration) {
        let start = Instant::now();
        let mut run: Option<(Reply, Duration)> = None;
        let mut streak = 0;
        loop {
            let reply = self.get_on(envoy, path, key).await;
            if reply.status == status {
                streak += 1;
                let first = run.get_or_insert_with(|| (reply, start.elapsed()));
                if streak >= STEADY {
                    return first.clone();
                }
                continue;
            }
            assert!(
                start.elapsed() < limit,
                "no steady {status} for {path} within {limit:?}; last reply: {reply:#?}"
            );
            run = None;
            streak = 0;
            tokio::time::sleep(POLL).await;
        }
    }

    async fn retry_until<T, F, Fut>(&self, mut attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(value) = attempt().await {
                return value;
            }
            assert!(
                start.elapsed() < STARTUP,
                "gave up after {STARTUP:?}; Envoy log:\n{}",
                self.envoy_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts (or restarts) the control plane on its port and database.
    pub async fn start_control_plane(&mut self) {
        let process = self.spawn_control_plane(self.ports.control_plane, "control-plane.log");
        self.control_plane = Some(process);
        let url = format!("http://127.0.0.1:{}/healthz", self.ports.control_plane);
        self.wait_http_ok(&url, "control plane").await;
    }

    /// Starts one more control plane on `port` and the same database (a
    /// replica: give the stack a `postgres://` database), logging to
    /// `control-plane-<port>.log`; waits until it is up.
    pub async fn start_replica(&mut self, port: u16) {
        let process = self.spawn_control_plane(port, &format!("control-plane-{port}.log"));
        self.replicas.push((port, process));
        let url = format!("http://127.0.0.1:{port}/healthz");
        self.wait_http_ok(&url, "control plane replica").await;
    }

    /// The control planes' `--database`: the `postgres://` URL, or the
    /// stack's current SQLite file.
    pub fn database_arg(&self) -> String {
        self.options
            .database
            .clone()
            .unwrap_or_else(|| self.dir().join(&self.database).display().to_string())
    }

    fn spawn_control_plane(&self, port: u16, log: &str) -> Process {
        let dir = self.dir();
        let database = self.database_arg();
        let mut args = vec![
            "serve".to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--database".to_string(),
            database,
            "--feed-token".to_string(),
            FEED_TOKEN.to_string(),
            // Default tier pro (600/min): the harness polls with the tenant's
            // first key and must not run into the free tier's 60/min, which
            // tests/rate_limits.rs checks with keys minted as `free`.
            "--tiers".to_string(),
            "pro,free".to_string(),
            "--operator-token-file".to_string(),
            crate::plans::operator_token_file(&dir)
                .display()
                .to_string(),
        ];
        for cidr in &self.options.webhook_allow {
            args.extend(["--webhook-allow-cidr".to_string(), cidr.clone()]);
        }
        args.extend(self.options.control_plane_args.iter().cloned());
        // Every test signs up from 127.0.0.1 (tests/signup.rs sets its own
        // limit with the flag, which wins).
        let env = [("KEYGATE_SIGNUP_PER_HOUR", "1000000")];
        Process::spawn_with_env(
            "keygate-control-plane",
            &release_bin("keygate-control-plane"),
            &args,
            &env,
            dir.join(log),
        )
    }

    /// Kills the control plane and starts it again on the database file
    /// `file` of the stack's directory (created if new; the first is
    /// `keygate.db`), same port: a database swapped under a running Envoy.
    pub async fn restart_control_plane_on(&mut self, file: &str) {
        self.stop_control_plane();
        self.database = file.to_string();
        self.start_control_plane().await;
    }

    /// Restarts the control plane with webhooks allowed to reach `cidrs`
    /// besides public addresses (none: public only).
    pub async fn restart_control_plane_allowing(&mut self, cidrs: &[&str]) {
        self.stop_control_plane();
        self.options.webhook_allow = cidrs.iter().map(|c| c.to_string()).collect();
        self.start_control_plane().await;
    }

    /// Kills the control plane and starts it again with `args` instead of
    /// the extra arguments it started with.
    pub async fn restart_control_plane_with(&mut self, args: &[&str]) {
        self.stop_control_plane();
        self.options.control_plane_args = args.iter().map(|a| a.to_string()).collect();
        self.start_control_plane().await;
    }

    /// Kills the control plane (an outage).
    pub fn stop_control_plane(&mut self) {
        if let Some(mut process) = self.control_plane.take() {
            process.stop();
        }
    }

    async fn wait_envoy_ready(&mut self) {
        let url = self.admin_url("/ready");
        self.wait_http_ok(&url, "envoy").await;
    }

    /// Starts one more Envoy (same config, own listener, operator and admin ports,
    /// `envoy-<n>.log`) on this stack's control plane and upstream, and
    /// waits until it is ready; returns its ports. It is not used by the
    /// request helpers.
    pub async fn start_another_envoy(&mut self) -> Ports {
        let replacements = self.options.replacements.clone();
        self.start_another_envoy_with(replacements).await
    }

    /// [`Stack::start_another_envoy`] with its own `(from, to)` replacements
    /// in `envoy/envoy.yaml` instead of the stack's.
    pub async fn start_another_envoy_with(&mut self, replacements: Vec<(String, String)>) -> Ports {
        let options = StackOptions {
            replacements,
            ..self.options.clone()
        };
        self.start_envoy_with(options).await
    }

    /// [`Stack::start_another_envoy`] reading the feed with `token` (a
    /// data plane's) instead of the shared one.
    pub async fn start_another_envoy_with_token(&mut self, token: &str) -> Ports {
        let options = StackOptions {
            feed_token: Some(token.to_string()),
            ..self.options.clone()
        };
        self.start_envoy_with(options).await
    }

    async fn start_envoy_with(&mut self, options: StackOptions) -> Ports {
        let ports = Ports {
            envoy: free_port(),
            operator: free_port(),
            admin: free_port(),
            ..self.ports
        };
        let name = format!("envoy-{}", self.more_envoys.len() + 2);
        let envoy = match self.dir.as_ref() {
            Some(dir) => spawn_envoy(dir, &name, ports, &options),
            None => panic!("the stack's directory is gone"),
        };
        self.more_envoys.push(envoy);
        let url = format!("http://127.0.0.1:{}/ready", ports.admin);
        self.wait_http_ok(&url, &name).await;
        ports
    }

    async fn wait_http_ok(&mut self, url: &str, what: &str) {
        let start = Instant::now();
        loop {
            if let Ok(response) = self.client.get(url).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            self.envoy.assert_running();
            self.more_envoys
                .iter_mut()
                .for_each(Process::assert_running);
            if let Some(process) = self.control_plane.as_mut() {
                process.assert_running();
            }
            self.replicas
                .iter_mut()
                .for_each(|(_, process)| process.assert_running());
            assert!(start.elapsed() < STARTUP, "{what} not ready at {url}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// `http://127.0.0.1:<admin>/<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    /// Envoy's `/stats` text, filtered by a regex.
    pub async fn stats(&self, filter: &str) -> String {
        let url = self.admin_url("/stats");
        let response = self
            .client
            .get(url)
            .query(&[("filter", filter)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin /stats failed: {e}"));
        response.text().await.unwrap_or_default()
    }

    /// One counter or gauge from `/stats` (exact name).
    pub async fn stat(&self, name: &str) -> Option<u64> {
        self.stat_on(self.ports.admin, name).await
    }

    /// [`Stack::stat`] of the Envoy whose admin listens on `admin`.
    pub async fn stat_on(&self, admin: u16, name: &str) -> Option<u64> {
        let url = format!("http://127.0.0.1:{admin}/stats");
        let filter = format!("^{}$", name.replace('.', "\\."));
        let response = self.client.get(url).query(&[("filter", filter)]).send();
        let text = response.await.ok()?.text().await.ok()?;
        parse_stat(&text, name)
    }

    /// One of the filter's own stats by its name (`keygate_allowed`), under
    /// the adapter's prefix (`wasmcustom.` or `dynamicmodulescustom.`).
    pub async fn filter_stat(&self, name: &str) -> Option<u64> {
        self.stat(&Adapter::current().stat(name)).await
    }

    /// Every stat of the filter, as `/stats` text.
    pub async fn filter_stats(&self) -> String {
        self.stats(&format!("^{}\\.", Adapter::current().stats_prefix()))
            .await
    }

    /// Envoy's process id (for `/proc/<pid>/status`).
    pub fn envoy_pid(&self) -> u32 {
        self.envoy.pid()
    }

    /// The control plane's process id (for `/proc/<pid>/status`).
    pub fn control_plane_pid(&self) -> Option<u32> {
        self.control_plane.as_ref().map(Process::pid)
    }

    /// The sum of every sample of the metric `family` (all labels) on the
    /// control plane's `/metrics`.
    pub async fn control_plane_metric(&self, family: &str) -> u64 {
        self.control_plane_metric_on(self.ports.control_plane, family)
            .await
    }

    /// [`Stack::control_plane_metric`] of the control plane on `port`.
    pub async fn control_plane_metric_on(&self, port: u16, family: &str) -> u64 {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let response = self
            .client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("control plane /metrics failed: {e}"));
        parse_metric(&response.text().await.unwrap_or_default(), family)
    }

    /// Everything Envoy wrote so far (its log and access log).
    pub fn envoy_log(&self) -> String {
        read_log(self.envoy.log_path())
    }

    /// Everything the control plane wrote so far (all its runs).
    pub fn control_plane_log(&self) -> String {
        read_log(&self.dir().join("control-plane.log"))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("keygate-e2e: test failed; logs kept in {}", kept.display());
                eprintln!(
                    "--- envoy log (tail) ---\n{}",
                    tail(&self.envoy_log_at(&kept))
                );
            }
        }
    }
}

impl Stack {
    fn envoy_log_at(&self, dir: &std::path::Path) -> String {
        read_log(&dir.join("envoy.log"))
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(60);
    lines.get(from..).unwrap_or_default().join("\n")
}

/// Parses `name: value` from `/stats` text.
fn parse_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(": ")?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// The sum of the samples of `family` in Prometheus text (0 if none).
fn parse_metric(text: &str, family: &str) -> u64 {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let labels = key.strip_prefix(family)?;
            (labels.is_empty() || labels.starts_with('{')).then(|| value.parse::<u64>().ok())?
        })
        .sum()
}

fn spawn_upstream(dir: &tempfile::TempDir, ports: Ports) -> Process {
    let args = [
        "--listen".to_string(),
        format!("127.0.0.1:{}", ports.upstream),
    ];
    Process::spawn(
        "keygate-demo-upstream",
        &release_bin("keygate-demo-upstream"),
        &args,
        dir.path().join("upstream.log"),
    )
}

/// Starts an Envoy with the stack's config (the shipped one of the adapter
/// under test); `name` names its config and log.
fn spawn_envoy(
    dir: &tempfile::TempDir,
    name: &str,
    ports: Ports,
    options: &StackOptions,
) -> Process {
    let adapter = Adapter::current();
    let template_path = repo_root().join(adapter.config_file());
    let template = std::fs::read_to_string(&template_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", template_path.display()));
    let config = render_adapter_config(adapter, &template, ports, &options.replacements);
    let config = match options.envoy_config {
        Some(transform) => transform(config, dir.path()),
        None => config,
    };
    let config_path = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&config_path, config)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
    let args = [
        "-c",
        &config_path.display().to_string(),
        "--concurrency",
        &options.concurrency.to_string(),
        "--disable-hot-restart",
        "--log-level",
        "info",
        "--component-log-level",
        adapter.log_component(),
        // The access log (stdout) reaches the log file within 0.2 s, not
        // Envoy's default 10 s: tests read it.
        "--file-flush-interval-msec",
        "200",
    ]
    .map(String::from);
    let args: Vec<String> = args.into_iter().chain(options.envoy_args.clone()).collect();
    let log = dir.path().join(format!("{name}.log"));
    // The filter reads the feed token from Envoy's environment (SPEC §7).
    let token = options.feed_token.as_deref().unwrap_or(FEED_TOKEN);
    let mut env = vec![(FEED_TOKEN_ENV.to_string(), token.to_string())];
    env.extend(adapter.envoy_env());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Process::spawn_with_env("envoy", &envoy_bin(), &args, &env, log)
}

fn http_client() -> reqwest::Client {
    // No keep-alive: every request is a new connection, so Envoy spreads them
    // over its workers and a check covers every worker.
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("cannot build an HTTP client: {e}"))
}

static TENANTS: AtomicU32 = AtomicU32::new(0);

/// A port nobody listens on now; never handed out twice by this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Limits how many stacks run at once (2 cores: `$KEYGATE_E2E_JOBS`, default 2).
struct Permit;

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

impl Permit {
    fn acquire() -> Permit {
        let limit = std::env::var("KEYGATE_E2E_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2usize)
            .max(1);
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= limit {
            running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running = running.saturating_sub(1);
        FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line() {
        let text = "cluster.a.upstream_rq_total: 7\ncluster.a.upstream_rq_active: 1\n";
        assert_eq!(parse_stat(text, "cluster.a.upstream_rq_active"), Some(1));
        assert_eq!(parse_stat(text, "cluster.a.nope"), None);
    }

    #[test]
    fn sums_a_metric_family() {
        let text = "# TYPE a_total counter\na_total{k=\"x\"} 2\na_total{k=\"y\"} 3\n\
                    a_total_more 9\nb 1\n";
        assert_eq!(parse_metric(text, "a_total"), 5);
        assert_eq!(parse_metric(text, "b"), 1);
        assert_eq!(parse_metric(text, "c"), 0);
    }

    #[test]
    fn ports_are_not_reused() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
    }
}

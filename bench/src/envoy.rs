//! Envoy configurations for every variant, and Envoy processes to run them.
//!
//! Every variant is the same listener with a `direct_response` route, so the
//! only thing that differs between variants is the HTTP filter in front of
//! the router: the numbers measure the filter chain, not an upstream.

use crate::http;
use keygate::config::DEFAULT_TOKEN_ENV;
use serde_json::{json, Value};
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The header every variant reads the key from.
pub const KEY_HEADER: &str = "x-api-key";

/// What sits in front of the router.
pub enum Filter<'a> {
    /// Nothing: the limit.
    None,
    /// The minimal proxy-wasm filter in one of its modes (`""`: reads one
    /// header, sets one; see bench/minimal-filter for the diagnostic modes).
    Minimal { wasm: &'a Path, mode: &'a str },
    /// Envoy's native `api_key_auth` with these keys.
    ApiKeyAuth { keys: &'a [String] },
    /// `ext_authz` over HTTP to an authorizer at this address.
    ExtAuthz { authorizer: SocketAddr },
    /// keygate, fetching its table from a feed at this address; `token`
    /// reaches it in Envoy's environment, as in envoy/envoy.yaml.
    /// `usage`: counting and reporting on (the shipped configs) or off.
    Keygate {
        wasm: &'a Path,
        feed: SocketAddr,
        token: &'a str,
        usage: bool,
    },
    /// The minimal dynamic module (`bench/minimal-native`, `libminimal_native.so`
    /// in `dir`): reads one header, sets one.
    MinimalNative { dir: &'a Path },
    /// keygate's dynamic module (`native/`, `libkeygate_native.so` in `dir`),
    /// fetching its table from a feed at this address; `token` as for [`Filter::Keygate`].
    KeygateNative {
        dir: &'a Path,
        feed: SocketAddr,
        token: &'a str,
        usage: bool,
    },
}

/// The variable of Envoy's environment it looks dynamic modules up in.
pub const MODULE_SEARCH_PATH_ENV: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";

impl Filter<'_> {
    /// The directory Envoy must look dynamic modules up in, if any.
    fn module_dir(&self) -> Option<&Path> {
        match self {
            Filter::MinimalNative { dir } | Filter::KeygateNative { dir, .. } => Some(dir),
            _ => None,
        }
    }

    /// The feed token Envoy needs in its environment, if any.
    fn token(&self) -> Option<&str> {
        match self {
            Filter::Keygate { token, .. } | Filter::KeygateNative { token, .. } => Some(token),
            _ => None,
        }
    }

    /// The prefix of the filter's own stats in `/stats`.
    pub fn stats_prefix(&self) -> &'static str {
        match self {
            Filter::MinimalNative { .. } | Filter::KeygateNative { .. } => "dynamicmodulescustom",
            _ => "wasmcustom",
        }
    }
}

/// A free loopback port (bound then released: good enough on a quiet machine).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket(addr.port())}}
        ]}]}
    })
}

/// The same plugin settings for every wasm variant: V8, local file,
/// `FAIL_RELOAD`; the VM sees the variables `env_keys` of Envoy's environment.
fn wasm_filter(name: &str, wasm: &Path, configuration: &str, env_keys: &[&str]) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}},
                    "environment_variables": {"host_env_keys": env_keys}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                },
                "failure_policy": "FAIL_RELOAD"
            }
        }
    })
}

/// A dynamic module HTTP filter: `lib<module>.so` (looked up in
/// `$ENVOY_DYNAMIC_MODULES_SEARCH_PATH`), its filter `filter_name` with
/// `configuration` (a string).
fn dynamic_module_filter(module: &str, filter_name: &str, configuration: &str) -> Value {
    json!({
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": module},
            "filter_name": filter_name,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": configuration
            }
        }
    })
}

/// The keygate filter's own configuration (a JSON string inside the plugin
/// config); the feed token comes from `$KEYGATE_FEED_TOKEN`. With `usage`,
/// requests are counted and reported as in the shipped configs (every 10 s).
pub fn keygate_configuration(usage: bool) -> String {
    json!({
        "key_prefix": "rk",
        "feed": {
            "cluster": "keygate_control_plane",
            "authority": "keygate-control-plane",
            "path": "/v1/key-table",
            "token_env": DEFAULT_TOKEN_ENV,
            "wait_seconds": 20
        },
        "usage": {"enabled": usage, "flush_seconds": 10},
        "rules": []
    })
    .to_string()
}

/// The HTTP filters (before the router) and extra clusters of `filter`.
fn filter_parts(filter: &Filter<'_>) -> (Vec<Value>, Vec<Value>) {
    match filter {
        Filter::None => (vec![], vec![]),
        Filter::Minimal { wasm, mode } => (vec![wasm_filter("minimal", wasm, mode, &[])], vec![]),
        Filter::ApiKeyAuth { keys } => {
            let credentials: Vec<Value> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| json!({"key": key, "client": format!("client-{i}")}))
                .collect();
            let filter = json!({
                "name": "envoy.filters.http.api_key_auth",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                    "credentials": credentials,
                    "key_sources": [{"header": KEY_HEADER}],
                    "forwarding": {"header": "x-client-id", "hide_credentials": true}
                }
            });
            (vec![filter], vec![])
        }
        Filter::ExtAuthz { authorizer } => {
            let filter = json!({
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    "http_service": {
                        "server_uri": {
                            "uri": format!("http://{authorizer}"),
                            "cluster": "ext_authz",
                            "timeout": "1s"
                        }
                    },
                    "allowed_headers": {"patterns": [{"exact": KEY_HEADER}]},
                    "failure_mode_allow": false
                }
            });
            (vec![filter], vec![cluster("ext_authz", *authorizer)])
        }
        Filter::Keygate {
            wasm, feed, usage, ..
        } => (
            vec![wasm_filter(
                "keygate",
                wasm,
                &keygate_configuration(*usage),
                &[DEFAULT_TOKEN_ENV],
            )],
            vec![cluster("keygate_control_plane", *feed)],
        ),
        Filter::MinimalNative { .. } => (
            vec![dynamic_module_filter("minimal_native", "minimal", "")],
            vec![],
        ),
        Filter::KeygateNative { feed, usage, .. } => (
            vec![dynamic_module_filter(
                "keygate_native",
                "keygate",
                &keygate_configuration(*usage),
            )],
            vec![cluster("keygate_control_plane", *feed)],
        ),
    }
}

/// The whole bootstrap for `filter`, listening on `listen` with admin on `admin`.
pub fn bootstrap(filter: &Filter<'_>, listen: u16, admin: u16) -> Value {
    let (mut filters, clusters) = filter_parts(filter);
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
        "admin": {"address": socket(admin)},
        // As envoy/envoy.yaml: freed memory goes back to the OS (every variant).
        "memory_allocator_manager": {"bytes_to_release": 67108864, "memory_release_interval": "1s"},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": socket(listen),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {"virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{
                                "match": {"prefix": "/"},
                                "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}
                            }]
                        }]},
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}

/// How to launch Envoy.
pub struct Launch<'a> {
    /// The Envoy binary.
    pub binary: &'a Path,
    /// Where configs and logs go.
    pub dir: &'a Path,
    /// `--concurrency`.
    pub concurrency: u32,
    /// CPUs to pin to (`taskset -c`), if any.
    pub cpus: Option<&'a str>,
}

/// A running Envoy; killed when dropped.
pub struct Envoy {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub started: Instant,
    log: PathBuf,
}

impl Envoy {
    /// Writes the config for `filter` and starts Envoy on it, without waiting.
    pub fn spawn(launch: &Launch<'_>, name: &str, filter: &Filter<'_>) -> io::Result<Envoy> {
        let (listen, admin) = (free_port()?, free_port()?);
        let config = launch.dir.join(format!("{name}.json"));
        fs::write(&config, bootstrap(filter, listen, admin).to_string())?;
        let log = launch.dir.join(format!("{name}.log"));
        let mut command = match launch.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(launch.binary);
                c
            }
            None => Command::new(launch.binary),
        };
        if let Some(token) = filter.token() {
            command.env(DEFAULT_TOKEN_ENV, token);
        }
        if let Some(dir) = filter.module_dir() {
            command.env(MODULE_SEARCH_PATH_ENV, dir);
        }
        command
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &launch.concurrency.to_string()])
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        let started = Instant::now();
        let child = command.spawn()?;
        Ok(Envoy {
            child,
            listen: SocketAddr::from(([127, 0, 0, 1], listen)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            started,
            log,
        })
    }

    /// Starts Envoy and waits until its admin says it is live.
    pub fn start(launch: &Launch<'_>, name: &str, filter: &Filter<'_>) -> io::Result<Envoy> {
        let mut envoy = Envoy::spawn(launch, name, filter)?;
        envoy.wait_live(Duration::from_secs(30))?;
        Ok(envoy)
    }

    /// The process id (taskset execs Envoy, so it is Envoy's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_live(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.failure(&format!("exited with {status}")));
            }
            if http::once(self.admin, "GET", "/ready", &[], None).is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failure("not live in time"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// An error carrying the end of Envoy's log.
    pub fn failure(&self, what: &str) -> io::Error {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "envoy {}: {what}; log {}:\n{}",
            self.listen,
            self.log.display(),
            tail.join("\n")
        ))
    }

    /// Stats whose name contains `filter`, as (name, value).
    pub fn stats(&self, filter: &str) -> io::Result<Vec<(String, String)>> {
        let r = http::once(
            self.admin,
            "GET",
            &format!("/stats?filter={filter}"),
            &[],
            None,
        )?;
        Ok(r.text()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// Envoy's own heap (tcmalloc, from admin `/memory`): live bytes and
    /// resident bytes. Wasm VM memory is not in it.
    pub fn heap(&self) -> Option<(u64, u64)> {
        let r = http::once(self.admin, "GET", "/memory", &[], None).ok()?;
        let v = r.json().ok()?;
        let field = |name: &str| v.get(name)?.as_str()?.parse::<u64>().ok();
        Some((field("allocated")?, field("total_physical_bytes")?))
    }

    /// The binary this process really runs (the `envoy` on PATH may be a wrapper that execs it).
    pub fn exe(&self) -> io::Result<PathBuf> {
        fs::read_link(format!("/proc/{}/exe", self.pid()))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one request with `key` (if any) on a fresh connection; the status.
pub fn probe(addr: SocketAddr, key: Option<&str>) -> io::Result<u16> {
    let headers: Vec<(&str, &str)> = key.map(|k| (KEY_HEADER, k)).into_iter().collect();
    Ok(http::once(addr, "GET", "/", &headers, None)?.status)
}

/// Polls until a request with `key` answers `want`; the time it took from `since`.
pub fn wait_status(
    addr: SocketAddr,
    key: Option<&str>,
    want: impl Fn(u16) -> bool,
    since: Instant,
    timeout: Duration,
) -> io::Result<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe(addr, key) {
            Ok(status) if want(status) => return Ok(since.elapsed()),
            other => other.map_err(|e| e.to_string()),
        };
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{addr}: no wanted answer within {timeout:?} (last: {last:?})"
            )));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant's bootstrap is a valid Envoy config (when Envoy is installed).
    #[test]
    fn configs_validate() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec!["rk_live_a".to_string(), "rk_live_b".to_string()];
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        // Validation loads the module: use the minimal filter's, if it is built.
        let wasm = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/wasm32-wasip1/release/minimal_filter.wasm");
        let wasm = wasm.as_path();
        let native = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/native");
        let dir_native = native.as_path();
        let filters = [
            Filter::None,
            Filter::Minimal { wasm, mode: "" },
            Filter::ApiKeyAuth { keys: &keys },
            Filter::ExtAuthz { authorizer: addr },
            Filter::Keygate {
                wasm,
                feed: addr,
                token: "t",
                usage: true,
            },
            Filter::MinimalNative { dir: dir_native },
            Filter::KeygateNative {
                dir: dir_native,
                feed: addr,
                token: "t",
                usage: true,
            },
        ];
        for (i, filter) in filters.iter().enumerate() {
            let uses_wasm = matches!(filter, Filter::Minimal { .. } | Filter::Keygate { .. });
            if uses_wasm && !wasm.exists() {
                eprintln!("{} not built: config {i} not validated", wasm.display());
                continue;
            }
            let module = match filter {
                Filter::MinimalNative { .. } => Some("libminimal_native.so"),
                Filter::KeygateNative { .. } => Some("libkeygate_native.so"),
                _ => None,
            };
            if let Some(module) = module.filter(|m| !dir_native.join(m).exists()) {
                eprintln!("{module} not built: config {i} not validated");
                continue;
            }
            let config = bootstrap(filter, 10001, 10002);
            let http_filters = &config["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"]["http_filters"];
            assert_eq!(
                http_filters.as_array().unwrap().last().unwrap()["name"],
                "envoy.filters.http.router"
            );
            let path = dir.path().join(format!("{i}.json"));
            fs::write(&path, config.to_string()).unwrap();
            let envoy = std::env::var_os("ENVOY_BIN").unwrap_or_else(|| "envoy".into());
            let mut command = Command::new(envoy);
            if let Some(dir) = filter.module_dir() {
                command.env(MODULE_SEARCH_PATH_ENV, dir);
            }
            if let Some(token) = filter.token() {
                command.env(DEFAULT_TOKEN_ENV, token);
            }
            let validate = command
                .args(["--mode", "validate", "--disable-hot-restart", "-c"])
                .arg(&path)
                .output();
            match validate {
                Ok(out) => assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(_) => eprintln!("envoy not installed: config {i} not validated"),
            }
        }
    }
}

//! The shipped `envoy/envoy.yaml` (or `envoy/envoy-native.yaml` with
//! `KEYGATE_ADAPTER=native`) as Envoy 1.40 sees it (SPEC §7, §8, §9).

use keygate_e2e::{
    envoy_bin, only_on, render_adapter_config, repo_root, wasm_path, Adapter, FEED_TOKEN_ENV,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// The shipped config of the adapter under test.
fn shipped_config() -> String {
    read_config(Adapter::current().config_file())
}

fn read_config(file: &str) -> String {
    std::fs::read_to_string(repo_root().join(file)).unwrap()
}

#[test]
fn envoy_is_1_40() {
    let out = Command::new(envoy_bin()).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/1.40."), "not Envoy 1.40: {text}");
}

/// `envoy --mode validate` on the very file `make run` uses, from the
/// repository root (the wasm path in it is relative), loading the real
/// wasm or native module.
#[test]
fn shipped_config_validates_with_the_real_module() {
    let adapter = Adapter::current();
    println!(
        "validating {} with {}",
        adapter.config_file(),
        adapter.artifact().display()
    );
    validate_from_repo_root(adapter.config_file(), adapter.envoy_env());
}

/// The same for docker-compose.yml's Envoy config with the wasm filter
/// (service names resolve only at run time: validation creates the DNS
/// clusters without lookups).
#[test]
fn compose_config_validates_with_the_real_wasm() {
    assert!(wasm_path().is_file());
    validate_from_repo_root(COMPOSE_CONFIG, Vec::new());
}

fn validate_from_repo_root(config: &str, env: Vec<(String, String)>) {
    let out = Command::new(envoy_bin())
        .current_dir(repo_root())
        .env(FEED_TOKEN_ENV, "a-token-for-validation")
        .envs(env)
        .args(["--mode", "validate", "-c", config, "--disable-hot-restart"])
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && log.contains("OK"),
        "validate failed:\n{log}"
    );
}

/// docker-compose.yml's Envoy config (see COMPOSE_ADDRESSES).
const COMPOSE_CONFIG: &str = "envoy/compose/envoy.yaml";

/// What envoy/compose/envoy.yaml changes in envoy/envoy.yaml, and nothing
/// else: Envoy listens on every interface of its container (the operator
/// listener too: docker-compose.yml publishes it on the host's loopback
/// only), and reaches the
/// control plane and the demo upstream by their compose service names
/// (STRICT_DNS: every address of a name, so each control-plane replica, is
/// an endpoint).
const COMPOSE_ADDRESSES: [(&str, &str); 6] = [
    (
        "{ address: 127.0.0.1, port_value: 9901 }",
        "{ address: 0.0.0.0, port_value: 9901 }",
    ),
    (
        "{ address: 127.0.0.1, port_value: 10000 }",
        "{ address: 0.0.0.0, port_value: 10000 }",
    ),
    (
        "{ address: 127.0.0.1, port_value: 10001 }",
        "{ address: 0.0.0.0, port_value: 10001 }",
    ),
    (
        "{ address: 127.0.0.1, port_value: 8080 }",
        "{ address: control-plane, port_value: 8080 }",
    ),
    (
        "{ address: 127.0.0.1, port_value: 8081 }",
        "{ address: demo-upstream, port_value: 8081 }",
    ),
    ("    type: STATIC\n", "    type: STRICT_DNS\n"),
];

/// envoy/compose/envoy.yaml is envoy/envoy.yaml with COMPOSE_ADDRESSES
/// applied, below its own header comment. After a change to envoy/envoy.yaml,
/// `KEYGATE_BLESS_COMPOSE=1 cargo test -p keygate-e2e --test envoy_config
/// compose` rewrites it (keeping its header).
#[test]
fn compose_config_is_the_shipped_config_with_service_addresses() {
    let path = repo_root().join(COMPOSE_CONFIG);
    let compose = std::fs::read_to_string(&path).unwrap();
    // Compose runs the wasm filter, whichever adapter is under test.
    let shipped = read_config("envoy/envoy.yaml");
    let (header, body) = split_header(&compose);
    let mut expected = split_header(&shipped).1.to_string();
    for (from, to) in COMPOSE_ADDRESSES {
        assert!(expected.contains(from), "{from:?} not in envoy/envoy.yaml");
        expected = expected.replace(from, to);
    }
    assert!(
        !expected.contains("127.0.0.1"),
        "envoy/envoy.yaml has a loopback address COMPOSE_ADDRESSES does not map"
    );
    if std::env::var_os("KEYGATE_BLESS_COMPOSE").is_some() {
        std::fs::write(&path, format!("{header}{expected}")).unwrap();
    }
    println!(
        "{COMPOSE_CONFIG}: {} lines, {} mapped",
        expected.lines().count(),
        COMPOSE_ADDRESSES.len()
    );
    assert!(header
        .lines()
        .all(|line| line.is_empty() || line.starts_with('#')));
    assert!(
        body == expected,
        "{COMPOSE_CONFIG} differs from envoy/envoy.yaml beyond the addresses; \
         rerun with KEYGATE_BLESS_COMPOSE=1 to rewrite it"
    );
}

/// A config's leading comment block (through its first blank line) and the rest.
fn split_header(text: &str) -> (&str, &str) {
    let end = text.find("\n\n").map_or(0, |at| at + 2);
    text.split_at(end)
}

/// Authentication runs before rate limiting (which keys on the headers the
/// filter sets), the management API's body limit after both (no buffering
/// for a refused request), and the router comes last.
#[test]
fn filter_order_is_keygate_ratelimit_router() {
    let config = shipped_config();
    let at = |needle: &str| {
        config
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"))
    };
    let keygate = at(Adapter::current().filter_type());
    let ratelimit = at("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit");
    let buffer = at("envoy.extensions.filters.http.buffer.v3.Buffer\n");
    let router = at("envoy.extensions.filters.http.router.v3.Router");
    assert!(keygate < ratelimit && ratelimit < buffer && buffer < router);
}

/// The Istio EnvoyFilter maps Envoy's refusals exactly as envoy/envoy.yaml
/// does (the same `local_reply_config`, line for line).
#[test]
fn istio_maps_refusals_as_the_shipped_config() {
    let istio = read_config("envoy/istio/local-reply.yaml");
    let shipped = read_config("envoy/envoy.yaml");
    let (ours, theirs) = (local_reply_lines(&shipped), local_reply_lines(&istio));
    println!("local_reply_config: {} lines", ours.len());
    assert!(ours.len() > 20, "no local_reply_config in envoy/envoy.yaml");
    assert_eq!(
        ours, theirs,
        "envoy/istio/local-reply.yaml differs from envoy/envoy.yaml"
    );
}

/// The Istio EnvoyFilter limits rates exactly as envoy/envoy.yaml does (the
/// same `local_ratelimit`, line for line: per-key buckets, the anonymous
/// budget), and in both the sidecar and the shipped configs keyed requests
/// never spend the default bucket.
#[test]
fn istio_limits_rates_as_the_shipped_config() {
    let istio = read_config("envoy/istio/rate-limit.yaml");
    let shipped = read_config("envoy/envoy.yaml");
    let (ours, theirs) = (rate_limit_lines(&shipped), rate_limit_lines(&istio));
    println!("local_ratelimit: {} lines", ours.len());
    assert!(
        ours.contains(&"always_consume_default_token_bucket: false"),
        "{ours:#?}"
    );
    assert_eq!(
        ours, theirs,
        "envoy/istio/rate-limit.yaml differs from envoy/envoy.yaml"
    );
}

/// Both adapters' configs map Envoy's refusals and limit rates the same way.
#[test]
fn the_native_config_maps_refusals_as_the_wasm_config() {
    if !only_on(Adapter::Native, "compares envoy/envoy-native.yaml") {
        return;
    }
    let wasm = read_config(Adapter::Wasm.config_file());
    let native = read_config(Adapter::Native.config_file());
    let (ours, theirs) = (local_reply_lines(&wasm), local_reply_lines(&native));
    println!("local_reply_config: {} lines", theirs.len());
    assert_eq!(
        ours, theirs,
        "envoy/envoy-native.yaml maps refusals differently from envoy/envoy.yaml"
    );
    assert_eq!(
        rate_limit_lines(&wasm),
        rate_limit_lines(&native),
        "envoy/envoy-native.yaml limits rates differently from envoy/envoy.yaml"
    );
}

/// Every HTTP connection manager of the shipped Envoy configs and of the
/// Istio merge refuses header names with `_` (SPEC §16).
#[test]
fn every_connection_manager_rejects_underscored_header_names() {
    const MANAGER: &str =
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
    const REJECT: &str = "headers_with_underscores_action: REJECT_REQUEST";
    for file in [
        "envoy/envoy.yaml",
        "envoy/envoy-native.yaml",
        COMPOSE_CONFIG,
        "envoy/istio/local-reply.yaml",
    ] {
        let text = read_config(file);
        let managers = text.matches(MANAGER).count();
        println!("{file}: {managers} connection managers");
        assert!(managers > 0, "{file}: no connection manager");
        assert_eq!(text.matches(REJECT).count(), managers, "{file}");
    }
}

/// The lines of the `local_reply_config:` block of a YAML text (see [`block`]).
fn local_reply_lines(text: &str) -> Vec<&str> {
    block(
        text.lines()
            .skip_while(|line| line.trim() != "local_reply_config:"),
    )
}

/// The lines of the `typed_config:` block of the local_ratelimit filter of
/// a YAML text (see [`block`]).
fn rate_limit_lines(text: &str) -> Vec<&str> {
    let mut lines = text
        .lines()
        .skip_while(|line| !line.ends_with("name: envoy.filters.http.local_ratelimit"));
    lines.next();
    block(lines)
}

/// The block that `lines` starts with (its first line and every more
/// indented one after it), unindented, without the YAML anchor that shares
/// the local reply mappers with the operator listener.
fn block<'t>(mut lines: impl Iterator<Item = &'t str>) -> Vec<&'t str> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let Some(first) = lines.next() else {
        return Vec::new();
    };
    lines
        .take_while(|line| line.trim().is_empty() || indent(line) > indent(first))
        .map(|line| line.trim().trim_end_matches(" &json_refusals"))
        .filter(|line| !line.is_empty())
        .collect()
}

/// A crashed VM is reloaded, never skipped (FAIL_OPEN would let everyone in).
#[test]
fn filter_fails_closed() {
    if !only_on(
        Adapter::Wasm,
        "a dynamic module has no VM and no failure_policy; native/ catches panics at the ABI boundary",
    ) {
        return;
    }
    let config = shipped_config();
    assert!(config.contains("failure_policy: FAIL_RELOAD"));
    assert!(!config.contains("failure_policy: FAIL_OPEN"));
}

/// Without the feed token in its environment, Envoy refuses the shipped
/// config at start-up: the filter's configuration error names
/// `feed.token_env` and the variable, and Envoy exits (SPEC §7). An empty
/// variable is refused the same way.
#[test]
fn envoy_refuses_the_config_without_the_feed_token() {
    let dir = tempfile::tempdir().unwrap();
    let template = shipped_config();
    let ports = keygate_e2e::Ports {
        envoy: free_port(),
        operator: free_port(),
        admin: free_port(),
        control_plane: free_port(),
        upstream: free_port(),
    };
    let config = dir.path().join("envoy.yaml");
    let adapter = Adapter::current();
    std::fs::write(
        &config,
        render_adapter_config(adapter, &template, ports, &[]),
    )
    .unwrap();
    for (case, value, says) in [
        ("unset", None, "is not set"),
        ("empty", Some(""), "is empty"),
    ] {
        let mut command = Command::new(envoy_bin());
        command.envs(adapter.envoy_env());
        command.arg("-c").arg(&config).args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ]);
        match value {
            Some(value) => command.env(FEED_TOKEN_ENV, value),
            None => command.env_remove(FEED_TOKEN_ENV),
        };
        let start = Instant::now();
        let log_path = dir.path().join(format!("{case}.log"));
        let status = run_with_timeout(command, &log_path, Duration::from_secs(30));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let error = log
            .lines()
            .find(|line| line.contains("feed.token_env"))
            .unwrap_or("");
        println!(
            "{case}: Envoy exited with {} after {:?}; {error}",
            status,
            start.elapsed()
        );
        assert!(
            !status.success(),
            "{case}: Envoy ran without a feed token:\n{log}"
        );
        assert!(
            error.contains(FEED_TOKEN_ENV) && error.contains(says),
            "{case}: no error naming feed.token_env:\n{log}"
        );
        assert!(
            log.contains(adapter.config_refused_message()),
            "{case}: Envoy did not refuse the filter:\n{log}"
        );
    }
}

/// Runs `command` (its output to `log`) to its end, killing it after `limit`.
fn run_with_timeout(
    mut command: Command,
    log: &std::path::Path,
    limit: Duration,
) -> std::process::ExitStatus {
    let out = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

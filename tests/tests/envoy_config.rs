//! The shipped `envoy/envoy.yaml` as Envoy 1.40 sees it (SPEC §7, §8, §9).

use keygate_e2e::{envoy_bin, repo_root, wasm_path};
use std::process::Command;

fn shipped_config() -> String {
    std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap()
}

#[test]
fn envoy_is_1_40() {
    let out = Command::new(envoy_bin()).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/1.40."), "not Envoy 1.40: {text}");
}

/// `envoy --mode validate` on the very file `make run` uses, from the
/// repository root (the wasm path in it is relative), loading the real wasm.
#[test]
fn shipped_config_validates_with_the_real_wasm() {
    assert!(wasm_path().is_file());
    let out = Command::new(envoy_bin())
        .current_dir(repo_root())
        .args([
            "--mode",
            "validate",
            "-c",
            "envoy/envoy.yaml",
            "--disable-hot-restart",
        ])
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && log.contains("OK"),
        "validate failed:\n{log}"
    );
}

/// Authentication runs before rate limiting (which keys on the headers the
/// filter sets), and the router comes last.
#[test]
fn filter_order_is_keygate_ratelimit_router() {
    let config = shipped_config();
    let at = |needle: &str| {
        config
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"))
    };
    let wasm = at("envoy.extensions.filters.http.wasm.v3.Wasm");
    let ratelimit = at("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit");
    let router = at("envoy.extensions.filters.http.router.v3.Router");
    assert!(wasm < ratelimit && ratelimit < router);
}

/// A crashed VM is reloaded, never skipped (FAIL_OPEN would let everyone in).
#[test]
fn filter_fails_closed() {
    let config = shipped_config();
    assert!(config.contains("failure_policy: FAIL_RELOAD"));
    assert!(!config.contains("failure_policy: FAIL_OPEN"));
}

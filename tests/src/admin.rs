//! The control plane's admin CLI (`keygate-control-plane tenant …`, `key …`)
//! on a stack's database, as an operator runs it next to the server.

use crate::paths::release_bin;
use crate::Stack;
use serde_json::Value;
use std::process::Command;

/// Runs `keygate-control-plane --database <the stack's> <args>`; asserts
/// success and returns the JSON it printed.
pub fn admin_command(stack: &Stack, args: &[&str]) -> Value {
    let out = Command::new(release_bin("keygate-control-plane"))
        .arg("--database")
        .arg(stack.database_arg())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run the admin CLI: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {:?}", out.stdout))
}

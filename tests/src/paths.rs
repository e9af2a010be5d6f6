//! Where the harness finds the repository, the built artifacts and Envoy.

use std::path::{Path, PathBuf};

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Cargo's target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// The release build of the filter.
pub fn wasm_path() -> PathBuf {
    built(
        target_dir().join("wasm32-wasip1/release/keygate_filter.wasm"),
        "cargo build --release -p keygate-filter --target wasm32-wasip1",
    )
}

/// A release binary of this workspace.
pub fn release_bin(name: &str) -> PathBuf {
    built(
        target_dir().join("release").join(name),
        &format!("cargo build --release -p {name}"),
    )
}

/// The Envoy binary: `$ENVOY_BIN`, else `envoy` on the PATH.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("envoy"))
}

/// `path`, failing with how to build it if it is missing.
pub(crate) fn built(path: PathBuf, how: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is missing: run `make test` (or `{how}`) first",
        path.display()
    );
    path
}

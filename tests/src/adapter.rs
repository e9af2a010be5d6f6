//! Which keygate adapter the suite runs against: `KEYGATE_ADAPTER=wasm`
//! (default: the proxy-wasm filter, `envoy/envoy.yaml`) or `native` (the
//! Envoy dynamic module, `envoy/envoy-native.yaml`).
//!
//! Everything that differs between the two lives here: the shipped config,
//! the built artifact and how Envoy finds it, the prefix of the filter's
//! stats, and the tests that only make sense for one of them ([`only_on`]).

use crate::paths::{built, target_dir};
use std::path::{Path, PathBuf};

/// One of the two ways keygate runs inside Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// The proxy-wasm filter (`wasm/`, V8).
    Wasm,
    /// The Envoy dynamic module (`native/`, a `.so`).
    Native,
}

/// The variable of Envoy's environment a dynamic module is looked up in
/// (`lib<name>.so` in that directory).
pub const MODULE_SEARCH_PATH_ENV: &str = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH";

/// The file name of the native module.
const NATIVE_MODULE: &str = "libkeygate_native.so";

impl Adapter {
    /// `$KEYGATE_ADAPTER` (`wasm` unless set); anything else fails loudly.
    pub fn current() -> Adapter {
        match std::env::var("KEYGATE_ADAPTER").as_deref() {
            Err(_) | Ok("") | Ok("wasm") => Adapter::Wasm,
            Ok("native") => Adapter::Native,
            Ok(other) => panic!("KEYGATE_ADAPTER={other:?}: expected wasm or native"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Adapter::Wasm => "wasm",
            Adapter::Native => "native",
        }
    }

    /// The shipped Envoy config of this adapter, relative to the repository root.
    pub fn config_file(self) -> &'static str {
        match self {
            Adapter::Wasm => "envoy/envoy.yaml",
            Adapter::Native => "envoy/envoy-native.yaml",
        }
    }

    /// The built artifact Envoy loads (fails with how to build it if missing).
    pub fn artifact(self) -> PathBuf {
        match self {
            Adapter::Wasm => crate::paths::wasm_path(),
            Adapter::Native => native_module_path(),
        }
    }

    /// Text replacements that point the shipped config at the built artifact.
    pub fn artifact_replacements(self) -> Vec<(String, String)> {
        match self {
            Adapter::Wasm => vec![wasm_replacement(&self.artifact())],
            // The native config names the module; Envoy finds it through its
            // environment ([`Adapter::envoy_env`]).
            Adapter::Native => Vec::new(),
        }
    }

    /// Variables Envoy needs in its environment to load the artifact.
    pub fn envoy_env(self) -> Vec<(String, String)> {
        match self {
            Adapter::Wasm => Vec::new(),
            Adapter::Native => {
                let module = self.artifact();
                let dir = module.parent().unwrap_or(Path::new("."));
                vec![(
                    MODULE_SEARCH_PATH_ENV.to_string(),
                    dir.display().to_string(),
                )]
            }
        }
    }

    /// The `@type` of the keygate filter in the shipped config (and of its
    /// ECDS resource).
    pub fn filter_type(self) -> &'static str {
        match self {
            Adapter::Wasm => "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            Adapter::Native => {
                "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
            }
        }
    }

    /// What Envoy logs when the filter refuses its configuration.
    pub fn config_refused_message(self) -> &'static str {
        match self {
            Adapter::Wasm => "Unable to create Wasm plugin keygate",
            Adapter::Native => "Failed to initialize dynamic module",
        }
    }

    /// What names the module in Envoy's config dump.
    pub fn name_in_config_dump(self) -> &'static str {
        match self {
            Adapter::Wasm => "keygate_filter.wasm",
            Adapter::Native => "keygate_native",
        }
    }

    /// Envoy's `--component-log-level` for the filter's own logs.
    pub fn log_component(self) -> &'static str {
        match self {
            Adapter::Wasm => "wasm:debug",
            Adapter::Native => "dynamic_modules:debug",
        }
    }

    /// The prefix Envoy puts before the filter's own stats.
    pub fn stats_prefix(self) -> &'static str {
        match self {
            Adapter::Wasm => "wasmcustom",
            Adapter::Native => "dynamicmodulescustom",
        }
    }

    /// The full `/stats` name of the filter's stat `name` (e.g. `keygate_allowed`).
    pub fn stat(self, name: &str) -> String {
        format!("{}.{name}", self.stats_prefix())
    }
}

/// The replacement that points `envoy/envoy.yaml` at the wasm `path`.
pub fn wasm_replacement(path: &Path) -> (String, String) {
    (
        "filename: target/wasm32-wasip1/release/keygate_filter.wasm".to_string(),
        format!("filename: {}", path.display()),
    )
}

/// The native module: `target/native/libkeygate_native.so` (profile
/// `native`, whose panics unwind), or `target/release/…` if only that one is built.
pub fn native_module_path() -> PathBuf {
    let native = target_dir().join("native").join(NATIVE_MODULE);
    let release = target_dir().join("release").join(NATIVE_MODULE);
    let found = if native.is_file() || !release.is_file() {
        native
    } else {
        release
    };
    built(found, "cargo build --profile native -p keygate-native")
}

/// `true` when the suite runs against `adapter`; otherwise prints why the
/// calling test does not apply and returns `false` (the test then returns).
pub fn only_on(adapter: Adapter, why: &str) -> bool {
    let current = Adapter::current();
    if current == adapter {
        return true;
    }
    println!(
        "SKIPPED for the {} adapter ({} only): {why}",
        current.name(),
        adapter.name()
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_names_follow_the_adapter() {
        assert_eq!(
            Adapter::Wasm.stat("keygate_allowed"),
            "wasmcustom.keygate_allowed"
        );
        assert_eq!(
            Adapter::Native.stat("keygate_allowed"),
            "dynamicmodulescustom.keygate_allowed"
        );
    }
}

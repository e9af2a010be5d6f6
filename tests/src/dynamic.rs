//! Envoy configured from files, as an xDS server would feed it.
//!
//! [`lds`] moves the listeners of the rendered config to `lds.yaml`
//! (`dynamic_resources.lds_config.path_config_source`); [`ecds`] keeps the
//! listener static and moves the keygate filter to `ecds.yaml` (the http
//! filter's `config_discovery`, the way Istio delivers a `WasmPlugin`). Use
//! either as [`crate::StackOptions::envoy_config`]. [`replace_file`] updates
//! such a file the way Envoy expects: written under a temporary name, then
//! renamed over the watched one.

use std::path::{Path, PathBuf};

/// The listener resource file in a stack's directory.
pub fn lds_path(dir: &Path) -> PathBuf {
    dir.join("lds.yaml")
}

/// The filter resource file in a stack's directory.
pub fn ecds_path(dir: &Path) -> PathBuf {
    dir.join("ecds.yaml")
}

const LISTENERS: &str = "  listeners:\n";
const CLUSTERS: &str = "  clusters:\n";
const FILTER: &str = "          - name: keygate\n            typed_config:\n";
const NEXT_FILTER: &str = "          - name: envoy.filters.http.local_ratelimit\n";
/// Dynamic resources need the node to name itself.
const NODE: &str = "\nnode: { id: keygate-e2e, cluster: keygate-e2e }\n";

/// Text between `start` (excluded) and `end` (excluded), and the rest.
fn cut<'t>(text: &'t str, start: &str, end: &str) -> (&'t str, &'t str, &'t str) {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("the Envoy config has no {start:?}"));
    let body = from + start.len();
    let to = body
        + text[body..]
            .find(end)
            .unwrap_or_else(|| panic!("the Envoy config has no {end:?} after {start:?}"));
    (&text[..from], &text[body..to], &text[to..])
}

/// A file-based config source for `path`.
fn source(path: &Path, indent: &str) -> String {
    format!(
        "{indent}path_config_source: {{ path: {} }}\n{indent}resource_api_version: V3\n",
        path.display()
    )
}

/// A listener's first line in `static_resources.listeners`.
const LISTENER: &str = "\n  - name: ";

/// The rendered config with its listeners served by LDS from `lds.yaml`.
pub fn lds(config: String, dir: &Path) -> String {
    let (before, listeners, after) = cut(&config, LISTENERS, CLUSTERS);
    let resources = format!("\n{listeners}").replace(
        LISTENER,
        "\n  - \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n    name: ",
    );
    replace_file(&lds_path(dir), &format!("resources:{resources}"));
    let lds_config = source(&lds_path(dir), "    ");
    format!("{before}{after}{NODE}dynamic_resources:\n  lds_config:\n{lds_config}")
}

/// The rendered config with its keygate filter served by ECDS from `ecds.yaml`.
pub fn ecds(config: String, dir: &Path) -> String {
    let (before, filter, after) = cut(&config, FILTER, NEXT_FILTER);
    let typed_config: String = filter
        .lines()
        .map(|line| format!("    {}\n", line.get(14..).unwrap_or_default()))
        .collect();
    replace_file(
        &ecds_path(dir),
        &format!(
            "resources:\n- \"@type\": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig\n  name: keygate\n  typed_config:\n{typed_config}"
        ),
    );
    let config_source = source(&ecds_path(dir), "                ");
    let filter_type = crate::Adapter::current().filter_type();
    format!(
        "{NODE}{before}          - name: keygate\n            config_discovery:\n              config_source:\n{config_source}              type_urls: [\"{filter_type}\"]\n{after}"
    )
}

/// Replaces `path` with `text` at once: written next to it, then renamed.
pub fn replace_file(path: &Path, text: &str) {
    let temp = path.with_extension("yaml.tmp");
    std::fs::write(&temp, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", temp.display()));
    std::fs::rename(&temp, path).unwrap_or_else(|e| {
        panic!(
            "cannot rename {} over {}: {e}",
            temp.display(),
            path.display()
        )
    });
}

/// The text of a resource file.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> String {
        let template =
            std::fs::read_to_string(crate::repo_root().join("envoy/envoy.yaml")).unwrap();
        let ports = crate::config::Ports {
            envoy: 1,
            operator: 5,
            admin: 2,
            control_plane: 3,
            upstream: 4,
        };
        crate::render_envoy_config(&template, ports, Path::new("/x.wasm"), &[])
    }

    #[test]
    fn lds_moves_the_listeners_to_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = lds(rendered(), dir.path());
        assert!(!bootstrap.contains("listeners:"));
        assert!(bootstrap.contains("lds_config:"));
        assert!(bootstrap.contains("  clusters:\n"));
        let listeners = read(&lds_path(dir.path()));
        assert!(listeners.starts_with("resources:\n  - \"@type\""));
        let typed =
            "\n  - \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n    name: ";
        assert_eq!(listeners.matches(typed).count(), 2, "{listeners}");
        assert!(listeners.contains("vm_id: keygate\n"));
    }

    #[test]
    fn ecds_moves_the_filter_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = ecds(rendered(), dir.path());
        assert!(!bootstrap.contains("vm_id"));
        assert!(bootstrap.contains("config_discovery:"));
        assert!(bootstrap.contains(NEXT_FILTER));
        let filter = read(&ecds_path(dir.path()));
        assert!(filter.contains(
            "\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n"
        ));
        assert!(filter.contains("\n        vm_id: keygate\n"));
    }
}

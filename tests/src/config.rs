//! Turns the shipped `envoy/envoy.yaml` (or `envoy/envoy-native.yaml`)
//! into a test config.
//!
//! The test runs the very file a user runs, with only ports, the wasm path
//! and any knob a test names replaced (the feed token is not in it: Envoy
//! gets it in its environment). Each replaced text
//! must occur exactly once, so a drifting template fails loudly.

use crate::adapter::Adapter;
use std::path::Path;

/// Ports of one stack.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Envoy's public listener.
    pub envoy: u16,
    /// Envoy's operator API listener.
    pub operator: u16,
    pub admin: u16,
    pub control_plane: u16,
    pub upstream: u16,
}

/// The shipped wasm config with `ports`, `wasm` and `extra`
/// (`(from, to)` text replacements) applied.
pub fn render_envoy_config(
    template: &str,
    ports: Ports,
    wasm: &Path,
    extra: &[(String, String)],
) -> String {
    let mut replacements = vec![crate::adapter::wasm_replacement(wasm)];
    replacements.extend(extra.iter().cloned());
    render_with(template, ports, &replacements)
}

/// The shipped config of `adapter` with `ports`, the built artifact and
/// `extra` applied.
pub fn render_adapter_config(
    adapter: Adapter,
    template: &str,
    ports: Ports,
    extra: &[(String, String)],
) -> String {
    let mut replacements = adapter.artifact_replacements();
    replacements.extend(extra.iter().cloned());
    render_with(template, ports, &replacements)
}

/// `template` with the five ports and `extra` replaced.
fn render_with(template: &str, ports: Ports, extra: &[(String, String)]) -> String {
    let mut replacements = vec![
        (
            "port_value: 10000".to_string(),
            format!("port_value: {}", ports.envoy),
        ),
        (
            "port_value: 10001".to_string(),
            format!("port_value: {}", ports.operator),
        ),
        (
            "port_value: 9901".to_string(),
            format!("port_value: {}", ports.admin),
        ),
        (
            "port_value: 8080".to_string(),
            format!("port_value: {}", ports.control_plane),
        ),
        (
            "port_value: 8081".to_string(),
            format!("port_value: {}", ports.upstream),
        ),
    ];
    replacements.extend(extra.iter().cloned());
    let template = fast_usage_flush(template);
    replacements
        .iter()
        .fold(template, |text, (from, to)| replace_once(&text, from, to))
}

/// The usage flush interval of every test config, in seconds (the shipped
/// configs say 10): counts reach the control plane within about a second.
pub const TEST_FLUSH_SECONDS: u32 = 1;
/// The shipped configs' usage flush setting, as written in their JSON.
pub const SHIPPED_FLUSH: &str = r#""flush_seconds": 10"#;

/// `template` with the usage flush at [`TEST_FLUSH_SECONDS`] (when it has one).
fn fast_usage_flush(template: &str) -> String {
    template.replacen(
        SHIPPED_FLUSH,
        &format!(r#""flush_seconds": {TEST_FLUSH_SECONDS}"#),
        1,
    )
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    let count = text.matches(from).count();
    assert_eq!(
        count, 1,
        "the Envoy config should contain {from:?} exactly once, found {count}"
    );
    text.replacen(from, to, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_port_and_the_wasm_path() {
        let template =
            std::fs::read_to_string(crate::repo_root().join("envoy/envoy.yaml")).unwrap();
        let ports = Ports {
            envoy: 1,
            operator: 5,
            admin: 2,
            control_plane: 3,
            upstream: 4,
        };
        let out = render_envoy_config(&template, ports, Path::new("/x.wasm"), &[]);
        for port in ["10000", "10001", "9901", "8080", "8081"] {
            assert!(!out.contains(&format!("port_value: {port}")), "{port} left");
        }
        assert!(out.contains("filename: /x.wasm"));
    }

    #[test]
    #[should_panic(expected = "exactly once")]
    fn a_missing_knob_fails_loudly() {
        replace_once("a", "b", "c");
    }
}

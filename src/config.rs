//! The filter's JSON configuration (the wasm plugin `configuration`).
//!
//! Serde types with defaults; unknown fields are refused. Every error names
//! the field (`feed.token_env`, `rules[2].any_of[0]`, …) so a typo is easy to
//! find. The feed token itself is never in the JSON: it comes from an
//! environment variable of the proxy process (an inline token would show in
//! Envoy's config dump and in an Istio `WasmPlugin`).

use crate::errors::ErrorFormat;
use crate::key::{validate_prefix, KeyFormat, DEFAULT_PREFIX};
use crate::rules::Rule;
use crate::scopes;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// The variable `feed.token_env` names unless configured otherwise.
pub const DEFAULT_TOKEN_ENV: &str = "KEYGATE_FEED_TOKEN";

/// The whole filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// First part of every key (`rk` in `rk_live_…`).
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// `prefix_env_secret` (`rk_live_…`, default) or `prefix_secret`
    /// (`raeh_<secret><check>`, every key `live`).
    #[serde(default)]
    pub key_format: KeyFormat,
    /// Body shape of refusals: `keygate` (default), `flat` or `openai`.
    #[serde(default)]
    pub error_format: ErrorFormat,
    /// Keep the credential on requests to the upstream (default: strip it).
    #[serde(default)]
    pub forward_key: bool,
    /// Where and how to fetch the key table.
    pub feed: FeedConfig,
    /// Ordered route rules; a path no rule matches needs any valid key.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Accept `;` parameters in path segments (removed before the rules
    /// are matched); by default a path with one is refused (400).
    #[serde(default)]
    pub allow_path_parameters: bool,
    /// Counting per key and minute, and its reports (SPEC §11).
    #[serde(default)]
    pub usage: UsageConfig,
}

/// Usage counting and its reports to the control plane (over the feed's
/// cluster, authority and token; docs/usage-protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Count and report at all (the cost header is removed either way).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A batch of counts goes to the control plane this often.
    #[serde(default = "default_flush")]
    pub flush_seconds: u32,
    /// The upstream's response header with the request's cost in
    /// micro-units; never passed on to the client.
    #[serde(default = "default_cost_header")]
    pub cost_header: String,
    /// Path of the ingest endpoint.
    #[serde(default = "default_usage_path")]
    pub path: String,
    /// Batches kept for retry while the control plane does not acknowledge
    /// them; past this the oldest is dropped (and counted).
    #[serde(default = "default_max_pending")]
    pub max_pending_batches: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            enabled: true,
            flush_seconds: default_flush(),
            cost_header: default_cost_header(),
            path: default_usage_path(),
            max_pending_batches: default_max_pending(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_flush() -> u32 {
    10
}
fn default_cost_header() -> String {
    "x-keygate-cost".into()
}
fn default_usage_path() -> String {
    "/v1/usage".into()
}
fn default_max_pending() -> u32 {
    64
}

impl UsageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=3600).contains(&self.flush_seconds) {
            return Err(error("usage.flush_seconds", "must be between 1 and 3600"));
        }
        let header_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
        if self.cost_header.is_empty() || !self.cost_header.bytes().all(header_char) {
            return Err(error(
                "usage.cost_header",
                "must be a lowercase header name (a-z, 0-9, -)",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(error("usage.path", "must start with /"));
        }
        if !(1..=10_000).contains(&self.max_pending_batches) {
            return Err(error(
                "usage.max_pending_batches",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}

/// The key table feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Envoy cluster of the control plane.
    pub cluster: String,
    /// `:authority` sent to the control plane.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// Path of the feed endpoint.
    #[serde(default = "default_feed_path")]
    pub path: String,
    /// Environment variable of the proxy process that holds the bearer
    /// token shared with the control plane (under Envoy it must be listed in
    /// `vm_config.environment_variables.host_env_keys`).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// An inline `token`: refused, whatever its value.
    #[serde(default, rename = "token")]
    inline_token: Option<Present>,
    /// The token read from `token_env` by [`FilterConfig::from_json_and_env`].
    #[serde(skip)]
    pub token: FeedToken,
    /// Long-poll: seconds the control plane may hold an unchanged request.
    #[serde(default = "default_wait")]
    pub wait_seconds: u32,
    /// Pause after a failed fetch.
    #[serde(default = "default_retry")]
    pub retry_ms: u32,
    /// How often each worker checks for a new table version in shared memory.
    #[serde(default = "default_sync")]
    pub sync_interval_ms: u32,
    /// How long the last good table keeps serving without reaching the control plane.
    #[serde(default = "default_staleness")]
    pub max_staleness_seconds: u32,
    /// Snapshots up to this size stay in Envoy's shared data, so a VM that
    /// starts later (a config reload, a reloaded VM) loads its table at once;
    /// bigger ones leave it once every worker holds them (a later VM waits
    /// for a fresh snapshot from the control plane).
    #[serde(default = "default_keep_snapshot")]
    pub keep_snapshot_bytes: u64,
    /// Before this VM's first table, a request that needs a key waits up to
    /// this long for it (then 503); 0 answers 503 at once.
    #[serde(default = "default_first_table_wait")]
    pub first_table_wait_ms: u32,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}
fn default_authority() -> String {
    "keygate-control-plane".into()
}
fn default_feed_path() -> String {
    "/v1/key-table".into()
}
fn default_token_env() -> String {
    DEFAULT_TOKEN_ENV.into()
}
fn default_wait() -> u32 {
    20
}
fn default_retry() -> u32 {
    1000
}
fn default_sync() -> u32 {
    50
}
fn default_staleness() -> u32 {
    300
}
fn default_keep_snapshot() -> u64 {
    16 << 20
}
fn default_first_table_wait() -> u32 {
    2000
}

/// The feed's bearer token. It is never printed: `Debug` hides it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FeedToken(String);

impl FeedToken {
    /// The `authorization` header value of a feed request.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The token in the variable `name`, as `env` reads it; the error names
    /// `feed.token_env` and the variable, never the value.
    fn from_env(
        name: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<FeedToken, ConfigError> {
        let at = |message: String| error("feed.token_env", message);
        let token = env(name).ok_or_else(|| {
            at(format!(
                "the environment variable {name} is not set for the filter: set it in the Envoy \
                 process and list it in vm_config.environment_variables.host_env_keys"
            ))
        })?;
        if token.is_empty() {
            return Err(at(format!("the environment variable {name} is empty")));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(at(format!(
                "the environment variable {name} holds bytes a header cannot carry (only visible ASCII, no spaces or newlines)"
            )));
        }
        Ok(FeedToken(token))
    }
}

impl fmt::Debug for FeedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FeedToken(<hidden>)")
    }
}

/// A field whose presence is the error (its value is skipped unread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Present;

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Present, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Present)
    }
}

/// A configuration error: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "invalid keygate configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid keygate configuration at {}: {}",
                self.field, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

fn error(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl FilterConfig {
    /// Parses and validates the JSON configuration, then reads the feed
    /// token from the process environment (`feed.token_env`).
    pub fn from_json_and_env(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        FilterConfig::from_json_with_env(bytes, |name| std::env::var(name).ok())
    }

    /// [`FilterConfig::from_json`], then the feed token from `env` (a
    /// variable's value by name).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<FilterConfig, ConfigError> {
        let mut config = FilterConfig::from_json(bytes)?;
        config.feed.token = FeedToken::from_env(&config.feed.token_env, env)?;
        Ok(config)
    }

    /// Parses and validates the JSON configuration; the feed token is left
    /// empty (see [`FilterConfig::from_json_and_env`]).
    pub fn from_json(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let mut config: FilterConfig = serde_path_to_error::deserialize(de)
            .map_err(|e| error(e.path().to_string(), e.inner().to_string()))?;
        config.validate()?;
        for rule in &mut config.rules {
            rule.methods
                .iter_mut()
                .for_each(|m| m.make_ascii_uppercase());
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        validate_prefix(&self.key_prefix).map_err(|e| error("key_prefix", e.to_string()))?;
        self.feed.validate()?;
        self.usage.validate()?;
        for (i, rule) in self.rules.iter().enumerate() {
            validate_rule(i, rule)?;
        }
        Ok(())
    }
}

impl FeedConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.inline_token.is_some() {
            return Err(error(
                "feed.token",
                format!(
                    "an inline token would show in Envoy's config dump: remove it, put the token \
                     in an environment variable of the Envoy process and name that variable in \
                     feed.token_env (default {DEFAULT_TOKEN_ENV})"
                ),
            ));
        }
        let non_empty = [
            ("feed.cluster", &self.cluster),
            ("feed.authority", &self.authority),
            ("feed.token_env", &self.token_env),
        ];
        for (field, value) in non_empty {
            if value.trim().is_empty() {
                return Err(error(field, "must not be empty"));
            }
        }
        if !self.path.starts_with('/') {
            return Err(error("feed.path", "must start with /"));
        }
        if self.wait_seconds > 60 {
            return Err(error("feed.wait_seconds", "must be at most 60"));
        }
        if !(10..=10_000).contains(&self.sync_interval_ms) {
            return Err(error(
                "feed.sync_interval_ms",
                "must be between 10 and 10000",
            ));
        }
        if self.retry_ms < 10 {
            return Err(error("feed.retry_ms", "must be at least 10"));
        }
        if self.first_table_wait_ms > 30_000 {
            return Err(error(
                "feed.first_table_wait_ms",
                "must be between 0 and 30000",
            ));
        }
        Ok(())
    }
}

fn validate_rule(i: usize, rule: &Rule) -> Result<(), ConfigError> {
    let at = |field: &str| format!("rules[{i}].{field}");
    if !rule.path_prefix.starts_with('/') {
        return Err(error(at("path_prefix"), "must start with /"));
    }
    if rule.public && !rule.any_of.is_empty() {
        return Err(error(at("any_of"), "a public rule needs no scopes"));
    }
    for (j, scope) in rule.any_of.iter().enumerate() {
        if !scopes::is_valid_name(scope) {
            return Err(error(
                at(&format!("any_of[{j}]")),
                format!("{scope:?} is not a scope like resource:action"),
            ));
        }
    }
    for (j, method) in rule.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|c| c.is_ascii_alphabetic()) {
            return Err(error(
                at(&format!("methods[{j}]")),
                format!("{method:?} is not an HTTP method"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"feed":{"cluster":"cp"}}"#;

    #[test]
    fn defaults() {
        let c = FilterConfig::from_json(MINIMAL.as_bytes()).unwrap();
        assert_eq!(c.key_prefix, "rk");
        assert_eq!(c.key_format, KeyFormat::PrefixEnvSecret);
        assert_eq!(c.error_format, ErrorFormat::Keygate);
        assert!(!c.forward_key);
        assert_eq!(c.feed.path, "/v1/key-table");
        assert_eq!(c.feed.wait_seconds, 20);
        assert_eq!(c.feed.first_table_wait_ms, 2000);
        assert_eq!(c.feed.token_env, "KEYGATE_FEED_TOKEN");
        assert!(c.rules.is_empty());
        assert!(!c.allow_path_parameters);
        assert_eq!(c.usage, UsageConfig::default());
        assert_eq!(c.usage.flush_seconds, 10);
        assert_eq!(c.usage.cost_header, "x-keygate-cost");
    }

    #[test]
    fn usage_settings_are_checked() {
        let json = r#"{"feed":{"cluster":"cp"},"usage":{"flush_seconds":1,"cost_header":"x-cost","enabled":false}}"#;
        let c = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!((c.usage.flush_seconds, c.usage.enabled), (1, false));
        assert_eq!(c.usage.cost_header, "x-cost");
        for (usage, field) in [
            (r#"{"flush_seconds":0}"#, "usage.flush_seconds"),
            (r#"{"cost_header":"X-Cost"}"#, "usage.cost_header"),
            (r#"{"path":"v1"}"#, "usage.path"),
            (r#"{"max_pending_batches":0}"#, "usage.max_pending_batches"),
            (r#"{"nope":1}"#, "usage.nope"),
        ] {
            let json = format!(r#"{{"feed":{{"cluster":"cp"}},"usage":{usage}}}"#);
            let e = FilterConfig::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{usage}: {e}");
        }
    }

    #[test]
    fn dialects() {
        let json =
            r#"{"feed":{"cluster":"cp"},"key_format":"prefix_secret","error_format":"openai"}"#;
        let c = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.key_format, KeyFormat::PrefixSecret);
        assert_eq!(c.error_format, ErrorFormat::Openai);
        for field in ["key_format", "error_format"] {
            let json = format!(r#"{{"feed":{{"cluster":"cp"}},"{field}":"nope"}}"#);
            let e = FilterConfig::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.message.contains("unknown variant"), "{e}");
        }
    }

    #[test]
    fn methods_are_uppercased() {
        let json = r#"{"feed":{"cluster":"cp"},"rules":[{"methods":["get"],"path_prefix":"/a"}]}"#;
        let c = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert_eq!(c.rules[0].methods, ["GET"]);
    }

    fn field_of(json: &str) -> String {
        FilterConfig::from_json(json.as_bytes()).unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"feed":{}}"#), "feed");
        assert_eq!(
            field_of(r#"{"feed":{"cluster":"cp","token_env":" "}}"#),
            "feed.token_env"
        );
        assert_eq!(
            field_of(r#"{"feed":{"cluster":"cp","wait_seconds":"x"}}"#),
            "feed.wait_seconds"
        );
        assert_eq!(
            field_of(r#"{"feed":{"cluster":"cp"},"key_prefix":"R_K"}"#),
            "key_prefix"
        );
        assert_eq!(
            field_of(
                r#"{"feed":{"cluster":"cp"},"rules":[{"path_prefix":"/a"},{"path_prefix":"b"}]}"#
            ),
            "rules[1].path_prefix"
        );
        assert_eq!(
            field_of(
                r#"{"feed":{"cluster":"cp"},"rules":[{"path_prefix":"/a","any_of":["nope"]}]}"#
            ),
            "rules[0].any_of[0]"
        );
        assert_eq!(
            field_of(r#"{"feed":{"cluster":"cp"},"rules":[{"path_prefix":"/a","publik":true}]}"#),
            "rules[0].publik"
        );
        assert_eq!(
            field_of(r#"{"feed":{"cluster":"cp","first_table_wait_ms":30001}}"#),
            "feed.first_table_wait_ms"
        );
        assert!(FilterConfig::from_json(b"not json").is_err());
    }

    #[test]
    fn error_message_mentions_field() {
        let e = FilterConfig::from_json(br#"{"feed":{"cluster":"cp","path":"x"}}"#).unwrap_err();
        assert!(e.to_string().contains("feed.path"), "{e}");
    }

    /// An inline token is refused whatever its type, and the error says what
    /// to use instead without repeating the value.
    #[test]
    fn an_inline_token_is_refused() {
        for value in [r#""s3cret-value""#, "42", r#"{"x":"s3cret-value"}"#] {
            let json = format!(r#"{{"feed":{{"cluster":"cp","token":{value}}}}}"#);
            let e = FilterConfig::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, "feed.token");
            let text = e.to_string();
            assert!(
                text.contains("feed.token_env") && text.contains("config dump"),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

    fn with_env(json: &str, value: Option<&str>) -> Result<FilterConfig, ConfigError> {
        FilterConfig::from_json_with_env(json.as_bytes(), |name| {
            assert_eq!(name, "FEED_SECRET");
            value.map(String::from)
        })
    }

    #[test]
    fn the_token_comes_from_the_named_variable() {
        let json = r#"{"feed":{"cluster":"cp","token_env":"FEED_SECRET"}}"#;
        let c = with_env(json, Some("t0k-en")).unwrap();
        assert_eq!(c.feed.token.authorization(), "Bearer t0k-en");
        assert!(
            !format!("{c:?}").contains("t0k-en"),
            "Debug shows the token"
        );
    }

    #[test]
    fn a_missing_or_unusable_token_is_a_config_error() {
        let json = r#"{"feed":{"cluster":"cp","token_env":"FEED_SECRET"}}"#;
        for (value, says) in [
            (None, "not set"),
            (Some(""), "empty"),
            (Some("a b\n"), "visible ASCII"),
        ] {
            let e = with_env(json, value).unwrap_err();
            assert_eq!(e.field, "feed.token_env");
            let text = e.to_string();
            assert!(
                text.contains("FEED_SECRET") && text.contains(says),
                "{text}"
            );
            assert!(!text.contains("a b"), "{text}");
        }
    }
}

//! Route rules (SPEC §5): ordered `methods + path prefix -> access`.
//!
//! The first rule whose methods and path prefix match decides what a request
//! needs: nothing (`public`), one of some scopes, or (no rule) any valid key.

use serde::Deserialize;

/// One rule of the filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// HTTP methods this rule applies to; empty = every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path prefix, matched on whole segments (`/a` matches `/a` and `/a/b`, not `/ab`).
    pub path_prefix: String,
    /// No key needed.
    #[serde(default)]
    pub public: bool,
    /// The key must hold one of these scopes; empty = any valid key.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// Keep the credential on the request for the upstream (overrides the global setting).
    #[serde(default)]
    pub forward_key: Option<bool>,
}

impl Rule {
    /// True when this rule covers `method` and `path` (query ignored).
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == method);
        method_ok && prefix_matches(&self.path_prefix, path_only(path))
    }
}

/// The path of a `:path`, without query or fragment.
pub fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// Segment-aware prefix match.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The first rule matching the request, if any.
pub fn find<'r>(rules: &'r [Rule], method: &str, path: &str) -> Option<&'r Rule> {
    rules.iter().find(|r| r.matches(method, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(methods: &[&str], prefix: &str) -> Rule {
        Rule {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path_prefix: prefix.into(),
            public: false,
            any_of: vec![],
            forward_key: None,
        }
    }

    #[test]
    fn segment_prefix() {
        let r = rule(&[], "/api/v1/memory");
        for yes in [
            "/api/v1/memory",
            "/api/v1/memory/1",
            "/api/v1/memory?x=1",
            "/api/v1/memory/",
        ] {
            assert!(r.matches("GET", yes), "{yes}");
        }
        for no in ["/api/v1/memoryx", "/api/v1/mem", "/", "/API/v1/memory"] {
            assert!(!r.matches("GET", no), "{no}");
        }
        assert!(rule(&[], "/").matches("GET", "/anything"));
    }

    #[test]
    fn methods_and_order() {
        let rules = [rule(&["GET", "HEAD"], "/m"), rule(&[], "/m")];
        assert_eq!(find(&rules, "GET", "/m/1"), rules.first());
        assert_eq!(find(&rules, "POST", "/m/1"), rules.get(1));
        assert_eq!(find(&rules, "POST", "/other"), None);
    }
}

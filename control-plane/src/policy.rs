//! What keys may be minted with: the key prefix and format, the allowed
//! scopes and the rate-limit tiers (the first tier is the default), checked
//! once at start.

use keygate::key::{self, KeyFormat};
use keygate::scopes;

/// Longest tier name.
const MAX_TIER_LEN: usize = 32;

/// The minting policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintPolicy {
    pub key_prefix: String,
    pub key_format: KeyFormat,
    pub scopes: Vec<String>,
    pub tiers: Vec<String>,
}

fn is_tier_name(tier: &str) -> bool {
    (1..=MAX_TIER_LEN).contains(&tier.len())
        && tier
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Trims, drops empty items and duplicates, keeping the order.
fn clean(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let item = item.trim();
        if !item.is_empty() && !out.iter().any(|o| o == item) {
            out.push(item.to_string());
        }
    }
    out
}

impl MintPolicy {
    /// Scopes `a:read a:write`, tiers `free pro`, prefix `rk` (unit tests).
    #[cfg(test)]
    pub fn example() -> MintPolicy {
        let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        let policy = MintPolicy::new(
            "rk",
            strings(&["a:read", "a:write"]),
            strings(&["free", "pro"]),
        );
        policy.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Checks the configuration; the error names the bad setting.
    pub fn new(
        key_prefix: &str,
        scopes: Vec<String>,
        tiers: Vec<String>,
    ) -> Result<MintPolicy, String> {
        key::validate_prefix(key_prefix).map_err(|e| format!("--key-prefix: {e}"))?;
        let scopes = clean(scopes);
        if scopes.is_empty() {
            return Err("--allowed-scopes: at least one scope is needed".into());
        }
        if let Some(bad) = scopes.iter().find(|s| !scopes::is_valid_name(s)) {
            return Err(format!(
                "--allowed-scopes: {bad:?} is not a scope name like resource:action"
            ));
        }
        let tiers = clean(tiers);
        if tiers.is_empty() {
            return Err("--tiers: at least one tier is needed".into());
        }
        if let Some(bad) = tiers.iter().find(|t| !is_tier_name(t)) {
            return Err(format!(
                "--tiers: {bad:?} is not a tier name (1-32 of a-z 0-9 _ -)"
            ));
        }
        Ok(MintPolicy {
            key_prefix: key_prefix.to_string(),
            key_format: KeyFormat::default(),
            scopes,
            tiers,
        })
    }

    /// The same policy minting keys in `format` (`--key-format`).
    pub fn with_key_format(self, format: KeyFormat) -> MintPolicy {
        MintPolicy {
            key_format: format,
            ..self
        }
    }

    /// The tier of keys that name none.
    pub fn default_tier(&self) -> &str {
        self.tiers.first().map_or("", String::as_str)
    }

    /// Every allowed scope, space-separated (a new tenant's first key).
    pub fn all_scopes(&self) -> String {
        self.scopes.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cleans_and_keeps_order() {
        let p = MintPolicy::new(
            "rk",
            strings(&["b:read", " a:read", "b:read", ""]),
            strings(&["pro", "free"]),
        )
        .unwrap();
        assert_eq!(p.scopes, strings(&["b:read", "a:read"]));
        assert_eq!(p.default_tier(), "pro");
        assert_eq!(p.all_scopes(), "b:read a:read");
    }

    #[test]
    fn names_the_bad_setting() {
        let ok_scopes = strings(&["a:read"]);
        let ok_tiers = strings(&["free"]);
        let err = |p: &str, s: &[&str], t: &[&str]| {
            MintPolicy::new(p, strings(s), strings(t)).unwrap_err()
        };
        assert!(err("RK", &["a:read"], &["free"]).starts_with("--key-prefix"));
        assert!(err("rk", &["nocolon"], &["free"]).starts_with("--allowed-scopes"));
        assert!(err("rk", &[], &["free"]).starts_with("--allowed-scopes"));
        assert!(err("rk", &["a:read"], &["Free"]).starts_with("--tiers"));
        assert!(err("rk", &["a:read"], &[]).starts_with("--tiers"));
        assert!(MintPolicy::new("rk", ok_scopes, ok_tiers).is_ok());
    }
}

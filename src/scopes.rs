//! Scopes (SPEC §5): what a key may do. `a:*` holds every `a:…` scope.

/// The scopes the control plane accepts unless configured otherwise.
pub const DEFAULT_SCOPES: [&str; 8] = [
    "memory:read",
    "memory:write",
    "users:read",
    "users:write",
    "conversations:read",
    "conversations:write",
    "tenant:read",
    "tenant:admin",
];

/// True when one held scope grants `required`: equal, or a `prefix:*` wildcard.
pub fn grants(held: &str, required: &str) -> bool {
    if held == required {
        return true;
    }
    match held.strip_suffix('*') {
        Some(stem) if stem.ends_with(':') => {
            required.len() > stem.len() && required.starts_with(stem)
        }
        _ => false,
    }
}

/// True when the space-separated `key_scopes` grant `required`.
pub fn holds(key_scopes: &str, required: &str) -> bool {
    key_scopes
        .split_ascii_whitespace()
        .any(|held| grants(held, required))
}

/// True when the key holds at least one of `any_of` (an empty list needs nothing).
pub fn holds_any<S: AsRef<str>>(key_scopes: &str, any_of: &[S]) -> bool {
    any_of.is_empty() || any_of.iter().any(|s| holds(key_scopes, s.as_ref()))
}

/// Checks a scope name's shape: `resource:action` or `resource:*`, `[a-z0-9_.-]`.
pub fn is_valid_name(scope: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
    };
    match scope.split_once(':') {
        Some((resource, action)) => part(resource) && (action == "*" || part(action)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard() {
        assert!(holds("memory:read users:read", "users:read"));
        assert!(!holds("memory:read", "memory:write"));
        assert!(holds("memory:*", "memory:write"));
        assert!(!holds("memory:*", "memoryx:write"));
        assert!(!holds("memory:*", "users:read"));
        assert!(!holds("mem*", "memory:read"));
        assert!(!holds("", "memory:read"));
    }

    #[test]
    fn any_of() {
        let rule = ["memory:write", "memory:admin"];
        assert!(holds_any("memory:admin", &rule));
        assert!(!holds_any("memory:read", &rule));
        assert!(holds_any::<&str>("", &[]));
    }

    #[test]
    fn names() {
        for ok in DEFAULT_SCOPES
            .iter()
            .copied()
            .chain(["memory:*", "a-b.c:d_e"])
        {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "memory",
            ":read",
            "memory:",
            "Memory:read",
            "a:b:c",
            "a b:c",
            "*:read",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}

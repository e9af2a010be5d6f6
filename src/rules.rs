//! Route rules (SPEC §5, §16): ordered `methods + path prefix -> access`,
//! matched on the path as upstreams read it.
//!
//! The first rule whose methods and path prefix match decides what a request
//! needs: nothing (`public`), one of some scopes, or (no rule) any valid key.
//! Before matching, the path is brought to the form an upstream framework
//! reads ([`match_path`]): percent-decoded, `//` merged, `.` and `..`
//! resolved, trailing dots of a segment dropped; prefixes match
//! case-insensitively unless a rule says `case_sensitive`. A `public` rule
//! is the one kind that opens rather than guards, so it matches narrowly:
//! byte for byte by default, and only when the path as sent matches it too
//! (`/Dashboard`, `/dashboar%64` or `/dashboard/../x` are not public under
//! `/dashboard`: they fall to the rules after it). Spellings whose
//! meaning differs between upstreams are refused instead: a `;` parameter
//! (unless `allow_path_parameters`, then it is removed), an encoded `/`,
//! `\` or `;`, and a raw `\`.

use percent_encoding::percent_decode;
use serde::Deserialize;
use std::borrow::Cow;

/// One rule of the filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// HTTP methods this rule applies to; empty = every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path prefix, matched on whole segments (`/a` matches `/a` and `/a/b`, not `/ab`).
    pub path_prefix: String,
    /// Match `path_prefix` byte for byte (default: ASCII case-insensitively,
    /// except for a `public` rule, which matches byte for byte).
    #[serde(default)]
    pub case_sensitive: Option<bool>,
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
    /// True when this rule covers `method` and `path`, a path as
    /// [`match_path`] gives it; a `public` rule must also match `sent`, the
    /// `:path` as the client sent it.
    pub fn matches(&self, method: &str, sent: &str, path: &str) -> bool {
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == method);
        let exact = self.case_sensitive.unwrap_or(self.public);
        method_ok
            && prefix_matches(&self.path_prefix, path, exact)
            && (!self.public || prefix_matches(&self.path_prefix, path_only(sent), exact))
    }
}

/// The path of a `:path`, without query or fragment.
pub fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// Why a path is refused before any rule is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `;` parameter in a segment, and parameters are not allowed.
    Parameter,
    /// `%2F`, `%5C` or `%3B`: upstreams disagree on what they mean.
    EncodedDelimiter,
    /// A raw `\` (some upstreams read it as `/`).
    Backslash,
}

impl PathError {
    /// The refusal's message.
    pub fn message(self) -> &'static str {
        match self {
            PathError::Parameter => "Path parameters (;) are not allowed",
            PathError::EncodedDelimiter => "Encoded /, \\ or ; in the path is not allowed",
            PathError::Backslash => "A backslash in the path is not allowed",
        }
    }
}

/// The path of `path` (query dropped) as rules match it: percent-decoded,
/// `;` parameters removed when `allow_parameters` (else refused), empty and
/// `.` segments dropped, `..` resolved, trailing dots of a segment dropped.
/// Borrowed when `path` is already in that form.
pub fn match_path(path: &str, allow_parameters: bool) -> Result<Cow<'_, str>, PathError> {
    let path = path_only(path);
    if is_plain(path) {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let segment = match raw.split_once(';') {
            Some(_) if !allow_parameters => return Err(PathError::Parameter),
            Some((segment, _)) => segment,
            None => raw,
        };
        let decoded = decode_segment(segment)?;
        match decoded.trim_end_matches('.') {
            "" if decoded == ".." => {
                segments.pop();
            }
            "" => {}
            kept => segments.push(kept.to_string()),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || path.ends_with('/') {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// True when `path` needs no work: no escape, parameter or backslash, no
/// empty segment and no segment ending in a dot.
fn is_plain(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes.iter().any(|b| matches!(b, b'%' | b';' | b'\\'))
        && !path.contains("//")
        && !path.contains("./")
        && !path.ends_with('.')
}

/// One segment percent-decoded (a `%` not followed by two hex digits stays).
fn decode_segment(segment: &str) -> Result<String, PathError> {
    if segment.contains('\\') {
        return Err(PathError::Backslash);
    }
    let decoded = percent_decode(segment.as_bytes()).collect::<Vec<u8>>();
    let encoded_delimiter =
        segment.len() != decoded.len() && decoded.iter().any(|b| matches!(b, b'/' | b'\\' | b';'));
    if encoded_delimiter {
        return Err(PathError::EncodedDelimiter);
    }
    Ok(String::from_utf8_lossy(&decoded).into_owned())
}

/// Segment-aware prefix match.
fn prefix_matches(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if case_sensitive {
        head == prefix
    } else {
        head.eq_ignore_ascii_case(prefix)
    };
    let rest = path.get(prefix.len()..).unwrap_or_default();
    same && (rest.is_empty() || prefix.ends_with(b"/") || rest.starts_with(b"/"))
}

/// The index of the first rule matching the request, if any: `sent` is the
/// `:path` as sent, `path` what [`match_path`] made of it.
pub fn find_index(rules: &[Rule], method: &str, sent: &str, path: &str) -> Option<usize> {
    rules.iter().position(|r| r.matches(method, sent, path))
}

/// The first rule matching the request, if any (as [`find_index`]).
pub fn find<'r>(rules: &'r [Rule], method: &str, sent: &str, path: &str) -> Option<&'r Rule> {
    find_index(rules, method, sent, path).and_then(|i| rules.get(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(methods: &[&str], prefix: &str) -> Rule {
        Rule {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path_prefix: prefix.into(),
            case_sensitive: None,
            public: false,
            any_of: vec![],
            forward_key: None,
        }
    }

    fn matched(r: &Rule, path: &str) -> bool {
        r.matches("GET", path, &match_path(path, false).unwrap())
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
            assert!(matched(&r, yes), "{yes}");
        }
        for no in ["/api/v1/memoryx", "/api/v1/mem", "/"] {
            assert!(!matched(&r, no), "{no}");
        }
        assert!(matched(&rule(&[], "/"), "/anything"));
    }

    #[test]
    fn prefixes_match_in_any_case_unless_case_sensitive() {
        let mut r = rule(&[], "/api/v1/memory");
        for spelling in ["/API/v1/memory", "/api/V1/Memory/1"] {
            assert!(matched(&r, spelling), "{spelling}");
        }
        r.case_sensitive = Some(true);
        assert!(!matched(&r, "/API/v1/memory"));
        assert!(matched(&r, "/api/v1/memory/x"));
    }

    /// A public rule opens only the spelling it names: another case, an
    /// escape or a dot segment falls to the rules after it.
    #[test]
    fn public_rules_match_only_as_sent() {
        let mut r = rule(&[], "/dashboard");
        r.public = true;
        assert!(matched(&r, "/dashboard/keys?x=1"));
        for spelling in [
            "/Dashboard",
            "/dashboar%64",
            "/dashboard/../api",
            "/dashboard./x",
        ] {
            assert!(!matched(&r, spelling), "{spelling}");
        }
        r.case_sensitive = Some(false);
        assert!(matched(&r, "/DASHBOARD/keys"));
    }

    /// Every spelling an upstream reads as `/api/v1/memory` matches its rule.
    #[test]
    fn spellings_are_matched_as_upstreams_read_them() {
        let r = rule(&[], "/api/v1/memory");
        for spelling in [
            "/api//v1/memory",
            "//api/v1/memory",
            "/api/./v1/memory",
            "/api/x/../v1/memory",
            "/api/v1/memory.",
            "/api/v1./memory",
            "/api/v1/%6demory",
            "/api/v1/mem%4Fry",
            "/api/v1/memory/.",
            "/api/v1/memory%2E",
            "/x/../../api/v1/memory",
        ] {
            assert!(matched(&r, spelling), "{spelling}");
        }
        assert_eq!(match_path("/a/b/../c/", false).unwrap(), "/a/c/");
        assert_eq!(match_path("/a/..", false).unwrap(), "/");
        assert_eq!(match_path("/a/b?x=/../", false).unwrap(), "/a/b");
        assert!(matches!(match_path("/a/b", false), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (path, error) in [
            ("/api/v1/memory;x", PathError::Parameter),
            ("/api;v=1/v1/memory", PathError::Parameter),
            ("/api/v1/memory%3Bx", PathError::EncodedDelimiter),
            ("/api/v1/memory%3bx", PathError::EncodedDelimiter),
            ("/api%2Fv1/memory", PathError::EncodedDelimiter),
            ("/api%2fv1/memory", PathError::EncodedDelimiter),
            ("/api/v1%5Cmemory", PathError::EncodedDelimiter),
            ("/api/v1%5cmemory", PathError::EncodedDelimiter),
            ("/api/v1\\memory", PathError::Backslash),
        ] {
            assert_eq!(match_path(path, false), Err(error), "{path}");
        }
    }

    #[test]
    fn allowed_parameters_are_removed_before_matching() {
        assert_eq!(
            match_path("/api;v=1/v1/memory;x", true).unwrap(),
            "/api/v1/memory"
        );
        assert_eq!(
            match_path("/api/v1%3Bmemory", true),
            Err(PathError::EncodedDelimiter)
        );
    }

    #[test]
    fn a_stray_percent_is_kept() {
        assert_eq!(match_path("/a%zz/b%", false).unwrap(), "/a%zz/b%");
    }

    #[test]
    fn methods_and_order() {
        let rules = [rule(&["GET", "HEAD"], "/m"), rule(&[], "/m")];
        assert_eq!(find(&rules, "GET", "/m/1", "/m/1"), rules.first());
        assert_eq!(find(&rules, "POST", "/m/1", "/m/1"), rules.get(1));
        assert_eq!(find_index(&rules, "POST", "/m/1", "/m/1"), Some(1));
        assert_eq!(find(&rules, "POST", "/other", "/other"), None);
    }
}

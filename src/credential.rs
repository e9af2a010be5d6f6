//! Finding the API key in a request (SPEC §2) and removing it before upstream.
//!
//! Sources, all first-class: `Authorization: Bearer <key>` (scheme
//! case-insensitive), `X-API-Key: <key>`, `?api_key=<key>` (percent-decoded,
//! possibly repeated) and, on a WebSocket upgrade only, a
//! `Sec-WebSocket-Protocol` entry `keygate.bearer.<key>` (browsers can set
//! no other header on a WebSocket). Two different keys anywhere in one
//! request conflict.

use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// Header carrying `Bearer <key>`.
pub const AUTHORIZATION: &str = "authorization";
/// Header carrying the bare key.
pub const X_API_KEY: &str = "x-api-key";
/// Query parameter carrying the key.
pub const QUERY_PARAM: &str = "api_key";
/// Header offering WebSocket subprotocols, comma-separated.
pub const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
/// The subprotocol entry carrying the key is this, then the key.
pub const SUBPROTOCOL_PREFIX: &str = "keygate.bearer.";

/// Where a key was found; more than one can be true when they agree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    pub bearer: bool,
    pub header: bool,
    pub query: bool,
    pub subprotocol: bool,
}

/// A key found in the request and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential<'a> {
    pub key: Cow<'a, str>,
    pub sources: Sources,
}

/// The result of looking for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extracted<'a> {
    /// No key in any source.
    Missing,
    /// Exactly one distinct key (possibly in several sources).
    Key(Credential<'a>),
    /// Two different keys: refused as an invalid key.
    Conflict,
}

/// Collects the candidates in precedence order, stopping at a conflict.
struct Collector<'a> {
    found: Option<Credential<'a>>,
    conflict: bool,
}

impl<'a> Collector<'a> {
    fn offer(&mut self, key: Cow<'a, str>, mark: fn(&mut Sources)) {
        if key.is_empty() || self.conflict {
            return;
        }
        match &mut self.found {
            Some(c) if c.key == key => mark(&mut c.sources),
            Some(_) => self.conflict = true,
            None => {
                let mut sources = Sources::default();
                mark(&mut sources);
                self.found = Some(Credential { key, sources });
            }
        }
    }

    fn finish(self) -> Extracted<'a> {
        match (self.conflict, self.found) {
            (true, _) => Extracted::Conflict,
            (false, Some(c)) => Extracted::Key(c),
            (false, None) => Extracted::Missing,
        }
    }
}

/// The token of an `Authorization` value if its scheme is Bearer.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let split = value.find(|c: char| c.is_ascii_whitespace())?;
    let (scheme, token) = value.split_at_checked(split)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The query string of a `:path` (without the `?`), if any.
pub fn query_of(path: &str) -> Option<&str> {
    path.split_once('?').map(|(_, q)| q)
}

/// True when a raw `name[=value]` query pair is the `api_key` parameter.
fn is_key_param(name: &str) -> bool {
    name == QUERY_PARAM || percent_decode_str(name).decode_utf8_lossy() == QUERY_PARAM
}

/// The decoded `api_key` values of a query string, in order.
fn query_keys(query: &str) -> impl Iterator<Item = Cow<'_, str>> {
    query.split('&').filter_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        is_key_param(name).then(|| percent_decode_str(value).decode_utf8_lossy())
    })
}

/// The values of header `name` (case-insensitive), in order.
fn named<'a, H, V>(headers: &'a [(H, V)], name: &'static str) -> impl Iterator<Item = &'a str>
where
    H: AsRef<str>,
    V: AsRef<str>,
{
    headers
        .iter()
        .filter(move |(n, _)| n.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// A WebSocket upgrade: `Upgrade: websocket` (HTTP/1.1) or
/// `:protocol: websocket` (extended CONNECT).
pub fn is_websocket_upgrade<H: AsRef<str>, V: AsRef<str>>(headers: &[(H, V)]) -> bool {
    let upgrade = named(headers, "upgrade").any(|v| {
        v.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
    });
    upgrade || named(headers, ":protocol").any(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The entries of `Sec-WebSocket-Protocol` values, trimmed, empty ones skipped.
fn subprotocols<H, V>(headers: &[(H, V)]) -> impl Iterator<Item = &str>
where
    H: AsRef<str>,
    V: AsRef<str>,
{
    named(headers, SEC_WEBSOCKET_PROTOCOL)
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// The key of a `keygate.bearer.<key>` subprotocol entry.
fn subprotocol_key(entry: &str) -> Option<&str> {
    entry.strip_prefix(SUBPROTOCOL_PREFIX)
}

/// Looks for the key in `headers` (name, value), the query of `path` and,
/// on a WebSocket upgrade, the offered subprotocols.
pub fn extract<'a, H, V>(headers: &'a [(H, V)], path: &'a str) -> Extracted<'a>
where
    H: AsRef<str>,
    V: AsRef<str>,
{
    let mut collector = Collector {
        found: None,
        conflict: false,
    };
    let named = |want: &'static str| named(headers, want);
    for token in named(AUTHORIZATION).filter_map(bearer_token) {
        collector.offer(Cow::Borrowed(token), |s| s.bearer = true);
    }
    for value in named(X_API_KEY) {
        collector.offer(Cow::Borrowed(value.trim()), |s| s.header = true);
    }
    for key in query_of(path).into_iter().flat_map(query_keys) {
        collector.offer(key, |s| s.query = true);
    }
    if is_websocket_upgrade(headers) {
        for key in subprotocols(headers).filter_map(subprotocol_key) {
            collector.offer(Cow::Borrowed(key), |s| s.subprotocol = true);
        }
    }
    collector.finish()
}

/// The `Sec-WebSocket-Protocol` to send upstream once the keygate entries
/// are gone: `None` when there were none (leave the header), `Some("")`
/// when nothing else was offered (remove the header), else the
/// application's own entries, in order, joined by `", "`.
pub fn strip_subprotocol_key<H: AsRef<str>, V: AsRef<str>>(headers: &[(H, V)]) -> Option<String> {
    if !subprotocols(headers).any(|e| subprotocol_key(e).is_some()) {
        return None;
    }
    let kept: Vec<&str> = subprotocols(headers)
        .filter(|e| subprotocol_key(e).is_none())
        .collect();
    Some(kept.join(", "))
}

/// `path` without any `api_key` parameter (other parameters kept in order),
/// or `None` when it has none.
pub fn strip_query_key(path: &str) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let is_key = |pair: &&str| is_key_param(pair.split_once('=').map_or(*pair, |(n, _)| n));
    if !query.split('&').any(|p| is_key(&p)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_key(p)).collect();
    let mut out = String::with_capacity(path.len());
    out.push_str(base);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(headers: &[(&str, &str)], path: &str) -> Extracted<'static> {
        match extract(headers, path) {
            Extracted::Key(c) => Extracted::Key(Credential {
                key: Cow::Owned(c.key.into_owned()),
                sources: c.sources,
            }),
            Extracted::Missing => Extracted::Missing,
            Extracted::Conflict => Extracted::Conflict,
        }
    }

    fn found(key: &str, bearer: bool, header: bool, query: bool) -> Extracted<'static> {
        Extracted::Key(Credential {
            key: Cow::Owned(key.to_string()),
            sources: Sources {
                bearer,
                header,
                query,
                subprotocol: false,
            },
        })
    }

    fn in_subprotocol(key: &str) -> Extracted<'static> {
        Extracted::Key(Credential {
            key: Cow::Owned(key.to_string()),
            sources: Sources {
                subprotocol: true,
                ..Sources::default()
            },
        })
    }

    const UPGRADE: (&str, &str) = ("upgrade", "websocket");

    #[test]
    fn subprotocol_key_on_upgrades_only() {
        for value in [
            "chat.v2, keygate.bearer.k4",
            "keygate.bearer.k4",
            "  keygate.bearer.k4 ,chat.v2,",
            "chat.v2,keygate.bearer.k4, keygate.bearer.k4",
        ] {
            let headers = [UPGRADE, ("Sec-WebSocket-Protocol", value)];
            assert_eq!(key_of(&headers, "/s"), in_subprotocol("k4"), "{value}");
            let plain = [("sec-websocket-protocol", value)];
            assert_eq!(key_of(&plain, "/s"), Extracted::Missing, "{value}");
        }
        let connect = [
            (":protocol", "websocket"),
            ("sec-websocket-protocol", "keygate.bearer.k4"),
        ];
        assert_eq!(key_of(&connect, "/s"), in_subprotocol("k4"));
        for value in [
            "chat.v2",
            "keygate.bearer.",
            "Keygate.Bearer.k4",
            "keygate.bearer",
        ] {
            let headers = [UPGRADE, ("sec-websocket-protocol", value)];
            assert_eq!(key_of(&headers, "/s"), Extracted::Missing, "{value}");
        }
    }

    #[test]
    fn subprotocol_key_conflicts_with_another_key() {
        let two = [
            UPGRADE,
            (
                "sec-websocket-protocol",
                "keygate.bearer.a, keygate.bearer.b",
            ),
        ];
        assert_eq!(key_of(&two, "/s"), Extracted::Conflict);
        let other = [
            UPGRADE,
            ("x-api-key", "a"),
            ("sec-websocket-protocol", "keygate.bearer.b"),
        ];
        assert_eq!(key_of(&other, "/s"), Extracted::Conflict);
        let split = [
            UPGRADE,
            ("sec-websocket-protocol", "keygate.bearer.a"),
            ("sec-websocket-protocol", "chat, keygate.bearer.b"),
        ];
        assert_eq!(key_of(&split, "/s"), Extracted::Conflict);
        let same = [UPGRADE, ("sec-websocket-protocol", "keygate.bearer.a")];
        let Extracted::Key(c) = extract(&same, "/s?api_key=a") else {
            panic!("the same key twice is one key")
        };
        assert!(c.sources.query && c.sources.subprotocol);
    }

    #[test]
    fn stripping_the_subprotocol_keeps_the_applications() {
        let strip = |values: &[&str]| {
            let headers: Vec<(&str, &str)> = values
                .iter()
                .map(|v| ("Sec-WebSocket-Protocol", *v))
                .collect();
            strip_subprotocol_key(&headers)
        };
        assert_eq!(
            strip(&["chat.v2, keygate.bearer.k"]),
            Some("chat.v2".into())
        );
        assert_eq!(
            strip(&[" a ,keygate.bearer.k,, b", "c"]),
            Some("a, b, c".into())
        );
        assert_eq!(strip(&["keygate.bearer.k"]), Some(String::new()));
        assert_eq!(strip(&["keygate.bearer."]), Some(String::new()));
        assert_eq!(strip(&["chat.v2, superchat"]), None);
        assert_eq!(strip(&[]), None);
    }

    #[test]
    fn bearer_any_case_and_whitespace() {
        for value in ["Bearer k1", "bearer k1", "BEARER   k1  ", "  Bearer\tk1"] {
            assert_eq!(
                key_of(&[("authorization", value)], "/"),
                found("k1", true, false, false),
                "{value}"
            );
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_not_keys() {
        for value in ["Basic dXNlcg==", "Bearer", "Bearer   ", "Bearerk1", ""] {
            assert_eq!(
                key_of(&[("authorization", value)], "/"),
                Extracted::Missing,
                "{value}"
            );
        }
    }

    #[test]
    fn x_api_key_header() {
        assert_eq!(
            key_of(&[("X-API-Key", " k2 ")], "/"),
            found("k2", false, true, false)
        );
    }

    #[test]
    fn query_parameter_decoded_and_repeated() {
        assert_eq!(
            key_of(&[], "/p?a=1&api_key=k%5F3"),
            found("k_3", false, false, true)
        );
        assert_eq!(
            key_of(&[], "/p?api_key=k3&api_key=k3"),
            found("k3", false, false, true)
        );
        assert_eq!(
            key_of(&[], "/p?api%5Fkey=k3"),
            found("k3", false, false, true)
        );
        assert_eq!(key_of(&[], "/p?api_key=a&api_key=b"), Extracted::Conflict);
        assert_eq!(key_of(&[], "/p?api_key=&x=1"), Extracted::Missing);
        assert_eq!(key_of(&[], "/p?xapi_key=k3"), Extracted::Missing);
    }

    #[test]
    fn same_key_in_several_sources_is_fine() {
        let headers = [("authorization", "Bearer k"), ("x-api-key", "k")];
        assert_eq!(
            key_of(&headers, "/?api_key=k"),
            found("k", true, true, true)
        );
    }

    #[test]
    fn different_keys_conflict() {
        assert_eq!(
            key_of(&[("authorization", "Bearer a"), ("x-api-key", "b")], "/"),
            Extracted::Conflict
        );
        assert_eq!(
            key_of(&[("x-api-key", "a")], "/?api_key=b"),
            Extracted::Conflict
        );
        assert_eq!(
            key_of(&[("x-api-key", "a"), ("x-api-key", "b")], "/"),
            Extracted::Conflict
        );
    }

    #[test]
    fn no_key() {
        assert_eq!(key_of(&[("accept", "*/*")], "/p?q=1"), Extracted::Missing);
    }

    #[test]
    fn strip_keeps_other_parameters_in_order() {
        assert_eq!(
            strip_query_key("/p?a=1&api_key=k&b=2&api_key=k"),
            Some("/p?a=1&b=2".into())
        );
        assert_eq!(strip_query_key("/p?api_key=k"), Some("/p".into()));
        assert_eq!(strip_query_key("/p?api_key"), Some("/p".into()));
        assert_eq!(strip_query_key("/p?a=1"), None);
        assert_eq!(strip_query_key("/p"), None);
    }
}

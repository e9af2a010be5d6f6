//! Every row of SPEC §2–§5, decided natively against a real table.

use super::*;
use crate::feed::{encode_snapshot, FeedEntry, KeyStatus};
use crate::ids::{KeyId, OrgId};
use crate::key::generate;
use crate::table::{decode, Update};

const KS: crate::feed::KeySet = crate::feed::KeySet([7; 16]);

const NOW: u64 = 1_800_000_000;
const CONFIG: &str = r#"{"feed":{"cluster":"cp"},"rules":[
  {"path_prefix":"/api/v1/tenants","methods":["POST"],"public":true},
  {"path_prefix":"/api/v1/auth/me","forward_key":true},
  {"path_prefix":"/api/v1/memory","methods":["GET","HEAD"],"any_of":["memory:read"]},
  {"path_prefix":"/api/v1/memory","any_of":["memory:write","memory:admin"]}]}"#;

struct World {
    policy: Policy,
    table: KeyTable,
    reader: String,
    writer: String,
    expired: String,
    unknown: String,
}

fn entry(key: &str, id: u64, scopes: &str, expires_at: u64) -> FeedEntry {
    FeedEntry {
        hash: key::hash(key),
        key_id: KeyId(id),
        org_id: OrgId(0xabc),
        expires_at,
        scopes: scopes.into(),
        tier: "free".into(),
        environment: Environment::Live,
        ..FeedEntry::default()
    }
}

fn world() -> World {
    let config = FilterConfig::from_json(CONFIG.as_bytes()).unwrap();
    let [reader, writer, expired, unknown] =
        [0; 4].map(|_| generate("rk", Environment::Live).unwrap());
    let entries = [
        entry(&reader, 1, "memory:read users:read", 0),
        entry(&writer, 2, "memory:*", NOW + 60),
        entry(&expired, 3, "memory:read", NOW - 1),
    ];
    let Ok(Update::Snapshot(table)) = decode(&encode_snapshot(KS, 9, &entries)) else {
        panic!("snapshot")
    };
    World {
        policy: Policy::from(&config),
        table: *table,
        reader,
        writer,
        expired,
        unknown,
    }
}

impl World {
    fn decide<'t>(&'t self, method: &str, path: &str, headers: &[(&str, &str)]) -> Decision<'t> {
        let request = Request {
            method,
            path,
            headers,
        };
        self.policy.decide(Some(&self.table), &request, NOW)
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn denied(d: Decision<'_>) -> Deny {
    match d {
        Decision::Deny(deny) => deny,
        Decision::Allow(a) => panic!("allowed: {a:?}"),
    }
}

fn allowed(d: Decision<'_>) -> Allow<'_> {
    match d {
        Decision::Allow(a) => a,
        Decision::Deny(deny) => panic!("denied: {deny:?}"),
    }
}

fn header_value(a: &Allow<'_>, name: &str) -> String {
    let headers = a.identity.unwrap().headers();
    let value = headers.pairs().find(|(n, _)| *n == name).unwrap().1;
    value.to_string()
}

/// A one-key table whose key has `status` and `owner`.
fn one_key(status: KeyStatus, owner: Option<&str>) -> (String, KeyTable) {
    let key = generate("rk", Environment::Live).unwrap();
    let e = FeedEntry {
        status,
        external_id: owner.map(str::to_string),
        ..entry(&key, 5, "memory:read", 0)
    };
    let Ok(Update::Snapshot(table)) = decode(&encode_snapshot(KS, 1, &[e])) else {
        panic!("snapshot")
    };
    (key, *table)
}

#[test]
fn a_key_that_is_not_active_is_refused_with_its_status() {
    let w = world();
    let cases = [
        (
            KeyStatus::OrgSuspended,
            403,
            r#"{"error":{"type":"forbidden","message":"Organization is suspended"}}"#,
        ),
        (
            KeyStatus::QuotaExhausted,
            402,
            r#"{"error":{"type":"quota_exceeded","message":"API key has reached its request quota"}}"#,
        ),
        (
            KeyStatus::SpendExhausted,
            402,
            r#"{"error":{"type":"quota_exceeded","message":"API key has reached its spending cap"}}"#,
        ),
    ];
    for (status, code, body) in cases {
        let (key, table) = one_key(status, None);
        let auth = bearer(&key);
        let request = Request {
            method: "GET",
            path: "/x",
            headers: &[("authorization", auth.as_str())],
        };
        let d = denied(w.policy.decide(Some(&table), &request, NOW));
        assert_eq!(
            (d.status, &*d.body(ErrorFormat::Keygate)),
            (code, body),
            "{status:?}"
        );
        assert!(!d.needs_www_authenticate());
    }
}

#[test]
fn the_owner_is_forwarded_and_a_client_copy_removed() {
    let w = world();
    let (key, table) = one_key(KeyStatus::Active, Some("user-42"));
    let auth = bearer(&key);
    let headers = [("authorization", auth.as_str()), ("x-key-owner", "forged")];
    let request = Request {
        method: "GET",
        path: "/x",
        headers: &headers,
    };
    let a = allowed(w.policy.decide(Some(&table), &request, NOW));
    assert_eq!(header_value(&a, "x-key-owner"), "user-42");
    assert!(a.headers_to_remove().any(|h| h == "x-key-owner"));
    // A key without an owner sets none (the client's copy still goes).
    let auth = bearer(&w.reader);
    let a = allowed(w.decide("GET", "/x", &[("authorization", &auth)]));
    let set: Vec<_> = a
        .identity
        .unwrap()
        .headers()
        .pairs()
        .map(|(n, _)| n)
        .collect();
    assert!(!set.contains(&"x-key-owner"));
    assert!(a.headers_to_remove().any(|h| h == "x-key-owner"));
}

#[test]
fn a_rate_limited_answer_carries_retry_after_and_the_standing() {
    let d = Deny::rate_limited(&crate::limits::Standing {
        limit: 5,
        remaining: 0,
        reset: 42,
    });
    assert_eq!(d.status, 429);
    assert_eq!(
        &*d.body(ErrorFormat::Keygate),
        r#"{"error":{"type":"rate_limited","message":"Rate limit exceeded"}}"#
    );
    assert_eq!(
        d.response_headers(),
        [
            ("content-type", "application/json"),
            ("retry-after", "42"),
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "42"),
        ]
    );
}

#[test]
fn the_three_sources_are_first_class() {
    let w = world();
    let auth = bearer(&w.reader);
    for (headers, path) in [
        (vec![("authorization", auth.as_str())], "/x".to_string()),
        (vec![("x-api-key", w.reader.as_str())], "/x".to_string()),
        (vec![], format!("/x?api_key={}", w.reader)),
    ] {
        let a = allowed(w.decide("GET", &path, &headers));
        assert_eq!(header_value(&a, "x-key-id"), "key_0000000000000001");
    }
}

#[test]
fn upstream_sees_the_identity_and_never_the_key() {
    let w = world();
    let auth = bearer(&w.reader);
    let a = allowed(w.decide("GET", "/api/v1/memory/1", &[("authorization", &auth)]));
    assert_eq!(header_value(&a, "x-org-id"), "org_0000000000000abc");
    assert_eq!(header_value(&a, "x-key-scopes"), "memory:read users:read");
    assert_eq!(header_value(&a, "x-key-environment"), "live");
    assert_eq!(header_value(&a, "x-rate-tier"), "free");
    let removed: Vec<_> = a.headers_to_remove().collect();
    for h in IDENTITY_HEADERS.iter().chain(&["authorization"]) {
        assert!(removed.contains(h), "{h} not removed");
    }
    assert!(!removed.contains(&"x-api-key"));
    assert_eq!(a.new_path, None);
}

#[test]
fn query_key_is_stripped_other_parameters_kept() {
    let w = world();
    let path = format!("/stream/chat?room=1&api_key={}&b=2", w.reader);
    let a = allowed(w.decide("GET", &path, &[]));
    assert_eq!(a.new_path.as_deref(), Some("/stream/chat?room=1&b=2"));
}

#[test]
fn forward_key_keeps_the_credential() {
    let w = world();
    let a = allowed(w.decide("GET", "/api/v1/auth/me", &[("x-api-key", &w.reader)]));
    assert!(a.identity.is_some());
    assert!(!a.headers_to_remove().any(|h| h == "x-api-key"));
}

#[test]
fn provider_key_passes_untouched() {
    let w = world();
    let a = allowed(w.decide(
        "GET",
        "/x",
        &[("x-api-key", &w.reader), ("x-provider-key", "sk-123")],
    ));
    assert!(!a.headers_to_remove().any(|h| h == "x-provider-key"));
}

#[test]
fn missing_key() {
    let w = world();
    let d = denied(w.decide("GET", "/x", &[]));
    assert_eq!(d.status, 401);
    assert!(d.needs_www_authenticate());
    assert_eq!(
        d.body(ErrorFormat::Keygate),
        r#"{"error":{"type":"unauthorized","message":"Missing or invalid API key"}}"#
    );
}

#[test]
fn invalid_keys() {
    let w = world();
    let mut typo = w.reader.clone().into_bytes();
    typo[15] = if typo[15] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    let test_prefix = w.reader.replace("rk_live_", "xx_live_");
    let auth = bearer(&w.reader);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("x-api-key", &w.unknown)],
        vec![("x-api-key", &typo)],
        vec![("x-api-key", "rk_live_short")],
        vec![("x-api-key", &test_prefix)],
        vec![("authorization", &auth), ("x-api-key", &w.writer)],
    ];
    for headers in cases {
        let d = denied(w.decide("GET", "/x", &headers));
        assert_eq!(
            (d.status, d.reason),
            (401, DenyReason::InvalidKey),
            "{headers:?}"
        );
        assert_eq!(
            d.body(ErrorFormat::Keygate),
            r#"{"error":{"type":"unauthorized","message":"Invalid API key"}}"#
        );
    }
    let conflict_query = format!("/x?api_key={}", w.writer);
    let d = denied(w.decide("GET", &conflict_query, &[("x-api-key", &w.reader)]));
    assert_eq!(d.reason, DenyReason::InvalidKey);
}

#[test]
fn expired_key() {
    let w = world();
    let d = denied(w.decide("GET", "/x", &[("x-api-key", &w.expired)]));
    assert_eq!(d.status, 401);
    assert_eq!(
        d.body(ErrorFormat::Keygate),
        r#"{"error":{"type":"unauthorized","message":"API key has expired"}}"#
    );
    // The writer expires in a minute: fine now, refused after.
    let request = Request {
        method: "GET",
        path: "/x",
        headers: &[("x-api-key", w.writer.as_str())],
    };
    assert!(matches!(
        w.policy.decide(Some(&w.table), &request, NOW + 59),
        Decision::Allow(_)
    ));
    assert!(matches!(
        w.policy.decide(Some(&w.table), &request, NOW + 60),
        Decision::Deny(_)
    ));
}

#[test]
fn scopes_by_method_with_wildcard() {
    let w = world();
    assert!(matches!(
        w.decide("GET", "/api/v1/memory", &[("x-api-key", &w.reader)]),
        Decision::Allow(_)
    ));
    let d = denied(w.decide("POST", "/api/v1/memory", &[("x-api-key", &w.reader)]));
    assert_eq!(d.status, 403);
    assert!(!d.needs_www_authenticate());
    assert_eq!(
        d.body(ErrorFormat::Keygate),
        r#"{"error":{"type":"forbidden","message":"API key lacks required scope: memory:write"}}"#
    );
    assert!(matches!(
        w.decide("DELETE", "/api/v1/memory/1", &[("x-api-key", &w.writer)]),
        Decision::Allow(_)
    ));
}

#[test]
fn unmatched_path_needs_any_valid_key() {
    let w = world();
    assert!(matches!(
        w.decide("POST", "/anything", &[("x-api-key", &w.reader)]),
        Decision::Allow(_)
    ));
    assert_eq!(denied(w.decide("POST", "/anything", &[])).status, 401);
}

#[test]
fn org_header_must_match() {
    let w = world();
    let ok = [
        ("x-api-key", w.reader.as_str()),
        ("x-org-id", "org_0000000000000abc"),
    ];
    assert!(matches!(w.decide("GET", "/x", &ok), Decision::Allow(_)));
    let d = denied(w.decide(
        "GET",
        "/x",
        &[("x-api-key", &w.reader), ("X-Org-Id", "org_x")],
    ));
    assert_eq!(d.status, 403);
    assert_eq!(
        d.body(ErrorFormat::Keygate),
        r#"{"error":{"type":"forbidden","message":"API key does not belong to organization org_x"}}"#
    );
    let tricky = denied(w.decide(
        "GET",
        "/x",
        &[("x-api-key", &w.reader), ("x-org-id", "o\"}")],
    ));
    let parsed: serde_json::Value =
        serde_json::from_str(&tricky.body(ErrorFormat::Keygate)).unwrap();
    assert_eq!(
        parsed["error"]["message"],
        "API key does not belong to organization o\"}"
    );
}

#[test]
fn spoofed_identity_headers_are_removed() {
    let w = world();
    let a = allowed(w.decide(
        "GET",
        "/x",
        &[("x-api-key", &w.reader), ("x-key-scopes", "tenant:admin")],
    ));
    assert!(a.headers_to_remove().any(|h| h == "x-key-scopes"));
    assert_eq!(header_value(&a, "x-key-scopes"), "memory:read users:read");
}

#[test]
fn public_routes_and_cors_preflight_need_no_key() {
    let w = world();
    let a = allowed(w.decide("POST", "/api/v1/tenants", &[("x-org-id", "org_spoof")]));
    assert!(a.identity.is_none());
    assert!(a.headers_to_remove().any(|h| h == "x-org-id"));
    let preflight = [
        ("access-control-request-method", "POST"),
        ("origin", "https://a.example"),
    ];
    assert!(allowed(w.decide("OPTIONS", "/api/v1/memory", &preflight))
        .identity
        .is_none());
    assert_eq!(
        denied(w.decide("OPTIONS", "/api/v1/memory", &[])).status,
        401
    );
}

#[test]
fn not_ready_before_the_first_table() {
    let w = world();
    let request = Request {
        method: "GET",
        path: "/x",
        headers: &[("x-api-key", w.reader.as_str())],
    };
    let d = denied(w.policy.decide(None, &request, NOW));
    assert_eq!(d.status, 503);
    assert_eq!(
        d.body(ErrorFormat::Keygate),
        r#"{"error":{"type":"unavailable","message":"Authentication is not ready"}}"#
    );
    let public = Request {
        method: "POST",
        path: "/api/v1/tenants",
        headers: &[] as &[(&str, &str)],
    };
    assert!(matches!(
        w.policy.decide(None, &public, NOW),
        Decision::Allow(_)
    ));
}

#[test]
fn every_error_body_is_json_of_the_spec_shape() {
    for d in [
        Deny::missing_key(),
        Deny::invalid_key(),
        Deny::expired(),
        Deny::missing_scope("a:b"),
        Deny::wrong_org("o"),
        Deny::not_ready(),
    ] {
        let v: serde_json::Value = serde_json::from_str(&d.body(ErrorFormat::Keygate)).unwrap();
        assert!(
            v["error"]["type"].is_string() && v["error"]["message"].is_string(),
            "{}",
            d.message
        );
    }
}

#[test]
fn a_request_reads_its_pseudo_headers_and_upgrades() {
    let h = [
        (":Method", "GET"),
        (":path", "/stream/x?a=1"),
        ("Upgrade", "h2c, WebSocket"),
    ];
    let r = Request::from_headers(&h);
    assert_eq!((r.method, r.path), ("GET", "/stream/x?a=1"));
    assert!(r.is_websocket_upgrade());
    let connect = [(":method", "CONNECT"), (":protocol", "websocket")];
    assert!(Request::from_headers(&connect).is_websocket_upgrade());
    let plain: [(&str, &str); 1] = [("upgrade", "h2c")];
    let r = Request::from_headers(&plain);
    assert_eq!((r.method, r.path), ("", "/"));
    assert!(!r.is_websocket_upgrade());
}

#[test]
fn a_subprotocol_key_is_removed_and_the_applications_kept() {
    let w = world();
    let offer = format!("chat.v2, keygate.bearer.{}", w.reader);
    let h = [
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", offer.as_str()),
    ];
    let a = allowed(w.decide("GET", "/stream/chat", &h));
    assert_eq!(a.identity.unwrap().record.key_id, KeyId(1));
    assert_eq!(a.new_subprotocols.as_deref(), Some("chat.v2"));
    assert!(!a.strip_subprotocols);
    assert!(!a.headers_to_remove().any(|n| n == "sec-websocket-protocol"));

    let alone = format!("keygate.bearer.{}", w.reader);
    let h = [
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", alone.as_str()),
    ];
    let a = allowed(w.decide("GET", "/stream/chat", &h));
    assert_eq!(a.new_subprotocols, None);
    assert!(a.headers_to_remove().any(|n| n == "sec-websocket-protocol"));

    // Not an upgrade: not a credential, left alone.
    let h = [("sec-websocket-protocol", offer.as_str())];
    assert_eq!(
        denied(w.decide("GET", "/stream/chat", &h)).reason,
        DenyReason::MissingKey
    );
}

#[test]
fn a_subprotocol_key_conflicting_or_bad_is_invalid() {
    let w = world();
    let offer = format!("chat.v2, keygate.bearer.{}", w.writer);
    let bearer = bearer(&w.reader);
    let h = [
        ("upgrade", "websocket"),
        ("authorization", bearer.as_str()),
        ("sec-websocket-protocol", offer.as_str()),
    ];
    assert_eq!(denied(w.decide("GET", "/stream/x", &h)).status, 401);
    let bad = format!("keygate.bearer.{}x", w.reader);
    let h = [
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", bad.as_str()),
    ];
    assert_eq!(
        denied(w.decide("GET", "/stream/x", &h)).reason,
        DenyReason::InvalidKey
    );
}

#[test]
fn a_forwarding_rule_keeps_the_subprotocol_key() {
    let w = world();
    let offer = format!("chat.v2, keygate.bearer.{}", w.reader);
    let h = [
        ("upgrade", "websocket"),
        ("sec-websocket-protocol", offer.as_str()),
    ];
    let a = allowed(w.decide("GET", "/api/v1/auth/me", &h));
    assert_eq!(a.new_subprotocols, None);
    assert!(!a.strip_subprotocols);
}

#[test]
fn prefix_secret_keys_and_error_formats() {
    let json = r#"{"feed":{"cluster":"cp"},"key_prefix":"raeh","key_format":"prefix_secret","error_format":"flat"}"#;
    let policy = Policy::from(&FilterConfig::from_json(json.as_bytes()).unwrap());
    let key = KeyFormat::PrefixSecret
        .generate("raeh", Environment::Live)
        .unwrap();
    let entries = [entry(&key, 5, "memory:read", 0)];
    let Ok(Update::Snapshot(table)) = decode(&encode_snapshot(KS, 9, &entries)) else {
        panic!("snapshot")
    };
    let decide = |key: &str| {
        let bearer = bearer(key);
        let headers = [("authorization", bearer.as_str())];
        let request = Request {
            method: "GET",
            path: "/x",
            headers: &headers,
        };
        policy.decide(Some(&table), &request, NOW)
    };
    assert_eq!(
        allowed(decide(&key)).identity.unwrap().record.key_id,
        KeyId(5)
    );
    let env_key = generate("raeh", Environment::Live).unwrap();
    let d = denied(decide(&env_key));
    assert_eq!(d.reason, DenyReason::InvalidKey);
    assert_eq!(
        d.body(policy.error_format),
        r#"{"error":"Unauthorized","message":"Invalid API key"}"#
    );
}

/// A count store that must not be touched.
struct Untouched;

impl crate::limits::CountStore for Untouched {
    type Version = ();

    fn read(
        &mut self,
        _: KeyId,
    ) -> Result<Option<(crate::limits::Counts, ())>, crate::limits::LimitError> {
        panic!("a key without own limits reached the count store")
    }

    fn write(
        &mut self,
        _: KeyId,
        _: crate::limits::Counts,
        _: Option<()>,
    ) -> Result<bool, crate::limits::LimitError> {
        panic!("a key without own limits reached the count store")
    }
}

/// One key's counts in memory, compare-and-set on a version.
#[derive(Default)]
struct OneKey(Option<(crate::limits::Counts, u32)>);

impl crate::limits::CountStore for OneKey {
    type Version = u32;

    fn read(
        &mut self,
        _: KeyId,
    ) -> Result<Option<(crate::limits::Counts, u32)>, crate::limits::LimitError> {
        Ok(self.0)
    }

    fn write(
        &mut self,
        _: KeyId,
        counts: crate::limits::Counts,
        seen: Option<u32>,
    ) -> Result<bool, crate::limits::LimitError> {
        let now = self.0.map(|(_, v)| v);
        if now != seen {
            return Ok(false);
        }
        self.0 = Some((counts, now.map_or(1, |v| v + 1)));
        Ok(true)
    }
}

#[test]
fn only_keys_with_own_limits_are_counted() {
    let w = world();
    let auth = bearer(&w.reader);
    let a = allowed(w.decide("GET", "/x", &[("authorization", &auth)]));
    assert_eq!(
        own_limits(&mut Untouched, a.identity.as_ref(), NOW),
        Ok(None)
    );
    assert_eq!(own_limits(&mut Untouched, None, NOW), Ok(None));

    let key = generate("rk", Environment::Live).unwrap();
    let e = FeedEntry {
        limits: crate::limits::RateLimits {
            per_minute: 2,
            per_day: 0,
        },
        ..entry(&key, 8, "memory:read", 0)
    };
    let Ok(Update::Snapshot(table)) = decode(&encode_snapshot(KS, 1, &[e])) else {
        panic!("snapshot")
    };
    let auth = bearer(&key);
    let request = Request {
        method: "GET",
        path: "/x",
        headers: &[("authorization", auth.as_str())],
    };
    let a = allowed(w.policy.decide(Some(&table), &request, NOW));
    let mut store = OneKey::default();
    let answers: Vec<_> = (0..3)
        .map(|_| own_limits(&mut store, a.identity.as_ref(), NOW).unwrap())
        .collect();
    assert_eq!(answers[..2], [None, None]);
    let limited = answers[2].as_ref().unwrap();
    assert_eq!(
        (limited.status, limited.reason),
        (429, DenyReason::RateLimited)
    );
}

/// SPEC §16: a narrow key cannot reach a rule's route by spelling it
/// differently; ambiguous spellings are refused 400 before any key check.
#[test]
fn no_spelling_bypasses_a_rule() {
    let w = world();
    let auth = bearer(&w.reader);
    let headers = [("authorization", auth.as_str())];
    for path in [
        "/API/v1/memory",
        "/api//v1/memory",
        "/api/./v1/memory",
        "/api/x/../v1/memory",
        "/api/v1/memory.",
        "/api/v1/%6Demory",
    ] {
        let d = denied(w.decide("POST", path, &headers));
        assert_eq!(d.reason, DenyReason::MissingScope, "{path}");
    }
    for path in [
        "/api/v1/memory;x",
        "/api/v1/memory%3Bx",
        "/api/v1/memory%3bx",
        "/api/v1%2Fmemory",
        "/api/v1%5Cmemory",
        "/api/v1\\memory",
    ] {
        let d = denied(w.decide("POST", path, &headers));
        assert_eq!(
            (d.status, d.reason),
            (400, DenyReason::InvalidPath),
            "{path}"
        );
        assert!(
            d.body(ErrorFormat::Keygate)
                .starts_with(r#"{"error":{"type":"invalid_request","message":"#),
            "{path}"
        );
    }
}

#[test]
fn allowed_path_parameters_are_matched_without_them() {
    let mut w = world();
    w.policy.allow_path_parameters = true;
    let auth = bearer(&w.reader);
    let headers = [("authorization", auth.as_str())];
    let d = denied(w.decide("POST", "/api/v1/memory;x", &headers));
    assert_eq!(d.reason, DenyReason::MissingScope);
    allowed(w.decide("GET", "/api/v1/memory;jsessionid=1/a", &headers));
}

#[test]
fn underscore_spellings_of_identity_headers_are_dropped() {
    let w = world();
    let a = allowed(w.decide("GET", "/x", &[("x-api-key", &w.reader)]));
    for name in [
        "x_org_id",
        "X_Key_Scopes",
        "x-key_id",
        "X_RATE_TIER",
        "x_key_owner",
    ] {
        assert!(a.drops(name.as_bytes()), "{name}");
    }
    for name in ["x_org", "x-org-idx", "x__org_id", "accept"] {
        assert!(!a.drops(name.as_bytes()), "{name}");
    }
}

/// A refusal removes every credential source, `forward_key` or not.
#[test]
fn a_refusal_is_scrubbed_of_the_key() {
    let w = world();
    let offer = format!("chat, keygate.bearer.{}", w.reader);
    let request = Request {
        method: "GET",
        path: "/api/v1/memory?api_key=rk_live_x&room=1",
        headers: &[
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", offer.as_str()),
        ],
    };
    let s = w.policy.scrub(&request);
    assert_eq!(s.new_path.as_deref(), Some("/api/v1/memory?room=1"));
    assert_eq!(s.new_subprotocols.as_deref(), Some("chat"));
    assert!(s.drops(b"authorization") && s.drops(b"X-Api-Key"));
}

/// An open stream stays allowed only while the table allows its route.
#[test]
fn an_open_stream_is_rechecked_against_the_table() {
    let w = world();
    let auth = bearer(&w.writer);
    let upgrade = [("authorization", auth.as_str()), ("upgrade", "websocket")];
    let grant = allowed(w.decide("GET", "/api/v1/memory/ws", &upgrade))
        .grant()
        .unwrap();
    assert_eq!(grant.rule, Some(2));
    assert!(w.policy.still_allows(&w.table, &grant, NOW));
    assert!(
        !w.policy.still_allows(&w.table, &grant, NOW + 60),
        "expired"
    );
    let table = |status, scopes| {
        let e = FeedEntry {
            status,
            ..entry(&w.writer, 2, scopes, 0)
        };
        let Ok(Update::Snapshot(t)) = decode(&encode_snapshot(KS, 2, &[e])) else {
            panic!("snapshot")
        };
        *t
    };
    assert!(w
        .policy
        .still_allows(&table(KeyStatus::Active, "memory:read"), &grant, NOW));
    for (status, scopes) in [
        (KeyStatus::Active, "users:read"),
        (KeyStatus::OrgSuspended, "memory:read"),
        (KeyStatus::QuotaExhausted, "memory:read"),
        (KeyStatus::SpendExhausted, "memory:read"),
    ] {
        let t = table(status, scopes);
        assert!(
            !w.policy.still_allows(&t, &grant, NOW),
            "{status:?} {scopes}"
        );
    }
    let Ok(Update::Snapshot(empty)) = decode(&encode_snapshot(KS, 3, &[])) else {
        panic!("snapshot")
    };
    assert!(!w.policy.still_allows(&empty, &grant, NOW), "revoked");
}

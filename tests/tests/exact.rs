//! What passes the filter is exactly what the key allows (SPEC §16),
//! through real Envoy, on one stack: no spelling of a path reaches a route
//! its rule forbids, underscore spellings of the identity headers never
//! reach the upstream, a refused request's key never reaches the access
//! log, and an open WebSocket closes on every loss of rights.
//!
//! The stack's Envoy config differs from the shipped one in three ways: it
//! lets headers with underscores in (Envoy's default, so the filter's own
//! removal is what is tested), its access log prints `:path`,
//! `Authorization` and `X-API-Key` as they are when the answer is sent, and
//! one rule asks `memory:read` of WebSockets under `/stream/memory`.

use keygate_e2e::ws::{self, round_trip, time_until_closed};
use keygate_e2e::{Reply, Stack, StackOptions, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const LACKS_WRITE: &str = "API key lacks required scope: memory:write";

fn config(text: String, _dir: &Path) -> String {
    let text = ["REJECT_REQUEST", "DROP_HEADER"]
        .iter()
        .fold(text, |t, action| {
            t.replace(
                &format!("headers_with_underscores_action: {action}"),
                "headers_with_underscores_action: ALLOW",
            )
        });
    let dashboard = r#"{"path_prefix": "/dashboard", "public": true},"#;
    let stream_rule = r#"{"path_prefix": "/stream/memory", "any_of": ["memory:read"]},"#;
    assert_eq!(text.matches(dashboard).count(), 1, "the demo rules changed");
    assert_eq!(
        text.matches("%PATH(NQ)%").count(),
        1,
        "the access log changed"
    );
    text.replace(dashboard, &format!("{dashboard} {stream_rule}"))
        .replace(
            "%PATH(NQ)%",
            "%REQ(:PATH)% auth=%REQ(AUTHORIZATION)% apikey=%REQ(X-API-KEY)%",
        )
}

#[tokio::test]
async fn what_passes_is_exactly_what_the_key_allows() {
    let stack = Stack::start_with(StackOptions {
        envoy_config: Some(config),
        ..StackOptions::default()
    })
    .await;
    let reader = new_key(&stack, json!({"scopes": ["users:read"]})).await.1;
    no_spelling_reaches_a_forbidden_route(&stack, &reader).await;
    public_rules_open_only_their_own_spelling(&stack).await;
    underscore_identity_headers_never_reach_the_upstream(&stack, &reader).await;
    let refused = websockets_close_on_every_loss_of_rights(&stack).await;
    refused_keys_never_reach_the_access_log(&stack, &reader, &refused).await;
}

/// Creates a key of the stack's tenant (`body` + a name); (id, key).
async fn new_key(stack: &Stack, mut body: Value) -> (String, String) {
    body["name"] = json!("exact");
    let created = stack.create_key(&stack.tenant().api_key, body).await;
    (created.str("id").into(), created.str("api_key").into())
}

/// Sends `method path` exactly as spelled (no client normalises it);
/// returns the status and the body.
async fn raw(stack: &Stack, method: &str, path: &str, key: &str) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {key}\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    );
    let answer = stack.raw(request.as_bytes()).await;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status.unwrap_or(0), body.to_string())
}

/// A `users:read` key: none of these reaches `POST /api/v1/memory`'s
/// upstream; each is the filter's 403 or a 400 JSON refusal.
async fn no_spelling_reaches_a_forbidden_route(stack: &Stack, key: &str) {
    let (status, body) = raw(stack, "GET", "/api/v1/users", key).await;
    assert_eq!(status, 200, "the control request was refused: {body}");
    for path in [
        "/API/v1/memory",
        "/api/V1/Memory",
        "/api/v1/memory;x",
        "/api;v=1/v1/memory",
        "/api/v1/memory%3Bx",
        "/api/v1/memory%3bx",
        "/api%2Fv1/memory",
        "/api%2fv1/memory",
        "/api/v1%5Cmemory",
        "/api/v1%5cmemory",
        "/api/v1\\memory",
        "/api//v1/memory",
        "//api/v1/memory",
        "/api/./v1/memory",
        "/api/x/../v1/memory",
        "/api/v1/memory.",
        "/api/v1./memory",
        "/api/v1/%6Demory",
        "/api/v1/memory/%2e%2e/memory",
    ] {
        let (status, body) = raw(stack, "POST", path, key).await;
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("POST {path}: {status} not JSON: {body}"));
        let kind = json["error"]["type"].as_str();
        match status {
            403 => assert_eq!(json["error"]["message"], LACKS_WRITE, "POST {path}"),
            400 => assert_eq!(kind, Some("invalid_request"), "POST {path}: {body}"),
            _ => panic!("POST {path} answered {status}: {body}"),
        }
        println!("POST {path} -> {status}");
    }
}

/// `/dashboard` is public; other spellings of it are not (they reach the
/// demo upstream, which Envoy routes them to, only with a key).
async fn public_rules_open_only_their_own_spelling(stack: &Stack) {
    for path in ["/DASHBOARD", "/Dashboard/keys"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        let answer = stack.raw(request.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "GET {path} without a key: {answer}"
        );
    }
}

async fn underscore_identity_headers_never_reach_the_upstream(stack: &Stack, key: &str) {
    let spoofed = [
        ("x_org_id", "org_evil"),
        ("X_Key_Id", "key_evil"),
        ("x_key_scopes", "tenant:admin"),
        ("x_key_environment", "live"),
        ("X_RATE_TIER", "enterprise"),
        ("x_key_owner", "someone"),
        ("x-key_scopes", "tenant:admin"),
    ];
    let mut request = stack.request(Method::GET, "/api/v1/users").bearer_auth(key);
    for (name, value) in spoofed {
        request = request.header(name, value);
    }
    let reply = stack.send(request).await;
    reply.expect(200);
    for (name, _) in spoofed {
        let echoed = reply.echoed_header(&name.to_ascii_lowercase());
        assert_eq!(echoed, None, "{name} reached the upstream: {reply:#?}");
    }
    assert_eq!(reply.echoed_header("x-key-scopes"), Some("users:read"));
}

/// Opens a WebSocket at `path` with `key` and checks it echoes.
async fn open(stack: &Stack, path: &str, key: &str) -> ws::Socket {
    let url = stack.ws_url(&format!("{path}?api_key={key}"));
    let mut socket = ws::connect(&url, &[])
        .await
        .unwrap_or_else(|e| panic!("upgrade to {path} refused: {e:?}"));
    assert_eq!(
        round_trip(&mut socket, Message::text("hi")).await,
        Message::text("hi")
    );
    socket
}

/// Waits for `socket` (an idle client) to close after `since`; fails
/// past the revocation bound.
async fn closes(socket: &mut ws::Socket, since: Instant, what: &str) {
    let every = Duration::from_millis(20);
    let closed = time_until_closed(socket, false, every, Duration::from_secs(5)).await;
    let took = closed.map(|_| since.elapsed());
    println!("websocket closed {took:?} after {what} answered");
    let took = took.unwrap_or_else(|| panic!("the WebSocket stayed open 5 s after {what}"));
    assert!(took < REVOCATION_BOUND, "{what}: closed after {took:?}");
}

/// Each loss of rights closes a WebSocket opened before it; returns the
/// keys that are refused now (scope, quota, cap, suspension), each with
/// the path to ask to get that refusal.
async fn websockets_close_on_every_loss_of_rights(stack: &Stack) -> Vec<(String, &'static str)> {
    let (scoped_id, scoped) = new_key(stack, json!({"scopes": ["memory:read"]})).await;
    let mut socket = open(stack, "/stream/memory", &scoped).await;
    let path = format!("/api/v1/api-keys/{scoped_id}");
    let admin = stack.tenant().api_key.clone();
    let patch = json!({"scopes": ["users:read"]});
    let asked = Instant::now();
    stack
        .call(Method::PATCH, &path, &admin, patch)
        .await
        .expect(200);
    closes(&mut socket, asked, "a PATCH removing its scope").await;

    let mut refused = vec![];
    for (caps, usage, what) in [
        (
            json!({"quota": {"requests": 50}}),
            (50, 0),
            "the quota's last use",
        ),
        (
            json!({"spend_cap": {"micros": 5000, "period": "month"}}),
            (1, 5000),
            "the cap's last use",
        ),
    ] {
        let mut body = json!({"scopes": ["memory:read"]});
        body.as_object_mut()
            .unwrap()
            .extend(caps.as_object().unwrap().clone());
        let (id, key) = new_key(stack, body).await;
        let mut socket = open(stack, "/stream/live", &key).await;
        let asked = Instant::now();
        stack.report_usage(&id, usage.0, usage.1).await;
        closes(&mut socket, asked, what).await;
        refused.push((key, "/api/v1/memory?probe=402"));
    }

    let other = stack.new_tenant("suspended").await;
    let mut socket = open(stack, "/stream/live", &other.api_key).await;
    let path = format!("/operator/v1/tenants/{}", other.tenant_id);
    let asked = Instant::now();
    let suspend = Some(json!({"suspended": true}));
    stack
        .operator(Method::PATCH, &path, suspend)
        .await
        .expect(200);
    closes(&mut socket, asked, "the suspension").await;
    refused.push((other.api_key, "/api/v1/memory?probe=suspended"));
    refused
}

/// Every refusal of a key sent in the query or a header leaves no trace of
/// it in the access log, which prints `:path`, `Authorization` and
/// `X-API-Key` as they are when the answer goes.
async fn refused_keys_never_reach_the_access_log(
    stack: &Stack,
    reader: &str,
    refused: &[(String, &str)],
) {
    let with_query = |path: &str, key: &str| {
        let (path, probe) = path.split_once('?').unwrap_or((path, ""));
        stack.url(&format!("{path}?api_key={key}&{probe}"))
    };
    let scope = with_query("/api/v1/memory?probe=403", reader);
    let reply = stack.send(stack.client.post(scope)).await;
    reply.expect_error(403, "forbidden", LACKS_WRITE);
    let header = stack.request(Method::POST, "/api/v1/memory?probe=header");
    let reply = stack.send(header.header("x-api-key", reader)).await;
    reply.expect(403);
    for (key, path) in refused {
        let reply = stack.send(stack.client.get(with_query(path, key))).await;
        assert!([402, 403].contains(&reply.status), "{path}: {reply:#?}");
    }
    let limited = own_limit_429(stack, &with_query).await;

    let probes = [
        "probe=403",
        "probe=header",
        "probe=402",
        "probe=suspended",
        "probe=429",
    ];
    let start = Instant::now();
    let log = loop {
        let log = stack.envoy_log();
        if probes.iter().all(|p| log.contains(p)) || start.elapsed() > Duration::from_secs(10) {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for probe in probes {
        assert!(log.contains(probe), "no access log line for {probe}");
    }
    let keys = refused.iter().map(|(k, _)| k.as_str());
    for key in keys.chain([reader, limited.as_str()]) {
        assert!(!log.contains(key), "the access log holds a refused key");
    }
}

/// A key whose own limit is one request a minute, used until it answers
/// 429 (the first uses may come before its creation reached Envoy: 401s,
/// refused the same way); returns the key.
async fn own_limit_429(stack: &Stack, with_query: &impl Fn(&str, &str) -> String) -> String {
    let body =
        json!({"name": "limited", "scopes": ["memory:read"], "rate_limits": {"per_minute": 1}});
    let admin = stack.tenant().api_key.clone();
    let created = stack
        .call(Method::POST, "/api/v1/api-keys", &admin, body)
        .await;
    created.expect(201);
    let key = created.str("api_key").to_string();
    let start = Instant::now();
    loop {
        let url = with_query("/api/v1/memory?probe=429", &key);
        let reply: Reply = stack.send(stack.client.get(url)).await;
        if reply.status == 429 {
            return key;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no 429: {reply:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

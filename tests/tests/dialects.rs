//! The seed dialects through real Envoy (SPEC §1, §2, §4): `error_format`
//! of the filter and the control plane, a `prefix_secret` deployment, and
//! the `Sec-WebSocket-Protocol: keygate.bearer.<key>` credential of a
//! WebSocket client that offers its own subprotocols too.

use keygate_e2e::subprotocols::connect_offering;
use keygate_e2e::ws::{round_trip, time_until_closed};
use keygate_e2e::{Reply, Stack, StackOptions, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The shipped filter configuration's first line, to add settings after.
const PREFIX_LINE: &str = r#""key_prefix": "rk","#;

/// A stack whose filter and control plane both answer in `format`.
async fn stack_in(format: &str) -> Stack {
    let mut options = StackOptions::default().replace(
        PREFIX_LINE,
        &format!(r#"{PREFIX_LINE} "error_format": "{format}","#),
    );
    options.control_plane_args = vec!["--error-format".into(), format.into()];
    Stack::start_with(options).await
}

/// A 401 (no key), a 401 (bad key) and a 403 (missing scope) from the
/// filter, and a 400 from the control plane (through Envoy), in order.
async fn refusals(stack: &Stack) -> [Reply; 4] {
    let admin = stack.tenant().api_key.clone();
    let reader = stack
        .create_key(&admin, json!({"name": "reader", "scopes": ["memory:read"]}))
        .await;
    let reader = reader.str("api_key").to_string();
    let missing = stack
        .send(stack.request(Method::GET, "/api/v1/memory"))
        .await;
    let invalid = stack.get("/api/v1/memory", &format!("{reader}x")).await;
    let forbidden = stack
        .call(Method::POST, "/api/v1/memory", &reader, json!({}))
        .await;
    let bad_input = stack
        .call(
            Method::POST,
            "/api/v1/api-keys",
            &admin,
            json!({"name": "", "scopes": ["memory:read"]}),
        )
        .await;
    let replies = [missing, invalid, forbidden, bad_input];
    for (reply, status) in replies.iter().zip([401, 401, 403, 400]) {
        println!("{} {}", reply.status, reply.text);
        reply.expect(status);
        let content_type = reply.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("application/json"), "{reply:#?}");
        let challenge = reply.header("www-authenticate");
        assert_eq!(challenge.is_some(), status == 401, "{reply:#?}");
    }
    replies
}

fn bodies(replies: &[Reply; 4]) -> [&Value; 4] {
    let [a, b, c, d] = replies;
    [&a.json, &b.json, &c.json, &d.json]
}

#[tokio::test]
async fn the_flat_error_format() {
    let stack = stack_in("flat").await;
    let replies = refusals(&stack).await;
    let [missing, invalid, forbidden, bad_input] = bodies(&replies);
    assert_eq!(
        *missing,
        json!({"error": "Unauthorized", "message": "Missing or invalid API key"})
    );
    assert_eq!(
        *invalid,
        json!({"error": "Unauthorized", "message": "Invalid API key"})
    );
    assert_eq!(
        *forbidden,
        json!({"error": "Forbidden", "message": "API key lacks required scope: memory:write"})
    );
    assert_eq!(
        *bad_input,
        json!({"error": "Bad Request", "message": "name must not be empty", "field": "name"})
    );
}

#[tokio::test]
async fn the_openai_error_format() {
    let stack = stack_in("openai").await;
    let replies = refusals(&stack).await;
    let [missing, invalid, forbidden, bad_input] = bodies(&replies);
    let openai = |message: &str, kind: &str, param: Value, code: &str| json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    assert_eq!(
        *missing,
        openai(
            "Missing or invalid API key",
            "authentication_error",
            Value::Null,
            "missing_api_key"
        )
    );
    assert_eq!(
        *invalid,
        openai(
            "Invalid API key",
            "authentication_error",
            Value::Null,
            "invalid_api_key"
        )
    );
    assert_eq!(
        *forbidden,
        openai(
            "API key lacks required scope: memory:write",
            "permission_error",
            Value::Null,
            "insufficient_scope"
        )
    );
    assert_eq!(
        *bad_input,
        openai(
            "name must not be empty",
            "invalid_request_error",
            json!("name"),
            "invalid_request"
        )
    );
}

#[tokio::test]
async fn the_keygate_error_format_names_itself_too() {
    let stack = stack_in("keygate").await;
    let replies = refusals(&stack).await;
    let [missing, invalid, forbidden, bad_input] = &replies;
    missing.expect_error(401, "unauthorized", "Missing or invalid API key");
    invalid.expect_error(401, "unauthorized", "Invalid API key");
    forbidden.expect_error(
        403,
        "forbidden",
        "API key lacks required scope: memory:write",
    );
    assert_eq!(bad_input.json["error"]["type"], "invalid_request");
    assert_eq!(bad_input.json["error"]["field"], "name");
}

/// Keys without an environment segment: minted `raeh_<secret><check>` by
/// the control plane, accepted by the filter; an `rk_live_` key is not.
#[tokio::test]
async fn a_prefix_secret_deployment() {
    let mut options = StackOptions::default().replace(
        PREFIX_LINE,
        r#""key_prefix": "raeh", "key_format": "prefix_secret","#,
    );
    options.control_plane_args = ["--key-prefix", "raeh", "--key-format", "prefix_secret"]
        .map(String::from)
        .to_vec();
    let stack = Stack::start_with(options).await;
    let admin = stack.tenant().api_key.clone();
    let is_raeh = |key: &str| {
        let secret = key.strip_prefix("raeh_").unwrap_or_default();
        secret.len() == 49 && secret.bytes().all(|c| c.is_ascii_alphanumeric())
    };
    assert!(is_raeh(&admin), "tenant key {}…", &admin[..12]);
    let created = stack
        .create_key(&admin, json!({"name": "reader", "scopes": ["memory:read"]}))
        .await;
    let key = created.str("api_key");
    println!(
        "minted {}… (prefix {})",
        &key[..12],
        created.str("api_key_prefix")
    );
    assert!(is_raeh(key));
    assert_eq!(created.str("api_key_prefix"), &key[..12]);
    assert_eq!(created.str("environment"), "live");

    let ok = stack.get("/api/v1/memory", key).await;
    ok.expect(200);
    assert_eq!(ok.echoed_header("x-key-environment"), Some("live"));
    assert_eq!(ok.echoed_header("authorization"), None);

    let rk = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    stack
        .get("/api/v1/memory", &rk)
        .await
        .expect_error(401, "unauthorized", "Invalid API key");
    let with_env = keygate::key::generate("raeh", keygate::key::Environment::Live).unwrap();
    stack.get("/api/v1/memory", &with_env).await.expect_error(
        401,
        "unauthorized",
        "Invalid API key",
    );
    let test_key = stack
        .call(
            Method::POST,
            "/api/v1/api-keys",
            &admin,
            json!({"name": "t", "scopes": ["memory:read"], "environment": "test"}),
        )
        .await;
    test_key.expect(400);
    assert_eq!(test_key.json["error"]["field"], "environment");
}

/// A browser-style WebSocket: `new WebSocket(url, ["chat.v2",
/// "keygate.bearer." + key])`. The upstream sees only `chat.v2`, the socket
/// works and closes when the key is revoked.
#[tokio::test]
async fn a_websocket_key_in_the_subprotocols() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let created = stack
        .create_key(
            &admin,
            json!({"name": "browser", "scopes": ["memory:read"]}),
        )
        .await;
    let key = created.str("api_key").to_string();
    let entry = format!("keygate.bearer.{key}");
    let url = stack.ws_url("/stream/chat");

    let started = Instant::now();
    let mut offered = connect_offering(&url, &["chat.v2", &entry])
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}"));
    println!(
        "upgrade with a subprotocol key took {:?}",
        started.elapsed()
    );
    assert_eq!(offered.upstream_saw.as_deref(), Some("chat.v2"));
    assert_eq!(offered.chosen.as_deref(), Some("chat.v2"));
    assert_eq!(
        round_trip(&mut offered.socket, Message::text("hello")).await,
        Message::text("hello")
    );

    // The key first, two application subprotocols after: both kept, in order.
    let both = connect_offering(&url, &[&entry, "chat.v2", "chat.v1"])
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}"));
    assert_eq!(both.upstream_saw.as_deref(), Some("chat.v2, chat.v1"));

    let bad = format!("keygate.bearer.{key}x");
    let Err((status, body)) = connect_offering(&url, &["chat.v2", &bad]).await else {
        panic!("a bad subprotocol key was let through");
    };
    println!("bad subprotocol key: {status} {body}");
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"error": {"type": "unauthorized", "message": "Invalid API key"}})
    );

    stack
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", created.str("id")),
            &admin,
            json!({}),
        )
        .await
        .expect(200);
    let answered = Instant::now();
    let every = Duration::from_millis(20);
    let closed = time_until_closed(&mut offered.socket, true, every, Duration::from_secs(5)).await;
    let took = closed.map(|_| answered.elapsed());
    println!("subprotocol-key websocket closed {took:?} after the DELETE answer");
    let took = took.expect("the WebSocket of a revoked key stayed open for 5 s");
    assert!(took < REVOCATION_BOUND, "closed after {took:?}");
}

/// The raw 101 head of an upgrade offering `protocol` with `extra` headers.
async fn upgrade_head(stack: &Stack, protocol: &str, extra: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", stack.ports.envoy))
        .await
        .unwrap();
    let request = format!(
        "GET /stream/raw HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-protocol: {protocol}\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no answer to the upgrade within 10 s")
            .unwrap();
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// Only the key offered: the header is gone upstream. Another key
/// elsewhere in the request conflicts (401).
#[tokio::test]
async fn a_lone_subprotocol_key_and_a_conflicting_one() {
    let stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();
    let entry = format!("keygate.bearer.{key}");
    let head = upgrade_head(&stack, &format!(" {entry} "), "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("x-echo-sec-websocket-protocol"), "{head}");
    assert!(!head.contains(&key.to_ascii_lowercase()), "{head}");

    let admin = stack.tenant().api_key.clone();
    let other = stack
        .create_key(&admin, json!({"name": "other", "scopes": ["memory:read"]}))
        .await;
    let bearer = format!("authorization: Bearer {}\r\n", other.str("api_key"));
    let head = upgrade_head(&stack, &format!("chat.v2, {entry}"), &bearer).await;
    println!(
        "conflicting keys: {}",
        head.lines().next().unwrap_or_default()
    );
    assert!(head.starts_with("http/1.1 401"), "{head}");
}

//! WebSockets through Envoy with a key (SPEC §2, §7, §9).

use keygate_e2e::ws::{self, round_trip, time_until_closed};
use keygate_e2e::{rfc3339, unix_now, Stack, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_with_a_key_echoes_and_without_is_refused() {
    let stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();

    // Browsers put the key in the query; other clients in a header.
    let url = stack.ws_url(&format!("/stream/chat?api_key={key}"));
    let mut socket = ws::connect(&url, &[])
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}"));
    assert_eq!(
        round_trip(&mut socket, Message::text("hello")).await,
        Message::text("hello")
    );
    let bytes = vec![0u8, 1, 2, 255];
    assert_eq!(
        round_trip(&mut socket, Message::binary(bytes.clone())).await,
        Message::binary(bytes)
    );

    let bearer = format!("Bearer {key}");
    let mut socket = ws::connect(&stack.ws_url("/stream/chat"), &[("authorization", &bearer)])
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}"));
    assert_eq!(
        round_trip(&mut socket, Message::text("hi")).await,
        Message::text("hi")
    );

    let Err((status, body)) = ws::connect(&stack.ws_url("/stream/chat"), &[]).await else {
        panic!("WebSocket upgrade without a key succeeded");
    };
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Missing or invalid API key"), "{body}");
}

/// Opens a WebSocket with a new key; returns the socket and the key's id.
async fn open_socket(stack: &Stack, body: serde_json::Value) -> (ws::Socket, String) {
    let admin = stack.tenant().api_key.clone();
    let created = stack.create_key(&admin, body).await;
    let url = stack.ws_url(&format!("/stream/live?api_key={}", created.str("api_key")));
    let mut socket = ws::connect(&url, &[])
        .await
        .unwrap_or_else(|e| panic!("upgrade refused: {e:?}"));
    let hello = round_trip(&mut socket, Message::text("before")).await;
    assert_eq!(hello, Message::text("before"));
    (socket, created.str("id").to_string())
}

/// A revoked key's open WebSockets close within the bound, whether the
/// client is talking or idle.
#[tokio::test]
async fn open_websockets_close_when_their_key_is_revoked() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    for talking in [true, false] {
        let body = json!({"name": "socket", "scopes": ["memory:read"]});
        let (mut socket, id) = open_socket(&stack, body).await;
        let path = format!("/api/v1/api-keys/{id}");
        stack
            .call(Method::DELETE, &path, &admin, json!({}))
            .await
            .expect(200);
        let answered = Instant::now();
        let every = Duration::from_millis(20);
        let closed = time_until_closed(&mut socket, talking, every, Duration::from_secs(5)).await;
        let took = closed.map(|_| answered.elapsed());
        let client = if talking {
            "sending every 20 ms"
        } else {
            "idle"
        };
        println!("websocket ({client}) closed {took:?} after the DELETE answer");
        let took = took.expect("the WebSocket of a revoked key stayed open for 5 s");
        assert!(took < REVOCATION_BOUND, "closed after {took:?}");
    }
}

/// An expiring key's open WebSocket closes once the key expires (expiry
/// has one-second resolution, so the bound is one second more).
#[tokio::test]
async fn open_websocket_closes_when_its_key_expires() {
    let stack = Stack::start().await;
    let expires = unix_now() + 3;
    let body = json!({"name": "brief", "scopes": ["memory:read"], "expires_at": rfc3339(expires)});
    let (mut socket, _) = open_socket(&stack, body).await;
    let limit = Duration::from_secs(10);
    let closed = time_until_closed(&mut socket, false, Duration::from_millis(20), limit).await;
    assert!(
        closed.is_some(),
        "the WebSocket of an expired key stayed open"
    );
    let now = unix_now();
    assert!(
        now >= expires,
        "closed {} s before the key expired",
        expires - now
    );
    let late = now - expires;
    println!("websocket of an expiring key closed about {late} s after expires_at");
    assert!(late <= 2, "closed {late} s after expiry");
}

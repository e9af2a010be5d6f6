//! Feed credentials per data plane (SPEC §15), through real Envoys and the
//! real control plane, on one stack: a second Envoy reads the feed with the
//! token of a data plane limited to tenant A. It serves A's key and refuses
//! B's (which the shared-token Envoy serves); its usage report for B's key
//! is refused with 403. Once the plane is revoked, its token is refused by
//! the control plane at once, the Envoy keeps its last table (SPEC §7) but
//! gets nothing new, and a key revocation no longer waits for it. Finally
//! `/v1/usage` answers a tokenless 32 MiB request before its body is sent.

use keygate_e2e::{Stack, FEED_TOKEN};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATH: &str = "/api/v1/memory";
const PLANES: &str = "/operator/v1/data-planes";
/// Generous: the machine is small and shared.
const LIMIT: Duration = Duration::from_secs(30);
/// SPEC §7's revocation bound.
const REVOCATION_BOUND: Duration = Duration::from_secs(1);

/// `GET /v1/key-table?{query}` straight at the control plane with `token`.
async fn feed(stack: &Stack, token: &str, query: &str) -> reqwest::Response {
    let url = format!(
        "http://127.0.0.1:{}/v1/key-table?{query}",
        stack.ports.control_plane
    );
    stack
        .client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The id of `key` (`GET /api/v1/auth/me`).
async fn key_id(stack: &Stack, key: &str) -> String {
    let me = stack.get("/api/v1/auth/me", key).await;
    me.expect(200);
    me.json["key"]["id"].as_str().unwrap().to_string()
}

/// Posts one `allowed` request of `key_id` to `/v1/usage` with `token`.
async fn report(stack: &Stack, token: &str, key_set: &str, key_id: &str) -> u16 {
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        * 60;
    let body = json!({"batch_id": format!("{:032x}", minute), "key_set": key_set,
        "minutes": [{"minute": minute, "keys": [{"key_id": key_id, "outcomes": {"allowed": 1}}]}]});
    let url = format!("http://127.0.0.1:{}/v1/usage", stack.ports.control_plane);
    let request = stack.client.post(url).bearer_auth(token).json(&body);
    request.send().await.unwrap().status().as_u16()
}

/// Sends the head of a 32 MiB `/v1/usage` POST without a token and none of
/// its body; returns the answer's first bytes.
async fn usage_head_only(stack: &Stack) -> String {
    let address = ("127.0.0.1", stack.ports.control_plane);
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1/usage HTTP/1.1\r\nhost: keygate\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        32 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn a_tenant_limited_plane_serves_its_tenants_keys_only_until_revoked() {
    let mut stack = Stack::start().await;
    let (a, b) = (stack.new_tenant("a").await, stack.new_tenant("b").await);
    let body = json!({"name": "plane-a", "tenants": [a.tenant_id]});
    let plane = stack.operator(Method::POST, PLANES, Some(body)).await;
    plane.expect(201);
    let token = plane.str("token").to_string();
    let plane_path = format!("{PLANES}/{}", plane.str("id"));

    let limited = stack.start_another_envoy_with_token(&token).await.envoy;
    stack
        .wait_steady_on(limited, PATH, &a.api_key, 200, LIMIT)
        .await;
    stack
        .wait_steady_on(limited, PATH, &b.api_key, 401, LIMIT)
        .await;
    stack.get(PATH, &b.api_key).await.expect(200);

    let table = feed(&stack, FEED_TOKEN, "").await;
    let key_set = table.headers()["x-keygate-key-set"].to_str().unwrap();
    let b_id = key_id(&stack, &b.api_key).await;
    assert_eq!(report(&stack, &token, key_set, &b_id).await, 403);

    let revoked = stack.operator(Method::DELETE, &plane_path, None).await;
    let answered = Instant::now();
    revoked.expect(200);
    loop {
        let status = feed(&stack, &token, "").await.status().as_u16();
        if status == 401 {
            break;
        }
        assert!(answered.elapsed() < REVOCATION_BOUND, "still {status}");
    }
    assert_eq!(feed(&stack, FEED_TOKEN, "").await.status(), 200);

    // The limited Envoy keeps its last table but gets nothing new: a key
    // A mints now works at the shared-token Envoy, never at it.
    stack.get_on(limited, PATH, &a.api_key).await.expect(200);
    let minted = stack
        .create_key(
            &a.api_key,
            json!({"name": "late", "scopes": ["memory:read"]}),
        )
        .await;
    let late = minted.str("api_key").to_string();
    let settled = Instant::now() + REVOCATION_BOUND;
    while Instant::now() < settled {
        stack.get_on(limited, PATH, &late).await.expect(401);
    }

    // Only the shared-token Envoy is waited for now.
    let late_id = minted.str("id").to_string();
    let path = format!("/api/v1/api-keys/{late_id}");
    let gone = stack
        .call(Method::DELETE, &path, &a.api_key, json!({}))
        .await;
    gone.expect(200);
    assert_eq!(gone.json["propagated"], json!({"envoys": 1, "reached": 1}));

    let answer = usage_head_only(&stack).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

//! Every refusal is JSON (SPEC §4): the ones Envoy produces itself (codec
//! limits, path normalization, the management API's body limit, upstream
//! failures) and the control plane's own, asked directly on its port.

use keygate_e2e::{Reply, Stack};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;

/// The refusals that were not what a client expects, reported together.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    /// What a client checks: the status, `content-type: application/json`
    /// and a body `{"error":{"type","message"}}` with both strings.
    fn check(&mut self, reply: &Reply, status: u16, case: &str) {
        let content_type = reply.header("content-type").unwrap_or_default();
        let body: String = reply.text.chars().take(120).collect();
        println!("{case}: {} {content_type:?} {body}", reply.status);
        let json_error =
            reply.json["error"]["type"].is_string() && reply.json["error"]["message"].is_string();
        if reply.status != status || !content_type.starts_with("application/json") || !json_error {
            self.0.push(format!(
                "{case}: want {status} with a JSON error, got {} {content_type:?} {body:?}",
                reply.status
            ));
        }
    }

    fn assert_none(&self) {
        assert!(
            self.0.is_empty(),
            "refusals that are not JSON:\n{}",
            self.0.join("\n")
        );
    }
}

/// Headers a request may add to the few a client sends and stay within
/// Envoy's limit of 100 (Envoy adds 3 more before the control plane).
const NEAR_LIMIT_HEADERS: usize = 95;

#[tokio::test]
async fn envoy_answers_every_refusal_in_json() {
    let mut stack = Stack::start().await;
    let envoy = format!("127.0.0.1:{}", stack.ports.envoy);
    let get = |path: &str| stack.request(Method::GET, path);
    let mut failures = Failures::default();

    let big_header = "a".repeat(61 * 1024);
    let reply = stack
        .send(get("/api/v1/memory").header("x-big", big_header))
        .await;
    failures.check(&reply, 431, "a header over 60 KiB");

    let mut many = get("/api/v1/memory");
    for i in 0..500 {
        many = many.header(format!("x-h{i}"), "v");
    }
    failures.check(&stack.send(many).await, 431, "500 headers");

    let reply = raw(&envoy, &long_url_request("/api/v1/memory", 100_000)).await;
    failures.check(&reply, 431, "a 100 KB URL");

    let reply = stack.send(get("/api/v1/mem%00ory")).await;
    failures.check(&reply, 400, "%00 in the path");

    let reply = raw(&envoy, b"\x00\x01\x02 nonsense\r\n\r\n").await;
    failures.check(&reply, 400, "garbage");

    // Bodies over the control plane's 64 KiB limit: Envoy refuses them
    // itself, every time, and never uploads them to the control plane.
    let body = format!(r#"{{"name":"{}","email":"a@b.c"}}"#, "x".repeat(100_000));
    for i in 0..8 {
        let request = stack
            .request(Method::POST, "/api/v1/tenants")
            .header("content-type", "application/json")
            .body(body.clone());
        let case = format!("a 100 KB body, try {}", i + 1);
        match request.send().await {
            Ok(response) => failures.check(&Reply::read(response).await, 413, &case),
            Err(e) => failures.0.push(format!("{case}: no answer: {e}")),
        }
    }
    let admin = stack.tenant().api_key.clone();
    let reply = stack
        .send(
            stack
                .request(Method::POST, "/api/v1/api-keys")
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
    failures.check(&reply, 413, "a 100 KB body to /api/v1/api-keys");
    let mut chunked = b"POST /api/v1/tenants HTTP/1.1\r\nhost: x\r\n\
        content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("4000\r\n{}\r\n", "x".repeat(0x4000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(&envoy, &chunked).await;
    failures.check(&reply, 413, "an 80 KiB chunked body");
    let uploaded = stack
        .control_plane_log()
        .lines()
        .filter(|line| line.contains("status=413"))
        .count();
    println!("413s answered by the control plane itself: {uploaded}");
    if uploaded > 0 {
        failures
            .0
            .push(format!("{uploaded} big bodies reached the control plane"));
    }

    // Just under Envoy's limits, the control plane takes the request: its
    // own limits are higher, so Envoy is the one that refuses.
    let mut near = stack
        .request(Method::POST, "/api/v1/tenants")
        .json(&serde_json::json!({"name": "near", "email": "near@b.c"}))
        .header("x-big", "a".repeat(50 * 1024));
    for i in 0..NEAR_LIMIT_HEADERS {
        near = near.header(format!("x-h{i}"), "v");
    }
    let reply = stack.send(near).await;
    println!("just under Envoy's limits: {}", reply.status);
    if reply.status != 201 {
        failures
            .0
            .push(format!("just under Envoy's limits: {reply:?}"));
    }

    // The filter's own refusals keep their exact bodies.
    stack.send(get("/api/v1/memory")).await.expect_error(
        401,
        "unauthorized",
        "Missing or invalid API key",
    );
    // A refusal of the control plane through Envoy (its own JSON).
    let key = stack.tenant().api_key.clone();
    let reply = stack
        .send(
            stack
                .request(Method::DELETE, "/api/v1/api-keys/nope/more")
                .bearer_auth(&key),
        )
        .await;
    failures.check(&reply, 404, "an unknown management route");

    // Upstream failure: the control plane is down.
    stack.stop_control_plane();
    let reply = stack
        .send(
            stack
                .request(Method::POST, "/api/v1/tenants")
                .json(&serde_json::json!({"name": "n", "email": "a@b.c"})),
        )
        .await;
    failures.check(&reply, 503, "control plane down");
    failures.assert_none();
}

#[tokio::test]
async fn the_control_plane_answers_every_refusal_in_json() {
    let stack = Stack::start().await;
    let direct = format!("127.0.0.1:{}", stack.ports.control_plane);
    let url = |path: &str| format!("http://{direct}{path}");
    let mut failures = Failures::default();

    let reply = raw(&direct, &long_url_request("/api/v1/tenants", 100_000)).await;
    failures.check(&reply, 414, "direct: a 100 KB URL");

    let huge = "a".repeat(300 * 1024);
    let reply = stack
        .send(stack.client.get(url("/healthz")).header("x-big", huge))
        .await;
    failures.check(&reply, 431, "direct: a 300 KiB header");

    let mut many = stack.client.get(url("/healthz"));
    for i in 0..1000 {
        many = many.header(format!("x-h{i}"), "v");
    }
    failures.check(&stack.send(many).await, 431, "direct: 1000 headers");

    let reply = stack.send(stack.client.get(url("/nope"))).await;
    failures.check(&reply, 404, "direct: unknown route");

    let reply = stack
        .send(stack.client.delete(url("/api/v1/tenants")))
        .await;
    failures.check(&reply, 405, "direct: wrong method");

    let reply = stack
        .send(
            stack
                .client
                .post(url("/api/v1/tenants"))
                .header("content-type", "application/json")
                .body(vec![b'x'; 100_000]),
        )
        .await;
    failures.check(&reply, 413, "direct: a 100 KB body");

    let reply = raw(&direct, b"GET /x HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n").await;
    failures.check(&reply, 400, "direct: malformed");
    failures.assert_none();
}

/// Sends raw bytes to `address` (for requests an HTTP client will not
/// send) and reads the answer until the peer closes.
async fn raw(address: &str, request: &[u8]) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, text) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let mut headers = HeaderMap::new();
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            );
        }
    }
    Reply {
        status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        headers,
        text: text.to_string(),
        json: serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
    }
}

/// A GET request for `path` with a query string of `len` bytes.
fn long_url_request(path: &str, len: usize) -> Vec<u8> {
    format!(
        "GET {path}?q={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(len)
    )
    .into_bytes()
}

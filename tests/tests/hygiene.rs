//! Hostile input, metrics, and secrets in logs (SPEC §1, §4, §7).

use keygate_e2e::{Adapter, Stack, FEED_TOKEN, FEED_TOKEN_ENV};
use reqwest::Method;
use std::time::Duration;

/// Oversized and malformed input is refused cleanly and the filter keeps
/// serving (it never panics; a crashed VM would show up as 5xx or resets).
#[tokio::test]
async fn oversized_and_malformed_input_is_refused_cleanly() {
    let stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();
    let invalid = |reply: keygate_e2e::Reply, what: &str| {
        assert_eq!(reply.status, 401, "{what}: {reply:#?}");
        reply.expect_error(401, "unauthorized", "Invalid API key");
    };
    let get = |path: &str| stack.request(Method::GET, path);

    let many = "api_key=rk_live_x&".repeat(500);
    invalid(
        stack.send(get(&format!("/api/v1/memory?{many}"))).await,
        "500 api_key params",
    );
    invalid(
        stack.send(get("/api/v1/memory?api_key=%ZZ%00%ff")).await,
        "bad percent-encoding",
    );
    let latin1 = reqwest::header::HeaderValue::from_bytes(b"Bearer rk_live_\xfc\xef\xff").unwrap();
    invalid(
        stack
            .send(get("/api/v1/memory").header("authorization", latin1))
            .await,
        "non-UTF-8 bytes",
    );
    // Bytes no HTTP client sends: Envoy's codec or the filter refuses them.
    for (what, raw) in [
        (
            "control bytes in a key",
            &b"GET /api/v1/memory HTTP/1.1\r\nhost: x\r\nx-api-key: rk_live_\x01\x7f\r\n\r\n"[..],
        ),
        (
            "non-UTF-8 path",
            &b"GET /api/v1/memory?api_key=\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        ),
        ("garbage", &b"\x00\x01\x02 nonsense\r\n\r\n"[..]),
    ] {
        let answer = stack.raw(raw).await;
        let status = answer.get(9..12).unwrap_or("");
        assert!(
            matches!(status, "400" | "401") || answer.is_empty(),
            "{what}: {answer}"
        );
    }
    let reply = stack
        .send(get("/api/v1/memory").header("authorization", "Bearer"))
        .await;
    assert_eq!(reply.status, 401, "empty bearer: {reply:#?}");
    let reply = stack
        .send(get("/api/v1/memory").header("authorization", "Basic dXNlcjpwYXNz"))
        .await;
    assert_eq!(reply.status, 401, "basic auth: {reply:#?}");

    // Beyond Envoy's header limit (60 KiB): Envoy refuses before the filter.
    let huge = format!("Bearer rk_live_{}", "A".repeat(100 * 1024));
    let result = stack
        .client
        .get(stack.url("/api/v1/memory"))
        .header("authorization", huge)
        .send()
        .await;
    if let Ok(response) = result {
        assert!(
            response.status().as_u16() == 431 || response.status().is_client_error(),
            "{response:?}"
        );
    }
    // A large body passes through untouched for a valid key.
    let body = vec![b'x'; 512 * 1024];
    let reply = stack
        .send(
            stack
                .request(Method::POST, "/upload")
                .bearer_auth(&key)
                .body(body),
        )
        .await;
    reply.expect(200);

    // Still serving, on every worker.
    for _ in 0..20 {
        stack.get("/api/v1/memory", &key).await.expect(200);
    }
}

/// The filter's counters appear in Envoy's `/stats` (as `wasmcustom.*`,
/// or `dynamicmodulescustom.*` for the native adapter) and count exactly
/// the traffic sent.
#[tokio::test]
async fn filter_stats_are_in_envoy_stats() {
    let stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();
    let allowed = "keygate_allowed";
    let missing = "keygate_denied_missing_key";
    let stack = &stack;
    let counter = |name| async move { stack.filter_stat(name).await.unwrap_or(0) };
    // The filter adds its request counts to Envoy's on every tick (50 ms):
    // let the start-up traffic land before taking the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (allowed_before, missing_before) = (counter(allowed).await, counter(missing).await);
    for _ in 0..5 {
        stack.get("/api/v1/memory", &key).await.expect(200);
        stack
            .send(stack.request(Method::GET, "/api/v1/memory"))
            .await
            .expect(401);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "keygate stats after traffic:\n{}",
        stack.filter_stats().await
    );
    assert_eq!(counter(allowed).await - allowed_before, 5);
    assert_eq!(counter(missing).await - missing_before, 5);
    for gauge in ["keygate_table_version", "keygate_table_keys"] {
        let value = stack.filter_stat(gauge).await;
        assert!(value.is_some_and(|v| v > 0), "{gauge} = {value:?}");
    }
}

/// Keys used in every position never appear in Envoy's or the control
/// plane's logs (Envoy at info, the wasm component at debug, access log on).
#[tokio::test]
async fn no_key_in_logs() {
    let stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();
    let unknown = keygate::key::generate("rk", keygate::key::Environment::Live).unwrap();
    for k in [&key, &unknown] {
        stack.get("/api/v1/memory", k).await;
        stack
            .send(
                stack
                    .request(Method::GET, "/api/v1/memory")
                    .header("x-api-key", k.as_str()),
            )
            .await;
        stack
            .send(stack.request(Method::GET, &format!("/api/v1/memory?api_key={k}")))
            .await;
        stack
            .send(stack.request(Method::GET, &format!("/api/v1/users?api_key={k}")))
            .await;
        stack.get("/api/v1/auth/me", k).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // access log flush
    let envoy = stack.envoy_log();
    let control_plane = stack.control_plane_log();
    assert!(
        envoy.contains("/api/v1/memory"),
        "the access log did not record the requests:\n{envoy}"
    );
    for k in [&key, &unknown] {
        // The secret part alone must not leak either (keys are rk_live_<secret><check>).
        let secret = &k[8..40];
        assert!(!envoy.contains(secret), "a key is in Envoy's log");
        assert!(
            !control_plane.contains(secret),
            "a key is in the control plane's log"
        );
    }
}

/// The feed token reaches the filter through Envoy's environment only
/// (SPEC §7): Envoy's whole config dump names the variable, never the
/// token, and neither log holds it, while the stack works.
#[tokio::test]
async fn the_feed_token_is_not_in_the_config_dump() {
    let stack = Stack::start().await;
    let key = stack.tenant().api_key.clone();
    stack.get("/api/v1/memory", &key).await.expect(200);
    let response = stack
        .client
        .get(stack.admin_url("/config_dump"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    let dump = response.text().await.unwrap();
    println!(
        "config dump: {} bytes, names {FEED_TOKEN_ENV}: {}, holds the token: {}",
        dump.len(),
        dump.contains(FEED_TOKEN_ENV),
        dump.contains(FEED_TOKEN)
    );
    let module = Adapter::current().name_in_config_dump();
    assert!(dump.contains(module) && dump.contains(FEED_TOKEN_ENV));
    assert!(
        !dump.contains(FEED_TOKEN),
        "the feed token is in the config dump"
    );
    assert!(
        !stack.envoy_log().contains(FEED_TOKEN),
        "the feed token is in Envoy's log"
    );
    assert!(
        !stack.control_plane_log().contains(FEED_TOKEN),
        "the feed token is in the control plane's log"
    );
}

//! A leaked key reported through the real Envoy (SPEC §17): a secret
//! scanning report signed with a key pair the test made reaches the
//! control plane on Envoy's public route, labels the live key
//! `true_positive` and revokes it at Envoy within the revocation bound (its
//! next request is a 401), and a signed `key.leaked` webhook naming where it
//! was found reaches a loopback receiver; a forged report is a 401 and
//! revokes nothing.

use keygate_e2e::receiver::HookReceiver;
use keygate_e2e::scanning::{self, Reporter};
use keygate_e2e::{Reply, Stack, StackOptions, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const FOUND_AT: &str = "https://github.com/someone/repo/blob/abc/.env";

async fn report(stack: &Stack, reporter: &Reporter, body: &str) -> Reply {
    let mut request = stack
        .request(Method::POST, "/api/v1/secret-scanning")
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in reporter.headers(body) {
        request = request.header(name, value);
    }
    stack.send(request).await
}

#[tokio::test]
async fn a_signed_report_revokes_a_live_key_at_envoy_and_tells_the_tenant() {
    let github = Reporter::new("gh-e2e");
    let forger = Reporter::new("gh-e2e");
    let keys = tempfile::tempdir().unwrap();
    let receiver = HookReceiver::start().await;
    let stack = Stack::start_with(StackOptions {
        control_plane_args: vec!["--secret-scanning-key".into(), github.key_flag(keys.path())],
        ..StackOptions::default()
    })
    .await;
    let admin = stack.tenant().api_key.clone();
    let hook = json!({"url": receiver.url, "events": ["key.leaked"]});
    let hook = stack
        .call(Method::POST, "/api/v1/webhooks", &admin, hook)
        .await;
    hook.expect(201);
    let secret = hook.str("secret").to_string();
    let created = stack
        .create_key(&admin, json!({"name": "pushed", "scopes": ["memory:read"]}))
        .await;
    let (id, key) = (
        created.str("id").to_string(),
        created.str("api_key").to_string(),
    );
    stack.wait_key_works(&key).await;
    let body = scanning::report(&[&key], FOUND_AT);

    let forged = report(&stack, &forger, &body).await;
    forged.expect(401);
    assert_eq!(
        forged.json["error"]["type"], "unauthorized",
        "{}",
        forged.text
    );
    stack.get("/keygate/ready", &key).await.expect(200);

    let start = Instant::now();
    let answer = report(&stack, &github, &body).await;
    answer.expect(200);
    let answered = start.elapsed();
    let label =
        json!([{"token_raw": key, "token_type": "keygate_api_key", "label": "true_positive"}]);
    assert_eq!(answer.json, label);
    let (refused, delay) = stack
        .wait_steady("/keygate/ready", &key, 401, Duration::from_secs(10))
        .await;
    refused.expect(401);
    let revoked = answered + delay;
    println!("report answered in {answered:?}; revoked at Envoy {revoked:?} after the report");
    assert!(revoked < REVOCATION_BOUND, "revocation took {revoked:?}");

    let got = receiver.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].signed_with(&secret), "bad signature: {:?}", got[0]);
    let event: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(event["type"], "key.leaked");
    assert_eq!(event["data"]["key_id"], id.as_str());
    assert_eq!(event["data"]["url"], FOUND_AT);
    assert_eq!(event["data"]["source"], "commit");
    assert_eq!(event["data"]["revoked"], true);
}

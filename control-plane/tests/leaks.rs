//! Leaked keys (SPEC §17) against the real binary, on SQLite or PostgreSQL:
//! a secret scanning report signed with a key pair the test made labels a
//! live key `true_positive` and an unknown well-formed key and a non-key
//! `false_positive`, revokes the live key (policy `revoke`) or leaves it
//! (`notify`), records the audit entry and sends a signed `key.leaked`
//! naming the report's url and source; a forged, unsigned or unknown-key
//! report is a 401, a body over 1 MiB a 413 and a body not in the partner
//! format a 400; the
//! token is never logged. And a key's hour of 1,000+ requests beside a
//! low 7-day history sends exactly one `key.usage.spike`, a busy key's
//! usual hour none.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "../../tests/src/scanning.rs"]
mod scanning;

use common::receiver::Receiver;
use common::{Reply, Server, Tenant};
use keygate::key::{self, Environment};
use scanning::Reporter;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const FOUND_AT: &str = "https://github.com/someone/repo/blob/abc/config.env";

/// Registers a webhook of `tenant` for `events`; returns its secret.
async fn webhook(server: &Server, tenant: &Tenant, url: &str, events: &[&str]) -> String {
    let body = json!({"url": url, "events": events}).to_string();
    let reply = server
        .call("POST", "/api/v1/webhooks", Some(&tenant.key), Some(&body))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["secret"].as_str().unwrap().to_string()
}

/// A new key of `tenant`: (id, key).
async fn live_key(server: &Server, tenant: &Tenant) -> (String, String) {
    let body = json!({"name": "leaky", "scopes": ["memory:read"]});
    let created = server.create_key(&tenant.key, body).await;
    let id = created["id"].as_str().unwrap().to_string();
    (id, created["api_key"].as_str().unwrap().to_string())
}

async fn send(server: &Server, body: &str, headers: &[(&str, String)]) -> Reply {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    server
        .call_with(
            "POST",
            "/api/v1/secret-scanning",
            None,
            Some(body),
            &headers,
        )
        .await
}

fn assert_refused(reply: &Reply, status: u16, kind: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], kind, "{}", reply.text());
}

async fn revoked_at(server: &Server, tenant: &Tenant, id: &str) -> Value {
    let path = format!("/api/v1/api-keys/{id}");
    let reply = server.call("GET", &path, Some(&tenant.key), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["revoked_at"].clone()
}

async fn leak_entries(server: &Server, tenant: &Tenant) -> Vec<Value> {
    let path = "/api/v1/audit-log?action=api_key.leaked";
    let reply = server.call("GET", path, Some(&tenant.key), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn signed_reports_label_tokens_and_follow_the_leak_policy() {
    let github = Reporter::new("gh-2026");
    let stranger = Reporter::new("gh-2026");
    let dir = tempfile::tempdir().unwrap();
    let flag = github.key_flag(dir.path());
    let server = Server::start_with(&["--secret-scanning-key", &flag]).await;
    let receiver = Receiver::start(200).await;
    let revoking = server.create_tenant("revoking").await;
    let notified = server.create_tenant("notified").await;
    let secret = webhook(&server, &revoking, &receiver.url, &["key.leaked"]).await;
    webhook(&server, &notified, &receiver.url, &["key.leaked"]).await;

    let settings = "/api/v1/tenant/settings";
    let reply = server
        .call("GET", settings, Some(&notified.key), None)
        .await;
    assert_eq!(
        reply.json(),
        json!({"leak_policy": "revoke"}),
        "the default"
    );
    let bad = r#"{"leak_policy":"sometimes"}"#;
    let reply = server
        .call("PATCH", settings, Some(&notified.key), Some(bad))
        .await;
    assert_refused(&reply, 400, "invalid_request");
    assert_eq!(reply.json()["error"]["field"], "leak_policy");
    let notify = r#"{"leak_policy":"notify"}"#;
    let reply = server
        .call("PATCH", settings, Some(&notified.key), Some(notify))
        .await;
    assert_eq!(
        reply.json(),
        json!({"leak_policy": "notify"}),
        "{}",
        reply.text()
    );

    let (revoked_id, revoked_key) = live_key(&server, &revoking).await;
    let (left_id, left_key) = live_key(&server, &notified).await;
    let unknown = key::generate("rk", Environment::Live).unwrap();
    let tokens = [
        revoked_key.as_str(),
        &unknown,
        "not-a-key-at-all",
        &left_key,
    ];
    let body = scanning::report(&tokens, FOUND_AT);

    // Refused before anything is done: forged, unsigned, unknown key id.
    let forged = stranger.headers(&body);
    assert_refused(&send(&server, &body, &forged).await, 401, "unauthorized");
    assert_refused(&send(&server, &body, &[]).await, 401, "unauthorized");
    let [_, signature] = github.headers(&body);
    let unknown_id = [
        ("Github-Public-Key-Identifier", "gh-other".to_string()),
        signature,
    ];
    assert_refused(
        &send(&server, &body, &unknown_id).await,
        401,
        "unauthorized",
    );
    let tampered = body.replace("commit", "content");
    let reply = send(&server, &tampered, &github.headers(&body)).await;
    assert_refused(&reply, 401, "unauthorized");
    assert!(revoked_at(&server, &revoking, &revoked_id).await.is_null());
    // Over 1 MiB: refused whole, signed or not.
    let huge = scanning::report(&[&"x".repeat(1 << 20)], FOUND_AT);
    assert_refused(
        &send(&server, &huge, &github.headers(&huge)).await,
        413,
        "invalid_request",
    );
    // Signed, but not the partner format.
    for (bad, field) in [
        (r#"{"token":"x"}"#, "body"),
        (r#"[{"type":"t"}]"#, "[0].token"),
    ] {
        let reply = send(&server, bad, &github.headers(bad)).await;
        assert_refused(&reply, 400, "invalid_request");
        assert_eq!(reply.json()["error"]["field"], field);
    }

    let reply = send(&server, &body, &github.headers(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let labels: Vec<Value> = reply.json().as_array().unwrap().clone();
    let expected = [
        "true_positive",
        "false_positive",
        "false_positive",
        "true_positive",
    ];
    for ((label, token), want) in labels.iter().zip(tokens).zip(expected) {
        let fields = json!({"token_raw": token, "token_type": "keygate_api_key", "label": want});
        assert_eq!(label, &fields);
    }
    assert_eq!(labels.len(), 4);
    assert!(!reply.text().contains(&revoking.id) && !reply.text().contains(&revoked_id));

    assert!(
        revoked_at(&server, &revoking, &revoked_id)
            .await
            .is_string(),
        "policy revoke"
    );
    assert!(
        revoked_at(&server, &notified, &left_id).await.is_null(),
        "policy notify"
    );
    for (tenant, id, revoked) in [(&revoking, &revoked_id, true), (&notified, &left_id, false)] {
        let entries = leak_entries(&server, tenant).await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0]["actor"], "secret-scanning");
        assert_eq!(entries[0]["target"]["key_id"], id.as_str());
        let changes = json!({"url": FOUND_AT, "source": "commit", "revoked": revoked});
        assert_eq!(entries[0]["changes"], changes);
    }

    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    let event = got
        .iter()
        .map(|r| r.json())
        .find(|e| e["data"]["key_id"] == revoked_id.as_str())
        .unwrap();
    let revoking_event = got.iter().find(|r| r.body.contains(&revoked_id)).unwrap();
    assert!(revoking_event.signed_with(&secret));
    assert_eq!(event["type"], "key.leaked");
    assert_eq!(event["data"]["url"], FOUND_AT);
    assert_eq!(event["data"]["source"], "commit");
    assert_eq!(event["data"]["revoked"], true);
    assert!(got.iter().any(|r| r.json()["data"]["revoked"] == false));

    // A revoked key is still a real leaked key; nothing more is done.
    let again = scanning::report(&[&revoked_key], FOUND_AT);
    let reply = send(&server, &again, &github.headers(&again)).await;
    assert_eq!(reply.json()[0]["label"], "true_positive");
    assert_eq!(leak_entries(&server, &revoking).await.len(), 1);
    let log = server.log();
    for token in tokens {
        assert!(!log.contains(token), "a reported token was logged");
    }
}

/// Ingests `requests` allowed requests of `key_id` in `minute` as batch `n`.
async fn ingest(server: &Server, key_set: &str, n: u32, key_id: &str, minute: u64, requests: u64) {
    let body = json!({
        "batch_id": format!("{n:032x}"),
        "key_set": key_set,
        "minutes": [{"minute": minute, "keys": [{"key_id": key_id, "outcomes": {"allowed": requests}}]}]
    });
    let body = body.to_string();
    let reply = server
        .call("POST", "/v1/usage", Some(common::FEED_TOKEN), Some(&body))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn an_hour_of_a_thousand_requests_beside_a_quiet_week_is_one_spike() {
    let server = Server::start_with(&["--spike-check-seconds", "1"]).await;
    let receiver = Receiver::start(200).await;
    let tenant = server.create_tenant("spiky").await;
    let secret = webhook(&server, &tenant, &receiver.url, &["key.usage.spike"]).await;
    let (quiet, _) = live_key(&server, &tenant).await;
    let (busy, _) = live_key(&server, &tenant).await;
    let key_set = server.feed("").await;
    let key_set = key_set.header("x-keygate-key-set").unwrap().to_string();
    let minute = common::now() / 60 * 60;
    let yesterday = minute - 86_400;
    // The quiet key: 20 requests a day ago (usual: 0.1 an hour). The busy
    // one: 200,000 (usual: 1,190 an hour, ten times that is no spike yet).
    ingest(&server, &key_set, 1, &quiet, yesterday, 20).await;
    ingest(&server, &key_set, 2, &busy, yesterday, 200_000).await;
    // Now 1,200 requests each, in two batches.
    for (n, id) in [(3, &quiet), (5, &busy)] {
        ingest(&server, &key_set, n, id, minute, 700).await;
        ingest(&server, &key_set, n + 1, id, minute, 500).await;
    }
    let got = receiver.wait_for(1, WAIT).await;
    assert!(got[0].signed_with(&secret));
    let event = got[0].json();
    assert_eq!(event["type"], "key.usage.spike");
    assert_eq!(event["data"]["key_id"], quiet.as_str());
    assert_eq!(event["data"]["requests"], 1200);
    assert_eq!(event["data"]["usual_hourly_requests"], 0);
    // More requests in the same hour tell nothing more (the scan runs each
    // second: three more scans).
    ingest(&server, &key_set, 7, &quiet, minute, 5_000).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.got().len(), 1, "one spike a key an hour");
}

//! Webhooks (SPEC §11) against the real binary and a real HTTP receiver on
//! loopback that checks every signature: a revocation (and a rotation
//! without grace) arrives as a signed `key.revoked`, a failing receiver is
//! retried with growing pauses and then marked failed, a delivery queued
//! before a restart (or by the admin CLI while no server runs) goes out
//! after it, `key.expiring` goes out once, deliveries are listed with
//! their status, the secret is shown once and nowhere else, and
//! a quota used up through ingested usage sends `key.quota.threshold` at
//! 80 % and 100 %, once each; deliveries go over https to a receiver whose
//! CA is given with `--webhook-ca-file` (and not without it), and a
//! webhook registered while loopback was allowed is not sent to once it
//! is not (the egress guard at delivery, SPEC §15); and a tenant whose
//! receivers never answer does not delay another tenant's deliveries.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::receiver::Receiver;
use common::{Server, Tenant};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// Registers a webhook for `events` at `url`; returns the create answer.
async fn webhook(server: &Server, tenant: &Tenant, url: &str, events: &[&str]) -> Value {
    let body = json!({"url": url, "events": events}).to_string();
    let reply = server
        .call("POST", "/api/v1/webhooks", Some(&tenant.key), Some(&body))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

async fn key(server: &Server, tenant: &Tenant, body: Value) -> String {
    let created = server.create_key(&tenant.key, body).await;
    created["id"].as_str().unwrap().to_string()
}

async fn deliveries(server: &Server, tenant: &Tenant, hook: &str) -> Vec<Value> {
    let path = format!("/api/v1/webhooks/{hook}/deliveries");
    let reply = server.call("GET", &path, Some(&tenant.key), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["data"].as_array().unwrap().clone()
}

/// Waits until every delivery of `hook` has `status`; returns them.
async fn settled(server: &Server, tenant: &Tenant, hook: &str, status: &str) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let all = deliveries(server, tenant, hook).await;
        if !all.is_empty() && all.iter().all(|d| d["status"] == status) {
            return all;
        }
        assert!(start.elapsed() < WAIT, "never all {status}: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revocation_arrives_signed_and_the_secret_is_shown_once() {
    let receiver = Receiver::start(200).await;
    let server = Server::start().await;
    let tenant = server.create_tenant("hooks").await;
    let other = server.create_tenant("other").await;
    let created = webhook(&server, &tenant, &receiver.url, &["key.revoked"]).await;
    let (hook, secret) = (
        created["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    assert!(
        secret.starts_with("whsec_") && secret.len() == 70,
        "{created}"
    );
    // Only key.expiring: gets nothing of a revocation.
    let expiring = Receiver::start(200).await;
    webhook(&server, &tenant, &expiring.url, &["key.expiring"]).await;
    // Another tenant's webhook gets nothing of this tenant's keys.
    let elsewhere = Receiver::start(200).await;
    webhook(&server, &other, &elsewhere.url, &["key.revoked"]).await;

    let id = key(
        &server,
        &tenant,
        json!({"name": "k", "scopes": ["memory:read"], "external_id": "alice"}),
    )
    .await;
    let start = Instant::now();
    let path = format!("/api/v1/api-keys/{id}");
    let reply = server.call("DELETE", &path, Some(&tenant.key), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let got = receiver.wait_for(1, WAIT).await;
    println!(
        "key.revoked arrived {:?} after the revocation",
        start.elapsed()
    );
    assert_eq!(got.len(), 1, "{got:?}");
    let event = got[0].json();
    assert!(
        got[0].signed_with(secret),
        "bad signature: {:?}",
        got[0].headers
    );
    assert!(!got[0].signed_with("whsec_wrong"));
    assert_eq!(event["type"], "key.revoked");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert!(event["created_at"].is_string());
    assert_eq!(event["data"]["key_id"], id.as_str());
    assert_eq!(event["data"]["external_id"], "alice");
    assert!(event["data"]["revoked_at"].is_string());
    assert_eq!(got[0].headers["keygate-event-type"], "key.revoked");
    // Revoking again is no new event.
    server.call("DELETE", &path, Some(&tenant.key), None).await;

    // A rotation without grace revokes the old key now: key.revoked too.
    let old = key(
        &server,
        &tenant,
        json!({"name": "r", "scopes": ["memory:read"]}),
    )
    .await;
    let rotate = format!("/api/v1/api-keys/{old}/rotate");
    let reply = server
        .call("POST", &rotate, Some(&tenant.key), Some("{}"))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    // With grace it is not revoked (yet): no event.
    let graced = key(
        &server,
        &tenant,
        json!({"name": "g", "scopes": ["memory:read"]}),
    )
    .await;
    let rotate = format!("/api/v1/api-keys/{graced}/rotate");
    let body = r#"{"grace_seconds": 3600}"#;
    let reply = server
        .call("POST", &rotate, Some(&tenant.key), Some(body))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let got = receiver.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_now = receiver.got();
    assert_eq!(got_now.len(), 2, "{got:?}");
    assert_eq!(got_now[1].json()["data"]["key_id"], old.as_str());
    assert!(got_now[1].signed_with(secret));
    assert!(elsewhere.got().is_empty());
    // The graced old key now expires within the hour: key.expiring only.
    let notices = expiring.wait_for(1, WAIT).await;
    assert!(
        notices.iter().all(|r| r.json()["type"] == "key.expiring"),
        "{notices:?}"
    );
    assert_eq!(notices[0].json()["data"]["key_id"], graced.as_str());

    let listed = settled(&server, &tenant, hook, "delivered").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for d in &listed {
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_response_code"], 200, "{d}");
        assert_eq!(d["event_type"], "key.revoked");
        assert!(
            d["next_attempt_at"].is_null() && d["finished_at"].is_string(),
            "{d}"
        );
    }
    // The secret: never listed, never logged; other tenants see no webhook.
    let list = server
        .call("GET", "/api/v1/webhooks", Some(&tenant.key), None)
        .await;
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 2);
    assert!(!list.text().contains(secret) && !list.text().contains("secret"));
    let audit = server
        .call("GET", "/api/v1/audit-log", Some(&tenant.key), None)
        .await;
    assert!(!audit.text().contains(secret));
    assert!(!server.log().contains(secret));
    let foreign = format!("/api/v1/webhooks/{hook}/deliveries");
    assert_eq!(
        server
            .call("GET", &foreign, Some(&other.key), None)
            .await
            .status,
        404
    );
    let delete = format!("/api/v1/webhooks/{hook}");
    assert_eq!(
        server
            .call("DELETE", &delete, Some(&other.key), None)
            .await
            .status,
        404
    );
    assert_eq!(
        server
            .call("DELETE", &delete, Some(&tenant.key), None)
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .call("GET", &foreign, Some(&tenant.key), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn bad_webhooks_are_refused_naming_the_field() {
    let server = Server::start().await;
    let tenant = server.create_tenant("bad").await;
    for (body, field) in [
        (
            json!({"url": "ftp://x.test/h", "events": ["key.revoked"]}),
            "url",
        ),
        (
            json!({"url": "not a url", "events": ["key.revoked"]}),
            "url",
        ),
        (json!({"url": "http://x.test/h", "events": []}), "events"),
        (
            json!({"url": "http://x.test/h", "events": ["key.eaten"]}),
            "events",
        ),
        (json!({"url": "http://x.test/h"}), "events"),
        (json!({"events": ["key.revoked"]}), "url"),
        (
            json!({"url": "http://x.test/h", "events": ["key.revoked"], "x": 1}),
            "x",
        ),
    ] {
        let reply = server
            .call(
                "POST",
                "/api/v1/webhooks",
                Some(&tenant.key),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.json()["error"]["field"], field, "{body}");
    }
    // A reading key lists but never registers.
    let reader = server
        .create_key(&tenant.key, json!({"name": "r", "scopes": ["tenant:read"]}))
        .await;
    let reader = reader["api_key"].as_str().unwrap();
    let body = json!({"url": "http://x.test/h", "events": ["key.revoked"]}).to_string();
    let reply = server
        .call("POST", "/api/v1/webhooks", Some(reader), Some(&body))
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let reply = server
        .call("GET", "/api/v1/webhooks", Some(reader), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let list = server
        .call("GET", "/api/v1/webhooks", Some(&tenant.key), None)
        .await;
    assert_eq!(list.json()["data"], json!([]));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_with_backoff_then_marked_failed() {
    let receiver = Receiver::start(500).await;
    let flags = [
        "--webhook-backoff-seconds",
        "1",
        "--webhook-retry-seconds",
        "8",
    ];
    let server = Server::start_with(&flags).await;
    let tenant = server.create_tenant("retry").await;
    let created = webhook(&server, &tenant, &receiver.url, &["key.revoked"]).await;
    let (hook, secret) = (
        created["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    let id = key(
        &server,
        &tenant,
        json!({"name": "k", "scopes": ["memory:read"]}),
    )
    .await;
    let path = format!("/api/v1/api-keys/{id}");
    server.call("DELETE", &path, Some(&tenant.key), None).await;

    let listed = settled(&server, &tenant, hook, "failed").await;
    let got = receiver.got();
    let gaps: Vec<f64> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    println!(
        "attempts: {}, pauses between them (s): {gaps:.2?}",
        got.len()
    );
    assert_eq!(got.len(), 4, "backoff 1, 2, 4 s within 8 s: {gaps:?}");
    assert!(got.iter().all(|r| r.signed_with(secret)));
    // Each attempt is the same event, freshly signed.
    assert!(got.iter().all(|r| r.body == got[0].body));
    for pair in gaps.windows(2) {
        assert!(pair[1] + 0.5 > pair[0], "pauses shrink: {gaps:?}");
    }
    assert!(gaps[2] > gaps[0] + 1.5, "no exponential growth: {gaps:?}");
    let d = &listed[0];
    assert_eq!(d["attempts"], 4, "{d}");
    assert_eq!(d["last_response_code"], 500, "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("500"), "{d}");
    assert!(d["next_attempt_at"].is_null(), "{d}");
}

#[tokio::test]
async fn a_delivery_queued_before_a_restart_goes_out_after_it() {
    let receiver = Receiver::start(503).await;
    let flags = ["--webhook-backoff-seconds", "1"];
    let mut server = Server::start_with(&flags).await;
    let tenant = server.create_tenant("restart").await;
    let created = webhook(&server, &tenant, &receiver.url, &["key.revoked"]).await;
    let (hook, secret) = (
        created["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    let first = key(
        &server,
        &tenant,
        json!({"name": "a", "scopes": ["memory:read"]}),
    )
    .await;
    let second = key(
        &server,
        &tenant,
        json!({"name": "b", "scopes": ["memory:read"]}),
    )
    .await;
    let path = format!("/api/v1/api-keys/{first}");
    server.call("DELETE", &path, Some(&tenant.key), None).await;
    // Tried and failed once: pending, retried later.
    assert!(!receiver.wait_for(1, WAIT).await.is_empty());
    let before = deliveries(&server, &tenant, hook).await;
    assert_eq!(before[0]["status"], "pending", "{before:?}");
    server.kill9();
    // While no server runs, the admin CLI revokes the other key: queued too.
    let out = server.admin(&["key", "revoke", "--tenant", &tenant.id, "--id", &second]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    receiver.answer(200);
    let tried = receiver.got().len();
    let start = Instant::now();
    server.restart().await;
    let listed = settled(&server, &tenant, hook, "delivered").await;
    println!("both delivered {:?} after the restart", start.elapsed());
    assert_eq!(listed.len(), 2, "{listed:?}");
    let after: Vec<Value> = receiver.got()[tried..]
        .iter()
        .filter(|r| r.signed_with(secret))
        .map(|r| r.json()["data"]["key_id"].clone())
        .collect();
    assert!(
        after.contains(&json!(first)) && after.contains(&json!(second)),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_key_expiring_within_a_week_is_announced_once() {
    let receiver = Receiver::start(200).await;
    let server = Server::start().await;
    let tenant = server.create_tenant("expiry").await;
    let created = webhook(&server, &tenant, &receiver.url, &["key.expiring"]).await;
    let secret = created["secret"].as_str().unwrap();
    let now = keygate_control_plane::clock::now();
    let at = |days: u64| keygate_control_plane::clock::rfc3339(now + days * 86_400);
    let soon = key(
        &server,
        &tenant,
        json!({"name": "soon", "scopes": ["memory:read"], "expires_at": at(3)}),
    )
    .await;
    key(
        &server,
        &tenant,
        json!({"name": "later", "scopes": ["memory:read"], "expires_at": at(30)}),
    )
    .await;
    let got = receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_now = receiver.got();
    assert_eq!(got_now.len(), 1, "{got:?}");
    let event = got_now[0].json();
    assert!(got_now[0].signed_with(secret));
    assert_eq!(event["type"], "key.expiring");
    assert_eq!(event["data"]["key_id"], soon.as_str());
    assert_eq!(event["data"]["expires_at"], at(3).as_str());
}

/// A key's quota used up through ingested usage, as Envoys report it:
/// the 80 % and 100 % crossings arrive signed, each once.
#[tokio::test]
async fn quota_crossings_from_ingested_usage_are_delivered_once() {
    let receiver = Receiver::start(200).await;
    let server = Server::start().await;
    let tenant = server.create_tenant("caps").await;
    let created = webhook(&server, &tenant, &receiver.url, &["key.quota.threshold"]).await;
    let secret = created["secret"].as_str().unwrap();
    let body = json!({"name": "q", "scopes": ["memory:read"], "quota": {"requests": 10}});
    let id = key(&server, &tenant, body).await;
    let key_set = server.feed("").await;
    let key_set = key_set.header("x-keygate-key-set").unwrap().to_string();
    for (batch, allowed) in [(1u32, 8u64), (2, 1), (3, 5)] {
        let body = json!({
            "batch_id": format!("{batch:032x}"),
            "key_set": key_set,
            "minutes": [{"minute": common::now() / 60 * 60,
                         "keys": [{"key_id": id, "outcomes": {"allowed": allowed}}]}]
        });
        let reply = server
            .call(
                "POST",
                "/v1/usage",
                Some(common::FEED_TOKEN),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let got = receiver.wait_for(2, WAIT).await;
    assert!(got.iter().all(|r| r.signed_with(secret)));
    let mut data: Vec<Value> = got.iter().map(|r| r.json()["data"].clone()).collect();
    data.sort_by_key(|d| d["percent"].as_u64());
    assert_eq!(
        data[0],
        json!({"key_id": id, "kind": "quota", "percent": 80, "used": 8, "limit": 10})
    );
    assert_eq!(
        (data[1]["percent"].as_u64(), data[1]["used"].as_u64()),
        (Some(100), Some(14))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2, "each once");
}

/// A CA, and a server config for `127.0.0.1` with a certificate it signed;
/// the CA's PEM is written to `dir/ca.pem`.
fn tls_for_loopback(dir: &std::path::Path) -> (PathBuf, tokio_rustls::rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key)
        .unwrap();
    (path, config)
}

#[tokio::test]
async fn deliveries_go_over_https_to_a_receiver_of_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = tls_for_loopback(dir.path());
    let receiver = Receiver::start_tls(200, tls).await;
    // Without the CA, the receiver's certificate is not trusted.
    let mut server = Server::start().await;
    let tenant = server.create_tenant("tls").await;
    let hook = webhook(&server, &tenant, &receiver.url, &["key.revoked"]).await;
    let hook = hook["id"].as_str().unwrap();
    revoke_new_key(&server, &tenant, "a").await;
    let failed = tried(&server, &tenant, hook).await;
    println!("untrusted receiver: {}", failed["last_error"]);
    assert!(failed["last_error"].is_string(), "{failed}");
    assert!(receiver.got().is_empty());
    // With it, the next delivery arrives.
    let ca = ca.to_str().unwrap();
    server
        .restart_with(&[
            "--webhook-allow-cidr",
            "127.0.0.0/8",
            "--webhook-ca-file",
            ca,
        ])
        .await;
    let id = revoke_new_key(&server, &tenant, "b").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["data"]["key_id"], id.as_str());
}

#[tokio::test]
async fn a_loopback_webhook_is_not_sent_to_once_loopback_is_not_allowed() {
    let receiver = Receiver::start(200).await;
    let mut server = Server::start().await;
    let tenant = server.create_tenant("guard").await;
    let hook = webhook(&server, &tenant, &receiver.url, &["key.revoked"]).await;
    let hook = hook["id"].as_str().unwrap();
    // Public addresses only (a documentation range stands in for "none").
    server
        .restart_with(&["--webhook-allow-cidr", "192.0.2.0/24"])
        .await;
    revoke_new_key(&server, &tenant, "a").await;
    let refused = tried(&server, &tenant, hook).await;
    assert_eq!(refused["last_error"], "url resolves to a private address");
    assert_eq!(
        refused["status"], "pending",
        "retried: the operator may allow it again"
    );
    assert!(receiver.got().is_empty());
}

async fn revoke(server: &Server, tenant: &Tenant, id: &str) {
    let path = format!("/api/v1/api-keys/{id}");
    let reply = server.call("DELETE", &path, Some(&tenant.key), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Creates a `memory:read` key named `name` for `tenant` and revokes it
/// (one `key.revoked` event); returns its id.
async fn revoke_new_key(server: &Server, tenant: &Tenant, name: &str) -> String {
    let id = key(
        server,
        tenant,
        json!({"name": name, "scopes": ["memory:read"]}),
    )
    .await;
    revoke(server, tenant, &id).await;
    id
}

/// Waits until the latest delivery of `hook` was tried; returns it.
async fn tried(server: &Server, tenant: &Tenant, hook: &str) -> Value {
    let start = Instant::now();
    loop {
        let all = deliveries(server, tenant, hook).await;
        if let Some(latest) = all.first().filter(|d| d["attempts"].as_u64() > Some(0)) {
            return latest.clone();
        }
        assert!(start.elapsed() < WAIT, "never tried: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Accepts connections on loopback and holds them, never answering;
/// returns its URL and how many it accepted so far.
async fn tarpit() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn a_tenant_whose_receivers_never_answer_does_not_delay_another() {
    let (tarpit, accepted) = tarpit().await;
    let receiver = Receiver::start(200).await;
    let server = Server::start().await;
    let stuck = server.create_tenant("stuck").await;
    let other = server.create_tenant("other").await;
    // 20 webhooks x 4 revocations: more sends than the sender runs at once.
    for _ in 0..20 {
        webhook(&server, &stuck, &tarpit, &["key.revoked"]).await;
    }
    webhook(&server, &other, &receiver.url, &["key.revoked"]).await;
    for name in ["a", "b", "c", "d"] {
        revoke_new_key(&server, &stuck, name).await;
    }
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) < 8 {
        assert!(start.elapsed() < WAIT, "the tarpit got no sends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = key(
        &server,
        &other,
        json!({"name": "e", "scopes": ["memory:read"]}),
    )
    .await;
    let revoked = Instant::now();
    revoke(&server, &other, &id).await;
    let got = receiver.wait_for(1, WAIT).await;
    let delay = got[0].at.duration_since(revoked);
    let held = accepted.load(Ordering::SeqCst);
    println!("{held} sends held by the tarpit; the other tenant's arrived after {delay:?}");
    assert!(delay < Duration::from_secs(1), "{delay:?}");
    assert!(held <= 8, "one tenant ran {held} sends at once");
}

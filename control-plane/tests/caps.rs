//! Caps and quotas (SPEC §11, control-plane side): `quota` and `spend_cap`
//! on create and PATCH (400 naming the field, nothing half-applied), shown
//! with what they used; ingested usage fills them and a used-up key is
//! `quota_exhausted` / `spend_exhausted` in the key table feed; a raise, a
//! reset (`POST /api/v1/api-keys/{id}/usage/reset`) or the upkeep's refill
//! at the period's end brings it back; the 80 % and 100 % crossings are
//! handed on once a period. On either backend (`KEYGATE_TEST_BACKEND=postgres`).

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{eventually, hash, join_all, now, snapshot, Server, FEED_TOKEN};
use keygate::feed::KeyStatus;
use serde_json::{json, Value};
use std::time::Duration;

/// What the log line of one threshold crossing says.
const CROSSED: &str = "key cap threshold crossed";

async fn key_set(server: &Server) -> String {
    let reply = server.feed("").await;
    reply.header("x-keygate-key-set").unwrap().to_string()
}

/// A key of `admin`'s tenant with `extra` fields: (id, full key, view).
async fn new_key(server: &Server, admin: &str, extra: Value) -> (String, String, Value) {
    let mut body = json!({"name": "capped", "scopes": ["memory:read"]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    let created = server.create_key(admin, body).await;
    (
        created["id"].as_str().unwrap().to_string(),
        created["api_key"].as_str().unwrap().to_string(),
        created,
    )
}

/// Ingests one batch of `allowed` requests costing `cost` for `key_id` in
/// the current minute, as an Envoy reports them.
async fn report(server: &Server, batch: u32, key_id: &str, allowed: u64, cost: u64) {
    let body = json!({
        "batch_id": format!("{batch:032x}"),
        "key_set": key_set(server).await,
        "minutes": [{"minute": now() / 60 * 60,
                     "keys": [{"key_id": key_id, "outcomes": {"allowed": allowed},
                               "cost_micros": cost}]}]
    });
    let reply = server
        .call(
            "POST",
            "/v1/usage",
            Some(FEED_TOKEN),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The key's status in the key table the feed serves now.
async fn status(server: &Server, key: &str) -> KeyStatus {
    let table = snapshot(&server.feed("").await.bytes);
    table.get(&hash(key)).expect("key in the table").status
}

async fn view(server: &Server, admin: &str, id: &str) -> Value {
    let reply = server
        .call("GET", &format!("/api/v1/api-keys/{id}"), Some(admin), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn patch(server: &Server, admin: &str, id: &str, body: Value) -> common::Reply {
    let path = format!("/api/v1/api-keys/{id}");
    server
        .call("PATCH", &path, Some(admin), Some(&body.to_string()))
        .await
}

fn field(reply: &common::Reply) -> String {
    assert_eq!(reply.status, 400, "{}", reply.text());
    reply.json()["error"]["field"].as_str().unwrap().to_string()
}

/// How many times the log says key `id` crossed `percent` of a cap.
fn crossings(server: &Server, id: &str, percent: u8) -> usize {
    let percent = format!("percent={percent}");
    let log = server.log();
    log.lines()
        .filter(|l| l.contains(CROSSED) && l.contains(id) && l.contains(&percent))
        .count()
}

fn tomorrow() -> String {
    common::rfc3339((now() / 86_400 + 1) * 86_400)
}

#[tokio::test]
async fn bad_caps_are_400s_naming_the_field_and_change_nothing() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let cases = [
        (json!({"quota": {"requests": 0}}), "quota.requests"),
        (json!({"quota": {"refill": "daily"}}), "quota.requests"),
        (
            json!({"quota": {"requests": 5, "refill": "weekly"}}),
            "quota.refill",
        ),
        (json!({"quota": [5]}), "quota"),
        (json!({"spend_cap": {"micros": 1.5}}), "spend_cap.micros"),
        (
            json!({"spend_cap": {"micros": 5, "period": "daily"}}),
            "spend_cap.period",
        ),
        (
            json!({"spend_cap": {"micros": 5, "cap": 1}}),
            "spend_cap.cap",
        ),
    ];
    for (extra, name) in &cases {
        let mut body = json!({"name": "k", "scopes": ["memory:read"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let reply = server
            .call(
                "POST",
                "/api/v1/api-keys",
                Some(&tenant.key),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(&field(&reply), name, "create {extra}");
    }
    let (id, _, created) = new_key(
        &server,
        &tenant.key,
        json!({"quota": {"requests": 10, "refill": "daily"}}),
    )
    .await;
    let quota = json!({"requests": 10, "refill": "daily", "used": 0,
                       "resets_at": tomorrow(), "exhausted": false});
    assert_eq!(created["quota"], quota);
    assert_eq!(created["spend_cap"], Value::Null);
    for (extra, name) in &cases {
        // A good name with a bad cap: nothing of the patch is written.
        let mut body = extra.clone();
        body["name"] = json!("renamed");
        assert_eq!(&field(&patch(&server, &tenant.key, &id, body).await), name);
    }
    let now_view = view(&server, &tenant.key, &id).await;
    assert_eq!(
        (now_view["name"].clone(), now_view["quota"].clone()),
        (json!("capped"), quota)
    );
    let cleared = patch(&server, &tenant.key, &id, json!({"quota": null})).await;
    assert_eq!(cleared.status, 200, "{}", cleared.text());
    assert_eq!(cleared.json()["quota"], Value::Null);
    let listed = server.list_all(&tenant.key).await;
    assert!(listed
        .iter()
        .all(|k| k["quota"].is_null() && k["spend_cap"].is_null()));
}

#[tokio::test]
async fn a_used_up_quota_is_exhausted_in_the_feed_until_raised_or_reset() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let (id, key, _) = new_key(
        &server,
        &tenant.key,
        json!({"quota": {"requests": 10, "refill": "daily"}}),
    )
    .await;
    report(&server, 1, &id, 6, 0).await;
    assert_eq!(status(&server, &key).await, KeyStatus::Active);
    assert_eq!(view(&server, &tenant.key, &id).await["quota"]["used"], 6);
    report(&server, 2, &id, 5, 0).await;
    assert_eq!(status(&server, &key).await, KeyStatus::QuotaExhausted);
    let shown = view(&server, &tenant.key, &id).await["quota"].clone();
    assert_eq!(
        (shown["used"].clone(), shown["exhausted"].clone()),
        (json!(11), json!(true))
    );
    // A batch sent again counts nothing.
    report(&server, 2, &id, 5, 0).await;
    assert_eq!(view(&server, &tenant.key, &id).await["quota"]["used"], 11);

    let raised = patch(
        &server,
        &tenant.key,
        &id,
        json!({"quota": {"requests": 20, "refill": "daily"}}),
    )
    .await;
    assert_eq!(raised.status, 200, "{}", raised.text());
    let raised = raised.json();
    assert_eq!(raised["quota"]["used"], 11, "a raise keeps what was used");
    assert!(raised["propagated"].is_object(), "the change is delivered");
    assert_eq!(status(&server, &key).await, KeyStatus::Active);

    report(&server, 3, &id, 9, 0).await;
    assert_eq!(status(&server, &key).await, KeyStatus::QuotaExhausted);
    let path = format!("/api/v1/api-keys/{id}/usage/reset");
    let reset = server.call("POST", &path, Some(&tenant.key), None).await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(reset.json()["quota"]["used"], 0);
    assert_eq!(status(&server, &key).await, KeyStatus::Active);
    let other = server.create_tenant("other").await;
    let foreign = server.call("POST", &path, Some(&other.key), None).await;
    assert_eq!(foreign.status, 404, "{}", foreign.text());
}

#[tokio::test]
async fn a_used_up_spend_cap_is_exhausted_until_its_month_ends() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let (id, key, created) = new_key(
        &server,
        &tenant.key,
        json!({"spend_cap": {"micros": 1000, "period": "month"},
               "quota": {"requests": 1000}}),
    )
    .await;
    assert_eq!(
        created["quota"]["resets_at"],
        Value::Null,
        "no refill: never"
    );
    report(&server, 1, &id, 2, 999).await;
    assert_eq!(status(&server, &key).await, KeyStatus::Active);
    report(&server, 2, &id, 1, 1).await;
    assert_eq!(status(&server, &key).await, KeyStatus::SpendExhausted);
    let shown = view(&server, &tenant.key, &id).await;
    assert_eq!(shown["spend_cap"]["used"], 1000);
    assert_eq!(shown["quota"]["used"], 3);

    // The month the count belongs to is over (moved back in the database):
    // the upkeep refills the key within a few seconds.
    let (start, month) = (month_start(), (now() / 86_400 - 40) * 86_400);
    server
        .sql(&format!(
            "UPDATE api_keys SET caps = replace(caps, '\"period_start\":{start}', \
             '\"period_start\":{month}') WHERE caps LIKE '%\"spend\"%';"
        ))
        .await;
    let refilled = eventually(Duration::from_secs(10), || async {
        status(&server, &key).await == KeyStatus::Active
    })
    .await;
    assert!(refilled, "the refill brought the key back");
    let shown = view(&server, &tenant.key, &id).await;
    assert_eq!(shown["spend_cap"]["used"], 0);
    assert_eq!(
        shown["quota"]["used"], 3,
        "the lifetime quota keeps its count"
    );
}

/// The start of the current UTC month, as the caps store it.
fn month_start() -> u64 {
    let at = time::OffsetDateTime::now_utc();
    let first = time::Date::from_calendar_date(at.year(), at.month(), 1).unwrap();
    first.midnight().assume_utc().unix_timestamp() as u64
}

#[tokio::test]
async fn thresholds_are_handed_on_once_a_period() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let (id, _, _) = new_key(
        &server,
        &tenant.key,
        json!({"quota": {"requests": 100, "refill": "monthly"}}),
    )
    .await;
    let crossings = |percent| crossings(&server, &id, percent);
    report(&server, 1, &id, 79, 0).await;
    assert_eq!((crossings(80), crossings(100)), (0, 0));
    report(&server, 2, &id, 2, 0).await;
    report(&server, 3, &id, 5, 0).await;
    report(&server, 3, &id, 5, 0).await;
    assert!(
        eventually(Duration::from_secs(5), || async { crossings(80) == 1 }).await,
        "80 % announced"
    );
    report(&server, 4, &id, 14, 0).await;
    report(&server, 5, &id, 50, 0).await;
    assert!(
        eventually(Duration::from_secs(5), || async { crossings(100) == 1 }).await,
        "100 % announced"
    );
    assert_eq!((crossings(80), crossings(100)), (1, 1), "each once");
}

/// Concurrent batches folded into one write cross each threshold once and
/// exhaust the key exactly at its quota.
#[tokio::test]
async fn concurrent_batches_cross_each_threshold_once() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let quota = json!({"quota": {"requests": 100, "refill": "monthly"}});
    let (id, key, _) = new_key(&server, &tenant.key, quota).await;
    join_all((1..=25).map(|n| report(&server, n, &id, 4, 0))).await;
    assert_eq!(view(&server, &tenant.key, &id).await["quota"]["used"], 100);
    assert_eq!(status(&server, &key).await, KeyStatus::QuotaExhausted);
    let crossings = |percent| crossings(&server, &id, percent);
    assert!(
        eventually(Duration::from_secs(5), || async { crossings(100) == 1 }).await,
        "100 % announced"
    );
    assert_eq!((crossings(80), crossings(100)), (1, 1), "each once");
}

//! Usage (SPEC §11, control-plane side): `POST /v1/usage` behind the feed
//! token, checked whole (400 naming the field, nothing counted), counted
//! once per batch id (also sent concurrently, and folded with other batches
//! of the same keys); the counts and cost in
//! `GET /api/v1/api-keys/{id}/usage` and `GET /api/v1/usage` per minute,
//! hour and day, tenant-isolated; `last_used_at` in every key view; minute
//! rows past 48 h folded into hours by the upkeep. On either backend
//! (`KEYGATE_TEST_BACKEND=postgres`).

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{join_all, pg, Server, FEED_TOKEN};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The start of the hour before this one: its minutes are past and recent.
fn last_hour() -> u64 {
    now() / 3600 * 3600 - 3600
}

fn rfc3339(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn key_set(server: &Server) -> String {
    let reply = server.feed("").await;
    reply.header("x-keygate-key-set").unwrap().to_string()
}

fn batch_id(n: u32) -> String {
    format!("{n:032x}")
}

/// A batch of `(minute, key id, outcomes, cost)` rows, one minute entry each.
fn batch(id: &str, key_set: &str, rows: &[(u64, &str, Value, u64)]) -> String {
    let minutes: Vec<Value> = rows
        .iter()
        .map(|(minute, key, outcomes, cost)| {
            json!({"minute": minute, "keys": [{"key_id": key, "outcomes": outcomes, "cost_micros": cost}]})
        })
        .collect();
    json!({"batch_id": id, "key_set": key_set, "minutes": minutes}).to_string()
}

async fn ingest(server: &Server, body: &str) -> common::Reply {
    server
        .call("POST", "/v1/usage", Some(FEED_TOKEN), Some(body))
        .await
}

async fn usage(server: &Server, key: &str, path: &str) -> Value {
    let reply = server.call("GET", path, Some(key), None).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json()
}

fn window(from: u64, to: u64, granularity: &str) -> String {
    format!(
        "from={}&to={}&granularity={granularity}",
        rfc3339(from),
        rfc3339(to)
    )
}

async fn new_key(server: &Server, admin: &str, extra: Value) -> String {
    let mut body = json!({"name": "k", "scopes": ["memory:read"]});
    for (name, value) in extra.as_object().unwrap() {
        body[name] = value.clone();
    }
    let created = server.create_key(admin, body).await;
    assert_eq!(
        created["last_used_at"],
        Value::Null,
        "a new key was never used"
    );
    created["id"].as_str().unwrap().to_string()
}

fn field(reply: &common::Reply) -> String {
    assert_eq!(reply.status, 400, "{}", reply.text());
    reply.json()["error"]["field"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn ingest_needs_the_feed_token() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let body = batch(&batch_id(1), &key_set(&server).await, &[]);
    for token in [
        None,
        Some("wrong-token-0123456789abcdef"),
        Some(tenant.key.as_str()),
    ] {
        let reply = server.call("POST", "/v1/usage", token, Some(&body)).await;
        assert_eq!(reply.status, 401, "{token:?}: {}", reply.text());
        assert_eq!(reply.json()["error"]["type"], "unauthorized");
    }
    let reply = ingest(&server, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"duplicate": false, "unknown_keys": 0}));
}

#[tokio::test]
async fn bad_batches_are_400s_naming_the_field_and_count_nothing() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let key = new_key(&server, &tenant.key, json!({})).await;
    let set = key_set(&server).await;
    let at = last_hour();
    let good = (at, key.as_str(), json!({"allowed": 5}), 10);
    let foreign = "0".repeat(32);
    let cases = [
        (
            batch(&batch_id(1), &foreign, std::slice::from_ref(&good)),
            "key_set",
        ),
        (batch("xyz", &set, std::slice::from_ref(&good)), "batch_id"),
        ("not json".to_string(), "body"),
        (
            json!({"batch_id": batch_id(1), "key_set": set}).to_string(),
            "minutes",
        ),
        (
            batch(
                &batch_id(1),
                &set,
                &[good.clone(), (at + 30, &key, json!({}), 0)],
            ),
            "minutes[1].minute",
        ),
        (
            batch(
                &batch_id(1),
                &set,
                &[good.clone(), (at, &key, json!({"teapot": 1}), 0)],
            ),
            "minutes[1].keys[0].outcomes.teapot",
        ),
        (
            batch(
                &batch_id(1),
                &set,
                &[good.clone(), (at, &key, json!({"allowed": -1}), 0)],
            ),
            "minutes[1].keys[0].outcomes.allowed",
        ),
        (
            batch(
                &batch_id(1),
                &set,
                &[good.clone(), (at, "key_x", json!({}), 0)],
            ),
            "minutes[1].keys[0].key_id",
        ),
    ];
    for (body, name) in &cases {
        assert_eq!(&field(&ingest(&server, body).await), name, "{body}");
    }
    let path = format!("/api/v1/usage?{}", window(at, at + 3600, "minute"));
    assert_eq!(usage(&server, &tenant.key, &path).await["data"], json!([]));
    let reply = ingest(&server, &batch(&batch_id(1), &set, &[good])).await;
    assert_eq!(
        reply.json()["duplicate"],
        false,
        "a refused batch id is not spent"
    );
}

#[tokio::test]
async fn a_batch_is_counted_once_even_sent_concurrently() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let key = new_key(&server, &tenant.key, json!({})).await;
    let set = key_set(&server).await;
    let at = last_hour();
    let unknown = "key_00000000000000ff";
    let rows = [
        (at, key.as_str(), json!({"allowed": 3}), 7),
        (at, unknown, json!({"allowed": 1}), 0),
    ];
    let body = batch(&batch_id(1), &set, &rows);
    let first = ingest(&server, &body).await;
    assert_eq!(first.json(), json!({"duplicate": false, "unknown_keys": 1}));
    assert_eq!(
        ingest(&server, &body).await.json(),
        json!({"duplicate": true})
    );

    let body = batch(&batch_id(2), &set, &rows);
    let started = Instant::now();
    let sends = (0..8).map(|_| ingest(&server, &body));
    let replies = join_all(sends).await;
    println!("8 concurrent sends of one batch: {:?}", started.elapsed());
    let fresh = replies
        .iter()
        .filter(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["duplicate"] == false
        })
        .count();
    assert_eq!(fresh, 1, "exactly one send counts");
    let path = format!(
        "/api/v1/api-keys/{key}/usage?{}",
        window(at, at + 60, "minute")
    );
    let data = &usage(&server, &tenant.key, &path).await["data"];
    assert_eq!(data[0]["requests"], json!({"allowed": 6}));
    assert_eq!(data[0]["cost_micros"], 14);
}

/// Batches of the same keys arriving together are folded into one write
/// (SPEC §18): each still counts once, answers for itself (its own unknown
/// keys), and a resend is a duplicate, however the sends interleave.
#[tokio::test]
async fn concurrent_batches_of_the_same_keys_each_count_once() {
    const BATCHES: u32 = 24;
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let (one, two) = (
        new_key(&server, &tenant.key, json!({})).await,
        new_key(&server, &tenant.key, json!({})).await,
    );
    let set = key_set(&server).await;
    let at = last_hour();
    let unknown = "key_00000000000000fe";
    let body = |n: u32| {
        let mut rows = vec![
            (at, one.as_str(), json!({"allowed": n}), 10),
            (at + 60, two.as_str(), json!({"rate_limited": 1}), 0),
        ];
        if n.is_multiple_of(2) {
            rows.push((at, unknown, json!({"allowed": 1}), 0));
        }
        batch(&batch_id(n), &set, &rows)
    };
    // Every batch sent twice, all at once.
    let sends: Vec<(u32, String)> = (1..=BATCHES)
        .chain(1..=BATCHES)
        .map(|n| (n, body(n)))
        .collect();
    let replies = join_all(sends.iter().map(|(_, b)| ingest(&server, b))).await;
    let mut counted = Vec::new();
    for ((n, _), reply) in sends.iter().zip(&replies) {
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.json()["duplicate"] == false {
            assert_eq!(
                reply.json()["unknown_keys"],
                u32::from(n.is_multiple_of(2)),
                "batch {n}"
            );
            counted.push(*n);
        }
    }
    counted.sort_unstable();
    assert_eq!(
        counted,
        (1..=BATCHES).collect::<Vec<_>>(),
        "each batch counted once"
    );
    let again = join_all(sends.iter().map(|(_, b)| ingest(&server, b))).await;
    assert!(again.iter().all(|r| r.json() == json!({"duplicate": true})));

    let minutes = |key: &str| {
        format!(
            "/api/v1/api-keys/{key}/usage?{}",
            window(at, at + 120, "minute")
        )
    };
    let data = &usage(&server, &tenant.key, &minutes(&one)).await["data"];
    assert_eq!(
        data[0]["requests"],
        json!({"allowed": BATCHES * (BATCHES + 1) / 2})
    );
    assert_eq!(data[0]["cost_micros"], BATCHES * 10);
    let data = &usage(&server, &tenant.key, &minutes(&two)).await["data"];
    assert_eq!(data[0]["requests"], json!({"rate_limited": BATCHES}));
    let got = usage(&server, &tenant.key, &format!("/api/v1/api-keys/{one}")).await;
    assert_eq!(got["last_used_at"], rfc3339(at));
}

#[tokio::test]
async fn counts_and_cost_show_per_minute_hour_and_day_and_last_used_moves() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let key = new_key(&server, &tenant.key, json!({})).await;
    let set = key_set(&server).await;
    let at = last_hour();
    let rows = [
        (
            at + 60,
            key.as_str(),
            json!({"allowed": 4, "invalid_key": 1}),
            250,
        ),
        (
            at + 120,
            key.as_str(),
            json!({"allowed": 2, "rate_limited_envoy": 3}),
            50,
        ),
        // Refusals only: the key was not used then.
        (at + 180, key.as_str(), json!({"missing_scope": 2}), 0),
    ];
    ingest(&server, &batch(&batch_id(1), &set, &rows)).await;

    let path = format!(
        "/api/v1/api-keys/{key}/usage?{}",
        window(at, at + 3600, "minute")
    );
    let minutes = usage(&server, &tenant.key, &path).await;
    assert_eq!(minutes["granularity"], "minute");
    assert_eq!(minutes["from"], rfc3339(at));
    let data = minutes["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{minutes}");
    assert_eq!(data[0]["start"], rfc3339(at + 60));
    assert_eq!(data[0]["requests"], json!({"allowed": 4, "invalid_key": 1}));
    assert_eq!(
        (data[0]["total"].as_u64(), data[0]["cost_micros"].as_u64()),
        (Some(5), Some(250))
    );
    assert_eq!(
        data[1]["requests"],
        json!({"allowed": 2, "rate_limited_envoy": 3})
    );

    let expect =
        json!({"allowed": 6, "invalid_key": 1, "missing_scope": 2, "rate_limited_envoy": 3});
    for granularity in ["hour", "day"] {
        for path in [
            format!(
                "/api/v1/api-keys/{key}/usage?{}",
                window(at, at + 3600, granularity)
            ),
            format!("/api/v1/usage?{}", window(at, at + 3600, granularity)),
        ] {
            let answer = usage(&server, &tenant.key, &path).await;
            let data = answer["data"].as_array().unwrap();
            assert_eq!(data.len(), 1, "{path}: {answer}");
            assert_eq!(data[0]["requests"], expect, "{path}");
            assert_eq!(data[0]["total"], 12);
            assert_eq!(data[0]["cost_micros"], 300);
            let start = if granularity == "hour" {
                at
            } else {
                at / 86_400 * 86_400
            };
            assert_eq!(data[0]["start"], rfc3339(start), "{path}");
        }
    }
    // Default window: the last 24 hours, by hour.
    let answer = usage(&server, &tenant.key, "/api/v1/usage").await;
    assert_eq!(answer["granularity"], "hour");
    assert_eq!(answer["data"][0]["total"], 12);

    let used = rfc3339(at + 120);
    let got = usage(&server, &tenant.key, &format!("/api/v1/api-keys/{key}")).await;
    assert_eq!(got["last_used_at"], used);
    let listed = server.list_all(&tenant.key).await;
    let entry = listed.iter().find(|k| k["id"] == key.as_str()).unwrap();
    assert_eq!(entry["last_used_at"], used);
    let first = listed
        .iter()
        .find(|k| k["id"] == tenant.key_id.as_str())
        .unwrap();
    assert_eq!(first["last_used_at"], Value::Null);
    // An older batch arriving late never moves it back; a newer one does.
    let late = [(at, key.as_str(), json!({"allowed": 1}), 0)];
    ingest(&server, &batch(&batch_id(2), &set, &late)).await;
    let got = usage(&server, &tenant.key, &format!("/api/v1/api-keys/{key}")).await;
    assert_eq!(got["last_used_at"], used);
    let newer = [(at + 600, tenant.key_id.as_str(), json!({"allowed": 1}), 0)];
    ingest(&server, &batch(&batch_id(3), &set, &newer)).await;
    let me = usage(&server, &tenant.key, "/api/v1/auth/me").await;
    assert_eq!(me["key"]["last_used_at"], rfc3339(at + 600));
}

#[tokio::test]
async fn bad_queries_are_400s_naming_the_parameter() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let at = last_hour();
    for (query, name) in [
        ("from=yesterday".to_string(), "from"),
        ("to=2020".to_string(), "to"),
        (window(at, at, "hour"), "to"),
        (window(at - 401 * 86_400, at, "day"), "from"),
        (window(at, at + 60, "week"), "granularity"),
        (window(at - 3 * 86_400, at, "minute"), "granularity"),
        ("external_id=a%20b".to_string(), "external_id"),
        ("limit=3".to_string(), "limit"),
    ] {
        let reply = server
            .call(
                "GET",
                &format!("/api/v1/usage?{query}"),
                Some(&tenant.key),
                None,
            )
            .await;
        assert_eq!(field(&reply), name, "{query}");
    }
    let path = format!("/api/v1/api-keys/{}/usage?external_id=u", tenant.key_id);
    let reply = server.call("GET", &path, Some(&tenant.key), None).await;
    assert_eq!(
        field(&reply),
        "external_id",
        "one key's usage takes no owner"
    );
}

#[tokio::test]
async fn usage_is_tenant_isolated_and_can_be_asked_per_owner() {
    let server = Server::start().await;
    let (acme, other) = (
        server.create_tenant("acme").await,
        server.create_tenant("other").await,
    );
    let alice = new_key(&server, &acme.key, json!({"external_id": "alice"})).await;
    let bob = new_key(&server, &acme.key, json!({"external_id": "bob"})).await;
    let theirs = new_key(&server, &other.key, json!({"external_id": "alice"})).await;
    let reader = server
        .create_key(&acme.key, json!({"name": "r", "scopes": ["tenant:read"]}))
        .await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let set = key_set(&server).await;
    let at = last_hour();
    let rows = [
        (at, alice.as_str(), json!({"allowed": 1}), 1),
        (at, bob.as_str(), json!({"allowed": 10}), 10),
        (at, theirs.as_str(), json!({"allowed": 100}), 100),
    ];
    ingest(&server, &batch(&batch_id(1), &set, &rows)).await;
    let span = window(at, at + 3600, "hour");
    let total = |answer: Value| answer["data"][0]["total"].as_u64().unwrap_or(0);
    assert_eq!(
        total(usage(&server, &reader, &format!("/api/v1/usage?{span}")).await),
        11
    );
    let alices = format!("/api/v1/usage?{span}&external_id=alice");
    assert_eq!(total(usage(&server, &acme.key, &alices).await), 1);
    assert_eq!(total(usage(&server, &other.key, &alices).await), 100);
    let reply = server
        .call(
            "GET",
            &format!("/api/v1/api-keys/{theirs}/usage"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let mem = server
        .create_key(&acme.key, json!({"name": "m", "scopes": ["memory:read"]}))
        .await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = server.call("GET", "/api/v1/usage", Some(&mem), None).await;
    assert_eq!(
        reply.status,
        403,
        "usage needs tenant:read: {}",
        reply.text()
    );
}

/// Minute rows before `before`, counted in the database.
async fn minute_rows_before(server: &Server, before: u64) -> u64 {
    let sql = format!("SELECT count(*) FROM usage_minute WHERE minute < {before}");
    if server.on_postgres() {
        let text = pg::rows(server.database(), &format!("SELECT ({sql})::text")).await;
        String::from_utf8(text).unwrap().trim().parse().unwrap()
    } else {
        let conn = rusqlite::Connection::open(server.database()).unwrap();
        conn.query_row(&sql, [], |row| row.get(0)).unwrap()
    }
}

#[tokio::test]
async fn minutes_past_48_hours_fold_into_hours() {
    let server = Server::start().await;
    let tenant = server.create_tenant("acme").await;
    let key = new_key(&server, &tenant.key, json!({})).await;
    let set = key_set(&server).await;
    let old = now() / 3600 * 3600 - 50 * 3600;
    let rows = [
        (old, key.as_str(), json!({"allowed": 1, "expired": 2}), 5),
        (old + 60, key.as_str(), json!({"allowed": 3}), 6),
        (old + 3600, key.as_str(), json!({"allowed": 4}), 0),
    ];
    ingest(&server, &batch(&batch_id(1), &set, &rows)).await;
    let started = Instant::now();
    while minute_rows_before(&server, old + 7200).await > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the upkeep never folded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("old minute rows folded after {:?}", started.elapsed());
    let path = format!(
        "/api/v1/api-keys/{key}/usage?{}",
        window(old, old + 7200, "hour")
    );
    let data = usage(&server, &tenant.key, &path).await["data"].clone();
    assert_eq!(data[0]["start"], rfc3339(old));
    assert_eq!(data[0]["requests"], json!({"allowed": 4, "expired": 2}));
    assert_eq!(data[0]["cost_micros"], 11);
    assert_eq!(data[1]["requests"], json!({"allowed": 4}));
    let path = format!(
        "/api/v1/api-keys/{key}/usage?{}",
        window(old, old + 7200, "minute")
    );
    let reply = server.call("GET", &path, Some(&tenant.key), None).await;
    assert_eq!(field(&reply), "granularity");
}

/// A batch of `n` key rows in one minute, for keys `key_…0` on.
fn wide_batch(id: &str, key_set: &str, minute: u64, n: usize) -> String {
    let keys: Vec<Value> = (0..n)
        .map(|i| json!({"key_id": format!("key_{i:016x}"), "outcomes": {"allowed": 1}}))
        .collect();
    json!({"batch_id": id, "key_set": key_set, "minutes": [{"minute": minute, "keys": keys}]})
        .to_string()
}

#[tokio::test]
async fn a_batch_holds_up_to_100000_key_rows() {
    let server = Server::start().await;
    let set = key_set(&server).await;
    let body = wide_batch(&batch_id(1), &set, last_hour(), 100_000);
    let started = Instant::now();
    let reply = ingest(&server, &body).await;
    println!(
        "100000 key rows ({} bytes): {:?}",
        body.len(),
        started.elapsed()
    );
    assert_eq!(
        reply.json(),
        json!({"duplicate": false, "unknown_keys": 100_000})
    );
    let over = wide_batch(&batch_id(2), &set, last_hour(), 100_001);
    assert_eq!(field(&ingest(&server, &over).await), "minutes");
}

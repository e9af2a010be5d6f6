//! The key API through the real Envoy (SPEC §10): a `PATCH` of scopes or
//! expiry takes effect at every worker within the revocation bound, one key
//! is read with `GET`, and the list pages with its cursor.

use keygate_e2e::{rfc3339, unix_now, Stack, REVOCATION_BOUND};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A path the demo rules give to `users:read` (GET).
const USERS: &str = "/api/v1/users";

fn key_path(key: &Value) -> String {
    format!("/api/v1/api-keys/{}", key["id"].as_str().unwrap())
}

#[tokio::test]
async fn a_patch_of_scopes_reaches_every_worker_within_the_bound() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let made = stack
        .create_key(&admin, json!({"name": "grows", "scopes": ["memory:read"]}))
        .await;
    let key = made.str("api_key").to_string();
    stack.get(USERS, &key).await.expect_error(
        403,
        "forbidden",
        "API key lacks required scope: users:read",
    );

    // Granted: from 403 to 200 on every worker.
    let patched = stack
        .call(
            Method::PATCH,
            &key_path(&made.json),
            &admin,
            json!({"scopes": ["memory:read", "users:read"]}),
        )
        .await;
    let answered = Instant::now();
    patched.expect(200);
    assert_eq!(patched.json["scopes"], json!(["memory:read", "users:read"]));
    let propagated = &patched.json["propagated"];
    assert!(propagated["envoys"].as_u64().unwrap() >= 1, "{patched:#?}");
    assert_eq!(propagated["reached"], propagated["envoys"], "{patched:#?}");
    let (_, first_200) = stack.wait_steady(USERS, &key, 200, REVOCATION_BOUND).await;
    let granted = answered.elapsed();
    println!("scope granted: first 200 {first_200:?}, steady at every worker {granted:?} after the PATCH answer");
    assert!(granted < REVOCATION_BOUND, "{granted:?}");

    // Taken away: from 200 to 403.
    let narrowed = stack
        .call(
            Method::PATCH,
            &key_path(&made.json),
            &admin,
            json!({"scopes": ["memory:read"]}),
        )
        .await;
    let answered = Instant::now();
    narrowed.expect(200);
    let (reply, first_403) = stack.wait_steady(USERS, &key, 403, REVOCATION_BOUND).await;
    reply.expect_error(403, "forbidden", "API key lacks required scope: users:read");
    let revoked = answered.elapsed();
    println!("scope taken away: first 403 {first_403:?}, steady at every worker {revoked:?} after the PATCH answer");
    assert!(revoked < REVOCATION_BOUND, "{revoked:?}");
    // The rest of the key still works.
    stack.get("/api/v1/memory", &key).await.expect(200);
}

#[tokio::test]
async fn a_patch_of_expiry_takes_effect_and_can_be_cleared() {
    let stack = Stack::start().await;
    let admin = stack.tenant().api_key.clone();
    let made = stack
        .create_key(
            &admin,
            json!({"name": "short-lived", "scopes": ["memory:read"]}),
        )
        .await;
    let key = made.str("api_key").to_string();
    let path = key_path(&made.json);

    // A past expiry is refused and changes nothing.
    let past = stack
        .call(
            Method::PATCH,
            &path,
            &admin,
            json!({"expires_at": rfc3339(unix_now() - 5), "name": "x"}),
        )
        .await;
    past.expect(400);
    assert_eq!(past.json["error"]["field"], "expires_at", "{past:#?}");
    stack.get("/api/v1/memory", &key).await.expect(200);

    // An expiry 2 s away: the key works until then, then every worker says so.
    let at = unix_now() + 2;
    let patched = stack
        .call(
            Method::PATCH,
            &path,
            &admin,
            json!({"expires_at": rfc3339(at)}),
        )
        .await;
    patched.expect(200);
    assert_eq!(patched.json["expires_at"], rfc3339(at).as_str());
    stack.get("/api/v1/memory", &key).await.expect(200);
    let (reply, waited) = stack
        .wait_steady(
            "/api/v1/memory",
            &key,
            401,
            Duration::from_secs(2) + REVOCATION_BOUND * 2,
        )
        .await;
    reply.expect_error(401, "unauthorized", "API key has expired");
    println!("expiry patched to 2 s ahead: first 401 after {waited:?}");

    // An expired key is no longer patchable: 409.
    let late = stack
        .call(Method::PATCH, &path, &admin, json!({"expires_at": null}))
        .await;
    late.expect(409);

    // A live key's expiry cleared: it keeps working.
    let other = stack
        .create_key(
            &admin,
            json!({"name": "kept", "scopes": ["memory:read"], "expires_at": rfc3339(unix_now() + 3)}),
        )
        .await;
    let cleared = stack
        .call(
            Method::PATCH,
            &key_path(&other.json),
            &admin,
            json!({"expires_at": null}),
        )
        .await;
    cleared.expect(200);
    assert_eq!(cleared.json["expires_at"], Value::Null);
    tokio::time::sleep(Duration::from_secs(4)).await;
    stack
        .wait_steady(
            "/api/v1/memory",
            other.str("api_key"),
            200,
            REVOCATION_BOUND,
        )
        .await;
}

#[tokio::test]
async fn one_key_and_the_pages_of_the_list_through_envoy() {
    let stack = Stack::start().await;
    let tenant = stack.tenant().clone();
    let admin = tenant.api_key.clone();
    let mut made = Vec::new();
    for i in 0..5 {
        let reply = stack
            .call(
                Method::POST,
                "/api/v1/api-keys",
                &admin,
                json!({"name": format!("k{i}"), "scopes": ["memory:read"], "metadata": {"n": i}}),
            )
            .await;
        reply.expect(201);
        made.push(reply.json["id"].as_str().unwrap().to_string());
    }
    let one = stack
        .get(&format!("/api/v1/api-keys/{}", made[2]), &admin)
        .await;
    one.expect(200);
    assert_eq!(one.json["metadata"], json!({"n": 2}));
    let bad_id = stack.get("/api/v1/api-keys/nonsense", &admin).await;
    bad_id.expect(400);
    assert_eq!(bad_id.json["error"]["field"], "id");

    let mut ids = Vec::new();
    let mut query = "/api/v1/api-keys?limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = stack.get(&query, &admin).await;
        page.expect(200);
        pages += 1;
        ids.extend(
            page.json["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_string()),
        );
        match page.json["next_cursor"].as_str() {
            Some(cursor) => query = format!("/api/v1/api-keys?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    // The readiness tenant's own key first, then ours in creation order.
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[1..], made[..]);
    let garbage = stack
        .get("/api/v1/api-keys?cursor=not-a-cursor", &admin)
        .await;
    garbage.expect(400);
    assert_eq!(garbage.json["error"]["field"], "cursor");

    // The OpenAPI document is public.
    let doc = stack
        .send(stack.request(Method::GET, "/api/v1/openapi.json"))
        .await;
    doc.expect(200);
    assert_eq!(doc.json["openapi"], "3.1.0");
    assert!(doc.json["paths"]["/api/v1/api-keys/{id}"]["patch"].is_object());
}

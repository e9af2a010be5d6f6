//! Sign-up and sign-in against strangers (SPEC §15) on both backends: the
//! per-address sign-up limit and `--signup closed` (JSON for the API, a page
//! for the dashboard), the sign-in throttle counted in the database before
//! the hash (parallel guesses get no more checks than a sequence; another
//! replica sees the lock), a header timeout that never cuts a feed
//! long-poll, and the connection cap.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{join_all, Reply, Server};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const PASSWORD: &str = "correct horse battery";
/// Failures in a row before the first lock (crate::signin::throttle).
const FREE_FAILURES: usize = 3;

fn tenant_body(name: &str) -> String {
    json!({"name": name, "email": format!("{name}@example.test"), "password": PASSWORD}).to_string()
}

/// `POST /api/v1/tenants` from `address` (as Envoy forwards it).
async fn sign_up(server: &Server, name: &str, address: &str) -> Reply {
    let headers = [("x-forwarded-for", address)];
    let body = tenant_body(name);
    server
        .call_with("POST", "/api/v1/tenants", None, Some(&body), &headers)
        .await
}

/// A dashboard form's cookie and CSRF token (the sign-in page's).
async fn form(server: &Server, path: &str) -> (String, String) {
    let page = server.call("GET", path, None, None).await;
    let cookie = page
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let text = page.text();
    let marker = r#"name="csrf" value=""#;
    let rest = &text[text.find(marker).unwrap() + marker.len()..];
    (
        cookie.to_string(),
        rest[..rest.find('"').unwrap()].to_string(),
    )
}

/// Posts a dashboard form from `address`.
async fn post_form(
    server: &Server,
    path: &str,
    (cookie, csrf): &(String, String),
    fields: &[(&str, &str)],
    address: &str,
) -> Reply {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", csrf)
        .extend_pairs(fields)
        .finish();
    let request = server
        .client
        .post(format!("{}{path}", server.base))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", address)
        .body(body);
    server.send(request).await.unwrap()
}

fn assert_json_429(reply: &Reply) -> u64 {
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "rate_limited");
    reply.header("retry-after").unwrap().parse().unwrap()
}

#[tokio::test]
async fn sign_up_is_limited_per_address_and_can_be_closed() {
    let server = Server::start_with(&["--signup-per-hour", "2"]).await;
    for n in 0..2 {
        let reply = sign_up(&server, &format!("a{n}"), "10.0.0.1").await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let refused = sign_up(&server, "a2", "10.0.0.1").await;
    let wait = assert_json_429(&refused);
    assert!((3000..=3600).contains(&wait), "retry-after {wait}");
    // Another address has its own count.
    assert_eq!(sign_up(&server, "b0", "10.0.0.2").await.status, 201);
    // The dashboard's sign-up counts too, and shows the refusal as a page.
    let fields = [
        ("name", "c0"),
        ("email", "c0@example.test"),
        ("password", PASSWORD),
    ];
    let sign_up_form = form(&server, "/dashboard/sign-up").await;
    let page = post_form(
        &server,
        "/dashboard/sign-up",
        &sign_up_form,
        &fields,
        "10.0.0.1",
    )
    .await;
    assert_eq!(page.status, 429);
    assert!(page.header("retry-after").is_some());
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("Too many sign-ups"), "{}", page.text());

    let closed = Server::start_with(&["--signup", "closed"]).await;
    let reply = sign_up(&closed, "d0", "10.0.0.3").await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.json()["error"]["type"], "forbidden");
    let sign_up_form = form(&closed, "/dashboard/sign-up").await;
    let page = post_form(
        &closed,
        "/dashboard/sign-up",
        &sign_up_form,
        &fields,
        "10.0.0.3",
    )
    .await;
    assert_eq!(page.status, 403);
    assert!(page.text().contains("Sign-up is closed"), "{}", page.text());

    // Closed, tenants come from the operator API, and their key works.
    let created = closed
        .operator("POST", "/operator/v1/tenants", Some(&tenant_body("d1")))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let key = created.json()["api_key"].as_str().unwrap().to_string();
    let me = closed
        .call("GET", "/api/v1/auth/me", Some(&key), None)
        .await;
    assert_eq!(me.status, 200, "{}", me.text());
    let keyless = closed
        .call(
            "POST",
            "/operator/v1/tenants",
            None,
            Some(&tenant_body("d2")),
        )
        .await;
    assert_ne!(keyless.status, 201, "{}", keyless.text());
}

#[tokio::test]
async fn parallel_guesses_get_no_more_checks_than_a_sequence() {
    let server = Server::start().await;
    let registered = sign_up(&server, "victim", "10.0.0.9").await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    // On PostgreSQL, half the guesses go to a replica: one count for both.
    let replica = match server.on_postgres() {
        true => Some(Server::start_on(server.database(), &[]).await),
        false => None,
    };
    let servers: Vec<&Server> = [Some(&server), replica.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let hashes = |s: &'static str| join_all(servers.iter().map(move |server| server.metric(s)));
    let before: u64 = hashes("keygate_password_hashes_total").await.iter().sum();
    let mut forms = Vec::new();
    for server in &servers {
        forms.push(form(server, "/dashboard/sign-in").await);
    }
    let guesses = (0..20).map(|n| {
        let (server, sign_in) = (servers[n % servers.len()], &forms[n % servers.len()]);
        let wrong = format!("wrong password {n}");
        async move {
            let fields = [
                ("email", "victim@example.test"),
                ("password", wrong.as_str()),
            ];
            post_form(server, "/dashboard/sign-in", sign_in, &fields, "10.6.6.6").await
        }
    });
    let replies = join_all(guesses).await;
    let checked = replies.iter().filter(|r| r.status == 401).count();
    let locked = replies.iter().filter(|r| r.status == 429).count();
    let after: u64 = hashes("keygate_password_hashes_total").await.iter().sum();
    let hashed = after - before;
    println!(
        "20 parallel guesses on {} replica(s): {checked} checked, {locked} locked, {hashed} hashes",
        servers.len()
    );
    assert_eq!(checked + locked, 20);
    assert!(checked <= FREE_FAILURES + 1, "{checked} checked");
    // The unknown email's hash is made once, on first use: not here.
    assert!(hashed as usize <= FREE_FAILURES + 1, "{hashed} hashed");
}

#[tokio::test]
async fn the_header_timeout_never_cuts_a_long_poll() {
    let server = Server::start_with(&["--header-timeout-seconds", "1"]).await;
    server.create_tenant("acme").await;
    let version = server.feed("").await.version();
    let start = Instant::now();
    let reply = server.feed(&format!("since={version}&wait=3")).await;
    assert_eq!(reply.status, 304);
    assert!(
        start.elapsed() >= Duration::from_millis(2900),
        "held for the wait"
    );
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_one() {
    let server = Server::start_with(&["--max-connections", "2"]).await;
    let address = server.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: cp\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    let waiting = tokio::spawn({
        let request = server.client.get(format!("{}/healthz", server.base));
        async move { request.send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served over the cap");
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    assert_eq!(status.unwrap().unwrap().unwrap(), 200);
}

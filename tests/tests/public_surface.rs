//! The shipped configs' public listener against strangers (SPEC §15, §16):
//! keyless traffic has a budget of its own that keyed traffic never spends,
//! the operator API answers only on its own listener, and a header name with
//! `_` is refused. One stack for every case.

use keygate_e2e::{Reply, Stack, StackOptions, OPERATOR_TOKEN};
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pro tier's minute bucket in the shipped configs (600 a minute)...
const PRO_MINUTE: &str = "{ key: tier, value: pro }, { key: key_id }]\n                token_bucket: { max_tokens: 600, tokens_per_fill: 600, fill_interval: 60s }";
/// ...raised so that one pro key may send far more than the old shared
/// 1,000-a-second bucket allowed: a tier that allows it gets it.
const PRO_RAISED: &str = "{ key: tier, value: pro }, { key: key_id }]\n                token_bucket: { max_tokens: 600000, tokens_per_fill: 600000, fill_interval: 60s }";
/// Keyed requests sent while the flood runs: more than the anonymous budget
/// (and the old shared bucket) holds in a second.
const KEYED: usize = 1500;
/// Requests in flight at once, keyed burst and flood each.
const IN_FLIGHT: usize = 16;
/// The longest the flood may run, whatever happens.
const FLOOD_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn strangers_cannot_starve_keys_reach_the_operator_api_or_spoof_names() {
    let options = StackOptions::default().replace(PRO_MINUTE, PRO_RAISED);
    let stack = Stack::start_with(options).await;
    let body = json!({"name": "pro", "scopes": ["memory:read"], "rate_limit_tier": "pro"});
    let key = stack.create_key(&stack.tenant().api_key, body).await;
    let key = key.str("api_key").to_string();

    // Before the flood: these send keyless requests, which the flood leaves
    // in an empty keyless bucket (429) until it refills.
    the_operator_api_is_only_on_its_own_listener(&stack).await;
    underscored_header_names_are_refused(&stack, &key).await;
    keyless_floods_leave_keyed_requests_alone(&stack, &key).await;
}

/// A flood of keyless CORS preflights spends the anonymous budget (the
/// burst starts once they get 429s); meanwhile a pro key's burst of
/// [`KEYED`] requests, more than the old shared 1,000-a-second bucket
/// held, gets no 429.
async fn keyless_floods_leave_keyed_requests_alone(stack: &Stack, key: &str) {
    let flood = Flood::start(stack.url("/api/v1/memory"));
    let started = Instant::now();
    while flood.refused.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < FLOOD_LIMIT,
            "no keyless request was limited: {} answered",
            flood.answered.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (statuses, took) = keyed_burst(stack, key).await;
    let (answered, refused) = flood.stop().await;
    let rate = KEYED as f64 / took.as_secs_f64();
    println!(
        "keyless flood: {answered} answered, {refused} of them 429; \
         keyed burst: {KEYED} in {took:?} ({rate:.0}/s) during it, statuses {statuses:?}"
    );
    assert!(
        statuses.iter().all(|&(status, _)| status == 200),
        "a keyed request was refused during the keyless flood: {statuses:?}"
    );
}

/// Sends [`KEYED`] `GET`s with `key`, [`IN_FLIGHT`] at a time on kept-alive
/// connections; returns the count of each status and the time it took.
async fn keyed_burst(stack: &Stack, key: &str) -> (Vec<(u16, usize)>, Duration) {
    use futures_util::stream::{self, StreamExt};
    let http = kept_alive_client();
    let url = stack.url("/api/v1/memory");
    let started = Instant::now();
    let statuses: Vec<u16> = stream::iter(0..KEYED)
        .map(|_| {
            let request = http.get(&url).bearer_auth(key);
            async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = started.elapsed();
    let mut counts: Vec<(u16, usize)> = Vec::new();
    for status in statuses {
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status, 1)),
        }
    }
    (counts, took)
}

/// Keyless CORS preflights sent without pause by [`IN_FLIGHT`] clients
/// until stopped (or [`FLOOD_LIMIT`]), counting answers and 429s (each
/// checked to be the JSON error).
struct Flood {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    fn start(url: String) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let http = kept_alive_client();
        let tasks = (0..IN_FLIGHT)
            .map(|_| {
                let (stop, answered, refused) = (stop.clone(), answered.clone(), refused.clone());
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < FLOOD_LIMIT {
                        let preflight = http
                            .request(Method::OPTIONS, &url)
                            .header("origin", "https://app.example")
                            .header("access-control-request-method", "GET");
                        let Ok(response) = preflight.send().await else {
                            continue;
                        };
                        let reply = Reply::read(response).await;
                        answered.fetch_add(1, Ordering::Relaxed);
                        if reply.status == 429 {
                            reply.expect_error(429, "rate_limited", "Rate limit exceeded");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Flood {
            stop,
            answered,
            refused,
            tasks,
        }
    }

    /// Stops the flood; returns how many preflights were answered, and 429.
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await
                .unwrap_or_else(|e| panic!("a flood client failed: {e}"));
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

/// A client that keeps its connections (load from few sockets).
fn kept_alive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `/operator/v1/` on the public listener is a 404 JSON error, with the
/// operator token or without (in another case it is refused too: 404, or
/// the filter's 401 where its rules match case-sensitively); on the
/// operator listener the same call works.
async fn the_operator_api_is_only_on_its_own_listener(stack: &Stack) {
    for path in ["/operator/v1/tenants", "/OPERATOR/v1/tenants", "/operator/"] {
        for token in [Some(OPERATOR_TOKEN), None] {
            let mut request = stack.request(Method::GET, path);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let reply = stack.send(request).await;
            let (status, refused) = match reply.status {
                401 if path.starts_with("/OPERATOR") => (401, "unauthorized"),
                _ => (404, "not_found"),
            };
            reply.expect(status);
            assert_eq!(reply.json["error"]["type"], refused, "{path}: {reply:#?}");
        }
    }
    let reply = stack
        .operator(Method::GET, "/operator/v1/tenants", None)
        .await;
    reply.expect(200);
    let tenants = reply.json["data"].as_array().map_or(0, Vec::len);
    println!("operator listener: {tenants} tenants listed; public listener: 404");
    assert!(tenants >= 1, "{reply:#?}");
}

/// A request with `x_org_id` (or any header name with `_`) is refused with a
/// 400 JSON error before it reaches the filter or the upstream.
async fn underscored_header_names_are_refused(stack: &Stack, key: &str) {
    for (name, value) in [("x_org_id", "org_evil"), ("X_Key_Scopes", "tenant:admin")] {
        let request = stack
            .request(Method::GET, "/api/v1/memory")
            .bearer_auth(key)
            .header(name, value);
        let reply = stack.send(request).await;
        reply.expect_error(400, "invalid_request", "Malformed request");
    }
    // The same request without it passes.
    stack.get("/api/v1/memory", key).await.expect(200);
}

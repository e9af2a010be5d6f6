//! The dashboard's sign-in on both backends (SPEC §12): passwords at
//! registration and with the admin key, sessions (cookie flags, only a
//! hash stored, sign-out ends them), CSRF on every form, the sign-in
//! throttle, tenant isolation and escaping.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Server, Tenant};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";

/// A browser without JavaScript: keeps the cookies, never follows redirects.
struct Visitor<'a> {
    server: &'a Server,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
    address: String,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    retry_after: Option<String>,
    csp: Option<String>,
    body: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a form with a token");
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    /// The alert of the page, if any.
    fn alert(&self) -> Option<&str> {
        let at = self.body.find(r#"role="alert">"#)?;
        let rest = &self.body[at + r#"role="alert">"#.len()..];
        Some(&rest[..rest.find('<').unwrap()])
    }

    /// The key shown once on the page.
    fn new_key(&self) -> &str {
        let at = self
            .body
            .find(r#"<code id="new-key">"#)
            .expect("a key on the page");
        let rest = &self.body[at + r#"<code id="new-key">"#.len()..];
        &rest[..rest.find('<').unwrap()]
    }
}

impl<'a> Visitor<'a> {
    fn new(server: &'a Server, address: &str) -> Visitor<'a> {
        Visitor {
            server,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            address: address.into(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let response = request
            .header(COOKIE, cookie.join("; "))
            .header("x-forwarded-for", &self.address)
            .send()
            .await
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (location, retry_after) = (header(LOCATION.as_str()), header("retry-after"));
        let csp = header("content-security-policy");
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for set in &set_cookies {
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.into(), value.into());
            }
        }
        Page {
            status: response.status().as_u16(),
            location,
            set_cookies,
            retry_after,
            csp,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let url = format!("{}{path}", self.server.base);
        self.send(self.client.get(url)).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let url = format!("{}{path}", self.server.base);
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// Signs in through the form; the answer.
    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let csrf = self.get("/dashboard/sign-in").await.csrf();
        self.post(
            "/dashboard/sign-in",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }

    fn session(&self) -> Option<&String> {
        self.cookies.get("keygate_session")
    }
}

/// Registers a tenant with a password through the API.
async fn register(server: &Server, name: &str) -> (Tenant, String) {
    let email = format!("{name}@example.test");
    let body = json!({"name": name, "email": email, "password": PASSWORD}).to_string();
    let reply = server
        .call("POST", "/api/v1/tenants", None, Some(&body))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let v = reply.json();
    let tenant = Tenant {
        id: v["tenant_id"].as_str().unwrap().into(),
        key: v["api_key"].as_str().unwrap().into(),
        key_id: v["key_id"].as_str().unwrap().into(),
    };
    (tenant, email)
}

#[tokio::test]
async fn passwords_at_registration_and_with_the_admin_key() {
    let server = Server::start().await;
    for (password, why) in [(json!("short"), "length"), (json!(12), "type")] {
        let body = json!({"name": "a", "email": "a@example.test", "password": password});
        let reply = server
            .call("POST", "/api/v1/tenants", None, Some(&body.to_string()))
            .await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.text());
        assert_eq!(reply.json()["error"]["field"], "password", "{why}");
    }
    let (_, email) = register(&server, "acme").await;
    // The same email cannot sign in to two tenants; nothing is created.
    let again = json!({"name": "acme2", "email": email.to_uppercase(), "password": PASSWORD});
    let reply = server
        .call("POST", "/api/v1/tenants", None, Some(&again.to_string()))
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text());

    // A tenant without a password sets one with its admin key only.
    let plain = server.create_tenant("plain").await;
    let mut visitor = Visitor::new(&server, "10.0.0.1");
    let before = visitor.sign_in("plain@example.test", PASSWORD).await;
    assert_eq!(before.status, 401);
    let reader = server
        .create_key(&plain.key, json!({"name": "r", "scopes": ["tenant:read"]}))
        .await;
    let body = json!({"password": PASSWORD}).to_string();
    let path = "/api/v1/auth/me/password";
    let read_only = reader["api_key"].as_str().unwrap();
    assert_eq!(
        server
            .call("PUT", path, Some(read_only), Some(&body))
            .await
            .status,
        403
    );
    let short = server
        .call("PUT", path, Some(&plain.key), Some(r#"{"password":"x"}"#))
        .await;
    assert_eq!(short.status, 400);
    assert_eq!(short.json()["error"]["field"], "password");
    let set = server
        .call("PUT", path, Some(&plain.key), Some(&body))
        .await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json()["email"], "plain@example.test");
    let after = visitor.sign_in("plain@example.test", PASSWORD).await;
    assert_eq!(after.status, 303, "{}", after.body);

    // Changing it ends the sessions.
    assert_eq!(visitor.get("/dashboard/keys").await.status, 200);
    let other = json!({"password": "a different passphrase"}).to_string();
    assert_eq!(
        server
            .call("PUT", path, Some(&plain.key), Some(&other))
            .await
            .status,
        200
    );
    assert_eq!(visitor.get("/dashboard/keys").await.status, 303);

    let stored = server.stored().await;
    let found = |needle: &str| stored.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!found(PASSWORD) && !found("a different passphrase"));
    assert!(found("$argon2id$"));
}

#[tokio::test]
async fn sessions_are_cookies_for_the_dashboard_only() {
    let server = Server::start().await;
    let (tenant, email) = register(&server, "sessions").await;
    let mut visitor = Visitor::new(&server, "10.0.0.2");
    assert_eq!(
        visitor.get("/dashboard/keys").await.location.as_deref(),
        Some("/dashboard/sign-in")
    );
    let signed = visitor.sign_in(&email, PASSWORD).await;
    assert_eq!(signed.status, 303);
    assert_eq!(signed.location.as_deref(), Some("/dashboard/keys"));
    let cookie = signed
        .set_cookies
        .iter()
        .find(|c| c.starts_with("keygate_session="))
        .unwrap();
    for flag in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    let id = visitor.session().unwrap().clone();

    let keys = visitor.get("/dashboard/keys").await;
    assert_eq!(keys.status, 200);
    let csp = keys.csp.clone().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(keys.body.contains(&tenant.key_id));
    assert!(!keys.body.contains(&tenant.key), "a key on the keys page");

    // The cookie is no key for the API.
    let api = server
        .call_with(
            "GET",
            "/api/v1/api-keys",
            None,
            None,
            &[("cookie", &format!("keygate_session={id}"))],
        )
        .await;
    assert_eq!(api.status, 401);

    // Only the hash of the session id is stored.
    let stored = server.stored().await;
    assert!(!stored.windows(id.len()).any(|w| w == id.as_bytes()));

    // Over TLS (Envoy's x-forwarded-proto) the cookie is Secure.
    let mut tls = Visitor::new(&server, "10.0.0.3");
    let csrf = tls.get("/dashboard/sign-in").await.csrf();
    let url = format!("{}/dashboard/sign-in", server.base);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", csrf.as_str()),
            ("email", &email),
            ("password", PASSWORD),
        ])
        .finish();
    let request = tls
        .client
        .post(url)
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let secure = tls.send(request).await;
    assert!(secure
        .set_cookies
        .iter()
        .any(|c| c.starts_with("keygate_session=") && c.ends_with("Secure")));

    // Sign-out needs its token, then ends the session for good.
    let token = keys.csrf();
    assert_eq!(visitor.post("/dashboard/sign-out", &[]).await.status, 403);
    let out = visitor
        .post("/dashboard/sign-out", &[("csrf", &token)])
        .await;
    assert_eq!(out.status, 303);
    visitor.cookies.insert("keygate_session".into(), id);
    let closed = visitor.get("/dashboard/keys").await;
    assert_eq!(closed.location.as_deref(), Some("/dashboard/sign-in"));
}

#[tokio::test]
async fn every_form_needs_its_csrf_token() {
    let server = Server::start().await;
    let (tenant, email) = register(&server, "csrf").await;
    let mut visitor = Visitor::new(&server, "10.0.0.4");
    // The sign-in form, too (without its cookie's token).
    let refused = visitor
        .post(
            "/dashboard/sign-in",
            &[("email", &email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("CSRF token is missing or wrong"));
    visitor.sign_in(&email, PASSWORD).await;
    let mut other = Visitor::new(&server, "10.0.0.5");
    other.sign_in(&email, PASSWORD).await;
    let foreign = other.get("/dashboard/keys").await.csrf();
    let id = &tenant.key_id;
    let forms: [(String, Vec<(&str, &str)>); 3] = [
        (
            "/dashboard/keys/new".into(),
            vec![("name", "forged"), ("scopes", "memory:read")],
        ),
        (format!("/dashboard/keys/{id}/revoke"), vec![]),
        (
            format!("/dashboard/keys/{id}/rotate"),
            vec![("grace_seconds", "0")],
        ),
    ];
    for (path, fields) in &forms {
        for token in [None, Some(foreign.as_str()), Some("0000")] {
            let mut form = fields.clone();
            if let Some(token) = token {
                form.push(("csrf", token));
            }
            let page = visitor.post(path, &form).await;
            assert_eq!(page.status, 403, "{path} with {token:?}");
        }
    }
    let keys = server.list_all(&tenant.key).await;
    assert_eq!(keys.len(), 1, "a forged form changed something");
    assert!(keys[0]["revoked_at"].is_null());
    // With its token, the same form works.
    let token = visitor.get("/dashboard/keys/new").await.csrf();
    let created = visitor
        .post(
            "/dashboard/keys/new",
            &[
                ("csrf", &token),
                ("name", "real"),
                ("scopes", "memory:read"),
            ],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.new_key().starts_with("rk_"));
}

#[tokio::test]
async fn failed_sign_ins_are_slowed_down_per_account_and_address() {
    let server = Server::start().await;
    let (_, email) = register(&server, "throttle").await;
    let (_, bystander) = register(&server, "bystander").await;
    let mut attacker = Visitor::new(&server, "10.9.9.9");
    for n in 1..=4 {
        let started = Instant::now();
        let page = attacker.sign_in(&email, "wrong password!").await;
        assert_eq!(page.status, 401, "failure {n}");
        assert_eq!(page.alert(), Some("Wrong email or password."));
        println!("failed sign-in {n}: {:?}", started.elapsed());
    }
    // Locked now: the right password is refused without being checked.
    let locked = attacker.sign_in(&email, PASSWORD).await;
    assert_eq!(locked.status, 429);
    assert_eq!(locked.retry_after.as_deref(), Some("1"));
    assert!(locked
        .alert()
        .unwrap()
        .starts_with("Too many failed sign-ins"));
    // The account from another address, and another account from this one.
    let mut elsewhere = Visitor::new(&server, "10.1.1.1");
    assert_eq!(elsewhere.sign_in(&email, PASSWORD).await.status, 429);
    assert_eq!(attacker.sign_in(&bystander, PASSWORD).await.status, 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The next failure locks for twice as long.
    assert_eq!(attacker.sign_in(&email, "wrong again!!").await.status, 401);
    let longer = attacker.sign_in(&email, PASSWORD).await;
    assert_eq!(longer.retry_after.as_deref(), Some("2"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let ok = attacker.sign_in(&email, PASSWORD).await;
    assert_eq!(ok.status, 303, "{:?}", ok.alert());
    // An unknown email is a failure like a wrong password.
    let mut guesser = Visitor::new(&server, "10.2.2.2");
    assert_eq!(
        guesser
            .sign_in("nobody@example.test", PASSWORD)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn tenants_are_isolated_and_values_escaped() {
    let server = Server::start().await;
    let (a, _) = register(&server, "alpha").await;
    let (_, b_email) = register(&server, "beta").await;
    let xss = "<script>alert(1)</script>";
    let made = server
        .create_key(
            &a.key,
            json!({"name": xss, "scopes": ["memory:read"], "external_id": "<b>x</b>"}),
        )
        .await;
    let xss_id = made["id"].as_str().unwrap();
    let mut b = Visitor::new(&server, "10.0.0.7");
    b.sign_in(&b_email, PASSWORD).await;
    assert_eq!(
        b.get(&format!("/dashboard/keys/{xss_id}")).await.status,
        404
    );
    assert_eq!(b.get("/dashboard/keys/not-a-key").await.status, 404);
    let token = b.get("/dashboard/keys").await.csrf();
    let revoke = b
        .post(
            &format!("/dashboard/keys/{xss_id}/revoke"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(revoke.status, 404);
    let still = server
        .call(
            "GET",
            &format!("/api/v1/api-keys/{xss_id}"),
            Some(&a.key),
            None,
        )
        .await;
    assert!(still.json()["revoked_at"].is_null());

    let mut alpha = Visitor::new(&server, "10.0.0.8");
    alpha.sign_in("alpha@example.test", PASSWORD).await;
    for path in [
        "/dashboard/keys".to_string(),
        format!("/dashboard/keys/{xss_id}"),
    ] {
        let page = alpha.get(&path).await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
        assert!(
            !page.body.contains(xss) && !page.body.contains("<b>x</b>"),
            "{path}"
        );
        assert!(
            !page.body.contains(made["api_key"].as_str().unwrap()),
            "{path}"
        );
    }
    // Revoke from the page: the key is revoked through the API's rules.
    let token = alpha.get("/dashboard/keys").await.csrf();
    let done = alpha
        .post(
            &format!("/dashboard/keys/{xss_id}/revoke"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(done.status, 303);
    let gone = server
        .call(
            "GET",
            &format!("/api/v1/api-keys/{xss_id}"),
            Some(&a.key),
            None,
        )
        .await;
    assert!(gone.json()["revoked_at"].is_string());
    // Rotate with a grace period: a new key once, the old one expiring.
    let rotated = alpha
        .post(
            &format!("/dashboard/keys/{}/rotate", a.key_id),
            &[("csrf", &token), ("grace_seconds", "3600")],
        )
        .await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    assert!(rotated.body.contains("keeps working until"));
    let old = server
        .call(
            "GET",
            &format!("/api/v1/api-keys/{}", a.key_id),
            Some(&a.key),
            None,
        )
        .await;
    assert!(old.json()["expires_at"].is_string(), "{}", old.text());
}

#[tokio::test]
async fn webhooks_and_caps_are_managed_from_the_pages_and_audited() {
    let server = Server::start().await;
    let (tenant, email) = register(&server, "hooks").await;
    let mut visitor = Visitor::new(&server, "10.0.0.9");
    visitor.sign_in(&email, PASSWORD).await;
    let csrf = visitor.get("/dashboard/webhooks").await.csrf();
    let url = "http://127.0.0.1:9/hook";
    let added = visitor
        .post(
            "/dashboard/webhooks",
            &[("csrf", &csrf), ("url", url), ("events", "key.revoked")],
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let secret = added.new_key().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let page = visitor.get("/dashboard/webhooks").await;
    assert!(page.body.contains(url) && !page.body.contains(&secret));
    let listed = server
        .call("GET", "/api/v1/webhooks", Some(&tenant.key), None)
        .await
        .json();
    let id = listed["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed["data"][0]["events"], json!(["key.revoked"]));
    // A bad URL is shown on the page, nothing added.
    let bad = visitor
        .post(
            "/dashboard/webhooks",
            &[
                ("csrf", &page.csrf()),
                ("url", "ftp://x"),
                ("events", "key.revoked"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.alert().unwrap().contains("url"), "{:?}", bad.alert());
    let delete = format!("/dashboard/webhooks/{id}/delete");
    assert_eq!(visitor.post(&delete, &[]).await.status, 403);
    let deleted = visitor.post(&delete, &[("csrf", &page.csrf())]).await;
    assert_eq!(deleted.status, 303);
    let listed = server
        .call("GET", "/api/v1/webhooks", Some(&tenant.key), None)
        .await
        .json();
    assert_eq!(listed["data"], json!([]));
    // A key with a quota and a spending cap from the create form.
    let token = visitor.get("/dashboard/keys/new").await.csrf();
    let form = [
        ("csrf", token.as_str()),
        ("name", "capped"),
        ("scopes", "memory:read"),
        ("quota", "100"),
        ("quota_refill", "daily"),
        ("spend_cap", "5000000"),
        ("spend_period", "month"),
    ];
    let created = visitor.post("/dashboard/keys/new", &form).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let keys = server.list_all(&tenant.key).await;
    let capped = keys.iter().find(|k| k["name"] == "capped").unwrap();
    assert_eq!(capped["quota"]["requests"], 100);
    assert_eq!(capped["quota"]["refill"], "daily");
    assert_eq!(capped["spend_cap"]["micros"], 5_000_000);
    // Used up (as the Envoys report it): shown as exhausted.
    let key_set = server.feed("").await;
    let batch = json!({
        "batch_id": format!("{:032x}", 1),
        "key_set": key_set.header("x-keygate-key-set").unwrap(),
        "minutes": [{"minute": common::now() / 60 * 60,
                     "keys": [{"key_id": capped["id"], "outcomes": {"allowed": 100}}]}]
    });
    let ingested = server
        .call(
            "POST",
            "/v1/usage",
            Some(common::FEED_TOKEN),
            Some(&batch.to_string()),
        )
        .await;
    assert_eq!(ingested.status, 200, "{}", ingested.text());
    let keys_page = visitor.get("/dashboard/keys").await;
    assert!(
        keys_page.body.contains(r#"class="status exhausted""#),
        "{}",
        keys_page.body
    );
    // Every action is in the audit log, by the dashboard user.
    let log = server
        .call("GET", "/api/v1/audit-log", Some(&tenant.key), None)
        .await
        .json();
    let actions: Vec<(&str, &str)> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    let by_user = format!("dashboard:{email}");
    for action in [
        "dashboard.sign_in",
        "webhook.create",
        "webhook.delete",
        "api_key.create",
    ] {
        assert!(
            actions.contains(&(action, by_user.as_str())),
            "{action} missing from {actions:?}"
        );
    }
}

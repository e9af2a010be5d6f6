//! The dashboard in a real browser (SPEC §12): headless Chromium through
//! Envoy signs up with a password, is slowed down after wrong passwords,
//! creates a key and reads it from the page once, calls the demo API with
//! it, revokes it on the page (401 at Envoy within the bound), meets the
//! CSRF check, sees an XSS-named key as text, and signs out (the pages are
//! closed, the old cookie is dead).
//!
//! With `KEYGATE_SCREENSHOTS=docs` it also saves the README's screenshots
//! to `docs/img/` (they always go to the stack's directory).

use keygate_e2e::webdriver::Browser;
use keygate_e2e::{repo_root, Stack, REVOCATION_BOUND};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";
const XSS: &str = "<script>alert(1)</script>";

fn screenshot_path(stack: &Stack, name: &str) -> Vec<PathBuf> {
    let mut paths = vec![stack.dir().join(name)];
    if std::env::var("KEYGATE_SCREENSHOTS").as_deref() == Ok("docs") {
        paths.push(repo_root().join("docs/img").join(name));
    }
    paths
}

async fn screenshot(browser: &Browser, stack: &Stack, name: &str) {
    for path in screenshot_path(stack, name) {
        browser.screenshot(&path).await;
        println!("screenshot: {}", path.display());
    }
}

/// Signs in with `password`; returns the alert shown, if any.
async fn sign_in(browser: &Browser, stack: &Stack, email: &str, password: &str) -> Option<String> {
    browser.goto(&stack.url("/dashboard/sign-in")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click_and_wait("#sign-in").await;
    let alerts = browser.find_all("[role=alert]").await;
    match alerts.first() {
        Some(alert) => Some(browser.text_of(alert).await),
        None => None,
    }
}

/// Creates a key on the create page with a name and a limit, leaving the
/// scopes as the form starts (the defaults: every scope but `tenant:admin`);
/// returns the key shown once.
async fn create_key(browser: &Browser, stack: &Stack, name: &str, shot: Option<&str>) -> String {
    browser.goto(&stack.url("/dashboard/keys/new")).await;
    let checked = browser
        .execute("return [...document.querySelectorAll('input[name=scopes]:checked')].map(e => e.value).join(' ')")
        .await;
    assert_eq!(
        checked,
        "memory:read memory:write users:read users:write conversations:read conversations:write tenant:read"
    );
    browser.fill("#key-name", name).await;
    browser.fill("input[name=per_minute]", "600").await;
    if let Some(shot) = shot {
        screenshot(browser, stack, shot).await;
    }
    browser.click_and_wait("#create").await;
    let page = browser.text("main").await;
    assert!(page.contains("you will not see it again"), "{page}");
    let key = browser.text("#new-key").await;
    assert!(key.starts_with("rk_live_"), "{key}");
    key
}

#[tokio::test]
async fn a_user_signs_up_mints_uses_and_revokes_a_key_in_the_browser() {
    let stack = Stack::start().await;
    let browser = Browser::start(&stack.dir()).await;
    let email = format!("browser-{}@example.com", std::process::id());

    // Sign up: the dashboard opens on the sign-in page, which links to it.
    browser.goto(&stack.url("/dashboard")).await;
    assert!(browser.url().await.ends_with("/dashboard/sign-in"));
    browser.click_and_wait("a[href='/dashboard/sign-up']").await;
    browser.fill("#name", "Browser Org").await;
    browser.fill("#email", &email).await;
    browser.fill("#password", PASSWORD).await;
    browser.click_and_wait("#sign-up").await;
    let admin = browser.text("#new-key").await;
    assert!(admin.starts_with("rk_live_"), "{admin}");
    let cookies = browser.cookies().await;
    let session = cookies
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "keygate_session"))
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Lax", "{session}");
    assert_eq!(session["path"], "/dashboard", "{session}");

    // Sign out, then wrong passwords: the fourth in a row locks the account.
    browser.click_and_wait("#sign-out").await;
    let started = Instant::now();
    for _ in 0..4 {
        let alert = sign_in(&browser, &stack, &email, "wrong password!").await;
        assert_eq!(alert.as_deref(), Some("Wrong email or password."));
    }
    let locked = sign_in(&browser, &stack, &email, PASSWORD).await;
    let locked = locked.unwrap_or_default();
    assert!(locked.starts_with("Too many failed sign-ins"), "{locked}");
    println!(
        "4 wrong passwords, then the right one refused ({locked}) after {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sign_in(&browser, &stack, &email, PASSWORD).await, None);
    assert!(browser.url().await.ends_with("/dashboard/keys"));

    // Create a key, read it from the page, call the API with it.
    let key = create_key(
        &browser,
        &stack,
        "Checkout service",
        Some("dashboard-create.png"),
    )
    .await;
    let works = stack.wait_key_works(&key).await;
    stack.get("/api/v1/memory", &key).await.expect(200);
    println!("a key made in the browser passes Envoy after {works:?}");
    let xss_key = create_key(&browser, &stack, XSS, None).await;

    // The keys page: the XSS name as text, no key ever again.
    browser.goto(&stack.url("/dashboard/keys")).await;
    let names = browser.find_all("td.name a").await;
    let mut shown = Vec::new();
    for name in &names {
        shown.push(browser.text_of(name).await);
    }
    assert!(shown.iter().any(|n| n == XSS), "{shown:?}");
    assert_eq!(browser.execute("return document.scripts.length").await, 1);
    let source = browser.source().await;
    for secret in [&key, &xss_key, &admin] {
        assert!(
            !source.contains(secret.as_str()),
            "a key is on the keys page"
        );
    }
    screenshot(&browser, &stack, "dashboard-keys.png").await;

    // CSRF: the create form without its token is refused, nothing is made.
    browser.goto(&stack.url("/dashboard/keys/new")).await;
    browser.fill("#key-name", "forged").await;
    browser
        .click("input[name=scopes][value='memory:read']")
        .await;
    browser
        .execute("document.querySelector('main form input[name=csrf]').remove()")
        .await;
    browser.click_and_wait("#create").await;
    let refused = browser.text("main").await;
    assert!(
        refused.contains("CSRF token is missing or wrong"),
        "{refused}"
    );
    browser.goto(&stack.url("/dashboard/keys")).await;
    assert_eq!(browser.find_all("td.name a").await.len(), names.len());

    // Revoke on the page (with its confirmation): 401 at Envoy within 1 s.
    let mut target = None;
    for link in browser
        .find_all("tr:has(a[href$='/revoke']) td.name a")
        .await
    {
        if browser.text_of(&link).await == "Checkout service" {
            target = browser.attribute(&link, "href").await;
        }
    }
    let key_page = target.unwrap_or_else(|| panic!("no Checkout service row"));
    browser
        .goto(&stack.url(&format!("{key_page}/revoke")))
        .await;
    browser.click_and_wait("#confirm-revoke").await;
    let (_, to_401) = stack
        .wait_steady("/api/v1/memory", &key, 401, Duration::from_secs(10))
        .await;
    println!("revoked in the browser: 401 at Envoy after {to_401:?}");
    assert!(to_401 < REVOCATION_BOUND, "{to_401:?}");
    assert!(browser.url().await.ends_with("/dashboard/keys"));
    let statuses = browser.text("table.keys").await;
    assert!(statuses.contains("revoked"), "{statuses}");

    // Sign out: the pages are closed, and the old cookie is dead.
    let old = browser.cookie("keygate_session").await.unwrap_or_default();
    browser.click_and_wait("#sign-out").await;
    browser.goto(&stack.url("/dashboard/keys")).await;
    assert!(browser.url().await.ends_with("/dashboard/sign-in"));
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(stack.url("/dashboard/keys"))
        .header("cookie", format!("keygate_session={old}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 303);
    assert_eq!(replay.headers()["location"], "/dashboard/sign-in");
}

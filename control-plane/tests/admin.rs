//! The CLI: `serve` refuses to start without a feed token, with a bad
//! policy or a zero snapshot page size, and the admin commands bootstrap
//! tenants and keys without the API.

// Test code: a failed unwrap or assertion is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Server, BIN};
use serde_json::Value;
use std::process::{Command, Output};

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("KEYGATE_FEED_TOKEN");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_refuses_to_start_without_a_feed_token_or_with_a_bad_policy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let db = db.to_str().unwrap();
    let out = run(&["serve", "--database", db, "--listen", "127.0.0.1:0"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("KEYGATE_FEED_TOKEN"),
        "{}",
        stderr(&out)
    );
    let empty = run(
        &["serve", "--database", db, "--listen", "127.0.0.1:0"],
        &[("KEYGATE_FEED_TOKEN", "")],
    );
    assert!(!empty.status.success());

    let bad_scope = run(
        &[
            "serve",
            "--database",
            db,
            "--feed-token",
            "t",
            "--allowed-scopes",
            "memory",
        ],
        &[],
    );
    assert!(!bad_scope.status.success());
    assert!(
        stderr(&bad_scope).contains("--allowed-scopes"),
        "{}",
        stderr(&bad_scope)
    );
    for (flag, env) in [(Some("0"), None), (Some("x"), None), (None, Some("0"))] {
        let mut args = vec!["serve", "--database", db, "--feed-token", "t"];
        args.extend(flag.map(|v| ["--feed-page-keys", v]).into_iter().flatten());
        let envs: Vec<(&str, &str)> = env
            .map(|v| ("KEYGATE_FEED_PAGE_KEYS", v))
            .into_iter()
            .collect();
        let bad_page = run(&args, &envs);
        assert!(!bad_page.status.success(), "{flag:?} {env:?}");
        assert!(
            stderr(&bad_page).contains("--feed-page-keys"),
            "{}",
            stderr(&bad_page)
        );
    }
    let bad_tiers = run(
        &["tenant", "create", "--name", "a", "--email", "a@b.c"],
        &[("KEYGATE_TIERS", "Gold")],
    );
    assert!(!bad_tiers.status.success());
    assert!(
        stderr(&bad_tiers).contains("--tiers"),
        "{}",
        stderr(&bad_tiers)
    );
}

#[test]
fn admin_commands_bootstrap_without_the_api() {
    let dir = tempfile::tempdir().unwrap();
    // The directory does not exist yet: the first command creates it.
    let db = dir.path().join("fresh").join("keygate.db");
    let db = db.to_str().unwrap();
    let admin = |args: &[&str]| run(&[&["--database", db], args].concat(), &[]);

    let tenant = json_of(&admin(&[
        "tenant",
        "create",
        "--name",
        "Acme",
        "--email",
        "ops@acme.test",
    ]));
    let org = tenant["tenant_id"].as_str().unwrap();
    assert!(tenant["api_key"].as_str().unwrap().starts_with("rk_live_"));
    let on_pro = json_of(&admin(&["tenant", "set-plan", org, "pro"]));
    assert_eq!(on_pro["plan"], "pro");

    let key = json_of(&admin(&[
        "key",
        "create",
        "--tenant",
        org,
        "--name",
        "ci",
        "--scopes",
        "memory:read,users:read",
        "--environment",
        "test",
        "--tier",
        "pro",
    ]));
    assert!(key["api_key"].as_str().unwrap().starts_with("rk_test_"));
    assert_eq!(
        key["scopes"],
        serde_json::json!(["memory:read", "users:read"])
    );
    assert_eq!(key["rate_limit_tier"], "pro");

    let list = json_of(&admin(&["key", "list", "--tenant", org]));
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(!list.to_string().contains(key["api_key"].as_str().unwrap()));

    let id = key["id"].as_str().unwrap();
    let revoked = json_of(&admin(&["key", "revoke", "--tenant", org, "--id", id]));
    assert!(revoked["revoked_at"].is_string());

    // Bad input is refused, naming the field; nothing is created.
    let bad = admin(&[
        "key",
        "create",
        "--tenant",
        org,
        "--name",
        "x",
        "--scopes",
        "memory:delete",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("\"field\":\"scopes\""),
        "{}",
        stderr(&bad)
    );
    let past = admin(&[
        "key",
        "create",
        "--tenant",
        org,
        "--name",
        "x",
        "--scopes",
        "memory:read",
        "--expires-at",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(
        stderr(&past).contains("\"field\":\"expires_at\""),
        "{}",
        stderr(&past)
    );
    let nobody = admin(&[
        "key",
        "create",
        "--tenant",
        "org_0000000000000001",
        "--name",
        "x",
        "--scopes",
        "memory:read",
    ]);
    assert!(!nobody.status.success());
    assert!(
        stderr(&nobody).contains("Tenant not found"),
        "{}",
        stderr(&nobody)
    );
    let foreign = admin(&[
        "key",
        "revoke",
        "--tenant",
        "org_0000000000000001",
        "--id",
        id,
    ]);
    assert!(
        stderr(&foreign).contains("API key not found"),
        "{}",
        stderr(&foreign)
    );
    let malformed = admin(&["key", "list", "--tenant", "acme"]);
    assert!(!malformed.status.success());
    assert_eq!(
        json_of(&admin(&["key", "list", "--tenant", org]))["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_key_minted_by_the_cli_works_on_the_running_server() {
    let server = Server::start().await;
    let out = server.admin(&[
        "tenant",
        "create",
        "--name",
        "Acme",
        "--email",
        "ops@acme.test",
    ]);
    let tenant = json_of(&out);
    let key = tenant["api_key"].as_str().unwrap();
    let me = server.call("GET", "/api/v1/auth/me", Some(key), None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["tenant_id"], tenant["tenant_id"]);
}

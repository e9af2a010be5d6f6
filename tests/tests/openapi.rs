//! The OpenAPI document fuzzed against the live stack (SPEC §10):
//! schemathesis (PyPI, pinned, installed by `scripts/ensure-schemathesis.sh`
//! into target/tools) runs every operation of `/api/v1/openapi.json`
//! through Envoy with a valid admin key, and checks that no answer is a 5xx,
//! that every answer (status, content type, headers, body) conforms to the
//! document and that input outside it is refused. Its summary is printed. If schemathesis cannot be installed
//! the test fails, saying so.
//!
//! The fuzzer must not take its own key away (a revocation, rotation or
//! narrowing patch of it would leave it nothing but 401s): it does not
//! reuse ids from answers, and half of its `{id}` values are keys minted
//! for it to change, revoke and rotate. A run where the key stops working
//! or is throttled fails (`missing_auth`, `rate_limited`).

use keygate_e2e::{repo_root, unthrottled_plans, Stack, StackOptions};
use reqwest::Method;
use serde_json::json;
use std::process::Command;
use std::time::Instant;

/// Test cases per operation and phase: enough to meet every field and
/// refusal, small enough for well under two minutes on a loaded box.
const MAX_EXAMPLES: &str = "100";
/// Keys minted for the fuzzer to use as `{id}`.
const VICTIMS: usize = 6;
/// What must hold for every answer: no 5xx; status, content type, headers
/// and body as documented; invalid input refused with a 4xx. (Not
/// `unsupported_method`: Envoy's HTTP/1 codec answers a method it does not
/// know, such as `QUERY`, with its own JSON 400, not 405.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      negative_data_rejection,missing_required_header";

/// The free tier's per-minute bucket, raised so the fuzzer's key is not
/// throttled after its first 60 requests (a 429 would conform, but test
/// nothing).
const FREE_MINUTE: &str =
    "token_bucket: { max_tokens: 60, tokens_per_fill: 60, fill_interval: 60s }";
const RAISED: &str =
    "token_bucket: { max_tokens: 100000, tokens_per_fill: 100000, fill_interval: 60s }";

/// The operation whose requests carry a signature the fuzzer cannot make
/// (GitHub's, over the body): every answer is its documented 401, so it
/// takes no `missing_auth` warning.
const SIGNED: &str = "/api/v1/secret-scanning";

/// The run's configuration: no ids taken from answers, `{id}` half the
/// time one of `victims` (JSON strings), and the warnings that fail it
/// (not for [`SIGNED`]).
fn config_file(victims: &[String]) -> String {
    format!(
        "[phases.coverage.extra-data-sources]\nresponses = false\n\
         [phases.fuzzing.extra-data-sources]\nresponses = false\n\
         [dictionaries.victims]\nvalues = [{}]\n\
         [parameters]\n\"path.id\" = {{ dictionary = \"victims\", probability = 0.5 }}\n\
         [warnings]\nfail-on = [\"missing_auth\", \"rate_limited\"]\n\
         [[operations]]\ninclude-path = \"{SIGNED}\"\nwarnings = false\n",
        victims.join(", ")
    )
}

/// The run's seed: fixed, so a failure can be replayed; another one from
/// `KEYGATE_SCHEMATHESIS_SEED` to explore.
fn seed() -> String {
    std::env::var("KEYGATE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "11".to_string())
}

fn schemathesis() -> String {
    let script = repo_root().join("scripts/ensure-schemathesis.sh");
    let output = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "schemathesis could not be installed from PyPI (scripts/ensure-schemathesis.sh):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_answer_off_the_document() {
    let bin = schemathesis();
    // The fuzzer calls faster than any plan's management rate allows.
    let options = StackOptions {
        control_plane_args: unthrottled_plans(),
        ..StackOptions::default()
    };
    let stack = Stack::start_with(options.replace(FREE_MINUTE, RAISED)).await;
    let admin = stack
        .create_key(
            &stack.tenant().api_key,
            json!({"name": "schemathesis", "scopes": ["tenant:admin", "tenant:read"]}),
        )
        .await;
    let key = admin.str("api_key").to_string();
    let mut victims = Vec::new();
    for i in 0..VICTIMS {
        let body = json!({"name": format!("victim {i}"), "scopes": ["memory:read"]});
        let reply = stack
            .call(Method::POST, "/api/v1/api-keys", &key, body)
            .await;
        reply.expect(201);
        victims.push(format!("{:?}", reply.str("id")));
    }
    let config = stack.dir().join("schemathesis.toml");
    std::fs::write(&config, config_file(&victims)).unwrap();
    let base = stack.url("");
    let base = base.trim_end_matches('/');
    let start = Instant::now();
    let output = Command::new(&bin)
        .current_dir(stack.dir())
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .args(["--config-file", &config.to_string_lossy()])
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", base])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        // One worker: with two, Python 3.11's `ast` module (which
        // hypothesis calls to describe its filters) can fail in one thread
        // with "AST constructor recursion depth mismatch" while the other
        // parses (CPython gh-106905), a runtime error in the fuzzer, not
        // an answer of ours (CI saw it).
        .args(["--seed", &seed(), "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--output-sanitize", "true"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The summary: everything from the last section header on.
    let summary = stdout
        .rfind("SUMMARY")
        .map_or(stdout.as_ref(), |at| &stdout[at..]);
    println!("schemathesis ({took:?}):\n{summary}");
    if !output.status.success() {
        // The control plane's log first: the failures must be the last
        // thing a truncated CI log shows.
        println!("control plane log:\n{}", stack.control_plane_log());
        panic!("schemathesis failed (seed {}):\n{stdout}\n{stderr}", seed());
    }
}

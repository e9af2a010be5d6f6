//! Plans and the operator API through Envoy's operator listener (the public
//! one answers 404 there): the operator token every stack's control plane
//! reads from a file, putting a tenant on a plan, and the plans file of bulk
//! tests (no management-rate limit).
//!
//! The harness runs `--tiers pro,free`, so its built-in plans are `pro`
//! (tier pro only, the default plan) and `free` (pro and free).

use crate::api::Reply;
use crate::paths::repo_root;
use crate::stack::Stack;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The operator token of every stack's control plane.
pub const OPERATOR_TOKEN: &str = "keygate-e2e-operator-token-0123456789";

/// Writes the operator token file into `dir`; returns its path.
pub(crate) fn operator_token_file(dir: &Path) -> PathBuf {
    let path = dir.join("operator-token");
    std::fs::write(&path, OPERATOR_TOKEN)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// `serve` flags for the built-in plans without a management-rate limit.
pub fn unthrottled_plans() -> Vec<String> {
    let file = repo_root().join("tests/fixtures/unthrottled-plans.toml");
    vec!["--plans".to_string(), file.display().to_string()]
}

impl Stack {
    /// `http://127.0.0.1:<operator>/<path>`: Envoy's operator listener.
    pub fn operator_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.operator)
    }

    /// An operator API call through Envoy's operator listener with `token`
    /// as the bearer.
    pub async fn operator_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let url = self.operator_url(path);
        let mut request = self.client.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// An operator API call through Envoy's operator listener with the
    /// operator token.
    pub async fn operator(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.operator_as(OPERATOR_TOKEN, method, path, body).await
    }

    /// Puts tenant `tenant_id` on `plan` through the operator API (asserts 200).
    pub async fn set_plan(&self, tenant_id: &str, plan: &str) {
        let path = format!("/operator/v1/tenants/{tenant_id}");
        let reply = self
            .operator(Method::PATCH, &path, Some(json!({ "plan": plan })))
            .await;
        reply.expect(200);
        assert_eq!(reply.json["plan"], plan, "{reply:#?}");
    }
}

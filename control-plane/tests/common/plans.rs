//! Plans and the operator API in the tests: the operator token every
//! [`Server`] gets, putting a tenant on a plan, and a plans file without a
//! management-rate limit for bulk tests.

use super::{Reply, Server};
use serde_json::json;

/// The operator token of every test server (`KEYGATE_OPERATOR_TOKEN`).
pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";

/// `serve` flags for the built-in plans without a management-rate limit.
pub fn unthrottled() -> [&'static str; 2] {
    [
        "--plans",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/common/unthrottled-plans.toml"
        ),
    ]
}

impl Server {
    /// An operator API call with the operator token.
    pub async fn operator(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call(method, path, Some(OPERATOR_TOKEN), body).await
    }

    /// Puts tenant `id` on `plan` through the operator API; asserts 200.
    pub async fn set_plan(&self, id: &str, plan: &str) {
        let body = json!({ "plan": plan }).to_string();
        let path = format!("/operator/v1/tenants/{id}");
        let reply = self.operator("PATCH", &path, Some(&body)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["plan"], plan);
    }
}

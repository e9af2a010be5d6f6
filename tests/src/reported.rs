//! Usage reported to the control plane the way an Envoy's reporter sends it
//! (docs/usage-protocol.md): a batch `POST`ed to `/v1/usage` with the feed
//! token, for the key set of the table the control plane serves.

use crate::stack::Stack;
use crate::FEED_TOKEN;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// Batch ids of this test process (each batch is counted once by id).
static BATCHES: AtomicU64 = AtomicU64::new(1);

impl Stack {
    /// The key set id of the control plane's table (`x-keygate-key-set`).
    pub async fn key_set(&self) -> String {
        let url = format!("http://127.0.0.1:{}/v1/key-table", self.ports.control_plane);
        let response = self
            .client
            .get(url)
            .bearer_auth(FEED_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("key table request failed: {e}"));
        response
            .headers()
            .get("x-keygate-key-set")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no key set header"))
            .to_string()
    }

    /// Reports `allowed` requests costing `cost_micros` for the key `key_id`
    /// in the current minute, in a fresh batch; asserts the 200.
    pub async fn report_usage(&self, key_id: &str, allowed: u64, cost_micros: u64) {
        let batch = BATCHES.fetch_add(1, Ordering::Relaxed) ^ (u64::from(std::process::id()) << 32);
        let body = json!({
            "batch_id": format!("{batch:032x}"),
            "key_set": self.key_set().await,
            "minutes": [{"minute": crate::unix_now() / 60 * 60,
                         "keys": [{"key_id": key_id, "outcomes": {"allowed": allowed},
                                   "cost_micros": cost_micros}]}]
        });
        let url = format!("http://127.0.0.1:{}/v1/usage", self.ports.control_plane);
        let request = self.client.post(url).bearer_auth(FEED_TOKEN).json(&body);
        self.send(request).await.expect(200);
    }
}

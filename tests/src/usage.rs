//! Usage as a user reads it: a key's counts summed over the usage API, and
//! waiting until they reach an expected value.

use crate::stack::Stack;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A key's usage over the last hour, summed over the minute buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Requests by outcome name.
    pub requests: BTreeMap<String, u64>,
    pub cost_micros: u64,
}

impl UsageTotals {
    /// The count of `outcome` (0 when absent).
    pub fn get(&self, outcome: &str) -> u64 {
        self.requests.get(outcome).copied().unwrap_or(0)
    }
}

impl Stack {
    /// `GET /api/v1/api-keys/{id}/usage?granularity=minute` (the last hour)
    /// with `admin_key`, summed.
    pub async fn key_usage(&self, admin_key: &str, key_id: &str) -> UsageTotals {
        let from = crate::time::rfc3339(crate::time::unix_now().saturating_sub(3600));
        let path = format!("/api/v1/api-keys/{key_id}/usage?granularity=minute&from={from}");
        let reply = self.get(&path, admin_key).await;
        reply.expect(200);
        let mut totals = UsageTotals::default();
        for bucket in reply.json["data"].as_array().into_iter().flatten() {
            let requests = bucket["requests"].as_object().into_iter().flatten();
            for (outcome, n) in requests {
                *totals.requests.entry(outcome.clone()).or_default() += n.as_u64().unwrap_or(0);
            }
            totals.cost_micros += bucket["cost_micros"].as_u64().unwrap_or(0);
        }
        totals
    }

    /// Polls [`Stack::key_usage`] until `done` holds, at most `limit`;
    /// returns the totals and how long it took (panics past the limit).
    pub async fn wait_usage(
        &self,
        admin_key: &str,
        key_id: &str,
        limit: Duration,
        done: impl Fn(&UsageTotals) -> bool,
    ) -> (UsageTotals, Duration) {
        let start = Instant::now();
        loop {
            let totals = self.key_usage(admin_key, key_id).await;
            if done(&totals) {
                return (totals, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "usage of {key_id} not as expected after {limit:?}: {totals:?}\nEnvoy log:\n{}",
                self.envoy_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `last_used_at` of a key view, if set.
pub fn last_used_at(key: &Value) -> Option<&str> {
    key["last_used_at"].as_str()
}

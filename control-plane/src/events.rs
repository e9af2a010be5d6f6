//! Webhook events (SPEC §11, §17): their types, their JSON payloads
//! (`{"id","type","created_at","data"}`), their signature, and queueing them
//! for delivery to the tenant's webhooks (crate::dispatch sends them).
//!
//! Signature: `keygate-signature: t=<unix seconds>,v1=<hex>` where `v1` is
//! HMAC-SHA256, keyed with the webhook's secret (its text), of
//! `<t>.<body>` (docs/webhooks.md shows how to verify it).

use crate::clock;
use crate::errors::ApiError;
use crate::service::Service;
use crate::store::caps::Crossing;
use crate::store::events::{Event, ExpiringKey};
use crate::store::leaks::HourCount;
use crate::store::{Store, StoreError};
use crate::views::KeyView;
use hmac::{Hmac, Mac};
use keygate::ids::{KeyId, OrgId};
use serde_json::{json, Value};
use sha2::Sha256;

/// 80% or 100% of a key's spending cap or request quota was reached.
pub const QUOTA_THRESHOLD: &str = "key.quota.threshold";
/// A key was revoked (or rotated without grace).
pub const KEY_REVOKED: &str = "key.revoked";
/// A key expires within [`EXPIRY_NOTICE`].
pub const KEY_EXPIRING: &str = "key.expiring";
/// A key was reported leaked by secret scanning (crate::leaks::report).
pub const KEY_LEAKED: &str = "key.leaked";
/// A key's requests in an hour spiked (crate::leaks::spikes).
pub const KEY_USAGE_SPIKE: &str = "key.usage.spike";
/// Every event type a webhook may take.
pub const EVENT_TYPES: &[&str] = &[
    QUOTA_THRESHOLD,
    KEY_REVOKED,
    KEY_EXPIRING,
    KEY_LEAKED,
    KEY_USAGE_SPIKE,
];
/// How long before its expiry a key's `key.expiring` event goes out (seconds).
pub const EXPIRY_NOTICE: u64 = 7 * 86_400;
/// The header of the signature.
pub const SIGNATURE_HEADER: &str = "keygate-signature";

/// `<tag><2 × bytes hex digits>` from the OS CSPRNG.
pub fn random_id(tag: &str, bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        tracing::error!(error = %e, "the OS CSPRNG failed");
        ApiError::Internal
    })?;
    Ok(format!("{tag}{}", hex::encode(buf)))
}

/// A new webhook secret: `whsec_` and 256 random bits in hex.
pub fn new_secret() -> Result<String, ApiError> {
    random_id("whsec_", 32)
}

/// The `keygate-signature` value of `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body))
    )
}

fn mac(secret: &str, timestamp: u64, body: &str) -> Vec<u8> {
    // HMAC takes a key of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Vec::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// An event of `kind` for `org` with `data`, created `now`.
pub fn event(org: OrgId, kind: &str, data: Value, now: u64) -> Result<Event, ApiError> {
    let id = random_id("evt_", 8)?;
    let payload = json!({
        "id": id,
        "type": kind,
        "created_at": clock::rfc3339(now),
        "data": data,
    });
    Ok(Event {
        id,
        org,
        kind: kind.to_string(),
        created_at: now,
        payload: payload.to_string(),
    })
}

/// A key's part of an event's data, and `field` (`revoked_at`, `expires_at`).
fn key_data(
    key_id: KeyId,
    name: &str,
    prefix: &str,
    external_id: Option<&str>,
    (field, value): (&str, Value),
) -> Value {
    let mut data = serde_json::Map::new();
    data.insert("key_id".into(), json!(key_id));
    data.insert("name".into(), json!(name));
    data.insert("api_key_prefix".into(), json!(prefix));
    data.insert("external_id".into(), json!(external_id));
    data.insert(field.into(), value);
    Value::Object(data)
}

/// Queues `event` and wakes the sender; a failure is logged, never the
/// caller's (the change it reports is done).
async fn queue(service: &Service, event: Result<Event, ApiError>) -> usize {
    let kind = event.as_ref().map(|e| e.kind.clone()).unwrap_or_default();
    let queued = match event {
        Ok(event) => service.store().enqueue(event).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match queued {
        Ok(n) => {
            if n > 0 {
                service.events_queued().notify_one();
            }
            n
        }
        Err(e) => {
            tracing::error!(error = ?e, kind, "cannot queue a webhook event");
            0
        }
    }
}

impl Service {
    /// Queues `key.quota.threshold` for the key's tenant's webhooks (the
    /// ingest calls this once per crossing, which the caps record once a
    /// period); returns how many deliveries.
    pub async fn emit_quota_threshold(&self, crossed: &Crossing) -> usize {
        tracing::info!(org_id = %crossed.org, key_id = %crossed.key_id, kind = ?crossed.kind,
                       percent = crossed.percent, "key cap threshold crossed");
        let data = json!({
            "key_id": crossed.key_id,
            "kind": crossed.kind,
            "percent": crossed.percent,
            "used": crossed.used,
            "limit": crossed.limit,
        });
        queue(
            self,
            event(crossed.org, QUOTA_THRESHOLD, data, clock::now()),
        )
        .await
    }

    /// Queues `key.revoked` for a key of `org` just revoked.
    pub async fn emit_key_revoked(&self, org: OrgId, key: &KeyView) -> usize {
        let data = key_data(
            key.id,
            &key.name,
            &key.api_key_prefix,
            key.external_id.as_deref(),
            ("revoked_at", json!(key.revoked_at)),
        );
        queue(self, event(org, KEY_REVOKED, data, clock::now())).await
    }

    /// Queues `key.leaked` for a key of `org` reported leaked: the key, and
    /// `found` (the report's `url` and `source`, and whether it was revoked).
    pub async fn emit_key_leaked(&self, org: OrgId, key: &KeyView, found: Value) -> usize {
        let mut data = key_data(
            key.id,
            &key.name,
            &key.api_key_prefix,
            key.external_id.as_deref(),
            ("revoked_at", json!(key.revoked_at)),
        );
        if let (Value::Object(data), Value::Object(found)) = (&mut data, found) {
            data.extend(found);
        }
        queue(self, event(org, KEY_LEAKED, data, clock::now())).await
    }

    /// Queues `key.usage.spike` for a key whose requests in the hour
    /// starting at `hour` spiked beside its `usual` hourly requests.
    pub async fn emit_usage_spike(&self, busy: &HourCount, hour: u64, usual: u64) -> usize {
        tracing::warn!(org_id = %busy.org, key_id = %busy.key_id, requests = busy.requests,
                       usual, "key usage spike");
        let data = json!({
            "key_id": busy.key_id,
            "hour": clock::rfc3339(hour),
            "requests": busy.requests,
            "usual_hourly_requests": usual,
        });
        queue(self, event(busy.org, KEY_USAGE_SPIKE, data, clock::now())).await
    }
}

/// Queues `key.expiring` for every key expiring within [`EXPIRY_NOTICE`] of
/// `now` not yet told about (the upkeep runs this); returns how many keys.
pub async fn scan_expiring(store: &dyn Store, now: u64) -> Result<usize, StoreError> {
    let keys = store
        .claim_expiring(now, now.saturating_add(EXPIRY_NOTICE))
        .await?;
    for key in &keys {
        match expiring_event(key, now) {
            Ok(event) => {
                store.enqueue(event).await?;
            }
            Err(e) => tracing::error!(error = ?e, "cannot make a key.expiring event"),
        }
    }
    Ok(keys.len())
}

fn expiring_event(key: &ExpiringKey, now: u64) -> Result<Event, ApiError> {
    let data = key_data(
        key.key_id,
        &key.name,
        &key.display_prefix,
        key.external_id.as_deref(),
        ("expires_at", json!(clock::rfc3339(key.expires_at))),
    );
    event(key.org, KEY_EXPIRING, data, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // openssl dgst -sha256 -hmac whsec_test <<< '1700000000.{"a":1}' (no newline)
        assert_eq!(
            signature("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(
            signature("whsec_test", 1_700_000_001, r#"{"a":1}"#),
            signature("whsec_test", 1_700_000_000, r#"{"a":1}"#)
        );
    }

    #[test]
    fn payloads_carry_id_type_time_and_data() {
        let e = event(OrgId(1), KEY_REVOKED, json!({"key_id": "k"}), 0).unwrap();
        let v: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(v["type"], KEY_REVOKED);
        assert_eq!(v["id"], e.id.as_str());
        assert_eq!(v["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["data"]["key_id"], "k");
        assert!(e.id.starts_with("evt_") && e.id.len() == 20);
        assert!(new_secret().unwrap().len() == 6 + 64);
    }
}

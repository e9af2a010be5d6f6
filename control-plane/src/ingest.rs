//! `POST /v1/usage`: the filters' usage batches (docs/usage-protocol.md),
//! behind the feed's bearer token (checked before any byte of the body is
//! read), checked whole before anything is counted and then counted in one
//! transaction, once per batch id. A data plane limited to some tenants
//! (crate::data_planes) may report their keys only: a batch naming another
//! tenant's key is refused whole (403), nothing counted.

use crate::clock;
use crate::data_planes::Access;
use crate::errors::{json, ApiError};
use crate::feed::{FeedEndpoint, UNAUTHORIZED};
use crate::service::Service;
use crate::store::usage::{UsageBatch, UsageCount, ALLOWED};
use crate::store::Ingested;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use keygate::decision::DenyReason;
use keygate::feed::KeySet;
use keygate::ids::KeyId;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Route of the ingest.
pub const PATH: &str = "/v1/usage";
/// Largest batch body (100,000 key rows with a few outcomes each).
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Most key rows (one key in one minute) in a batch.
pub const MAX_KEY_ROWS: usize = 100_000;
/// Largest count or cost: exact in every JSON reader.
pub const MAX_COUNT: u64 = 1 << 53;
/// How far past the control plane's clock a minute may lie (clock skew).
const FUTURE_SLACK: u64 = 300;
/// Envoy's own per-key 429 (`local_ratelimit`), besides the core's reasons.
pub const RATE_LIMITED_ENVOY: &str = "rate_limited_envoy";

/// An outcome a batch may count.
fn known_outcome(name: &str) -> bool {
    name == ALLOWED
        || name == RATE_LIMITED_ENVOY
        || DenyReason::ALL.iter().any(|r| r.as_str() == name)
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::invalid(field, format!("{field} {message}"))
}

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| bad(field, "must be an object"))
}

fn array<'a>(
    fields: &'a Map<String, Value>,
    field: &str,
    at: &str,
) -> Result<&'a [Value], ApiError> {
    match fields.get(field) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(bad(at, "must be an array")),
    }
}

fn text<'a>(fields: &'a Map<String, Value>, field: &str, at: &str) -> Result<&'a str, ApiError> {
    fields
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(at, "must be a string"))
}

/// A count: an integer from 0 to 2^53.
fn count(value: Option<&Value>, at: &str) -> Result<u64, ApiError> {
    value
        .and_then(Value::as_u64)
        .filter(|n| *n <= MAX_COUNT)
        .ok_or_else(|| bad(at, "must be an integer from 0 to 2^53"))
}

/// A cost: any non-negative integer, clamped to 2^53 (also one past u64,
/// which JSON reads as a float).
fn cost(value: Option<&Value>, at: &str) -> Result<u64, ApiError> {
    const PAST_U64: f64 = 18_446_744_073_709_551_616.0;
    match value {
        None => Ok(0),
        Some(v) if v.is_u64() => Ok(v.as_u64().unwrap_or(0).min(MAX_COUNT)),
        Some(v) if v.as_f64().is_some_and(|f| f >= PAST_U64 && f.is_finite()) => Ok(MAX_COUNT),
        Some(_) => Err(bad(at, "must be a non-negative integer")),
    }
}

/// 32 hex digits, lowercased.
fn hex32(value: &str, field: &str) -> Result<String, ApiError> {
    if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(bad(field, "must be 32 hex digits"))
    }
}

/// A batch's rows, summed per (key, minute, outcome).
#[derive(Default)]
struct Rows {
    sums: BTreeMap<(KeyId, u64, String), (u64, u64)>,
    key_rows: usize,
}

impl Rows {
    fn add(&mut self, key: KeyId, minute: u64, outcome: &str, count: u64, cost: u64) {
        let sum = self
            .sums
            .entry((key, minute, outcome.to_string()))
            .or_default();
        sum.0 = sum.0.saturating_add(count).min(MAX_COUNT);
        sum.1 = sum.1.saturating_add(cost).min(MAX_COUNT);
    }

    /// One key's entry of one minute (`at` names it in errors).
    fn key(&mut self, value: &Value, minute: u64, at: &str) -> Result<(), ApiError> {
        let fields = object(value, at)?;
        let id_at = format!("{at}.key_id");
        let key: KeyId = text(fields, "key_id", &id_at)?
            .parse()
            .map_err(|_| bad(&id_at, "must be a key id such as key_0123456789abcdef"))?;
        let outcomes_at = format!("{at}.outcomes");
        let outcomes = object(fields.get("outcomes").unwrap_or(&Value::Null), &outcomes_at)?;
        for (name, n) in outcomes {
            let at = format!("{outcomes_at}.{name}");
            if !known_outcome(name) {
                return Err(bad(&at, "is not an outcome"));
            }
            let n = count(Some(n), &at)?;
            if n > 0 {
                self.add(key, minute, name, n, 0);
            }
        }
        let cost = cost(fields.get("cost_micros"), &format!("{at}.cost_micros"))?;
        if cost > 0 {
            self.add(key, minute, ALLOWED, 0, cost);
        }
        self.key_rows += 1;
        if self.key_rows > MAX_KEY_ROWS {
            return Err(bad(
                "minutes",
                &format!("must hold at most {MAX_KEY_ROWS} key rows"),
            ));
        }
        Ok(())
    }

    /// One minute's entry (`at` names it in errors), checked against `now`.
    fn minute(&mut self, value: &Value, now: u64, at: &str) -> Result<(), ApiError> {
        let fields = object(value, at)?;
        let minute_at = format!("{at}.minute");
        let minute = fields
            .get("minute")
            .and_then(Value::as_u64)
            .filter(|m| *m > 0 && m % 60 == 0 && *m <= now + FUTURE_SLACK)
            .ok_or_else(|| {
                bad(
                    &minute_at,
                    "must be unix seconds of a minute start, not in the future",
                )
            })?;
        let keys_at = format!("{at}.keys");
        for (i, key) in array(fields, "keys", &keys_at)?.iter().enumerate() {
            self.key(key, minute, &format!("{keys_at}[{i}]"))?;
        }
        Ok(())
    }
}

/// A checked batch of `body`, received at `now`, for the key set `ours`.
pub fn parse(body: &[u8], ours: KeySet, now: u64) -> Result<UsageBatch, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| bad("body", "must be a JSON object"))?;
    let fields = object(&value, "body")?;
    let batch_id = hex32(text(fields, "batch_id", "batch_id")?, "batch_id")?;
    let key_set = hex32(text(fields, "key_set", "key_set")?, "key_set")?;
    if KeySet::from_hex(&key_set) != Some(ours) {
        return Err(bad("key_set", "is not this control plane's key set"));
    }
    let mut rows = Rows::default();
    for (i, minute) in array(fields, "minutes", "minutes")?.iter().enumerate() {
        rows.minute(minute, now, &format!("minutes[{i}]"))?;
    }
    let rows = rows
        .sums
        .into_iter()
        .map(
            |((key_id, minute, outcome), (count, cost_micros))| UsageCount {
                key_id,
                minute,
                outcome,
                count,
                cost_micros,
            },
        )
        .collect();
    Ok(UsageBatch {
        batch_id,
        received_at: now,
        rows,
    })
}

/// Refuses a batch of a plane limited to some tenants that names a key of
/// another tenant (keys the database does not know are skipped as usual).
async fn check_tenants(
    service: &Service,
    access: &Access,
    batch: &UsageBatch,
) -> Result<(), ApiError> {
    if access.tenants().is_none() {
        return Ok(());
    }
    let mut keys: Vec<KeyId> = batch.rows.iter().map(|r| r.key_id).collect();
    keys.dedup();
    let owners = service.store().key_tenants(keys).await?;
    match owners.iter().find(|(_, org)| !access.sees(*org)) {
        Some((key, _)) => Err(ApiError::Forbidden(format!(
            "{key} belongs to a tenant this data plane does not serve: nothing was counted"
        ))),
        None => Ok(()),
    }
}

/// The ingest handler: the token is checked before the body is read.
pub async fn usage(
    State(service): State<Arc<Service>>,
    State(feed): State<Arc<FeedEndpoint>>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some((access, _)) = feed.access(request.headers()) else {
        return Err(ApiError::Unauthorized(UNAUTHORIZED));
    };
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(MAX_BODY)
            } else {
                bad("body", "could not be read")
            }
        })?;
    let store = service.store();
    let batch = parse(&body, store.key_set(), clock::now())?;
    check_tenants(&service, &access, &batch).await?;
    let answer = match store.ingest_usage(batch).await? {
        Ingested::Duplicate => serde_json::json!({"duplicate": true}),
        Ingested::Applied {
            unknown_keys,
            crossings,
        } => {
            for crossed in &crossings {
                service.emit_quota_threshold(crossed).await;
            }
            serde_json::json!({"duplicate": false, "unknown_keys": unknown_keys})
        }
    };
    Ok(json(StatusCode::OK, &answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn field_of(body: &str) -> String {
        match parse(body.as_bytes(), KeySet([1; 16]), NOW) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn batch(minutes: &str) -> String {
        let set = KeySet([1; 16]).to_hex();
        format!(
            r#"{{"batch_id":"{}","key_set":"{set}","minutes":{minutes}}}"#,
            "ab".repeat(16)
        )
    }

    #[test]
    fn bad_fields_are_named() {
        let key = "key_0123456789abcdef";
        for (body, field) in [
            ("[]".to_string(), "body"),
            ("{".to_string(), "body"),
            (batch("{}"), "minutes"),
            (batch(r#"[{"minute":61,"keys":[]}]"#), "minutes[0].minute"),
            (
                batch(r#"[{"minute":1900000020,"keys":[]}]"#),
                "minutes[0].minute",
            ),
            (batch(r#"[{"minute":60}]"#), "minutes[0].keys"),
            (
                batch(r#"[{"minute":60,"keys":[{"key_id":"x","outcomes":{}}]}]"#),
                "minutes[0].keys[0].key_id",
            ),
            (
                batch(&format!(
                    r#"[{{"minute":60,"keys":[{{"key_id":"{key}","outcomes":{{"nope":1}}}}]}}]"#
                )),
                "minutes[0].keys[0].outcomes.nope",
            ),
            (
                batch(&format!(
                    r#"[{{"minute":60,"keys":[{{"key_id":"{key}","outcomes":{{"allowed":-1}}}}]}}]"#
                )),
                "minutes[0].keys[0].outcomes.allowed",
            ),
            (
                batch(&format!(
                    r#"[{{"minute":60,"keys":[{{"key_id":"{key}","outcomes":{{"allowed":9007199254740993}}}}]}}]"#
                )),
                "minutes[0].keys[0].outcomes.allowed",
            ),
            (
                batch(&format!(
                    r#"[{{"minute":60,"keys":[{{"key_id":"{key}","outcomes":{{}},"cost_micros":"1"}}]}}]"#
                )),
                "minutes[0].keys[0].cost_micros",
            ),
            (
                batch(&format!(
                    r#"[{{"minute":60,"keys":[{{"key_id":"{key}","outcomes":{{}},"cost_micros":5.0}}]}}]"#
                )),
                "minutes[0].keys[0].cost_micros",
            ),
            (
                batch(&format!(
                    r#"[{{"minute":60,"keys":[{{"key_id":"{key}","outcomes":{{}},"cost_micros":-1}}]}}]"#
                )),
                "minutes[0].keys[0].cost_micros",
            ),
        ] {
            assert_eq!(field_of(&body), field, "{body}");
        }
        let foreign = batch("[]").replace(&KeySet([1; 16]).to_hex(), &KeySet([2; 16]).to_hex());
        assert_eq!(field_of(&foreign), "key_set");
        assert_eq!(field_of(&batch("[]").replace("abab", "zzab")), "batch_id");
    }

    #[test]
    fn rows_are_summed_and_cost_clamped() {
        let key = "key_0123456789abcdef";
        let entry = format!(
            r#"{{"key_id":"{key}","outcomes":{{"allowed":2,"invalid_key":0,"rate_limited_envoy":1}},"cost_micros":1e300}}"#
        );
        let body = batch(&format!(r#"[{{"minute":120,"keys":[{entry},{entry}]}}]"#));
        let parsed = parse(body.as_bytes(), KeySet([1; 16]), NOW).unwrap();
        let rows: Vec<_> = parsed
            .rows
            .iter()
            .map(|r| (r.outcome.as_str(), r.count, r.cost_micros))
            .collect();
        assert_eq!(
            rows,
            [("allowed", 4, MAX_COUNT), ("rate_limited_envoy", 2, 0)]
        );
        assert_eq!(parsed.last_used(), [(KeyId(0x0123456789abcdef), 120)]);
    }
}

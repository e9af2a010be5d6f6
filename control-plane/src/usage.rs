//! The usage queries of the management API (SPEC §11): `GET
//! /api/v1/api-keys/{id}/usage` and `GET /api/v1/usage`, their query
//! (`from`, `to`, `granularity`, and for the tenant `external_id`) and their
//! answer, buckets with data only.

use crate::body;
use crate::clock;
use crate::drafts;
use crate::errors::ApiError;
use crate::store::usage::{Granularity, UsageBucket, UsageQuery, UsageScope, MINUTE_RETENTION};
use keygate::ids::{KeyId, OrgId};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Span of a query without `from`.
const DEFAULT_SPAN: u64 = 86_400;
/// Longest span of a query.
pub const MAX_SPAN: u64 = 400 * 86_400;

/// A usage query, as asked.
#[derive(Debug, Default, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageDraft {
    /// Start (RFC 3339, inclusive; default: 24 hours before `to`).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive; default: now); after `from`, at most 400 days later.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Bucket width (default `hour`); `minute` only within the last 48 hours.
    #[param(value_type = Option<GranularityName>)]
    pub granularity: Option<String>,
    /// Only the keys minted for this end user or device (`GET /api/v1/usage` only).
    #[param(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
}

/// A bucket width.
#[derive(ToSchema)]
#[schema(as = Granularity)]
#[allow(dead_code)]
pub enum GranularityName {
    #[schema(rename = "minute")]
    Minute,
    #[schema(rename = "hour")]
    Hour,
    #[schema(rename = "day")]
    Day,
}

impl UsageDraft {
    /// Reads a query string; `owner` says whether `external_id` is allowed.
    pub fn from_query(query: Option<&str>, owner: bool) -> Result<UsageDraft, ApiError> {
        let known: &[&str] = if owner {
            &["from", "to", "granularity", "external_id"]
        } else {
            &["from", "to", "granularity"]
        };
        let mut params = body::query_params(query, known)?;
        Ok(UsageDraft {
            from: params.remove("from"),
            to: params.remove("to"),
            granularity: params.remove("granularity"),
            external_id: params.remove("external_id"),
        })
    }

    /// Checks every parameter against `now`; `key`: one key's usage.
    pub fn check(self, org: OrgId, key: Option<KeyId>, now: u64) -> Result<UsageQuery, ApiError> {
        let to = self
            .to
            .as_deref()
            .map(|t| time("to", t))
            .transpose()?
            .unwrap_or(now);
        let from = match self.from.as_deref() {
            Some(text) => time("from", text)?,
            None => to.saturating_sub(DEFAULT_SPAN),
        };
        if to <= from {
            return Err(ApiError::invalid("to", "to must be after from"));
        }
        if to - from > MAX_SPAN {
            return Err(ApiError::invalid(
                "from",
                "from must be at most 400 days before to",
            ));
        }
        let granularity = self
            .granularity
            .as_deref()
            .map_or(Ok(Granularity::Hour), granularity)?;
        if granularity == Granularity::Minute && from < now.saturating_sub(MINUTE_RETENTION) {
            return Err(ApiError::invalid(
                "granularity",
                "granularity minute is kept 48 hours only: from must lie within them",
            ));
        }
        let scope = match (key, self.external_id) {
            (Some(id), _) => UsageScope::Key(id),
            (None, Some(owner)) => UsageScope::Owner(drafts::external_id(owner)?),
            (None, None) => UsageScope::Tenant,
        };
        Ok(UsageQuery {
            org,
            scope,
            from,
            to,
            granularity,
        })
    }
}

fn time(field: &str, text: &str) -> Result<u64, ApiError> {
    clock::parse_rfc3339(text)
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| ApiError::invalid(field, format!("{field} must be an RFC 3339 time")))
}

fn granularity(text: &str) -> Result<Granularity, ApiError> {
    match text {
        "minute" => Ok(Granularity::Minute),
        "hour" => Ok(Granularity::Hour),
        "day" => Ok(Granularity::Day),
        _ => Err(ApiError::invalid(
            "granularity",
            "granularity must be \"minute\", \"hour\" or \"day\"",
        )),
    }
}

/// One bucket with data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BucketView {
    #[schema(format = DateTime)]
    pub start: String,
    /// Requests per outcome: `allowed`, a refusal reason, `rate_limited_envoy`.
    pub requests: BTreeMap<String, u64>,
    /// Every request of the bucket.
    pub total: u64,
    /// The cost the upstream reported, in micro-units.
    pub cost_micros: u64,
}

/// `GET …/usage`: the buckets with data, in time order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageView {
    #[schema(value_type = GranularityName)]
    pub granularity: &'static str,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    pub data: Vec<BucketView>,
}

impl UsageView {
    /// The answer to `query`.
    pub fn new(query: &UsageQuery, buckets: Vec<UsageBucket>) -> UsageView {
        UsageView {
            granularity: query.granularity.as_str(),
            from: clock::rfc3339(query.from),
            to: clock::rfc3339(query.to),
            data: buckets
                .into_iter()
                .map(|b| BucketView {
                    start: clock::rfc3339(b.start),
                    total: b.outcomes.values().fold(0, |sum, n| sum.saturating_add(*n)),
                    requests: b.outcomes,
                    cost_micros: b.cost_micros,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn field_of(query: &str, owner: bool) -> String {
        let checked =
            UsageDraft::from_query(Some(query), owner).and_then(|d| d.check(OrgId(1), None, NOW));
        match checked {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn defaults_to_the_last_day_by_hour() {
        let q = UsageDraft::from_query(None, true)
            .unwrap()
            .check(OrgId(1), None, NOW)
            .unwrap();
        assert_eq!(
            (q.from, q.to, q.granularity),
            (NOW - 86_400, NOW, Granularity::Hour)
        );
        assert_eq!(q.scope, UsageScope::Tenant);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, owner, field) in [
            ("from=yesterday", true, "from"),
            ("to=2027", true, "to"),
            (
                "from=2027-01-15T08:00:00Z&to=2027-01-15T08:00:00Z",
                true,
                "to",
            ),
            (
                "from=2020-01-01T00:00:00Z&to=2027-01-15T08:00:00Z",
                true,
                "from",
            ),
            ("granularity=week", true, "granularity"),
            (
                "from=2027-01-10T00:00:00Z&to=2027-01-15T08:00:00Z&granularity=minute",
                true,
                "granularity",
            ),
            ("external_id=a%20b", true, "external_id"),
            ("external_id=a", false, "external_id"),
            (
                "to=2027-01-15T08:00:00Z&to=2027-01-15T08:00:00Z",
                true,
                "to",
            ),
            ("limit=3", true, "limit"),
        ] {
            assert_eq!(field_of(query, owner), field, "{query}");
        }
    }
}

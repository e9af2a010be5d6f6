//! The query of `GET /api/v1/api-keys` (`limit`, `cursor`, the filters)
//! read from the query string, and its opaque cursor: base64url without
//! padding of `kc1` and the last row's sequence number (8 bytes, big
//! endian). A filter is added in [`ListDraft`] and its `from_query`, [`PARAMS`],
//! [`ListDraft::check`] and `store::KeyQuery`.

use crate::body;
use crate::drafts;
use crate::errors::ApiError;
use crate::store::{KeyQuery, ListStatus};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keygate::key::Environment;
use utoipa::IntoParams;

/// Keys in a page when the query names no `limit`.
pub const DEFAULT_LIMIT: usize = 50;
/// Most keys in a page.
pub const MAX_LIMIT: usize = 100;
/// The first bytes of every cursor (its format's version).
const CURSOR_TAG: &[u8; 3] = b"kc1";
/// The query parameters a list accepts (besides the `api_key` credential).
const PARAMS: &[&str] = &["limit", "cursor", "environment", "status", "external_id"];

/// A list query, as asked.
#[derive(Debug, Default, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDraft {
    /// Keys in the page, 1 to 100 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
    #[param(value_type = Option<crate::schemas::EnvironmentName>)]
    pub environment: Option<String>,
    /// `active` (neither revoked nor expired), `revoked` or `expired`.
    #[param(value_type = Option<crate::schemas::StatusName>)]
    pub status: Option<String>,
    /// Only the keys minted for this end user or device.
    #[param(min_length = 1, max_length = 128)]
    pub external_id: Option<String>,
}

impl ListDraft {
    /// Reads a query string (`None`: no query).
    pub fn from_query(query: Option<&str>) -> Result<ListDraft, ApiError> {
        let mut params = body::query_params(query, PARAMS)?;
        Ok(ListDraft {
            limit: params.remove("limit"),
            cursor: params.remove("cursor"),
            environment: params.remove("environment"),
            status: params.remove("status"),
            external_id: params.remove("external_id"),
        })
    }

    /// Checks every parameter; `now` judges `status`.
    pub fn check(self, now: u64) -> Result<KeyQuery, ApiError> {
        Ok(KeyQuery {
            after: self.cursor.as_deref().map(position).transpose()?,
            limit: self.limit.as_deref().map_or(Ok(DEFAULT_LIMIT), limit)?,
            environment: self.environment.as_deref().map(environment).transpose()?,
            status: self.status.as_deref().map(status).transpose()?,
            external_id: self.external_id.map(drafts::external_id).transpose()?,
            now,
        })
    }
}

/// The cursor of a page that ends at row `seq`.
pub fn cursor(seq: u64) -> String {
    let mut bytes = CURSOR_TAG.to_vec();
    bytes.extend_from_slice(&seq.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The row a cursor names.
pub fn position(text: &str) -> Result<u64, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(text).unwrap_or_default();
    bytes
        .strip_prefix(CURSOR_TAG.as_slice())
        .and_then(|seq| <[u8; 8]>::try_from(seq).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                "cursor must be the next_cursor of an earlier page",
            )
        })
}

/// A page size of 1 to [`MAX_LIMIT`], from its text.
pub fn limit(text: &str) -> Result<usize, ApiError> {
    text.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                "limit",
                format!("limit must be an integer from 1 to {MAX_LIMIT}"),
            )
        })
}

fn environment(text: &str) -> Result<Environment, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid("environment", "environment must be \"live\" or \"test\""))
}

fn status(text: &str) -> Result<ListStatus, ApiError> {
    match text {
        "active" => Ok(ListStatus::Active),
        "revoked" => Ok(ListStatus::Revoked),
        "expired" => Ok(ListStatus::Expired),
        _ => Err(ApiError::invalid(
            "status",
            "status must be \"active\", \"revoked\" or \"expired\"",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(query: &str) -> String {
        match ListDraft::from_query(Some(query)).and_then(|d| d.check(0)) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for seq in [0, 1, 42, u64::MAX] {
            let text = cursor(seq);
            assert_eq!(position(&text).unwrap(), seq);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        let short = URL_SAFE_NO_PAD.encode(b"kc1\0\0\0\0");
        for bad in ["", "garbage!", "a2MxAAAAAAAAAAE=", &short, &cursor(1)[1..]] {
            assert!(position(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(field("limit=0"), "limit");
        assert_eq!(field("limit=101"), "limit");
        assert_eq!(field("limit=x"), "limit");
        assert_eq!(field("cursor=zz"), "cursor");
        assert_eq!(field("environment=prod"), "environment");
        assert_eq!(field("status=gone"), "status");
        assert_eq!(field("colour=red"), "colour");
        assert_eq!(field("limit=1&limit=2"), "limit");
        let q = ListDraft::from_query(Some("limit=100&status=active&api_key=x&environment=test"))
            .unwrap()
            .check(5)
            .unwrap();
        assert_eq!(q.limit, 100);
        assert_eq!(q.status, Some(ListStatus::Active));
        assert_eq!(q.environment, Some(Environment::Test));
        assert_eq!(ListDraft::default().check(0).unwrap().limit, DEFAULT_LIMIT);
    }
}

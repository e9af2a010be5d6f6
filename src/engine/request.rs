//! The feed request an adapter sends: path with its query, headers, timeout.
//!
//! `GET <path>?since=<version>&wait=<s>[&after=<hash>][&key_set=<id>][&client=<id>]`
//! with the feed token as a bearer and a timeout a margin longer than the
//! long-poll wait (docs/feed-protocol.md). Pure: the adapter dispatches it.

use crate::config::FeedConfig;
use crate::engine::fetch::Ask;
use std::fmt::Write;

/// Extra time a feed call gets beyond the long-poll wait.
pub const CALL_MARGIN_MS: u64 = 10_000;

/// One feed request, ready to dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRequest {
    /// Cluster of the control plane.
    pub cluster: String,
    /// `:path`, with the query.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// `authorization` (a secret: never log it).
    pub authorization: String,
    /// How long the call may take.
    pub timeout_ms: u64,
}

impl FeedRequest {
    /// The request for `ask`, held up to `wait_seconds` when unchanged.
    /// `client` names this Envoy's fetch stream (the control plane waits for
    /// it to acknowledge revocations); a VM's own first-table fetch sends none.
    pub fn new(
        config: &FeedConfig,
        ask: &Ask,
        wait_seconds: u32,
        client: Option<&str>,
    ) -> FeedRequest {
        FeedRequest {
            cluster: config.cluster.clone(),
            path: feed_path(&config.path, ask, wait_seconds, client),
            authority: config.authority.clone(),
            authorization: config.token.authorization(),
            timeout_ms: u64::from(wait_seconds)
                .saturating_mul(1000)
                .saturating_add(CALL_MARGIN_MS),
        }
    }

    /// The pseudo-headers and `authorization`, in dispatch order.
    pub fn headers(&self) -> [(&str, &str); 4] {
        [
            (":method", "GET"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
        ]
    }
}

/// `path` with the query of `ask` (after any query `path` already has).
pub fn feed_path(path: &str, ask: &Ask, wait_seconds: u32, client: Option<&str>) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut out = format!("{path}{separator}since={}&wait={wait_seconds}", ask.since);
    if let Some(after) = ask.after {
        let _ = write!(out, "&after={}", hex::encode(after));
    }
    if let Some(key_set) = ask.key_set {
        let _ = write!(out, "&key_set={key_set}");
    }
    if let Some(client) = client {
        let _ = write!(out, "&client={client}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::KeySet;

    #[test]
    fn a_first_request_asks_since_zero() {
        let ask = Ask {
            since: 0,
            after: None,
            key_set: None,
        };
        assert_eq!(
            feed_path("/v1/key-table", &ask, 25, Some("c1")),
            "/v1/key-table?since=0&wait=25&client=c1"
        );
    }

    #[test]
    fn a_next_page_names_the_hash_and_key_set_after_a_query() {
        let ask = Ask {
            since: 0,
            after: Some([0xab; 32]),
            key_set: Some(KeySet([1; 16])),
        };
        let path = feed_path("/feed?x=1", &ask, 0, None);
        assert_eq!(
            path,
            format!(
                "/feed?x=1&since=0&wait=0&after={}&key_set={}",
                "ab".repeat(32),
                KeySet([1; 16])
            )
        );
    }

    #[test]
    fn the_timeout_is_the_wait_plus_a_margin() {
        let config = crate::config::FilterConfig::from_json_with_env(
            br#"{"feed":{"cluster":"cp"}}"#,
            |_| Some("secret".into()),
        )
        .unwrap();
        let ask = Ask {
            since: 7,
            after: None,
            key_set: None,
        };
        let request = FeedRequest::new(&config.feed, &ask, 20, None);
        assert_eq!(request.timeout_ms, 30_000);
        assert_eq!(request.cluster, "cp");
        assert_eq!(request.authorization, "Bearer secret");
        assert_eq!(request.headers()[1], (":path", request.path.as_str()));
    }
}

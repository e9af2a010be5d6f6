//! `GET /v1/key-table`: the key table feed for the filters
//! (docs/feed-protocol.md), behind the shared bearer token.
//!
//! A filter at the current version is held (long-poll, `wait` seconds) and
//! answered as soon as a write commits; otherwise it gets a delta from its
//! version or a snapshot, one page (`after` a key hash, at most `page_keys`
//! keys) per request. Each answer is read and encoded once per (key set,
//! view, since, after, version) and shared by every request asking it
//! (crate::feed_cache): every Envoy waking on the same change costs one
//! database read, and a snapshot page being served starts building the
//! next one, so a table's pages are built once per version however many
//! Envoys load it. Every
//! answer and every held long-poll is counted (crate::metrics); a snapshot
//! page counts as a snapshot.
//!
//! Every answer names the database's key set (`x-keygate-key-set`, and in
//! the body): a filter that sends another `key_set` gets the first page of
//! a snapshot whatever its `since`. A request naming its fetch stream
//! (`client`) is tracked for delivered revocations (crate::delivery): its
//! `since`, in this key set, acknowledges that version.
//!
//! The token is the shared `--feed-token` or a data plane's
//! (crate::data_planes): a plane limited to some tenants gets their keys
//! only (crate::data_planes::view), and a held long-poll of a token that is
//! revoked (or whose rotation overlap ends) is answered 401 at once.

use crate::data_planes::{view, Access, Registry};
use crate::delivery;
use crate::errors::ApiError;
use crate::feed_cache::{Answer, AnswerCache, Slot};
use crate::metrics::{self, FeedMetrics};
use crate::service::Service;
use crate::store::{FeedAnswer, PageAsk};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use keygate::credential::bearer_token;
use keygate::feed::{self, KeySet, Reader, CONTENT_TYPE};
use keygate::key;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Route of the feed.
pub const PATH: &str = "/v1/key-table";
/// Longest long-poll, in seconds.
pub const MAX_WAIT: u64 = 60;
/// Body bytes the answer cache holds at most: the pages of a 1M-key
/// table (about 68 MB) and the deltas of the moment.
pub const CACHE_BYTES: usize = 128 << 20;
const X_KEYGATE_VERSION: HeaderName = HeaderName::from_static("x-keygate-version");
const X_KEYGATE_KEY_SET: HeaderName = HeaderName::from_static("x-keygate-key-set");
/// The message of a refused token.
pub const UNAUTHORIZED: &str = "Missing or invalid feed token";

/// The feed endpoint's token, body cache and counters.
pub struct FeedEndpoint {
    /// SHA-256 of the shared token: compared digest to digest.
    token_hash: [u8; 32],
    /// The data planes' tokens.
    planes: Arc<Registry>,
    /// Most keys in one snapshot page (at least 1).
    page_keys: usize,
    cache: AnswerCache,
    pub metrics: FeedMetrics,
}

/// What one request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ask {
    since: u64,
    wait: u64,
    /// The snapshot page starts after this hash (only with `since` 0).
    after: Option<[u8; 32]>,
    /// The key set the client's `since` belongs to.
    key_set: Option<KeySet>,
    /// The client's fetch stream.
    client: Option<String>,
}

impl Ask {
    /// The same ask from a client of `ours`: one of another key set starts
    /// over from the first page of a snapshot.
    fn in_key_set(self, ours: KeySet) -> Ask {
        match self.key_set {
            Some(theirs) if theirs != ours => Ask {
                since: 0,
                after: None,
                ..self
            },
            _ => self,
        }
    }

    /// The version this request proves its client holds (0: none): its
    /// `since`, when it names this key set and is not past `current`.
    fn acknowledges(&self, ours: KeySet, current: u64) -> u64 {
        let same = self.key_set == Some(ours);
        if same && self.since <= current {
            self.since
        } else {
            0
        }
    }
}

impl FeedEndpoint {
    /// A feed behind the shared `token` and the data planes' tokens of
    /// `planes`, serving snapshot pages of at most `page_keys` keys.
    pub fn new(token: &str, page_keys: usize, planes: Arc<Registry>) -> FeedEndpoint {
        FeedEndpoint {
            token_hash: key::hash(token),
            planes,
            page_keys: page_keys.max(1),
            cache: AnswerCache::new(CACHE_BYTES),
            metrics: FeedMetrics::default(),
        }
    }

    /// The data planes' tokens.
    pub fn planes(&self) -> &Arc<Registry> {
        &self.planes
    }

    /// What the request's feed token may do, and its digest; `None`
    /// without a valid one (digests compared).
    pub fn access(&self, headers: &HeaderMap) -> Option<(Access, [u8; 32])> {
        headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(bearer_token)
            .map(key::hash)
            .find_map(|digest| {
                let access = if digest == self.token_hash {
                    Some(Access::Shared)
                } else {
                    self.planes.access(&digest)
                };
                access.map(|a| (a, digest))
            })
    }

    /// The answer for a filter at `since` (a snapshot page after `after`)
    /// with `access`, while the store says `current`: `None` when it is
    /// unchanged. Built once per slot (crate::feed_cache).
    async fn body(
        self: &Arc<Self>,
        service: &Arc<Service>,
        since: u64,
        after: Option<[u8; 32]>,
        current: u64,
        access: &Access,
    ) -> Result<Answer, ApiError> {
        let slot = Slot {
            key_set: service.store().key_set(),
            view: match access {
                Access::Plane { tenants, .. } => tenants.clone(),
                Access::Shared => None,
            },
            since,
            after,
            version: current,
        };
        self.answer(service, slot).await
    }

    async fn answer(
        self: &Arc<Self>,
        service: &Arc<Service>,
        slot: Slot,
    ) -> Result<Answer, ApiError> {
        self.cache
            .get_or_build(&slot, || self.build(service, &slot))
            .await
    }

    /// Reads and encodes the answer of `slot`; a snapshot page with more
    /// to follow starts building the next one.
    async fn build(
        self: &Arc<Self>,
        service: &Arc<Service>,
        slot: &Slot,
    ) -> Result<Answer, ApiError> {
        let store = service.store();
        let page = PageAsk {
            after: slot.after,
            keys: self.page_keys,
        };
        let answer = match &slot.view {
            Some(tenants) => view::read(store, slot.since, page, tenants).await?,
            None => store.feed(slot.since, page).await?,
        };
        self.metrics.built();
        let key_set = store.key_set();
        Ok(match answer {
            FeedAnswer::Unchanged(_) => None,
            FeedAnswer::Delta { base, version, ops } => Some((
                version,
                Bytes::from(feed::encode_delta(key_set, base, version, &ops)),
            )),
            FeedAnswer::SnapshotPage {
                version,
                entries,
                more,
            } => {
                let next = entries.last().filter(|_| more).map(|e| Slot {
                    since: 0,
                    after: Some(e.hash),
                    ..slot.clone()
                });
                let encoded = tokio::task::spawn_blocking(move || {
                    feed::encode_snapshot_page(key_set, version, &entries, more)
                });
                let body = Bytes::from(encoded.await.map_err(|_| ApiError::Internal)?);
                if let Some(next) = next {
                    self.read_ahead(service, next, body.len());
                }
                Some((version, body))
            }
        })
    }

    /// Builds the page of `next` while its client reads this one, if a page
    /// like this one (`bytes`) fits in the cache and the version is the newest.
    fn read_ahead(self: &Arc<Self>, service: &Arc<Service>, next: Slot, bytes: usize) {
        if !self.cache.has_room(next.version, bytes) {
            return;
        }
        let (feed, service) = (Arc::clone(self), Arc::clone(service));
        let task: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            // A failure is the next request's to report.
            let _ = feed.answer(&service, next).await;
        });
        tokio::spawn(task);
    }
}

fn number(field: &str, value: &str) -> Result<u64, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a non-negative integer")))
}

/// A key hash: 64 hex digits.
fn hash(field: &str, value: &str) -> Result<[u8; 32], ApiError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value, &mut out).map_err(|_| {
        ApiError::invalid(field, format!("{field} must be a key hash: 64 hex digits"))
    })?;
    Ok(out)
}

/// A key set id: 32 hex digits.
fn key_set(value: &str) -> Result<KeySet, ApiError> {
    KeySet::from_hex(value)
        .ok_or_else(|| ApiError::invalid("key_set", "key_set must be 32 hex digits"))
}

/// A fetch stream's id.
fn client(value: &str) -> Result<String, ApiError> {
    if delivery::valid_client(value) {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid(
            "client",
            format!(
                "client must be 1 to {} characters of A-Z, a-z, 0-9, '.', '_', '-'",
                delivery::MAX_CLIENT_LEN
            ),
        ))
    }
}

/// `since`, `wait`, `after`, `key_set` and `client` from the query, `since`
/// from `If-None-Match` if absent.
fn parse_ask(query: Option<&str>, headers: &HeaderMap) -> Result<Ask, ApiError> {
    let (mut since, mut wait, mut after) = (None, 0, None);
    let (mut key_set_id, mut client_id) = (None, None);
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("since", value) => since = Some(number("since", value)?),
            ("wait", value) => wait = number("wait", value)?,
            ("after", value) => after = Some(hash("after", value)?),
            ("key_set", value) => key_set_id = Some(key_set(value)?),
            ("client", value) => client_id = Some(client(value)?),
            _ => {}
        }
    }
    if wait > MAX_WAIT {
        return Err(ApiError::invalid(
            "wait",
            format!("wait must be at most {MAX_WAIT} seconds"),
        ));
    }
    let etag = || {
        let value = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
        let value = value.trim().trim_start_matches("W/");
        value.trim_matches('"').parse().ok()
    };
    let since = since.or_else(etag).unwrap_or(0);
    if after.is_some() && since != 0 {
        return Err(ApiError::invalid(
            "after",
            "after pages a snapshot: it goes with since=0 only",
        ));
    }
    Ok(Ask {
        since,
        wait,
        after,
        key_set: key_set_id,
        client: client_id,
    })
}

fn versioned(mut response: Response, key_set: KeySet, version: u64) -> Response {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&key_set.to_hex()) {
        headers.insert(X_KEYGATE_KEY_SET, id);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(X_KEYGATE_VERSION, HeaderValue::from(version));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// What a refusal counts as.
fn refused(error: &ApiError) -> metrics::Answer {
    match error {
        ApiError::Unauthorized(_) => metrics::Answer::Unauthorized,
        ApiError::Invalid { .. } => metrics::Answer::BadRequest,
        _ => metrics::Answer::Error,
    }
}

/// What a 200 body counts as.
fn table_kind(body: &[u8]) -> metrics::Answer {
    match Reader::header(body) {
        Ok((header, _)) if header.snapshot => metrics::Answer::Snapshot,
        _ => metrics::Answer::Delta,
    }
}

/// The feed handler.
pub async fn key_table(
    State(service): State<Arc<Service>>,
    State(feed): State<Arc<FeedEndpoint>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let answer = respond(&service, &feed, &headers, &uri).await;
    let counted = answer.as_ref().map_or_else(refused, |(kind, _)| *kind);
    feed.metrics.answered(counted);
    answer.map(|(_, response)| response)
}

/// The answer to one feed request, and what it counts as.
async fn respond(
    service: &Arc<Service>,
    feed: &Arc<FeedEndpoint>,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(metrics::Answer, Response), ApiError> {
    let Some((access, digest)) = feed.access(headers) else {
        return Err(ApiError::Unauthorized(UNAUTHORIZED));
    };
    let store = service.store();
    let ours = store.key_set();
    let ask = parse_ask(uri.query(), headers)?.in_key_set(ours);
    let mut versions = store.version();
    if ask.since > *versions.borrow() {
        // A filter that came from another replica may be ahead of what this
        // one has heard of yet: read the version before deciding to hold.
        store.refresh_version().await?;
    }
    let acked = ask.acknowledges(ours, *versions.borrow());
    let delivery = service.delivery();
    let plane = access.plane();
    let _open = ask
        .client
        .as_deref()
        .map(|c| delivery.open(c, acked, plane));
    if ask.since != 0 && ask.wait > 0 && *versions.borrow() == ask.since {
        let _waiting = feed.metrics.wait();
        let moved = versions.wait_for(|v| *v != ask.since);
        let refused = async {
            match plane {
                Some(_) => feed.planes.refused(digest).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Timing out (or a closed store) just means: answer what there is.
            _ = tokio::time::timeout(Duration::from_secs(ask.wait), moved) => {}
            () = refused => return Err(ApiError::Unauthorized(UNAUTHORIZED)),
        }
    }
    let current = *versions.borrow();
    let answer = if ask.since != 0 && ask.since == current {
        None
    } else {
        feed.body(service, ask.since, ask.after, current, &access)
            .await?
    };
    Ok(match answer {
        None => (
            metrics::Answer::NotModified,
            versioned(StatusCode::NOT_MODIFIED.into_response(), ours, ask.since),
        ),
        Some((version, body)) => {
            let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))];
            let kind = table_kind(&body);
            (
                kind,
                versioned((content_type, body).into_response(), ours, version),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(query: &str, etag: Option<&str>) -> Result<Ask, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(etag) = etag {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(etag).unwrap());
        }
        parse_ask(Some(query), &headers)
    }

    #[test]
    fn query_and_etag() {
        let at = |since, wait| Ask {
            since,
            wait,
            after: None,
            key_set: None,
            client: None,
        };
        assert_eq!(ask("", None).unwrap(), at(0, 0));
        assert_eq!(ask("since=5&wait=30&x=1", None).unwrap(), at(5, 30));
        assert_eq!(ask("wait=1", Some("\"7\"")).unwrap(), at(7, 1));
        assert_eq!(ask("since=3", Some("\"7\"")).unwrap(), at(3, 0));
        assert_eq!(ask("", Some("W/\"9\"")).unwrap(), at(9, 0));
        assert_eq!(ask("", Some("*")).unwrap(), at(0, 0));
    }

    #[test]
    fn another_key_set_starts_over_and_acknowledges_nothing() {
        let (ours, theirs) = (KeySet([1; 16]), KeySet([2; 16]));
        let query = format!("since=9&client=e.1&key_set={}", theirs.to_hex());
        let asked = ask(&query, None).unwrap();
        assert_eq!(asked.client.as_deref(), Some("e.1"));
        assert_eq!(asked.acknowledges(ours, 20), 0);
        let moved = asked.in_key_set(ours);
        assert_eq!((moved.since, moved.after), (0, None));
        let query = format!("since=9&key_set={}", ours.to_hex().to_uppercase());
        let same = ask(&query, None).unwrap().in_key_set(ours);
        assert_eq!(same.since, 9);
        assert_eq!(same.acknowledges(ours, 20), 9);
        assert_eq!(
            same.acknowledges(ours, 8),
            0,
            "a version past ours proves nothing"
        );
        assert_eq!(ask("since=9", None).unwrap().acknowledges(ours, 20), 0);
    }

    #[test]
    fn after_is_a_hash_with_since_zero() {
        let hex = "00ff".repeat(16);
        let mut want = [0u8; 32];
        for pair in want.chunks_exact_mut(2) {
            pair.copy_from_slice(&[0x00, 0xff]);
        }
        for query in [
            format!("after={hex}"),
            format!("since=0&after={hex}&wait=5"),
        ] {
            assert_eq!(ask(&query, None).unwrap().after, Some(want), "{query}");
        }
        let upper = format!("after={}", hex.to_uppercase());
        assert_eq!(ask(&upper, None).unwrap().after, Some(want));
    }

    #[test]
    fn bad_after_names_the_field() {
        let hex = "ab".repeat(32);
        for (query, etag) in [
            (format!("since=5&after={hex}"), None),
            (format!("after={hex}"), Some("\"5\"")),
            ("after=".to_string(), None),
            (format!("after={}", &hex[1..]), None),
            (format!("after={hex}0"), None),
            (format!("after={}zz", &hex[2..]), None),
            (format!("after=+{}", &hex[1..]), None),
            (format!("after={}é", &hex[2..]), None),
        ] {
            match ask(&query, etag) {
                Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "after", "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_numbers_name_the_field() {
        for (query, field) in [
            ("since=x", "since"),
            ("since=-1", "since"),
            ("wait=61", "wait"),
            ("wait=", "wait"),
            ("key_set=abc", "key_set"),
            ("key_set=", "key_set"),
            ("client=", "client"),
            ("client=a%20b", "client"),
        ] {
            match ask(query, None) {
                Err(ApiError::Invalid { field: f, .. }) => assert_eq!(f, field, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn token_is_checked() {
        let delivery = Arc::new(delivery::Delivery::new(Duration::from_secs(1)));
        let planes = Arc::new(Registry::new(delivery));
        let feed = FeedEndpoint::new("secret-token", 16, planes);
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            feed.access(&h).map(|(access, _)| access)
        };
        assert_eq!(with("Bearer secret-token"), Some(Access::Shared));
        assert_eq!(with("bearer  secret-token "), Some(Access::Shared));
        assert_eq!(with("Bearer secret-tokenx"), None);
        assert_eq!(with("Basic secret-token"), None);
        assert!(feed.access(&HeaderMap::new()).is_none());
    }
}

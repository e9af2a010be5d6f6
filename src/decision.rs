//! The decision (SPEC §2–§5): allow with the identity headers to set, or deny
//! with the exact JSON body of SPEC §4.
//!
//! [`Policy::decide`] is the whole authentication of one request. It reads
//! the request (method, `:path`, headers), the key table and the clock, and
//! returns what the adapter must do; it never touches a host. An allowed
//! key that has rate limits of its own is then counted with [`own_limits`],
//! through the adapter's [`CountStore`] (a 429 once a limit is used up).

use crate::config::FilterConfig;
use crate::credential::{self, Extracted};
use crate::errors::{ErrorFormat, ErrorKind};
use crate::feed::KeyStatus;
use crate::ids::{IdText, KeyId};
use crate::key::{self, Environment, KeyFormat};
use crate::limits::{self, CountStore, LimitError, Standing, Verdict};
use crate::rules::{self, PathError, Rule};
use crate::scopes;
use crate::table::{KeyRef, KeyTable};
use std::borrow::Cow;

/// Header naming the caller's organisation.
pub const X_ORG_ID: &str = "x-org-id";
/// Header naming the key's owner (its `external_id`), set only when it has one.
pub const X_KEY_OWNER: &str = "x-key-owner";
/// Headers the filter owns: removed from every request, set on success
/// (`x-key-owner` only for a key that has an owner).
pub const IDENTITY_HEADERS: [&str; 6] = [
    X_ORG_ID,
    "x-key-id",
    "x-key-scopes",
    "x-key-environment",
    "x-rate-tier",
    X_KEY_OWNER,
];
/// True when `name` is an identity header, or one spelt with `_` for any
/// `-` (in any case): upstreams that read `HTTP_X_ORG_ID` take both alike.
pub fn is_identity_header(name: &[u8]) -> bool {
    let same = |a: &u8, b: &u8| a.eq_ignore_ascii_case(b) || (*a == b'_' && *b == b'-');
    IDENTITY_HEADERS
        .iter()
        .any(|h| h.len() == name.len() && name.iter().zip(h.as_bytes()).all(|(a, b)| same(a, b)))
}

/// `WWW-Authenticate` value sent with every 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"keygate\"";

/// Why a request was refused (a stat label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    MissingKey,
    InvalidKey,
    Expired,
    MissingScope,
    WrongOrg,
    NotReady,
    OrgSuspended,
    QuotaExhausted,
    SpendExhausted,
    /// The key's own rate limit (`limits`).
    RateLimited,
    /// A path spelling upstreams disagree on (SPEC §16).
    InvalidPath,
}

impl DenyReason {
    /// Every reason, for registering stats.
    pub const ALL: [DenyReason; 11] = [
        DenyReason::MissingKey,
        DenyReason::InvalidKey,
        DenyReason::Expired,
        DenyReason::MissingScope,
        DenyReason::WrongOrg,
        DenyReason::NotReady,
        DenyReason::OrgSuspended,
        DenyReason::QuotaExhausted,
        DenyReason::SpendExhausted,
        DenyReason::RateLimited,
        DenyReason::InvalidPath,
    ];

    /// Short name for stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::MissingKey => "missing_key",
            DenyReason::InvalidKey => "invalid_key",
            DenyReason::Expired => "expired",
            DenyReason::MissingScope => "missing_scope",
            DenyReason::WrongOrg => "wrong_org",
            DenyReason::NotReady => "not_ready",
            DenyReason::OrgSuspended => "org_suspended",
            DenyReason::QuotaExhausted => "quota_exhausted",
            DenyReason::SpendExhausted => "spend_exhausted",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::InvalidPath => "invalid_path",
        }
    }
}

/// A refusal: status, kind and message, whose body is rendered in the
/// deployment's dialect ([`Deny::body`]), and the headers of the answer
/// ([`Deny::response_headers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub status: u16,
    pub reason: DenyReason,
    pub kind: ErrorKind,
    pub message: Cow<'static, str>,
    /// Headers besides `content-type` and `WWW-Authenticate` (a 429's
    /// `retry-after` and `x-ratelimit-*`).
    pub headers: Vec<(&'static str, String)>,
    /// The key refused, when it was found in the table (usage counts
    /// refusals per key; a missing or unknown key has none).
    pub key: Option<KeyId>,
}

impl Deny {
    /// A refusal of `kind` (its status) counted as `reason`.
    pub fn new(reason: DenyReason, kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Deny {
        Deny {
            status: kind.status(),
            reason,
            kind,
            message: message.into(),
            headers: Vec::new(),
            key: None,
        }
    }

    /// No key in the request.
    pub fn missing_key() -> Deny {
        Deny::new(
            DenyReason::MissingKey,
            ErrorKind::MissingKey,
            "Missing or invalid API key",
        )
    }

    /// Unknown, revoked, malformed, bad checksum or conflicting keys.
    pub fn invalid_key() -> Deny {
        Deny::new(
            DenyReason::InvalidKey,
            ErrorKind::InvalidKey,
            "Invalid API key",
        )
    }

    /// The key's expiry has passed.
    pub fn expired() -> Deny {
        Deny::new(
            DenyReason::Expired,
            ErrorKind::ExpiredKey,
            "API key has expired",
        )
    }

    /// The key lacks the rule's scope (named: the rule's first).
    pub fn missing_scope(scope: &str) -> Deny {
        Deny::new(
            DenyReason::MissingScope,
            ErrorKind::MissingScope,
            format!("API key lacks required scope: {scope}"),
        )
    }

    /// The client's `X-Org-Id` names another organisation.
    pub fn wrong_org(org: &str) -> Deny {
        Deny::new(
            DenyReason::WrongOrg,
            ErrorKind::WrongOrg,
            format!("API key does not belong to organization {org}"),
        )
    }

    /// The path is spelled in a way upstreams disagree on.
    pub fn invalid_path(error: PathError) -> Deny {
        Deny::new(
            DenyReason::InvalidPath,
            ErrorKind::InvalidRequest,
            error.message(),
        )
    }

    /// No key table yet (or too stale to trust).
    pub fn not_ready() -> Deny {
        Deny::new(
            DenyReason::NotReady,
            ErrorKind::NotReady,
            "Authentication is not ready",
        )
    }

    /// The JSON body in `format` (the message is escaped: it may echo a
    /// client's header).
    /// The same refusal, of the key `key`.
    pub fn for_key(self, key: KeyId) -> Deny {
        Deny {
            key: Some(key),
            ..self
        }
    }

    pub fn body(&self, format: ErrorFormat) -> String {
        format.render(self.kind, &self.message, None)
    }

    /// The key's tenant is suspended by the operator.
    pub fn org_suspended() -> Deny {
        Deny::new(
            DenyReason::OrgSuspended,
            ErrorKind::Suspended,
            "Organization is suspended",
        )
    }

    /// The key's request quota is used up.
    pub fn quota_exhausted() -> Deny {
        Deny::new(
            DenyReason::QuotaExhausted,
            ErrorKind::QuotaExceeded,
            "API key has reached its request quota",
        )
    }

    /// The key's spending cap is used up.
    pub fn spend_exhausted() -> Deny {
        Deny::new(
            DenyReason::SpendExhausted,
            ErrorKind::QuotaExceeded,
            "API key has reached its spending cap",
        )
    }

    /// The key's own limit is used up: `standing` gives `retry-after` and
    /// the `x-ratelimit-*` headers.
    pub fn rate_limited(standing: &Standing) -> Deny {
        let reset = standing.reset.to_string();
        Deny {
            headers: vec![
                ("retry-after", reset.clone()),
                ("x-ratelimit-limit", standing.limit.to_string()),
                ("x-ratelimit-remaining", standing.remaining.to_string()),
                ("x-ratelimit-reset", reset),
            ],
            ..Deny::new(
                DenyReason::RateLimited,
                ErrorKind::RateLimited,
                "Rate limit exceeded",
            )
        }
    }

    /// The refusal of a key that is not active; `None` for an active one.
    pub fn for_status(status: KeyStatus) -> Option<Deny> {
        match status {
            KeyStatus::Active => None,
            KeyStatus::OrgSuspended => Some(Deny::org_suspended()),
            KeyStatus::QuotaExhausted => Some(Deny::quota_exhausted()),
            KeyStatus::SpendExhausted => Some(Deny::spend_exhausted()),
        }
    }

    /// True when the answer must carry `WWW-Authenticate`.
    pub fn needs_www_authenticate(&self) -> bool {
        self.status == 401
    }

    /// Every header of the answer: `content-type`, `WWW-Authenticate` on a
    /// 401, then [`Deny::headers`].
    pub fn response_headers(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![("content-type", "application/json")];
        if self.needs_www_authenticate() {
            out.push(("www-authenticate", WWW_AUTHENTICATE));
        }
        out.extend(self.headers.iter().map(|(n, v)| (*n, v.as_str())));
        out
    }
}

/// Who is calling, as the upstream will be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'t> {
    pub record: KeyRef<'t>,
    /// SHA-256 of the key (to watch open streams for revocation).
    pub hash: [u8; 32],
}

/// Values of the identity headers, rendered without allocation.
pub struct IdentityHeaders<'t> {
    org: IdText,
    key: IdText,
    scopes: &'t str,
    environment: Environment,
    tier: &'t str,
    owner: Option<&'t str>,
}

impl<'t> IdentityHeaders<'t> {
    /// `(name, value)` pairs in the order of [`IDENTITY_HEADERS`],
    /// `x-key-owner` only when the key has an owner.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        let [org, key, scopes, env, tier, owner] = IDENTITY_HEADERS;
        [
            (org, self.org.as_str()),
            (key, self.key.as_str()),
            (scopes, self.scopes),
            (env, self.environment.as_str()),
            (tier, self.tier),
        ]
        .into_iter()
        .chain(self.owner.map(|o| (owner, o)))
    }
}

impl<'t> Identity<'t> {
    /// The headers the upstream sees.
    pub fn headers(&self) -> IdentityHeaders<'t> {
        IdentityHeaders {
            org: self.record.org_id.text(),
            key: self.record.key_id.text(),
            scopes: self.record.scopes,
            environment: self.record.environment,
            tier: self.record.tier,
            owner: self.record.external_id,
        }
    }
}

/// An accepted request and how to rewrite it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'t> {
    /// The caller, or `None` on public routes and CORS preflights.
    pub identity: Option<Identity<'t>>,
    /// The index of the rule the request matched (what an open stream
    /// keeps needing, [`Grant`]).
    pub rule: Option<usize>,
    /// Remove `Authorization` (it carried the key).
    pub strip_authorization: bool,
    /// Remove `X-API-Key`.
    pub strip_api_key: bool,
    /// New `:path` without `api_key`, when the key came in the query.
    pub new_path: Option<String>,
    /// New `Sec-WebSocket-Protocol` without the `keygate.bearer.` entry,
    /// when the key came in a subprotocol and others were offered (when
    /// none were, the header is in [`Allow::headers_to_remove`]).
    pub new_subprotocols: Option<String>,
    /// Remove `Sec-WebSocket-Protocol` (it offered only the key).
    pub strip_subprotocols: bool,
}

impl Allow<'_> {
    /// Every header to remove before the identity headers are set.
    pub fn headers_to_remove(&self) -> impl Iterator<Item = &'static str> + '_ {
        let auth = self
            .strip_authorization
            .then_some(credential::AUTHORIZATION);
        let api_key = self.strip_api_key.then_some(credential::X_API_KEY);
        let subprotocols = self
            .strip_subprotocols
            .then_some(credential::SEC_WEBSOCKET_PROTOCOL);
        IDENTITY_HEADERS
            .into_iter()
            .chain(auth)
            .chain(api_key)
            .chain(subprotocols)
    }

    /// True when the header `name` must not reach the upstream: one of
    /// [`Allow::headers_to_remove`], or an identity header spelt with `_`.
    pub fn drops(&self, name: &[u8]) -> bool {
        is_identity_header(name)
            || self
                .headers_to_remove()
                .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
    }

    /// What an allowed WebSocket keeps needing while it is open.
    pub fn grant(&self) -> Option<Grant> {
        self.identity.map(|i| Grant {
            hash: i.hash,
            rule: self.rule,
        })
    }
}

/// An open stream's right to stay open: the key it was opened with and the
/// rule its upgrade matched (its route and method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub hash: [u8; 32],
    pub rule: Option<usize>,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'t> {
    Allow(Allow<'t>),
    Deny(Deny),
}

/// The request as the decision sees it.
pub struct Request<'a, H, V> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    pub headers: &'a [(H, V)],
}

impl<'a, H: AsRef<str>, V: AsRef<str>> Request<'a, H, V> {
    /// The request as an adapter reads it: method and path from the
    /// `:method` and `:path` pseudo-headers (`""` and `/` when absent).
    pub fn from_headers(headers: &'a [(H, V)]) -> Self {
        Request {
            method: header(headers, ":method").unwrap_or(""),
            path: header(headers, ":path").unwrap_or("/"),
            headers,
        }
    }

    /// A WebSocket upgrade: `Upgrade: websocket` (HTTP/1.1) or
    /// `:protocol: websocket` (extended CONNECT).
    pub fn is_websocket_upgrade(&self) -> bool {
        credential::is_websocket_upgrade(self.headers)
    }

    fn header_values<'s>(&'s self, name: &'static str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    fn is_cors_preflight(&self) -> bool {
        self.method == "OPTIONS"
            && self
                .header_values("access-control-request-method")
                .next()
                .is_some()
    }
}

/// The first value of header `name` (case-insensitive) in `headers`.
pub fn header<'h, H: AsRef<str>, V: AsRef<str>>(
    headers: &'h [(H, V)],
    name: &str,
) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// The configured rules and key settings that decisions use.
#[derive(Debug, Clone)]
pub struct Policy {
    pub key_prefix: String,
    pub key_format: KeyFormat,
    pub error_format: ErrorFormat,
    pub forward_key: bool,
    pub rules: Vec<Rule>,
    pub allow_path_parameters: bool,
}

impl From<&FilterConfig> for Policy {
    fn from(c: &FilterConfig) -> Policy {
        Policy {
            key_prefix: c.key_prefix.clone(),
            key_format: c.key_format,
            error_format: c.error_format,
            forward_key: c.forward_key,
            rules: c.rules.clone(),
            allow_path_parameters: c.allow_path_parameters,
        }
    }
}

impl Policy {
    /// Decides one request. `table` is `None` before the first table (or when
    /// it is too stale); `now` is unix seconds.
    pub fn decide<'t, H, V>(
        &self,
        table: Option<&'t KeyTable>,
        request: &Request<'_, H, V>,
        now: u64,
    ) -> Decision<'t>
    where
        H: AsRef<str>,
        V: AsRef<str>,
    {
        let path = match rules::match_path(request.path, self.allow_path_parameters) {
            Ok(path) => path,
            Err(e) => return Decision::Deny(Deny::invalid_path(e)),
        };
        let index = rules::find_index(&self.rules, request.method, request.path, &path);
        let rule = index.and_then(|i| self.rules.get(i));
        let forward = rule.and_then(|r| r.forward_key).unwrap_or(self.forward_key);
        let extracted = credential::extract(request.headers, request.path);
        let allow = |identity| Allow {
            rule: index,
            ..self.allow(identity, &extracted, request, forward)
        };
        if request.is_cors_preflight() || rule.is_some_and(|r| r.public) {
            return Decision::Allow(allow(None));
        }
        let Some(table) = table else {
            return Decision::Deny(Deny::not_ready());
        };
        match self.check(table, &extracted, request, rule, now) {
            Ok(identity) => Decision::Allow(allow(Some(identity))),
            Err(deny) => Decision::Deny(deny),
        }
    }

    /// How to rewrite a refused request so that its credential (query,
    /// headers, subprotocol entry) is gone before access logs see it,
    /// whatever `forward_key` says: nothing of it goes upstream anyway.
    pub fn scrub<H, V>(&self, request: &Request<'_, H, V>) -> Allow<'static>
    where
        H: AsRef<str>,
        V: AsRef<str>,
    {
        let subprotocols = request
            .is_websocket_upgrade()
            .then(|| credential::strip_subprotocol_key(request.headers))
            .flatten();
        let strip_subprotocols = subprotocols.as_ref().is_some_and(String::is_empty);
        Allow {
            identity: None,
            rule: None,
            strip_authorization: true,
            strip_api_key: true,
            new_path: credential::strip_query_key(request.path),
            new_subprotocols: subprotocols.filter(|s| !s.is_empty()),
            strip_subprotocols,
        }
    }

    /// True while the table still allows the stream of `grant` at `now`
    /// (unix seconds): its key is there, not expired, its tenant not
    /// suspended, its quota and cap not used up, and it holds a scope of
    /// the rule its upgrade matched. (The client's `X-Org-Id` was checked
    /// at the upgrade and cannot change.)
    pub fn still_allows(&self, table: &KeyTable, grant: &Grant, now: u64) -> bool {
        let Some(record) = table.get(&grant.hash) else {
            return false;
        };
        let any_of = grant
            .rule
            .and_then(|i| self.rules.get(i))
            .map(|r| r.any_of.as_slice());
        check_found::<&str, &str, _>(&record, &[], any_of, now).is_ok()
    }

    fn check<'t, H, V>(
        &self,
        table: &'t KeyTable,
        extracted: &Extracted<'_>,
        request: &Request<'_, H, V>,
        rule: Option<&Rule>,
        now: u64,
    ) -> Result<Identity<'t>, Deny>
    where
        H: AsRef<str>,
        V: AsRef<str>,
    {
        let hash = presented_hash(extracted, &self.key_prefix, self.key_format)?;
        let record = table.get(&hash).ok_or_else(Deny::invalid_key)?;
        let any_of = rule.map(|r| r.any_of.as_slice());
        check_found(&record, request.headers, any_of, now).map_err(|d| d.for_key(record.key_id))?;
        Ok(Identity { record, hash })
    }

    fn allow<'t, H, V>(
        &self,
        identity: Option<Identity<'t>>,
        extracted: &Extracted<'_>,
        request: &Request<'_, H, V>,
        forward: bool,
    ) -> Allow<'t>
    where
        H: AsRef<str>,
        V: AsRef<str>,
    {
        let sources = match extracted {
            Extracted::Key(c) if !forward => c.sources,
            _ => Default::default(),
        };
        let strip_all = matches!(extracted, Extracted::Conflict) && !forward;
        let subprotocols = ((sources.subprotocol || strip_all) && request.is_websocket_upgrade())
            .then(|| credential::strip_subprotocol_key(request.headers))
            .flatten();
        let strip_subprotocols = subprotocols.as_ref().is_some_and(String::is_empty);
        Allow {
            identity,
            rule: None,
            strip_authorization: sources.bearer || strip_all,
            strip_api_key: sources.header || strip_all,
            new_path: if sources.query || strip_all {
                credential::strip_query_key(request.path)
            } else {
                None
            },
            new_subprotocols: subprotocols.filter(|s| !s.is_empty()),
            strip_subprotocols,
        }
    }
}

/// The SHA-256 of the key a request presents, once its shape and checksum
/// (with `key_prefix`, in `format`) hold: the lookup key. No key, two keys
/// or a malformed one are refused here.
pub fn presented_hash(
    extracted: &Extracted<'_>,
    key_prefix: &str,
    format: KeyFormat,
) -> Result<[u8; 32], Deny> {
    let credential = match extracted {
        Extracted::Missing => return Err(Deny::missing_key()),
        Extracted::Conflict => return Err(Deny::invalid_key()),
        Extracted::Key(c) => c,
    };
    format
        .parse(&credential.key, key_prefix)
        .map_err(|_| Deny::invalid_key())?;
    Ok(key::hash(&credential.key))
}

/// The checks once the key is found, in order: expiry, the key's status
/// (suspended tenant, quota or spending cap used up), the client's
/// `X-Org-Id` (each must name the key's organisation), then the scopes,
/// when `any_of` is given (one of them must be held; the first is named).
pub fn check_found<H, V, S>(
    record: &KeyRef<'_>,
    headers: &[(H, V)],
    any_of: Option<&[S]>,
    now: u64,
) -> Result<(), Deny>
where
    H: AsRef<str>,
    V: AsRef<str>,
    S: AsRef<str>,
{
    if record.is_expired(now) {
        return Err(Deny::expired());
    }
    if let Some(deny) = Deny::for_status(record.status) {
        return Err(deny);
    }
    let org = record.org_id.text();
    if let Some(other) = headers
        .iter()
        .filter(|(n, _)| n.as_ref().eq_ignore_ascii_case(X_ORG_ID))
        .map(|(_, v)| v.as_ref().trim())
        .find(|v| *v != org.as_str())
    {
        return Err(Deny::wrong_org(other));
    }
    if let Some(any_of) = any_of {
        if !scopes::holds_any(record.scopes, any_of) {
            let first = any_of.first().map_or("", AsRef::as_ref);
            return Err(Deny::missing_scope(first));
        }
    }
    Ok(())
}

/// Counts an allowed request against its key's own rate limits, in `store`
/// (shared by every worker): the 429 to answer when one is used up. A
/// request without identity, or whose key has no limits of its own, never
/// reaches `store`. `now` is unix seconds.
pub fn own_limits<S: CountStore>(
    store: &mut S,
    identity: Option<&Identity<'_>>,
    now: u64,
) -> Result<Option<Deny>, LimitError> {
    let Some(record) = identity.map(|i| &i.record).filter(|r| !r.limits.is_none()) else {
        return Ok(None);
    };
    Ok(
        match limits::admit(store, record.key_id, record.limits, now)? {
            Verdict::Allowed => None,
            Verdict::Limited(standing) => {
                Some(Deny::rate_limited(&standing).for_key(record.key_id))
            }
        },
    )
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;

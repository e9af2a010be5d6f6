//! One HTTP stream: one decision, taken from the request headers alone.
//!
//! All request headers are read in one call, as pointers into Envoy's map
//! (no copy); the core decides ([`Policy::decide`]) against the process's
//! table; an allow removes the credential and any client copy of the
//! identity headers, sets the identity headers (a set replaces every value
//! a client sent) and rewrites `:path` when `?api_key=` went away (and
//! `Sec-WebSocket-Protocol` when its `keygate.bearer.` entry did); a deny
//! answers with the JSON of SPEC §4 in the configured `error_format`
//! (`WWW-Authenticate` on a 401), once the credential is gone from the
//! request (access logs never see it). Nothing Envoy lent is read after the
//! first write to its header map ([`rewrite`]). An allowed key that has rate limits of its
//! own is counted first, across the process ([`crate::limits`]): a 429 once
//! one is used up.
//! Before the process's first table a request that needs a key waits, up
//! to `feed.first_table_wait_ms`, and is decided when the main thread wakes
//! it. An allowed WebSocket upgrade is watched until it ends and reset when
//! the table no longer allows it ([`Policy::still_allows`]: checked on every
//! frame and whenever the main thread wakes it).
//! Every request of a known key is counted for usage ([`crate::usage`]): a
//! refusal at once, an allowed one on its answer, whose cost header is
//! removed here.

use crate::abi::FilterEnvoy;
use crate::host::{self, EnvoyRequestHeaders, FilterScheduler, HeaderWriter, RequestHeaders};
use crate::limits::ProcessCounts;
use crate::shared::{Shared, Watch};
use crate::{log, now_ms};
use keygate::credential::SEC_WEBSOCKET_PROTOCOL;
use keygate::decision::{self, Allow, Decision, Deny, DenyReason, Grant, Policy, Request};
use keygate::errors::ErrorFormat;
use keygate::ids::KeyId;
use keygate::rules::path_only;
use keygate::usage::{parse_cost, Cost, Outcome};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::sync::Arc;

/// The header Envoy's `local_ratelimit` puts on its 429.
const ENVOY_RATELIMITED: &str = "x-envoy-ratelimited";

type Headers<'h> = [(Cow<'h, str>, Cow<'h, str>)];

/// What became of a request once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Allowed: it goes on to the next filter.
    Continue,
    /// Refused: the local reply is sent.
    Refused,
    /// Paused until the first table or the end of the wait.
    Waiting,
}

/// The module's side of one stream.
pub struct Filter {
    shared: Arc<Shared>,
    envoy: FilterEnvoy,
    id: u64,
    /// Paused until the main thread wakes it.
    waiting: bool,
    /// Registered with the main thread ([`Filter::watch`]); an ordinary
    /// request never is, and never takes the registry's lock.
    watched: bool,
    /// What an allowed WebSocket upgrade was allowed with.
    websocket: Option<Grant>,
    /// The key of an allowed request, until it is counted on its answer.
    counting: Option<KeyId>,
}

/// Sends the refusal of `deny` on `filter`, its body in `format`.
pub fn send_deny(filter: FilterEnvoy, deny: &Deny, format: ErrorFormat) {
    let headers = deny.response_headers();
    let body = deny.body(format);
    host::send_response(filter, deny.status, &headers, body.as_bytes());
}

/// Rewrites the request as `allow` says (for the upstream, or a refusal
/// scrubbed of its key); false when a change was refused. The names to
/// remove are copied out of `present` before the first write: a write may
/// free the buffers `present` borrows from Envoy.
fn rewrite(to: &mut impl HeaderWriter, allow: &Allow<'_>, present: &Headers<'_>) -> bool {
    let mut dropped: SmallVec<[String; 4]> = SmallVec::new();
    for (name, _) in present.iter().filter(|(n, _)| allow.drops(n.as_bytes())) {
        let name = name.to_ascii_lowercase();
        if !dropped.contains(&name) {
            dropped.push(name);
        }
    }
    // From here on `present` is not read.
    let mut ok = true;
    for name in &dropped {
        ok &= to.set(name, None);
    }
    let identity = allow.identity.as_ref().map(|i| i.headers());
    for (name, value) in identity.iter().flat_map(|h| h.pairs()) {
        ok &= to.add(name, value);
    }
    if let Some(path) = &allow.new_path {
        ok &= to.set(":path", Some(path));
    }
    if let Some(offered) = &allow.new_subprotocols {
        ok &= to.set(SEC_WEBSOCKET_PROTOCOL, Some(offered));
    }
    ok
}

impl Filter {
    pub fn new(shared: Arc<Shared>, envoy: FilterEnvoy) -> Filter {
        let id = shared.stream_id();
        Filter {
            shared,
            envoy,
            id,
            waiting: false,
            watched: false,
            websocket: None,
            counting: None,
        }
    }

    /// Counts and sends a refusal.
    fn refuse(&self, deny: &Deny) -> Step {
        self.shared.stats.denied(deny.reason);
        if let Some(key) = deny.key {
            let outcome = Outcome::Denied(deny.reason);
            self.shared.usage.count(key, now_ms() / 1000, outcome, 0);
        }
        send_deny(self.envoy, deny, self.shared.policy.error_format);
        Step::Refused
    }

    /// Refuses with 503 `not ready` (also the answer to a caught panic).
    pub fn refuse_not_ready(&self) -> Step {
        self.refuse(&Deny::not_ready())
    }

    /// Decides the request. With `may_wait`, a request that needs a key
    /// before the process's first table waits instead of getting 503.
    pub fn decide(&mut self, may_wait: bool) -> Step {
        let Some(raw) = RequestHeaders::read(self.envoy) else {
            return self.refuse_not_ready();
        };
        let headers = raw.pairs();
        let request = Request::from_headers(&headers);
        let now = now_ms();
        let table = self.shared.fresh_table(now);
        let policy: &Policy = &self.shared.policy;
        match policy.decide(table.as_deref(), &request, now / 1000) {
            Decision::Allow(allow) => {
                match decision::own_limits(&mut ProcessCounts, allow.identity.as_ref(), now / 1000)
                {
                    Ok(None) => {}
                    Ok(Some(limited)) => return self.refuse_scrubbed(&request, &limited),
                    Err(e) => log::warn(&format!(
                        "could not count the key's own rate limits ({e:?}); not limiting"
                    )),
                }
                let upgrade = allow.grant().filter(|_| request.is_websocket_upgrade());
                if !rewrite(&mut EnvoyRequestHeaders(self.envoy), &allow, &headers) {
                    log::error("could not rewrite the request headers; refusing it");
                    return self.refuse_not_ready();
                }
                self.shared.stats.allowed();
                self.counting = allow.identity.map(|i| i.record.key_id);
                if let Some(grant) = upgrade {
                    self.watch(None, Some(grant));
                }
                Step::Continue
            }
            Decision::Deny(d) if d.reason == DenyReason::NotReady && may_wait && self.wait(now) => {
                Step::Waiting
            }
            Decision::Deny(d) => {
                if log::debug_enabled() {
                    // The path without its query (it may carry ?api_key=).
                    log::debug(&format!(
                        "denied {} {} {} ({})",
                        request.method,
                        path_only(request.path),
                        d.status,
                        d.reason.as_str()
                    ));
                }
                self.refuse_scrubbed(&request, &d)
            }
        }
    }

    /// Removes the credential from the refused request (so that access logs
    /// never see it), then refuses it.
    fn refuse_scrubbed(&self, request: &Request<'_, Cow<'_, str>, Cow<'_, str>>, d: &Deny) -> Step {
        let scrub = self.shared.policy.scrub(request);
        if !rewrite(
            &mut EnvoyRequestHeaders(self.envoy),
            &scrub,
            request.headers,
        ) {
            log::warn("could not remove the credential from a refused request");
        }
        self.refuse(d)
    }

    /// Pauses the request until the first table, if none was ever loaded
    /// and it may wait; false when it is to be refused now.
    fn wait(&mut self, now: u64) -> bool {
        let wait = self.shared.first_table_wait_ms;
        if wait == 0 || self.shared.ever_loaded() {
            return false;
        }
        if !self.watch(Some(now.saturating_add(wait)), None) {
            return false;
        }
        self.waiting = true;
        self.shared.stats.waited();
        if self.shared.ever_loaded() {
            // The table came while registering: its wake-up may have missed us.
            self.wake();
        }
        true
    }

    /// Registers this stream with the main thread; false when Envoy gave no scheduler.
    fn watch(&mut self, waiting_until: Option<u64>, websocket: Option<Grant>) -> bool {
        let mut watched = self.shared.watched();
        if let Some(watch) = watched.get_mut(&self.id) {
            watch.waiting_until = waiting_until;
            watch.websocket = websocket;
        } else {
            let Some(scheduler) = FilterScheduler::new(self.envoy) else {
                return false;
            };
            watched.insert(
                self.id,
                Watch {
                    scheduler,
                    waiting_until,
                    websocket,
                },
            );
        }
        self.watched = true;
        self.websocket = websocket;
        true
    }

    /// Commits a decision event to this stream's own scheduler.
    fn wake(&self) {
        if let Some(watch) = self.shared.watched().get_mut(&self.id) {
            watch.waiting_until = None;
            watch.scheduler.commit(crate::shared::EVENT_DECIDE);
        }
    }

    /// True while the request waits for the first table.
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    /// The main thread woke a waiting request: decide it now (503 without a
    /// table), and let it go on when allowed.
    pub fn on_decide_event(&mut self) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        if self.decide(false) == Step::Continue {
            host::continue_decoding(self.envoy);
        }
    }

    /// Resets this stream if it is a WebSocket the table no longer allows
    /// ([`Policy::still_allows`]); true when it did.
    pub fn close_if_key_died(&mut self) -> bool {
        let Some(grant) = self.websocket else {
            return false;
        };
        let now = now_ms();
        let dead = self
            .shared
            .fresh_table(now)
            .as_deref()
            .is_some_and(|t| !self.shared.policy.still_allows(t, &grant, now / 1000));
        if dead {
            self.forget();
            self.shared.stats.ws_closed();
            log::info(&format!(
                "closing WebSocket stream {}: its key no longer allows it",
                self.id
            ));
            host::reset_stream(self.envoy);
        }
        dead
    }

    /// The response headers: the upstream's cost header goes (always), and
    /// an allowed request is counted with its cost — as `rate_limited_envoy`
    /// when the answer is Envoy's `local_ratelimit` 429.
    pub fn on_response_headers(&mut self) {
        let usage = &self.shared.usage;
        let Some(headers) = RequestHeaders::read_response(self.envoy) else {
            return;
        };
        let cost = headers.value(&usage.cost_header).map(parse_cost);
        let limited = headers.value(ENVOY_RATELIMITED).is_some();
        drop(headers);
        if cost.is_some() && !host::remove_response_header(self.envoy, &usage.cost_header) {
            log::warn("could not remove the cost header from an answer");
        }
        let Some(key) = self.counting.take() else {
            return;
        };
        let micros = match cost {
            None | Some(Cost::Malformed) => {
                if cost.is_some() {
                    self.shared.stats.cost_malformed();
                }
                0
            }
            Some(Cost::Micros(n)) => n,
            Some(Cost::Clamped(n)) => {
                self.shared.stats.cost_clamped();
                n
            }
        };
        let outcome = if limited {
            Outcome::RateLimitedEnvoy
        } else {
            Outcome::Allowed
        };
        usage.count(key, now_ms() / 1000, outcome, micros);
    }

    /// The stream ended: an allowed request whose answer never came is
    /// counted as allowed.
    pub fn on_complete(&mut self) {
        if let Some(key) = self.counting.take() {
            self.shared
                .usage
                .count(key, now_ms() / 1000, Outcome::Allowed, 0);
        }
        self.forget();
    }

    /// Stops being watched (its scheduler is deleted).
    pub fn forget(&mut self) {
        self.websocket = None;
        self.waiting = false;
        if std::mem::take(&mut self.watched) {
            let removed = self.shared.watched().remove(&self.id);
            drop(removed);
        }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        self.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::decision::Identity;
    use keygate::feed::KeyStatus;
    use keygate::ids::{KeyId, OrgId};
    use keygate::key::Environment;
    use keygate::limits::RateLimits;
    use keygate::table::KeyRef;

    /// A header map that, like Envoy's, lends its buffers and spoils every
    /// one it lent on the first write (a freed buffer, made visible).
    struct FakeHost {
        lent: Vec<Box<[u8]>>,
        map: Vec<(String, String)>,
    }

    impl FakeHost {
        fn new(headers: &[(&str, &str)]) -> FakeHost {
            FakeHost {
                lent: headers
                    .iter()
                    .flat_map(|(n, v)| [n.as_bytes().into(), v.as_bytes().into()])
                    .collect(),
                map: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            }
        }

        /// The pairs as `RequestHeaders::pairs` gives them: borrowed from
        /// the host's buffers, not from `self` (as from Envoy).
        fn lend<'h>(&self) -> Vec<(Cow<'h, str>, Cow<'h, str>)> {
            let text = |b: &[u8]| {
                // SAFETY: ASCII test data; the boxes live as long as the host.
                Cow::Borrowed(unsafe {
                    std::str::from_utf8_unchecked(std::slice::from_raw_parts(b.as_ptr(), b.len()))
                })
            };
            self.lent
                .chunks(2)
                .map(|p| (text(&p[0]), text(&p[1])))
                .collect()
        }

        fn spoil(&mut self) {
            self.lent.iter_mut().for_each(|b| b.fill(b'#'));
        }
    }

    impl HeaderWriter for FakeHost {
        fn set(&mut self, name: &str, value: Option<&str>) -> bool {
            self.spoil();
            self.map.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(value) = value {
                self.map.push((name.into(), value.into()));
            }
            true
        }

        fn add(&mut self, name: &str, value: &str) -> bool {
            self.spoil();
            self.map.push((name.into(), value.into()));
            true
        }
    }

    #[test]
    fn nothing_lent_is_read_after_the_first_write() {
        let record = KeyRef {
            key_id: KeyId(7),
            org_id: OrgId(9),
            expires_at: 0,
            scopes: "a:read",
            tier: "pro",
            environment: Environment::Live,
            status: KeyStatus::Active,
            limits: RateLimits::NONE,
            external_id: None,
        };
        let allow = Allow {
            identity: Some(Identity {
                record,
                hash: [0; 32],
            }),
            rule: None,
            strip_authorization: false,
            strip_api_key: true,
            new_path: Some("/a".into()),
            new_subprotocols: None,
            strip_subprotocols: false,
        };
        let mut host = FakeHost::new(&[
            (":path", "/a?api_key=k"),
            ("x-api-key", "k"),
            ("x-key-id", "key_spoofed"),
            ("X_Org_Id", "org_evil"),
            ("x-key-scopes", "tenant:admin"),
            ("x-other", "1"),
        ]);
        let present = host.lend();
        assert!(rewrite(&mut host, &allow, &present));
        let mut got: Vec<(String, String)> = host.map;
        got.sort();
        let identity = allow.identity.as_ref().map(Identity::headers).unwrap();
        let mut want: Vec<(String, String)> = identity
            .pairs()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .chain([
                (":path".into(), "/a".into()),
                ("x-other".into(), "1".into()),
            ])
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
}

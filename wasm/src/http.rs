//! One HTTP request: one decision, taken from the headers alone.
//!
//! All request headers are read in one host call ([`RawHeaders`]); the core
//! decides; an allow writes the whole map back in one host call (none when
//! nothing changes): without the credential and any client copy of the
//! identity headers, with the identity headers, with `:path` rewritten when
//! `?api_key=` went away (and `Sec-WebSocket-Protocol` when its
//! `keygate.bearer.` entry did), every other entry as it came; a deny
//! answers with the JSON of SPEC §4 in the configured `error_format`, once the
//! credential is gone from the request (access logs never see it). An
//! allowed key that has rate limits of its own is counted first
//! ([`crate::limits`]): a 429 once one is used up. A request that needs a key in
//! a VM that has no table yet waits for it ([`crate::waiting`]): the root
//! context takes its decision ([`decide`]) once the table is there or the
//! wait is over. An allowed WebSocket upgrade is watched until it ends, and
//! checked again on every frame. Every request of a known key is counted
//! for usage ([`crate::usage`]): a refusal at once, an allowed one on its
//! answer (which loses the upstream's cost header here).

use crate::headers::{self, Entry, RawHeaders};
use crate::host::{self, Status};
use crate::limits::SharedCounts;
use crate::state::State;
use keygate::credential::{self, Extracted};
use keygate::decision::{
    self, Allow, Decision, Deny, DenyReason, Identity, IdentityHeaders, Policy, Request,
};
use keygate::engine::recheck;
use keygate::errors::ErrorFormat;
use keygate::rules::path_only;
use keygate::usage::Outcome;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::borrow::Cow;
use std::rc::Rc;

type Headers<'h> = [(&'h str, Cow<'h, str>)];

/// The context of one request.
pub struct Http {
    id: u32,
    state: Rc<State>,
}

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

impl Http {
    pub fn new(id: u32, state: Rc<State>) -> Http {
        Http { id, state }
    }

    /// Resets this stream if it is a WebSocket the table no longer allows
    /// ([`Policy::still_allows`]); true when it did.
    fn close_if_key_died(&mut self) -> bool {
        let Some(grant) = self.state.streams.grant_of(self.id) else {
            return false;
        };
        let now = self.state.clock_ms.get();
        let dead = match (
            self.state.policy.borrow().as_ref(),
            self.state.fresh_table(now),
        ) {
            (Some(policy), Some(table)) => !policy.still_allows(&table, &grant, now / 1000),
            _ => false,
        };
        if dead {
            self.forget_stream();
            self.state.stats.ws_closed(1);
            log::info!(
                "closing WebSocket stream {}: its key no longer allows it",
                self.id
            );
            // Envoy resets the stream once this callback returns.
            let _ = host::reset_http_request();
        }
        dead
    }

    /// Forgets this stream: no longer watched, no longer waiting.
    fn forget_stream(&mut self) {
        self.state.streams.unregister(self.id);
        self.state.waiting.forget(self.id);
    }
}

/// Sends the refusal with its body in `format`; the request stops here
/// (reset, if the host would not send it, rather than left hanging).
fn deny(deny: &Deny, format: ErrorFormat) {
    let headers = deny.response_headers();
    let status = u32::from(deny.status);
    let body = deny.body(format);
    let headers = headers::serialize(&headers);
    if let Err(e) = host::send_http_response(status, &headers, body.as_bytes()) {
        log::error!("could not send the {status} refusal ({e:?}); resetting the request");
        let _ = host::reset_http_request();
    }
}

/// Counts and sends a refusal, in the configured dialect (`keygate` before
/// a configuration).
fn refuse(state: &State, d: &Deny) -> Step {
    state.stats.denied(d.reason);
    let now_secs = state.clock_ms.get() / 1000;
    state
        .usage
        .refused(d.key, Outcome::Denied(d.reason), now_secs);
    let format = state
        .policy
        .borrow()
        .as_ref()
        .map_or_else(ErrorFormat::default, |p| p.error_format);
    deny(d, format);
    Step::Refused
}

/// Pauses request `id` until the first table, if this VM never had one and
/// may make it wait; false when the request is to be refused now.
fn wait_for_table(state: &State, id: u32, now: u64) -> bool {
    let wait = state.first_table_wait_ms.get();
    let paused = wait > 0
        && state.table.borrow().is_none()
        && state.waiting.pause(id, now.saturating_add(wait));
    if paused {
        state.stats.waited();
    }
    paused
}

/// Decides the request of the effective context `id`. With `may_wait`, a
/// request that needs a key and finds no table (never loaded) waits instead
/// of getting 503; a table too stale still gets 503 at once.
pub fn decide(state: &State, id: u32, may_wait: bool) -> Step {
    let policy = state.policy.borrow();
    let raw = RawHeaders::read(MapType::HttpRequestHeaders);
    let entries = raw.as_ref().and_then(RawHeaders::entries);
    let headers = entries.as_deref().and_then(headers::text);
    let (Some(policy), Some(entries), Some(headers)) = (policy.as_ref(), entries, headers) else {
        return refuse(state, &Deny::not_ready());
    };
    let request = Request::from_headers(&headers);
    let (method, path) = (request.method, request.path);
    let now = state.clock_ms.get();
    let mut table = state.fresh_table(now);
    let mut decision = policy.decide(table.as_deref(), &request, now / 1000);
    if matches!(&decision, Decision::Deny(d) if recheck::may_lift(policy, &request, d)) {
        // This VM's table may lag the process's (SPEC §16): look once.
        drop(decision);
        drop(table);
        state.catch_up();
        table = state.fresh_table(now);
        decision = policy.decide(table.as_deref(), &request, now / 1000);
    }
    match decision {
        Decision::Allow(a) => {
            match decision::own_limits(&mut SharedCounts, a.identity.as_ref(), now / 1000) {
                Ok(None) => {}
                Ok(Some(limited)) => {
                    return refuse_scrubbed(state, policy, &request, &entries, &limited)
                }
                Err(e) => {
                    log::warn!("could not count the key's own rate limits ({e:?}); not limiting")
                }
            }
            if allow(&a, &entries).is_err() {
                log::error!("could not rewrite the request headers; refusing it");
                return refuse(state, &Deny::not_ready());
            }
            state.stats.allowed();
            if let Some(identity) = &a.identity {
                state.usage.allowed(id, identity.record.key_id);
            }
            if let Some(grant) = a.grant().filter(|_| request.is_websocket_upgrade()) {
                state.streams.register(id, grant);
            }
            Step::Continue
        }
        Decision::Deny(d)
            if d.reason == DenyReason::NotReady && may_wait && wait_for_table(state, id, now) =>
        {
            Step::Waiting
        }
        Decision::Deny(d) => {
            if log::log_enabled!(log::Level::Debug) {
                log::debug!(
                    "denied {} {} {} ({}), key {}",
                    method,
                    path_only(request.path),
                    d.status,
                    d.reason.as_str(),
                    key_prefix_for_log(&headers, path, policy)
                );
            }
            refuse_scrubbed(state, policy, &request, &entries, &d)
        }
    }
}

/// Removes the credential from the refused request (so that access logs
/// never see it), then refuses it.
fn refuse_scrubbed(
    state: &State,
    policy: &Policy,
    request: &Request<'_, &str, Cow<'_, str>>,
    entries: &[Entry<'_>],
    d: &Deny,
) -> Step {
    if allow(&policy.scrub(request), entries).is_err() {
        log::warn!("could not remove the credential from a refused request");
    }
    refuse(state, d)
}

/// Rewrites the request for the upstream: the whole map in one host call,
/// none when nothing changes.
fn allow(allow: &Allow<'_>, present: &[Entry<'_>]) -> Result<(), Status> {
    let identity = allow.identity.as_ref().map(Identity::headers);
    match rewritten(allow, identity.as_ref(), present) {
        Some(pairs) => headers::write(MapType::HttpRequestHeaders, &pairs),
        None => Ok(()),
    }
}

/// The request headers `allow` leaves for the upstream, in order: what
/// `present` holds less the removed headers (`:path` rewritten), then
/// `identity`, then the remaining WebSocket subprotocols; `None` when that
/// is `present` unchanged.
fn rewritten<'a>(
    allow: &'a Allow<'_>,
    identity: Option<&'a IdentityHeaders<'_>>,
    present: &[Entry<'a>],
) -> Option<Vec<Entry<'a>>> {
    let is = |name: &[u8], other: &str| name.eq_ignore_ascii_case(other.as_bytes());
    let dropped = |name: &[u8]| {
        allow.drops(name)
            // One value for what may have come as several.
            || (allow.new_subprotocols.is_some() && is(name, credential::SEC_WEBSOCKET_PROTOCOL))
    };
    let new_path = allow.new_path.as_deref().map(str::as_bytes);
    let mut pairs: Vec<Entry<'a>> = Vec::with_capacity(present.len() + 8);
    let (mut removed, mut path_written) = (false, false);
    for &(name, value) in present {
        if dropped(name) {
            removed = true;
            continue;
        }
        let value = match new_path {
            Some(path) if is(name, ":path") => {
                path_written = true;
                path
            }
            _ => value,
        };
        pairs.push((name, value));
    }
    let offered = allow.new_subprotocols.as_deref();
    if !removed && new_path.is_none() && identity.is_none() && offered.is_none() {
        return None;
    }
    if let Some(path) = new_path.filter(|_| !path_written) {
        pairs.push((b":path".as_slice(), path));
    }
    if let Some(identity) = identity {
        pairs.extend(identity.pairs().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    }
    if let Some(offered) = offered {
        pairs.push((
            credential::SEC_WEBSOCKET_PROTOCOL.as_bytes(),
            offered.as_bytes(),
        ));
    }
    Some(pairs)
}

/// The display prefix of the request's key, if it has a well-formed one:
/// never more of a key, and nothing of a string that is not a key.
fn key_prefix_for_log(headers: &Headers<'_>, path: &str, policy: &Policy) -> String {
    match credential::extract(headers, path) {
        Extracted::Key(c) if policy.key_format.parse(&c.key, &policy.key_prefix).is_ok() => {
            keygate::key::display_prefix(&c.key).to_string()
        }
        Extracted::Key(_) => "(malformed)".into(),
        Extracted::Conflict => "(conflicting keys)".into(),
        Extracted::Missing => "(none)".into(),
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.forget_stream();
        let now_secs = self.state.clock_ms.get() / 1000;
        self.state.usage.on_done(self.id, now_secs);
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match decide(&self.state, self.id, true) {
            Step::Continue => Action::Continue,
            Step::Refused | Step::Waiting => Action::Pause,
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Envoy's contract: a Continue for the body (or trailers) of a
        // request whose headers were stopped sends the headers on too.
        if self.state.waiting.contains(self.id) || self.close_if_key_died() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.state.waiting.contains(self.id) {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let now_secs = self.state.clock_ms.get() / 1000;
        self.state
            .usage
            .on_response_headers(self.id, now_secs, &self.state.stats);
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.close_if_key_died() {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.forget_stream();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate::feed::KeyStatus;
    use keygate::ids::{KeyId, OrgId};
    use keygate::key::Environment;
    use keygate::limits::RateLimits;
    use keygate::table::KeyRef;

    fn allow() -> Allow<'static> {
        Allow {
            identity: None,
            rule: None,
            strip_authorization: false,
            strip_api_key: false,
            new_path: None,
            new_subprotocols: None,
            strip_subprotocols: false,
        }
    }

    fn names<'a>(pairs: &[Entry<'a>]) -> Vec<(&'a str, &'a [u8])> {
        pairs
            .iter()
            .map(|&(n, v)| (std::str::from_utf8(n).unwrap(), v))
            .collect()
    }

    #[test]
    fn the_key_and_spoofed_identity_go_every_other_entry_stays_as_it_came() {
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
        let a = Allow {
            identity: Some(Identity {
                record,
                hash: [0; 32],
            }),
            strip_api_key: true,
            ..allow()
        };
        let present: Vec<Entry<'_>> = vec![
            (b":path", b"/a"),
            (b"x-api-key", b"rk_live_x"),
            (b"X-Key-Id", b"key_spoofed"),
            (b"x-key-owner", b"spoofed"),
            (b"X_Org_Id", b"org_spoofed"),
            (b"x_key_scopes", b"tenant:admin"),
            (b"x-multi", b"1"),
            (b"x-multi", b"2"),
            (b"latin1", b"caf\xe9"),
        ];
        let identity = a.identity.as_ref().map(Identity::headers);
        let out = rewritten(&a, identity.as_ref(), &present).unwrap();
        let mut expected: Vec<(&str, &[u8])> = vec![
            (":path", b"/a"),
            ("x-multi", b"1"),
            ("x-multi", b"2"),
            ("latin1", b"caf\xe9"),
        ];
        let identity = identity.as_ref().unwrap();
        expected.extend(identity.pairs().map(|(n, v)| (n, v.as_bytes())));
        assert_eq!(names(&out), expected);
        assert_eq!(out.len(), 9, "five identity headers, no owner");
    }

    #[test]
    fn path_and_subprotocols_are_rewritten_once() {
        let a = Allow {
            new_path: Some("/ws?room=1".into()),
            new_subprotocols: Some("chat.v2".into()),
            ..allow()
        };
        let present: Vec<Entry<'_>> = vec![
            (b":method", b"GET"),
            (b":path", b"/ws?api_key=rk_live_x&room=1"),
            (b"sec-websocket-protocol", b"keygate.bearer.rk_live_x"),
            (b"sec-websocket-protocol", b"chat.v2"),
            (b"upgrade", b"websocket"),
        ];
        let out = rewritten(&a, None, &present).unwrap();
        let expected: Vec<(&str, &[u8])> = vec![
            (":method", b"GET"),
            (":path", b"/ws?room=1"),
            ("upgrade", b"websocket"),
            ("sec-websocket-protocol", b"chat.v2"),
        ];
        assert_eq!(names(&out), expected);
    }

    #[test]
    fn an_unchanged_request_is_not_written() {
        let present: Vec<Entry<'_>> = vec![(b":path", b"/public"), (b"x-other", b"1")];
        assert_eq!(rewritten(&allow(), None, &present), None);
        let strip = Allow {
            strip_authorization: true,
            ..allow()
        };
        assert_eq!(rewritten(&strip, None, &present), None);
        let present: Vec<Entry<'_>> = vec![(b":path", b"/public"), (b"x-org-id", b"spoofed")];
        let public = allow();
        let out = rewritten(&public, None, &present).unwrap();
        assert_eq!(names(&out), vec![(":path", b"/public".as_slice())]);
    }
}

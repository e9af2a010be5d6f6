//! One HTTP request: one decision, taken from the headers alone.
//!
//! All request headers are read in one host call ([`RawHeaders`]); the core
//! decides; an allow
//! removes the credential and any client copy of the identity headers, sets
//! the identity headers and rewrites `:path` when `?api_key=` went away; a
//! deny answers with the exact JSON of SPEC §4. An allowed WebSocket upgrade
//! is watched until it ends, and checked again on every frame.

use crate::headers::RawHeaders;
use crate::host::{self, Status};
use crate::state::State;
use crate::streams::key_is_dead;
use keygate::credential::{self, Extracted};
use keygate::decision::{Allow, Decision, Deny, Request, WWW_AUTHENTICATE};
use keygate::key;
use keygate::rules::path_only;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::borrow::Cow;
use std::rc::Rc;

type Headers<'h> = [(&'h str, Cow<'h, str>)];

/// The context of one request.
pub struct Http {
    id: u32,
    state: Rc<State>,
    /// Key hash of an allowed WebSocket upgrade on this stream.
    websocket: Option<[u8; 32]>,
}

impl Http {
    pub fn new(id: u32, state: Rc<State>) -> Http {
        Http {
            id,
            state,
            websocket: None,
        }
    }

    /// Resets this stream if it is a WebSocket whose key died (revoked or
    /// expired); true when it did.
    fn close_if_key_died(&mut self) -> bool {
        let Some(hash) = self.websocket else {
            return false;
        };
        let now = self.state.clock_ms.get();
        let dead = self
            .state
            .fresh_table(now)
            .is_some_and(|t| key_is_dead(&t, &hash, now / 1000));
        if dead {
            self.forget_stream();
            self.state.stats.ws_closed(1);
            log::info!(
                "closing WebSocket stream {}: its key was revoked or expired",
                self.id
            );
            // Envoy resets the stream once this callback returns.
            let _ = host::reset_http_request();
        }
        dead
    }

    fn forget_stream(&mut self) {
        if self.websocket.take().is_some() {
            self.state.streams.unregister(self.id);
        }
    }
}

fn header<'a>(headers: &'a Headers<'_>, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

fn is_websocket_upgrade(headers: &Headers<'_>) -> bool {
    let upgrade = header(headers, "upgrade").is_some_and(|v| {
        v.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
    });
    upgrade || header(headers, ":protocol").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Sends the refusal; the request stops here (reset, if the host would not
/// send it, rather than left hanging).
fn deny(deny: &Deny) -> Action {
    let mut headers = vec![("content-type", "application/json")];
    if deny.needs_www_authenticate() {
        headers.push(("www-authenticate", WWW_AUTHENTICATE));
    }
    let status = u32::from(deny.status);
    if let Err(e) = host::send_http_response(status, &headers, deny.body.as_bytes()) {
        log::error!("could not send the {status} refusal ({e:?}); resetting the request");
        let _ = host::reset_http_request();
    }
    Action::Pause
}

/// Rewrites the request for the upstream.
fn allow(allow: &Allow<'_>, present: &Headers<'_>) -> Result<(), Status> {
    let map = MapType::HttpRequestHeaders;
    for name in allow.headers_to_remove() {
        if header(present, name).is_some() {
            host::remove_header(map, name)?;
        }
    }
    if let Some(identity) = &allow.identity {
        for (name, value) in identity.headers().pairs() {
            host::add_header(map, name, value)?;
        }
    }
    if let Some(path) = &allow.new_path {
        host::set_header(map, ":path", path)?;
    }
    Ok(())
}

/// The display prefix of the request's key, if it has a well-formed one:
/// never more of a key, and nothing of a string that is not a key.
fn key_prefix_for_log(headers: &Headers<'_>, path: &str, prefix: &str) -> String {
    match credential::extract(headers, path) {
        Extracted::Key(c) if key::parse(&c.key, prefix).is_ok() => {
            key::display_prefix(&c.key).to_string()
        }
        Extracted::Key(_) => "(malformed)".into(),
        Extracted::Conflict => "(conflicting keys)".into(),
        Extracted::Missing => "(none)".into(),
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.forget_stream();
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let state = Rc::clone(&self.state);
        let policy = state.policy.borrow();
        let raw = RawHeaders::read();
        let headers = raw.as_ref().and_then(RawHeaders::pairs);
        let (Some(policy), Some(headers)) = (policy.as_ref(), headers) else {
            state.stats.denied(Deny::not_ready().reason);
            return deny(&Deny::not_ready());
        };
        let method = header(&headers, ":method").unwrap_or("");
        let path = header(&headers, ":path").unwrap_or("/");
        let now = state.clock_ms.get();
        let table = state.fresh_table(now);
        let request = Request {
            method,
            path,
            headers: &headers,
        };
        match policy.decide(table.as_deref(), &request, now / 1000) {
            Decision::Allow(a) => {
                if allow(&a, &headers).is_err() {
                    log::error!("could not rewrite the request headers; refusing it");
                    state.stats.denied(Deny::not_ready().reason);
                    return deny(&Deny::not_ready());
                }
                state.stats.allowed();
                if let Some(identity) = a.identity.filter(|_| is_websocket_upgrade(&headers)) {
                    self.websocket = Some(identity.hash);
                    state.streams.register(self.id, identity.hash);
                }
                Action::Continue
            }
            Decision::Deny(d) => {
                state.stats.denied(d.reason);
                if log::log_enabled!(log::Level::Debug) {
                    log::debug!(
                        "denied {} {} {} ({}), key {}",
                        method,
                        path_only(path),
                        d.status,
                        d.reason.as_str(),
                        key_prefix_for_log(&headers, path, &policy.key_prefix)
                    );
                }
                deny(&d)
            }
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.close_if_key_died() {
            Action::Pause
        } else {
            Action::Continue
        }
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

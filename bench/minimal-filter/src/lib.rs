//! The floor of any wasm filter: reads one request header, sets one.
//!
//! Built like keygate (`--target wasm32-wasip1`, release profile) and run by
//! Envoy with the same plugin settings, so the gap between this and no filter
//! is what any proxy-wasm filter costs, and the gap between this and keygate is
//! what keygate's own work costs.
//!
//! The plugin configuration picks a mode (the default is the floor; the
//! others only serve `keygate-bench --diagnose`, to split keygate's gap into
//! host calls and its own computation):
//!
//! - `""`: read `x-api-key`, set `x-minimal-seen` (2 host calls);
//! - `"hostcalls"`: the request host calls keygate made on an allowed
//!   request until it wrote the map whole, and nothing else: read every
//!   header, remove the key header, add five identity headers (7 host calls;
//!   keygate reads the clock and adds to its counters once per tick, not per
//!   request);
//! - `"one-set"`: the same rewrite in two host calls, as keygate does it now:
//!   read every header, then write the whole map back without the key and
//!   with the five headers;
//! - `"by-name"`: read only the headers a decision needs, by name
//!   (`authorization`, `x-api-key`, `:path`, `:method`), remove the key
//!   header, set (replace) the five identity headers (10 host calls, no
//!   whole-map read).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Floor }) });
}}

#[derive(Clone, Copy)]
enum Mode {
    Floor,
    HostCalls,
    OneSet,
    ByName,
}

/// Identity headers like keygate's (same names, values of the same length).
const IDENTITY: [(&str, &str); 5] = [
    ("x-org-id", "org_0123456789abcdef"),
    ("x-key-id", "key_0123456789abcdef"),
    ("x-key-scopes", "memory:read memory:write"),
    ("x-key-environment", "live"),
    ("x-rate-tier", "pro"),
];

struct Root {
    mode: Mode,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        self.mode = match config.as_slice() {
            b"hostcalls" => Mode::HostCalls,
            b"one-set" => Mode::OneSet,
            b"by-name" => Mode::ByName,
            _ => Mode::Floor,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Minimal { mode: self.mode }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Minimal {
    mode: Mode,
}

impl Context for Minimal {}

impl HttpContext for Minimal {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let map = MapType::HttpRequestHeaders;
        match self.mode {
            Mode::Floor => {
                let seen = hostcalls::get_map_value(map, "x-api-key").is_ok_and(|v| v.is_some());
                let _ = hostcalls::set_map_value(
                    map,
                    "x-minimal-seen",
                    Some(if seen { "1" } else { "0" }),
                );
            }
            Mode::HostCalls => {
                let headers = hostcalls::get_map_bytes(map).unwrap_or_default();
                if headers.iter().any(|(n, _)| n == "x-api-key") {
                    let _ = hostcalls::remove_map_value(map, "x-api-key");
                }
                for (name, value) in IDENTITY {
                    let _ = hostcalls::add_map_value(map, name, value);
                }
            }
            Mode::OneSet => {
                let headers = hostcalls::get_map_bytes(map).unwrap_or_default();
                let mut pairs: Vec<(&str, &[u8])> = headers
                    .iter()
                    .filter(|(n, _)| n != "x-api-key")
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                pairs.extend(IDENTITY.iter().map(|(n, v)| (*n, v.as_bytes())));
                let _ = hostcalls::set_map_bytes(map, pairs);
            }
            Mode::ByName => {
                let mut key = None;
                for name in ["authorization", "x-api-key", ":path", ":method"] {
                    let value = hostcalls::get_map_value_bytes(map, name).ok().flatten();
                    if name == "x-api-key" {
                        key = value;
                    }
                }
                if key.is_some() {
                    let _ = hostcalls::remove_map_value(map, "x-api-key");
                }
                for (name, value) in IDENTITY {
                    let _ = hostcalls::set_map_value(map, name, Some(value));
                }
            }
        }
        Action::Continue
    }
}

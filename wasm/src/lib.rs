//! keygate's proxy-wasm filter: API-key authentication in Envoy.
//!
//! The core crate (`keygate`) takes every decision; this crate glues it to
//! the host. Modules: [`host`] (every host call, on the raw ABI), [`root`]
//! (configuration; drives the feed engine from the tick and call answers),
//! [`http`] (one decision per request), [`headers`] (a header map read and
//! written whole, in one host call each; the map format), [`engine_host`]
//! (the feed engine's host: shared data, clock, calls, log), [`streams`]
//! (open WebSockets), [`limits`] (a key's own rate limits over shared
//! data), [`stats`] (metrics), [`state`] (what a root shares with its
//! requests), [`waiting`] (requests paused until the first table),
//! [`usage`] (counting per key and minute, the cost header, the reporter).
//! The feed itself (lease, followers, fetch loop, shared table, a new VM's
//! own first table) is the core's host-independent [`keygate::engine`].
//!
//! Host calls per request: an allowed request of a key makes three, the
//! request headers read whole and written back whole and the response
//! headers read whole (for the cost header and `x-envoy-ratelimited`), plus
//! one to remove the cost header when the upstream sent one; a request whose
//! headers stay as they came (a public route) skips the write, and one that
//! no key's usage waits for reads only the cost header. A key with rate
//! limits of its own adds a shared-data read and write; a refusal is the
//! read and the local reply. Counters, usage counts and the clock stay in
//! the VM until the next tick.
//!
//! Behaviour: before a VM's first table a request that needs a key waits for
//! it, up to `feed.first_table_wait_ms`, then gets 503 `not ready`; 503 again
//! when the last
//! successful answer from the control plane is older than
//! `feed.max_staleness_seconds` (the table is then treated as absent; open
//! WebSockets are left alone since nothing says their key died); the
//! long-poll wait is lowered to a quarter of that staleness if needed. Fetch
//! failures keep the last good table. One fetch stream per Envoy process,
//! long-polled; workers follow through shared data every
//! `feed.sync_interval_ms`, so a revocation reaches every worker within about
//! one long-poll answer plus one tick.
//!
//! Never panics on any input: every host call goes through [`host`], on the
//! raw ABI with every status handled (the SDK's `hostcalls` and logger panic
//! on a status they do not expect, its context helpers unwrap), the request
//! headers through a bounds-checked parser, and the workspace lints deny
//! unwrap, expect, panic and indexing.

pub mod engine_host;
pub mod headers;
pub mod host;
pub mod http;
pub mod limits;
pub mod root;
pub mod state;
pub mod stats;
pub mod streams;
pub mod usage;
pub mod waiting;

proxy_wasm::main! {{
    host::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}

//! keygate as an Envoy dynamic module (`envoy.filters.http.dynamic_modules`,
//! Envoy 1.40, ABI `v0.2.0`): the same core, configuration JSON and answers
//! as the wasm filter, with one key table per Envoy process.
//!
//! Modules: [`abi`] (our own declarations of the callbacks used), [`host`]
//! (every call into Envoy, safe), [`hooks`] (every function Envoy calls,
//! panic-guarded; [`idle_hooks`] those that do nothing), [`config`] (a
//! filter configuration on the main thread), [`timer`] (its ticks),
//! [`feed_loop`] (the process's fetch stream: the engine's fetch loop
//! `keygate::engine::fetch::Fetcher` building the table itself with
//! `keygate::engine::sink::TableSink`), [`shared`] (what the
//! main thread shares with the workers: the table, the woken streams),
//! [`filter`] (one request's decision), [`limits`] (a key's own rate
//! limits, process-wide), [`usage`] (usage counts, process-wide), [`stats`]
//! and [`log`].
//!
//! **One table per process.** Envoy makes one filter configuration per
//! process (on the main thread) and one filter object per stream (on its
//! worker). The configuration holds the table in an atomically swapped
//! `Arc`; every worker reads it, lock-free. One fetch stream per process and
//! configuration: the main thread long-polls the control plane through
//! config-level HTTP callouts, with the feed protocol of
//! docs/feed-protocol.md (`since`/`wait`/`after`/`key_set`/`client`); a new
//! table is visible to every worker the moment it is swapped in, so a
//! revocation takes one long-poll answer (no follower tick).
//!
//! **Panics.** A panic crossing into Envoy would abort the process, so every
//! exported hook runs behind `catch_unwind` ([`hooks`]) and fails closed: a
//! request is refused with 503, never let through, and the panic is logged.
//! `catch_unwind` only works when panics unwind; the workspace's release
//! profile has `panic = "abort"` (right for the wasm filter and the
//! services) and cargo sets `panic` per profile, not per crate, so this
//! crate is built with its own profile: `cargo build --profile native`
//! (`[profile.native]`: release with `panic = "unwind"`), giving
//! `target/native/libkeygate_native.so`. Built with `panic = "abort"` the
//! module would still work, but a panic would take Envoy down.
//!
//! **ABI drift.** [`hooks::envoy_dynamic_module_on_program_init`] reports
//! the ABI version this module was built for (`v0.2.0`; Envoy warns on a
//! mismatch), and `tests/abi_symbols.rs` checks that every callback the
//! `.so` imports is exported by the Envoy binary.
//!
//! Never logs a key, a token or a header value; the workspace lints deny
//! unwrap, expect, panic and indexing.

pub mod abi;
pub mod config;
pub mod feed_loop;
pub mod filter;
pub mod hooks;
pub mod host;
pub mod idle_hooks;
pub mod limits;
pub mod log;
pub mod shared;
pub mod stats;
pub mod timer;
pub mod usage;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

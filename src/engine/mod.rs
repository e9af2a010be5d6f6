//! The feed engine: one key table per proxy process, whatever the adapter.
//!
//! Host-independent logic that keeps a proxy's key tables fed from the
//! control plane, shared by the wasm filter and the native module. No host
//! call lives here: an adapter implements [`Host`] (a process-wide
//! [`shared::SharedData`] with CAS, the clock, starting a [`request::FeedRequest`],
//! log lines), calls [`Engine::tick`] periodically and hands call answers to
//! [`Engine::on_response`], and reacts to the [`Changes`] they return.
//! The native module, one table per process and no followers, drives the
//! same fetch loop ([`fetch::Fetcher`]) itself with a table-direct
//! [`sink::TableSink`]; the wasm filter's [`Engine`] runs it with the store's.
//!
//! - [`driver`]: the [`Engine`] of one member (election, following, the
//!   leader's fetches, a first table of its own), through a [`Host`];
//! - [`host`]: the [`Host`] trait an adapter implements;
//! - [`shared`]: the store trait and the names of one feed's values in it;
//! - [`sync`]: lease, head, snapshot pages and delta chain in the store, and
//!   a follower's catch-up;
//! - [`followers`]: which process members are alive, what they hold, who leads;
//! - [`fetch`]: the fetch loop (what to ask next, what an answer did, pacing);
//! - [`fetch_log`]: the log lines of its outcomes, the same for both adapters;
//! - [`sink`]: where fetched bodies go (the store, or straight into a table);
//! - [`bootstrap`]: one member's own first table, straight from the control plane;
//! - [`recheck`]: a member's second look at the shared head before a
//!   refusal a newer table could lift;
//! - [`request`]: the HTTP request a fetch sends;
//! - [`usage`]: the usage reporter (batches of counts to the control plane).

pub mod bootstrap;
pub mod driver;
pub mod fetch;
pub mod fetch_log;
pub mod followers;
pub mod host;
pub mod recheck;
pub mod request;
pub mod shared;
pub mod sink;
pub mod sync;
pub mod usage;

pub use driver::{Changes, Engine, Member};
pub use host::{Host, Level};

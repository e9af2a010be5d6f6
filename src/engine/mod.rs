//! The feed engine: one key table per proxy process, whatever the adapter.
//!
//! Host-independent logic that keeps a proxy's key table fed from the
//! control plane, shared by the wasm filter and the native module. No host
//! call lives here: the adapter supplies a [`store::Store`] (process-wide
//! key/value data with CAS), dispatches the [`request::FeedRequest`]s the
//! engine builds and hands their answers back.
//!
//! - [`store`]: the store trait and the names of one feed's values in it;
//! - [`sync`]: lease, head, snapshot pages and delta chain in the store, and
//!   a follower's catch-up;
//! - [`followers`]: which process members are alive, what they hold, who leads;
//! - [`fetch`]: the fetch loop (what to ask next, what an answer did, pacing);
//! - [`bootstrap`]: one member's own first table, straight from the control plane;
//! - [`request`]: the HTTP request a fetch sends.

pub mod bootstrap;
pub mod fetch;
pub mod followers;
pub mod request;
pub mod store;
pub mod sync;

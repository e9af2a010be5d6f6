//! keygate control plane: owns the API keys (hashed, in SQLite), serves the
//! management API of SPEC §6 (within each tenant's plan, §10), the operator
//! API, and the key table feed of the filters, and has admin commands.
//!
//! The one module tree of the crate: the binary (`main.rs`) parses the
//! command line and runs it through the public modules, and the fuzz
//! targets (`fuzz/`) reach the request-body drafts through them.
//!
//! The modules import each other without a cycle: the store, then the
//! service, then the routes' shared state (`state`), then the modules that
//! own routes (`api`, `openapi`, `webhooks`, `audit`, `operator`,
//! `dashboard`), assembled by `routes` and served by [`server`].

pub mod admin;
mod api;
pub mod audit;
mod auth;
pub mod body;
pub mod caps;
pub mod cli;
pub mod clock;
pub mod dashboard;
mod data_planes;
pub mod delivery;
pub mod dispatch;
pub mod drafts;
pub mod egress;
pub mod errors;
pub mod events;
mod feed;
mod feed_cache;
pub mod hashing;
mod ingest;
pub mod leaks;
mod listing;
pub mod maintenance;
mod metrics;
pub mod openapi;
pub mod operator;
pub mod operator_token;
pub mod password;
pub mod plans;
pub mod policy;
mod routes;
mod schemas;
pub mod server;
pub mod service;
pub mod signin;
mod state;
pub mod store;
mod throttle;
mod unparsed;
mod usage;
mod views;
pub mod webhooks;

//! keygate control plane: owns the API keys (hashed, in SQLite), serves the
//! management API of SPEC §6 and the key table feed of the filters, and has
//! admin commands for bootstrapping.
//!
//! The one module tree of the crate: the binary (`main.rs`) parses the
//! command line and runs it through the public modules, and the fuzz
//! targets (`fuzz/`) reach the request-body drafts through them.

pub mod admin;
mod api;
mod auth;
pub mod body;
pub mod cli;
pub mod clock;
pub mod delivery;
pub mod drafts;
pub mod errors;
mod feed;
mod listing;
pub mod maintenance;
mod metrics;
pub mod openapi;
pub mod policy;
pub mod server;
pub mod service;
pub mod store;
mod unparsed;
mod views;

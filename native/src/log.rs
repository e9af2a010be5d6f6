//! Lines in Envoy's log (the `dynamic_modules` logger, at Envoy's level).
//! Never a key, a token or a header value: callers pass fixed text, ids,
//! counts, and a request's method and path without its query.
//!
//! The feed's lines are the core's, the wasm filter's too
//! (`keygate::engine::fetch_log`): they come through [`line`].

use crate::abi::level;
use crate::host;
use keygate::engine::Level;
use std::fmt;

fn at(level: u32, message: fmt::Arguments<'_>) {
    if host::log_enabled(level) {
        host::log(level, &format!("keygate: {message}"));
    }
}

/// A line of the core's, at its level; formatted only when Envoy prints it.
pub fn line(level: Level, message: fmt::Arguments<'_>) {
    let level = match level {
        Level::Debug => level::DEBUG,
        Level::Info => level::INFO,
        Level::Warn => level::WARN,
    };
    at(level, message);
}

pub fn debug(message: &str) {
    at(level::DEBUG, format_args!("{message}"));
}

pub fn info(message: &str) {
    at(level::INFO, format_args!("{message}"));
}

pub fn warn(message: &str) {
    at(level::WARN, format_args!("{message}"));
}

pub fn error(message: &str) {
    at(level::ERROR, format_args!("{message}"));
}

/// True when debug lines are printed (to skip building them otherwise).
pub fn debug_enabled() -> bool {
    host::log_enabled(level::DEBUG)
}

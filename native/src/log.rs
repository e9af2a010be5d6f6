//! Lines in Envoy's log (the `dynamic_modules` logger, at Envoy's level).
//! Never a key, a token or a header value: callers pass fixed text, ids,
//! counts, and a request's method and path without its query.

use crate::abi::level;
use crate::host;

fn at(level: u32, message: &str) {
    if host::log_enabled(level) {
        host::log(level, &format!("keygate: {message}"));
    }
}

pub fn debug(message: &str) {
    at(level::DEBUG, message);
}

pub fn info(message: &str) {
    at(level::INFO, message);
}

pub fn warn(message: &str) {
    at(level::WARN, message);
}

pub fn error(message: &str) {
    at(level::ERROR, message);
}

/// True when debug lines are printed (to skip building them otherwise).
pub fn debug_enabled() -> bool {
    host::log_enabled(level::DEBUG)
}

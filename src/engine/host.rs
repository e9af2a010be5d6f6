//! What an adapter gives the feed engine: a store, a clock, a call, a log.
//!
//! The whole surface between [`crate::engine::Engine`] and a proxy: the
//! process-wide [`SharedData`] (get/set with compare-and-swap), the wall clock,
//! starting a feed request whose answer the adapter hands back to
//! [`crate::engine::Engine::on_response`] with its token, and log lines.

use crate::engine::request::FeedRequest;
use crate::engine::shared::SharedData;
use std::fmt;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// The proxy, as the feed engine uses it.
pub trait Host: SharedData {
    /// The wall clock in unix milliseconds.
    fn now_ms(&self) -> u64;
    /// Starts `request`: its token, or `None` when it could not start.
    fn dispatch(&self, request: &FeedRequest) -> Option<u32>;
    /// Writes a log line; `message` is formatted only if `level` is logged.
    fn log(&self, level: Level, message: fmt::Arguments<'_>);
}

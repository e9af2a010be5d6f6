//! The feed engine's [`Host`] over Envoy: shared data, clock, http calls, log.

use crate::host;
use crate::state::now_ms;
use keygate::engine::request::FeedRequest;
use keygate::engine::shared::SharedData;
use keygate::engine::{Host, Level};
use std::fmt;
use std::time::Duration;

/// Envoy, as seen from one VM: its process-wide shared data (per `vm_id`)
/// is the engine's store.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvoyHost;

impl SharedData for EnvoyHost {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        host::shared_data(key).unwrap_or_default()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        host::set_shared_data(key, value, cas).is_ok()
    }
}

impl Host for EnvoyHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn dispatch(&self, request: &FeedRequest) -> Option<u32> {
        host::dispatch_http_call(
            &request.cluster,
            request.headers().to_vec(),
            None,
            Duration::from_millis(request.timeout_ms),
        )
        .ok()
    }

    fn log(&self, level: Level, message: fmt::Arguments<'_>) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
        };
        log::log!(level, "{message}");
    }
}

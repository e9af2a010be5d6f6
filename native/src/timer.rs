//! The configuration's timer: a small thread that commits a tick to the
//! configuration's scheduler every `feed.sync_interval_ms` (every
//! [`FAST_TICK`] while requests wait for the first table); Envoy runs each
//! tick on the main thread (`on_http_filter_config_scheduled`).

use crate::host::ConfigScheduler;
use crate::log;
use crate::shared::Shared;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Event of the configuration's scheduler: a tick of the timer.
pub const EVENT_TICK: u64 = 1;
/// The tick period while requests wait for the first table, so that their
/// wait ends on time.
const FAST_TICK: Duration = Duration::from_millis(5);

/// The timer thread's handle. Dropping it stops the ticks: the scheduler
/// is deleted under the lock the thread commits with, and the thread is
/// woken and joined, so no module code runs once the configuration is gone
/// (the module could be unloaded then).
pub struct Timer {
    scheduler: Arc<Mutex<Option<ConfigScheduler>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Timer {
    /// Ticks every `period`, every [`FAST_TICK`] while requests of
    /// `shared` wait for the first table.
    pub fn start(scheduler: ConfigScheduler, period: Duration, shared: Arc<Shared>) -> Timer {
        let scheduler = Arc::new(Mutex::new(Some(scheduler)));
        let ticking = Arc::clone(&scheduler);
        let spawned = thread::Builder::new()
            .name("keygate-timer".into())
            .spawn(move || loop {
                let fast = !shared.ever_loaded() && shared.has_waiting();
                thread::park_timeout(if fast { FAST_TICK } else { period });
                let guard = ticking
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match guard.as_ref() {
                    Some(s) => s.commit(EVENT_TICK),
                    None => return,
                }
            });
        if spawned.is_err() {
            log::error("could not start the timer thread: the key table will not be fetched");
        }
        Timer {
            scheduler,
            thread: spawned.ok(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let taken = self
            .scheduler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(taken);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

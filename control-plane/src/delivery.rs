//! Delivered writes: which Envoys are connected to this replica's feed, the
//! version each has acknowledged, and the bounded wait for a change to reach
//! every one of them (SPEC §14).
//!
//! A filter names its fetch stream with `client=<id>` on every feed request
//! (one id per Envoy process and feed). It is **connected** while one of its
//! requests is open, and for [`LINGER`] after the last one ended (a filter
//! asks again within one tick of an answer, or `retry_ms` after a failure):
//! so an Envoy between two long-polls at commit time counts. It has
//! **reached** version `v` once it asks `since >= v` of this key set: the
//! filter only asks a version after it stored that version in its shared
//! data, so the change survives this process being killed at once.
//!
//! A client of a data plane (crate::data_planes) whose token is revoked or
//! expired leaves at once: no change waits for an Envoy that may no longer
//! read the feed.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use utoipa::ToSchema;

/// How long a client counts as connected after its last request ended.
pub const LINGER: Duration = Duration::from_secs(5);
/// Longest accepted client id.
pub const MAX_CLIENT_LEN: usize = 64;

/// How far a change went when its answer was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Propagated {
    /// Envoys connected to this replica's feed when the change committed.
    pub envoys: usize,
    /// Those that acknowledged it within the wait.
    pub reached: usize,
}

/// One fetch stream.
#[derive(Debug, Clone, Copy)]
struct Client {
    /// Highest version it acknowledged.
    acked: u64,
    /// Its requests open now.
    open: usize,
    /// When its last request started or ended.
    seen: Instant,
    /// The data plane whose token it reads with (`None`: the shared token).
    plane: Option<u64>,
}

impl Client {
    fn connected(&self, now: Instant) -> bool {
        self.open > 0 || now.saturating_duration_since(self.seen) <= LINGER
    }
}

/// The connected clients of this replica's feed.
pub struct Delivery {
    clients: Mutex<HashMap<String, Client>>,
    /// Waits that ended with some client not reached.
    timeouts: AtomicU64,
    /// Bumped whenever a client acknowledges or leaves.
    changed: watch::Sender<u64>,
    timeout: Duration,
    /// When `open` last dropped the clients gone for good: once per
    /// [`LINGER`], not on every request (10,000 clients re-polling after a
    /// change would sweep the map 10,000 times).
    swept: Mutex<Instant>,
}

/// An open feed request; dropping it (answer sent, or the client gone)
/// ends it.
pub struct Open {
    delivery: Arc<Delivery>,
    client: String,
}

impl Drop for Open {
    fn drop(&mut self) {
        let now = Instant::now();
        self.delivery.update(|clients| {
            if let Some(c) = clients.get_mut(&self.client) {
                c.open = c.open.saturating_sub(1);
                c.seen = now;
            }
        });
    }
}

/// True for an id the feed accepts: 1 to [`MAX_CLIENT_LEN`] characters of
/// `A-Z a-z 0-9 . _ -`.
pub fn valid_client(id: &str) -> bool {
    (1..=MAX_CLIENT_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Delivery {
    /// Tracks clients; a change waits at most `timeout` for them.
    pub fn new(timeout: Duration) -> Delivery {
        Delivery {
            clients: Mutex::new(HashMap::new()),
            timeouts: AtomicU64::new(0),
            changed: watch::channel(0).0,
            timeout,
            swept: Mutex::new(Instant::now()),
        }
    }

    fn update(&self, change: impl FnOnce(&mut HashMap<String, Client>)) {
        {
            let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
            change(&mut clients);
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records a request of `client` (reading with the token of `plane`)
    /// that acknowledges `acked` (0: none); it counts as open until the
    /// returned guard drops.
    pub fn open(self: &Arc<Self>, client: &str, acked: u64, plane: Option<u64>) -> Open {
        let now = Instant::now();
        let sweep = {
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            let due = now.saturating_duration_since(*swept) >= LINGER;
            if due {
                *swept = now;
            }
            due
        };
        self.update(|clients| {
            if sweep {
                clients.retain(|_, c| c.connected(now));
            }
            let c = clients.entry(client.to_string()).or_insert(Client {
                acked: 0,
                open: 0,
                seen: now,
                plane,
            });
            c.plane = plane;
            c.acked = c.acked.max(acked);
            c.open = c.open.saturating_add(1);
            c.seen = now;
        });
        Open {
            delivery: Arc::clone(self),
            client: client.to_string(),
        }
    }

    /// Forgets every client of a data plane for which `valid` is false.
    pub fn keep_planes(&self, valid: impl Fn(u64) -> bool) {
        self.update(|clients| clients.retain(|_, c| c.plane.is_none_or(&valid)));
    }

    /// Clients connected now.
    pub fn connected(&self) -> usize {
        let now = Instant::now();
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients.values().filter(|c| c.connected(now)).count()
    }

    /// Waits so far that timed out with some client not reached.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// Keeps in `pending` the ids that have not acknowledged `version`.
    fn unreached(&self, pending: &mut Vec<String>, version: u64) {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|id| !Self::has_reached(&clients, id, version));
    }

    /// Drops from the end of `pending` the ids that acknowledged `version`,
    /// up to the first that has not: a wake costs what it removes, not a
    /// scan of every client (10,000 acknowledgements wake the wait often).
    fn pop_reached(&self, pending: &mut Vec<String>, version: u64) {
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        while pending
            .last()
            .is_some_and(|id| Self::has_reached(&clients, id, version))
        {
            pending.pop();
        }
    }

    fn has_reached(clients: &HashMap<String, Client>, id: &str, version: u64) -> bool {
        clients.get(id).is_some_and(|c| c.acked >= version)
    }

    /// Waits until every client connected now has acknowledged `version`,
    /// or the timeout passes; says how many there were and how many it
    /// reached.
    pub async fn wait(&self, version: u64) -> Propagated {
        let mut changed = self.changed.subscribe();
        let now = Instant::now();
        let mut pending: Vec<String> = {
            let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
            clients
                .iter()
                .filter(|(_, c)| c.connected(now))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let envoys = pending.len();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            self.pop_reached(&mut pending, version);
            if pending.is_empty() {
                return Propagated {
                    envoys,
                    reached: envoys,
                };
            }
            let moved = tokio::time::timeout_at(deadline, changed.changed()).await;
            if !matches!(moved, Ok(Ok(()))) {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                self.unreached(&mut pending, version);
                return Propagated {
                    envoys,
                    reached: envoys - pending.len(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nobody_connected_answers_at_once() {
        let d = Delivery::new(Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(
            d.wait(3).await,
            Propagated {
                envoys: 0,
                reached: 0
            }
        );
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn waits_for_the_acknowledgement_of_a_client_between_polls() {
        let d = Arc::new(Delivery::new(Duration::from_secs(5)));
        drop(d.open("envoy-1", 4, None));
        assert_eq!(d.connected(), 1, "between two polls it is still connected");
        let acker = Arc::clone(&d);
        let ack = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _held = acker.open("envoy-1", 5, None);
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let start = Instant::now();
        let got = d.wait(5).await;
        assert_eq!(
            got,
            Propagated {
                envoys: 1,
                reached: 1
            }
        );
        assert!(start.elapsed() >= Duration::from_millis(40));
        ack.await.unwrap();
    }

    #[tokio::test]
    async fn the_wait_is_bounded() {
        let d = Arc::new(Delivery::new(Duration::from_millis(100)));
        let _a = d.open("a", 9, None);
        let _b = d.open("b", 2, Some(4));
        let start = Instant::now();
        assert_eq!(
            d.wait(9).await,
            Propagated {
                envoys: 2,
                reached: 1
            }
        );
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(90) && took < Duration::from_secs(2));
        assert_eq!(d.timeouts(), 1);
        d.keep_planes(|plane| plane != 4);
        assert_eq!(
            d.connected(),
            1,
            "a revoked plane's client is not waited for"
        );
        assert_eq!(
            d.wait(9).await,
            Propagated {
                envoys: 1,
                reached: 1
            }
        );
    }

    #[test]
    fn client_ids_are_short_and_plain() {
        assert!(valid_client("3f9a.17-x_Y"));
        for bad in ["", "a b", "a&b", "é", &"x".repeat(65)] {
            assert!(!valid_client(bad), "{bad}");
        }
    }
}

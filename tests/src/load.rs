//! Continuous load through Envoy: a few clients sending `GET` with one key,
//! each request on a new connection, counting every answer by status.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A non-2xx answer: when (since the load started), status and body.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: Duration,
    pub status: u16,
    pub body: String,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Counts {
    /// Answers by status (0: no answer at all).
    pub by_status: BTreeMap<u16, u64>,
    /// The first non-2xx answers (at most [`KEPT`]).
    pub failures: Vec<Failure>,
    /// The slowest answer.
    pub slowest: Duration,
}

/// Non-2xx answers kept for the report.
const KEPT: usize = 20;

impl Counts {
    pub fn total(&self) -> u64 {
        self.by_status.values().sum()
    }

    pub fn non_2xx(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Running clients; [`Load::stop`] ends them and returns the counts.
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients on `url` with `key`.
    pub fn start(url: String, key: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let start = Instant::now();
        let tasks = (0..clients)
            .map(|_| {
                let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
                let (url, key) = (url.clone(), key.clone());
                tokio::spawn(async move { client(url, key, stop, counts, start).await })
            })
            .collect();
        Load {
            stop,
            counts,
            tasks,
        }
    }

    /// Answers counted so far.
    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap().total()
    }

    /// Stops the clients and returns what they saw.
    pub async fn stop(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

async fn client(
    url: String,
    key: String,
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    start: Instant,
) {
    // No keep-alive: each request opens a connection, so it meets the
    // listener (and the VMs) current when it is made.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let (status, body) = match http.get(&url).bearer_auth(&key).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        };
        record(&counts, status, body, sent.elapsed(), start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn record(counts: &Mutex<Counts>, status: u16, body: String, took: Duration, at: Duration) {
    let mut counts = counts.lock().unwrap();
    *counts.by_status.entry(status).or_default() += 1;
    counts.slowest = counts.slowest.max(took);
    if !(200..300).contains(&status) && counts.failures.len() < KEPT {
        counts.failures.push(Failure { at, status, body });
    }
}

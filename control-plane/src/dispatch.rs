//! The webhook sender: a background task that claims due deliveries from
//! the queue in the database (crate::store::events), POSTs each signed
//! (crate::events) with timeouts, and records the outcome: delivered on a
//! 2xx, else retried with exponential backoff (base doubling, at most an
//! hour apart) until the retry window after the event closes, then failed.
//!
//! The queue is the database, so deliveries queued before a restart (or by
//! the admin CLI, or another replica) go out from whichever control plane
//! runs; a claim leases a delivery past the send's timeout, so replicas
//! never send one at the same time.
//!
//! Fairness (SPEC §15): each delivery is sent in a task of its own, and the
//! loop claims again as soon as a send slot frees up, never waiting for a
//! batch's slowest receiver. At most [`IN_FLIGHT`] sends run at once, at
//! most [`PER_TENANT`] of one tenant; a claim takes at most one delivery
//! per tenant and none of a tenant at its bound, so a tenant's slow or dead
//! receivers hold its own slots only.
//!
//! Egress (SPEC §15): the client resolves names through
//! [`crate::egress::Pinned`], a literal address is checked before the
//! send, redirects are not followed and no proxy is used; `https` goes
//! over rustls with the system's roots and `--webhook-ca-file`.

use crate::clock;
use crate::egress::{Egress, Pinned, Refused};
use crate::events::{self, SIGNATURE_HEADER};
use crate::store::events::{Attempt, Claim, DueDelivery};
use crate::store::Store;
use keygate::ids::OrgId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Longest wait for a receiver's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claimed delivery is not claimed again (seconds; past the timeout).
const LEASE: u64 = 60;
/// Most sends at once.
pub const IN_FLIGHT: usize = 64;
/// Most sends of one tenant at once.
pub const PER_TENANT: usize = 8;
/// How often the queue is looked at without a wake-up.
const POLL: Duration = Duration::from_secs(1);
/// Longest pause between two attempts (seconds).
const MAX_BACKOFF: u64 = 3600;

/// How the sender runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub schedule: Schedule,
    /// CA certificates (PEM) receivers may chain to, besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// When deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Seconds after the first failure; doubles after each.
    pub backoff: u64,
    /// Seconds after the event during which it is retried.
    pub retry_for: u64,
}

impl Schedule {
    /// When to try again after the `attempts`-th failed attempt at `now` of
    /// a delivery created at `created_at`; `None`: give up.
    pub fn retry_at(&self, attempts: u64, created_at: u64, now: u64) -> Option<u64> {
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(40);
        let pause = self
            .backoff
            .max(1)
            .saturating_mul(1u64 << doublings)
            .min(MAX_BACKOFF);
        let next = now.saturating_add(pause);
        (next < created_at.saturating_add(self.retry_for)).then_some(next)
    }
}

/// The webhook client: bounded timeouts, no redirects, no proxy, names
/// resolved through the egress guard, rustls with the system's roots and
/// those of `ca_file`.
pub fn client(egress: Arc<Egress>, ca_file: Option<&PathBuf>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(Pinned(egress)))
        .user_agent(concat!("keygate-webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the webhook CA file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the webhook CA file {} is not PEM: {e}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the webhook client: {e}"))
}

/// The sender's state, shared with its send tasks.
struct Sender {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    egress: Arc<Egress>,
    schedule: Schedule,
    /// Woken when deliveries were queued or a send ended.
    wake: Arc<Notify>,
    slots: Arc<Semaphore>,
    /// Sends running now, per tenant.
    running: Mutex<HashMap<OrgId, usize>>,
}

/// Runs the sender until the runtime stops.
pub fn spawn(
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    egress: Arc<Egress>,
    settings: &Settings,
) -> Result<(), String> {
    let client = client(Arc::clone(&egress), settings.ca_file.as_ref())?;
    let sender = Arc::new(Sender {
        store,
        client,
        egress,
        schedule: settings.schedule,
        wake,
        slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        running: Mutex::new(HashMap::new()),
    });
    tokio::spawn(async move {
        loop {
            while sender.start_due().await > 0 {}
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = sender.wake.notified() => {}
            }
        }
    });
    Ok(())
}

impl Sender {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<OrgId, usize>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims as many due deliveries as there are free slots and starts
    /// their sends; returns how many.
    async fn start_due(self: &Arc<Self>) -> usize {
        let free = self.slots.available_permits();
        if free == 0 {
            return 0;
        }
        let skip = self
            .running()
            .iter()
            .filter(|(_, n)| **n >= PER_TENANT)
            .map(|(org, _)| *org)
            .collect();
        let now = clock::now();
        let claim = Claim {
            now,
            lease_until: now.saturating_add(LEASE),
            limit: free,
            per_tenant: 1,
            skip,
        };
        let due = match self.store.claim_due(claim).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim webhook deliveries; retrying");
                return 0;
            }
        };
        let claimed = due.len();
        for delivery in due {
            // Only this loop takes slots, and it claimed no more than were free.
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                break;
            };
            *self.running().entry(delivery.org).or_default() += 1;
            tokio::spawn(Arc::clone(self).send(delivery, slot));
        }
        claimed
    }

    /// Sends one delivery, records the attempt, frees its slot.
    async fn send(self: Arc<Self>, delivery: DueDelivery, slot: OwnedSemaphorePermit) {
        let attempt = attempt(&self.client, &self.egress, &delivery, self.schedule).await;
        if let Err(e) = self
            .store
            .record_attempt(delivery.id.clone(), attempt)
            .await
        {
            tracing::warn!(error = %e, "cannot record a webhook attempt");
        }
        {
            let mut running = self.running();
            if let Some(n) = running.get_mut(&delivery.org) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    running.remove(&delivery.org);
                }
            }
        }
        drop(slot);
        self.wake.notify_one();
    }
}

/// Sends `delivery` once.
async fn attempt(
    client: &reqwest::Client,
    egress: &Egress,
    delivery: &DueDelivery,
    schedule: Schedule,
) -> Attempt {
    let (status, error) = match post(client, egress, delivery).await {
        Ok(code) if (200..300).contains(&code) => (Some(code), None),
        Ok(code) => (Some(code), Some(format!("the receiver answered {code}"))),
        Err(why) => (None, Some(why)),
    };
    let at = clock::now();
    let retry_at = error
        .as_ref()
        .and_then(|_| schedule.retry_at(delivery.attempts + 1, delivery.created_at, at));
    tracing::info!(delivery = %delivery.id, event = %delivery.event_type, status,
                   attempt = delivery.attempts + 1, delivered = error.is_none(),
                   retry = retry_at.is_some(), "webhook attempt");
    Attempt {
        status,
        error,
        at,
        retry_at,
    }
}

/// POSTs `delivery` once, if its URL passes the guard; its status code,
/// or why it failed.
async fn post(
    client: &reqwest::Client,
    egress: &Egress,
    delivery: &DueDelivery,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&delivery.url).map_err(|_| "cannot send to this URL")?;
    egress.check_host(&url).map_err(|e| e.to_string())?;
    let sent_at = clock::now();
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .header(
            SIGNATURE_HEADER,
            events::signature(&delivery.secret, sent_at, &delivery.payload),
        )
        .header("keygate-event-id", &delivery.event_id)
        .header("keygate-event-type", &delivery.event_type)
        .header("keygate-delivery-id", &delivery.id)
        .body(delivery.payload.clone())
        .send()
        .await;
    answer
        .map(|response| response.status().as_u16())
        .map_err(|e| failure(&e))
}

/// Why a send failed, without its URL (which may carry a token).
fn failure(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        source = cause.source();
    }
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_builder() {
        "cannot send to this URL"
    } else {
        "the request failed"
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_within_the_window() {
        let s = Schedule {
            backoff: 10,
            retry_for: 86_400,
        };
        assert_eq!(s.retry_at(1, 0, 0), Some(10));
        assert_eq!(s.retry_at(2, 0, 10), Some(30));
        assert_eq!(s.retry_at(3, 0, 30), Some(70));
        assert_eq!(s.retry_at(30, 0, 1000), Some(1000 + 3600));
        assert_eq!(s.retry_at(30, 0, 86_000), None);
    }
}

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

use crate::clock;
use crate::events::{self, SIGNATURE_HEADER};
use crate::store::events::{Attempt, DueDelivery};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Longest wait for a receiver's answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claimed delivery is not claimed again (seconds; past the timeout).
const LEASE: u64 = 60;
/// Most deliveries claimed at once.
const CLAIM: usize = 32;
/// How often the queue is looked at without a wake-up.
const POLL: Duration = Duration::from_secs(1);
/// Longest pause between two attempts (seconds).
const MAX_BACKOFF: u64 = 3600;

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

/// Runs the sender until the runtime stops.
pub fn spawn(store: Arc<dyn Store>, wake: Arc<Notify>, schedule: Schedule) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("keygate-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the webhook client: {e}"))?;
    tokio::spawn(async move {
        loop {
            while send_due(&store, &client, schedule).await > 0 {}
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = wake.notified() => {}
            }
        }
    });
    Ok(())
}

/// Claims and sends one batch; returns how many were claimed.
async fn send_due(store: &Arc<dyn Store>, client: &reqwest::Client, schedule: Schedule) -> usize {
    let now = clock::now();
    let due = match store.claim_due(now, now.saturating_add(LEASE), CLAIM).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim webhook deliveries; retrying");
            return 0;
        }
    };
    let claimed = due.len();
    let sends: Vec<_> = due
        .into_iter()
        .map(|delivery| {
            let (store, client) = (Arc::clone(store), client.clone());
            tokio::spawn(async move {
                let id = delivery.id.clone();
                let attempt = attempt(&client, &delivery, schedule).await;
                if let Err(e) = store.record_attempt(id, attempt).await {
                    tracing::warn!(error = %e, "cannot record a webhook attempt");
                }
            })
        })
        .collect();
    for send in sends {
        let _ = send.await;
    }
    claimed
}

/// Sends `delivery` once.
async fn attempt(client: &reqwest::Client, delivery: &DueDelivery, schedule: Schedule) -> Attempt {
    let sent_at = clock::now();
    let answer = client
        .post(&delivery.url)
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
    let (status, error) = match answer {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => {
            let code = response.status().as_u16();
            (Some(code), Some(format!("the receiver answered {code}")))
        }
        Err(e) => (None, Some(failure(&e))),
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

/// Why a send failed, without its URL (which may carry a token).
fn failure(e: &reqwest::Error) -> String {
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

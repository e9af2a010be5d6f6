//! Following the other replicas' writes: one connection LISTENs on the
//! channel every write notifies at commit, and each notification (or, at
//! the latest, every [`RECHECK`]) re-reads the committed version, so the
//! held long-polls of this replica wake for a change made through any
//! replica, and a lost notification costs at most [`RECHECK`].
//!
//! The notification's payload is only a hint: the version published is the
//! one read from the database.

use super::queries::CHANNEL;
use super::PostgresStore;
use futures_util::stream::{self, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// Longest time between two reads of the version.
pub const RECHECK: Duration = Duration::from_millis(250);
/// Wait before connecting again after the listening connection failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// Starts the listener and the re-check, for as long as the runtime runs.
pub fn spawn(config: Config, store: PostgresStore) {
    let nudge = Arc::new(Notify::new());
    tokio::spawn(listen(config, Arc::clone(&nudge)));
    tokio::spawn(recheck(store, nudge));
}

/// Re-reads the version when nudged, and every [`RECHECK`] anyway.
async fn recheck(store: PostgresStore, nudge: Arc<Notify>) {
    loop {
        // Either way: read the version.
        let _ = tokio::time::timeout(RECHECK, nudge.notified()).await;
        if let Err(e) = store.recheck().await {
            tracing::warn!(error = %e, "cannot read the feed version; retrying");
            tokio::time::sleep(RECHECK).await;
        }
    }
}

/// Keeps one connection listening on [`CHANNEL`], nudging on every
/// notification; connects again when it fails.
async fn listen(config: Config, nudge: Arc<Notify>) {
    loop {
        if let Err(e) = listen_once(&config, &nudge).await {
            tracing::warn!(error = %e, "listening for other replicas' writes failed; reconnecting");
        }
        // Writes meanwhile are seen by the re-check.
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn listen_once(config: &Config, nudge: &Arc<Notify>) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (ended, end) = tokio::sync::oneshot::channel();
    let nudger = Arc::clone(nudge);
    tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        let mut outcome = Ok(());
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => nudger.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        // Nobody waits any more if the listener itself ended.
        let _ = ended.send(outcome);
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Anything committed before LISTEN took effect.
    nudge.notify_one();
    match end.await {
        Ok(outcome) => outcome,
        Err(_) => Ok(()),
    }
}

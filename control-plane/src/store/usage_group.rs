//! Group commit of usage batches (SPEC §18): the batches that arrive while
//! a group is being written wait, and the next group takes them all and
//! writes them in one transaction (see [`super::usage_fold`]), one group at
//! a time per replica. So concurrent batches of the same keys do not queue
//! on each other's row locks, and an interval's batches touch each (key,
//! minute, outcome) row once per group, not once per batch. Each batch is
//! answered only after its group's commit, with its own answer.

use super::usage::UsageBatch;
use super::{Ingested, StoreError, StoreFuture};
use std::mem;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// A batch waiting for its group, and where its answer goes.
struct Waiting {
    batch: UsageBatch,
    answer: oneshot::Sender<Result<Ingested, StoreError>>,
}

/// The batches waiting for the next group, and the turn to write one.
#[derive(Default)]
pub struct Groups {
    waiting: Mutex<Vec<Waiting>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

fn gone() -> StoreError {
    StoreError::Backend("the usage write stopped before it answered".into())
}

impl Groups {
    /// Ingests `batch` with the next group; `write` writes a group in one
    /// transaction and answers per batch, in order. The write runs on its
    /// own task, so a caller that goes away stops no one's write.
    pub async fn ingest<W>(&self, batch: UsageBatch, write: W) -> Result<Ingested, StoreError>
    where
        W: FnOnce(Vec<UsageBatch>) -> StoreFuture<'static, Vec<Ingested>>,
    {
        let (answer, answered) = oneshot::channel();
        self.lock().push(Waiting { batch, answer });
        let turn = Arc::clone(&self.turn).lock_owned().await;
        // Every caller takes the turn once after queueing its batch: either
        // an earlier group took the batch, or this caller takes it now.
        let (batches, answers): (Vec<UsageBatch>, Vec<_>) = mem::take(&mut *self.lock())
            .into_iter()
            .filter(|w| !w.answer.is_closed())
            .map(|w| (w.batch, w.answer))
            .unzip();
        if !batches.is_empty() {
            let written = write(batches);
            tokio::spawn(async move {
                let results = match written.await {
                    Ok(results) if results.len() == answers.len() => {
                        results.into_iter().map(Ok).collect()
                    }
                    Ok(_) => vec![Err(gone()); answers.len()],
                    Err(e) => vec![Err(e); answers.len()],
                };
                for (answer, result) in answers.into_iter().zip(results) {
                    // The caller may have gone away; the write stands.
                    let _ = answer.send(result);
                }
                drop(turn);
            });
        } else {
            drop(turn);
        }
        answered.await.map_err(|_| gone())?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

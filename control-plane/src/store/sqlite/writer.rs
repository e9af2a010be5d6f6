//! The single writer of the SQLite store, with group commit.
//!
//! One thread owns the write connection. Jobs queued while a transaction
//! commits run together in the next one, each in its own savepoint (a failing
//! job rolls back alone), and all are answered after that one `COMMIT` with
//! `synchronous = FULL`: a job's future resolves only once its write is
//! durable. The new feed version is published before anyone is answered.

use super::queries;
use crate::store::{publish, StoreError};
use rusqlite::Connection;
use std::sync::mpsc;
use std::thread;
use tokio::sync::{oneshot, watch};

/// Most jobs committed together.
const MAX_BATCH: usize = 256;

/// Answers a job with the outcome of the commit.
type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs a job's work inside the open transaction (`None`: it could not open).
type Job = Box<dyn FnOnce(Option<&Connection>) -> Finish + Send>;

/// Handle to the writer thread.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Backend("the database writer stopped".into())
}

impl Writer {
    /// Starts the writer thread on `conn`, publishing versions to `version`.
    pub fn start(conn: Connection, version: watch::Sender<u64>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(&conn, &queue, &version))?;
        Ok(Writer { jobs })
    }

    /// Runs `work` in a write transaction; resolves once it is durable.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = conn.map(|conn| in_savepoint(conn, work));
            Box::new(move |commit| {
                // The caller may have gone away; the write stands either way.
                let _ = answer.send(settle(commit, result));
            })
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// A job's answer: its own result if the transaction committed.
fn settle<T>(
    commit: Result<(), StoreError>,
    result: Option<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match (commit, result) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(result)) => result,
        (Ok(()), None) => Err(stopped()),
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job")?;
    let result = work(conn);
    let end = if result.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    conn.execute_batch(end)?;
    result
}

fn run(conn: &Connection, queue: &mpsc::Receiver<Job>, version: &watch::Sender<u64>) {
    while let Ok(first) = queue.recv() {
        let batch: Vec<Job> = std::iter::once(first)
            .chain(queue.try_iter().take(MAX_BATCH - 1))
            .collect();
        let (finishers, commit) = run_batch(conn, batch);
        match &commit {
            Ok(()) => {
                if let Ok(v) = queries::version(conn) {
                    publish(version, v);
                }
            }
            Err(e) => tracing::error!(error = %e, "write transaction failed"),
        }
        for finish in finishers {
            finish(commit.clone());
        }
    }
}

fn run_batch(conn: &Connection, batch: Vec<Job>) -> (Vec<Finish>, Result<(), StoreError>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let finishers = batch.into_iter().map(|job| job(None)).collect();
        return (finishers, Err(e.into()));
    }
    let finishers = batch.into_iter().map(|job| job(Some(conn))).collect();
    let commit = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if commit.is_err() {
        // Nothing more to do if this fails too: the transaction is gone.
        let _ = conn.execute_batch("ROLLBACK");
    }
    (finishers, commit)
}

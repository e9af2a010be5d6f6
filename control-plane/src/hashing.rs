//! Bounded password hashing (SPEC §15): argon2id with its default cost (19
//! MiB, 2 passes), at most `at_once` at a time (`--max-concurrent-hashes`),
//! each in one of `at_once` memory areas kept for the next hash, so the
//! memory of hashing stays `at_once` × 19 MiB however many strangers sign
//! up at once (fresh areas per hash, freed by other threads, grew the
//! allocator's arenas by hundreds of MiB). A caller waits for a turn at
//! most `wait`, then gets 429 with `retry-after`. The hashes computed are
//! counted for `/metrics`.

use crate::errors::ApiError;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version, ARGON2ID_IDENT};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Longest wait for a turn to hash before the 429.
pub const HASH_WAIT: Duration = Duration::from_secs(2);
/// Turns by default: the cores of a small control-plane host.
pub const DEFAULT_AT_ONCE: usize = 2;
/// The `retry-after` of that 429, in seconds.
const RETRY_AFTER: u64 = 1;
/// Bytes of a salt.
const SALT_LEN: usize = 16;

/// One hash's memory.
type Area = Vec<Block>;

/// The bound on password hashes at once, their memory, and how many were
/// computed.
#[derive(Debug)]
pub struct Hashing {
    turns: Semaphore,
    /// Areas not in use (at most one per turn).
    areas: Mutex<Vec<Area>>,
    wait: Duration,
    done: AtomicU64,
}

impl Default for Hashing {
    fn default() -> Hashing {
        Hashing::new(DEFAULT_AT_ONCE, HASH_WAIT)
    }
}

impl Hashing {
    /// At most `at_once` hashes at a time (at least 1), each waiting at
    /// most `wait` for its turn.
    pub fn new(at_once: usize, wait: Duration) -> Hashing {
        Hashing {
            turns: Semaphore::new(at_once.max(1)),
            areas: Mutex::default(),
            wait,
            done: AtomicU64::new(0),
        }
    }

    /// Hashes (or checks) computed since the start.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// The argon2id PHC string of `password`, with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |area| phc(password.as_bytes(), area)).await
    }

    /// Whether `password` matches the PHC string `stored`.
    pub async fn verify(&self, password: String, stored: String) -> Result<bool, ApiError> {
        self.run(move |area| matches(password.as_bytes(), &stored, area))
            .await
    }

    /// Runs `work` on a blocking thread with an area, once a turn is free
    /// in time (else 429); a failure is logged and a 500.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Area) -> Result<T, String> + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = ApiError::RateLimited {
            retry_after: RETRY_AFTER,
        };
        let turn = tokio::time::timeout(self.wait, self.turns.acquire())
            .await
            .map_err(|_| busy)?
            .map_err(|_| ApiError::Internal)?;
        self.done.fetch_add(1, Ordering::Relaxed);
        let mut area = self.take_area();
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = work(&mut area);
            (area, outcome)
        })
        .await;
        let outcome = match outcome {
            Ok((area, outcome)) => {
                self.give_back(area);
                outcome
            }
            Err(e) => Err(e.to_string()),
        };
        drop(turn);
        outcome.map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ApiError::Internal
        })
    }

    fn take_area(&self) -> Area {
        let mut areas = self.areas.lock().unwrap_or_else(PoisonError::into_inner);
        areas.pop().unwrap_or_default()
    }

    fn give_back(&self, area: Area) {
        let mut areas = self.areas.lock().unwrap_or_else(PoisonError::into_inner);
        areas.push(area);
    }
}

/// `area`, grown to `blocks` if smaller.
fn sized(area: &mut Area, blocks: usize) -> &mut [Block] {
    if area.len() < blocks {
        area.resize(blocks, Block::new());
    }
    area.as_mut_slice()
}

/// The argon2id PHC string of `password` (default cost, fresh salt).
fn phc(password: &[u8], area: &mut Area) -> Result<String, String> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|_| "no randomness".to_string())?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let memory = sized(area, params.block_count());
    argon
        .hash_password_into_with_memory(password, &salt, &mut out, memory)
        .map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let hash = PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(hash.to_string())
}

/// Whether `password` hashes to the PHC string `stored` (its own cost
/// and salt; compared in constant time).
fn matches(password: &[u8], stored: &str, area: &mut Area) -> Result<bool, String> {
    let text = |e: argon2::password_hash::Error| e.to_string();
    let parsed = PasswordHash::new(stored).map_err(text)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err("a stored hash without salt or output".into());
    };
    let params = Params::try_from(&parsed).map_err(text)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(text)?;
    let version = parsed.version.map(Version::try_from).transpose();
    let version = version.map_err(|e| e.to_string())?.unwrap_or_default();
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes).map_err(text)?;
    let memory = sized(area, params.block_count());
    let argon = Argon2::new(algorithm, version, params);
    let computed = Output::init_with(expected.len(), |out| {
        Ok(argon.hash_password_into_with_memory(password, salt, out, &mut *memory)?)
    })
    .map_err(text)?;
    Ok(computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[tokio::test]
    async fn hashes_are_standard_phc_strings() {
        let hashing = Hashing::default();
        let stored = hashing.hash("correct horse".into()).await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        let parsed = PasswordHash::new(&stored).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(hashing
            .verify("battery staple".into(), theirs.clone())
            .await
            .unwrap());
        assert!(!hashing.verify("wrong".into(), theirs).await.unwrap());
        assert_eq!(hashing.done(), 3);
        assert_eq!(hashing.areas.lock().unwrap().len(), 1, "one area, reused");
    }

    #[tokio::test]
    async fn no_turn_in_time_is_a_429() {
        let hashing = Hashing::new(1, Duration::from_millis(20));
        let _held = hashing.turns.acquire().await.unwrap();
        let refused = hashing.hash("x".repeat(12)).await;
        assert_eq!(refused, Err(ApiError::RateLimited { retry_after: 1 }));
        assert_eq!(hashing.done(), 0);
    }
}

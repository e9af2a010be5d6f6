//! Dashboard passwords: their rules, and argon2id hashing and checking
//! (on a blocking thread: a hash takes tens of milliseconds by design),
//! at most [`Hashing`]'s bound at once, since each holds 19 MiB (SPEC §15).

use crate::errors::ApiError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Fewest characters of a password.
pub const MIN_LEN: usize = 10;
/// Most bytes of a password (argon2 takes any, this bounds the work).
pub const MAX_BYTES: usize = 256;

/// Longest wait for a turn to hash before the 429.
pub const HASH_WAIT: Duration = Duration::from_secs(2);
/// Turns by default: the cores of a small control-plane host.
pub const DEFAULT_AT_ONCE: usize = 2;
/// The `retry-after` of that 429, in seconds.
const RETRY_AFTER: u64 = 1;

/// The bound on password hashes at once (`--max-concurrent-hashes`), and
/// how many were computed (`/metrics`).
#[derive(Debug)]
pub struct Hashing {
    turns: Semaphore,
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
            wait,
            done: AtomicU64::new(0),
        }
    }

    /// Hashes (or checks) computed since the start.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Runs `work` once a turn is free in time; else 429.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = ApiError::RateLimited {
            retry_after: RETRY_AFTER,
        };
        let turn = tokio::time::timeout(self.wait, self.turns.acquire())
            .await
            .map_err(|_| busy)?
            .map_err(|_| ApiError::Internal)?;
        self.done.fetch_add(1, Ordering::Relaxed);
        let outcome = blocking(work).await;
        drop(turn);
        outcome
    }
}

/// A password as typed: never shown by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// `value` if it follows the rules; else a 400 naming `field`.
    pub fn new(value: String, field: &str) -> Result<Password, ApiError> {
        Password(value).check(field)
    }

    /// This password if it follows the rules; else a 400 naming `field`.
    pub fn check(self, field: &str) -> Result<Password, ApiError> {
        let value = self.0;
        let chars = value.chars().count();
        if chars < MIN_LEN || value.len() > MAX_BYTES {
            return Err(ApiError::invalid(
                field,
                format!(
                    "{field} must be at least {MIN_LEN} characters and at most {MAX_BYTES} bytes"
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                field,
                format!("{field} must not contain control characters"),
            ));
        }
        Ok(Password(value))
    }

    /// A password as typed at sign-in, unchecked (a wrong one just fails).
    pub fn typed(value: String) -> Password {
        Password(value)
    }

    /// The argon2id PHC string of this password, with a fresh salt (429
    /// if `hashing` has no turn free in time).
    pub async fn hash(self, hashing: &Hashing) -> Result<String, ApiError> {
        hashing
            .run(move || {
                let mut salt = [0u8; 16];
                getrandom::fill(&mut salt).map_err(|_| "no randomness".to_string())?;
                let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
                Argon2::default()
                    .hash_password(self.0.as_bytes(), &salt)
                    .map(|h| h.to_string())
                    .map_err(|e| e.to_string())
            })
            .await
    }

    /// Whether this password matches the PHC string `stored` (429 if
    /// `hashing` has no turn free in time).
    pub async fn verify(self, stored: String, hashing: &Hashing) -> Result<bool, ApiError> {
        hashing
            .run(move || {
                let parsed = PasswordHash::new(&stored).map_err(|e| e.to_string())?;
                Ok(Argon2::default()
                    .verify_password(self.0.as_bytes(), &parsed)
                    .is_ok())
            })
            .await
    }
}

/// Runs `work` on a blocking thread; a failure is logged and a 500.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    let outcome = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
    outcome.map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        ApiError::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rules_hash_and_verify() {
        assert!(Password::new("short".into(), "password").is_err());
        assert!(Password::new("x".repeat(MAX_BYTES + 1), "password").is_err());
        assert!(Password::new("tab\tinside password".into(), "password").is_err());
        let p = Password::new("correct horse battery".into(), "password").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
        let hashing = Hashing::default();
        let stored = p.hash(&hashing).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        let right = Password::typed("correct horse battery".into());
        assert!(right.verify(stored.clone(), &hashing).await.unwrap());
        assert!(!Password::typed("wrong".into())
            .verify(stored, &hashing)
            .await
            .unwrap());
        assert_eq!(hashing.done(), 3);
    }

    #[tokio::test]
    async fn no_turn_in_time_is_a_429() {
        let hashing = Hashing::new(1, Duration::from_millis(20));
        let _held = hashing.turns.acquire().await.unwrap();
        let refused = Password::typed("x".repeat(12)).hash(&hashing).await;
        assert_eq!(refused, Err(ApiError::RateLimited { retry_after: 1 }));
        assert_eq!(hashing.done(), 0);
    }
}

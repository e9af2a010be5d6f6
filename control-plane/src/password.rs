//! Dashboard passwords: their rules, and argon2id hashing and checking
//! (on a blocking thread: a hash takes tens of milliseconds by design).

use crate::errors::ApiError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::fmt;

/// Fewest characters of a password.
pub const MIN_LEN: usize = 10;
/// Most bytes of a password (argon2 takes any, this bounds the work).
pub const MAX_BYTES: usize = 256;

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

    /// The argon2id PHC string of this password, with a fresh salt.
    pub async fn hash(self) -> Result<String, ApiError> {
        blocking(move || {
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

    /// Whether this password matches the PHC string `stored`.
    pub async fn verify(self, stored: String) -> Result<bool, ApiError> {
        blocking(move || {
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
        let stored = p.hash().await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        let right = Password::typed("correct horse battery".into());
        assert!(right.verify(stored.clone()).await.unwrap());
        assert!(!Password::typed("wrong".into())
            .verify(stored)
            .await
            .unwrap());
    }
}

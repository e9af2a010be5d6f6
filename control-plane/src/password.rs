//! Dashboard passwords: their rules, and their argon2id hashing and
//! checking, bounded by crate::hashing.

use crate::errors::ApiError;
use crate::hashing::Hashing;
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

    /// The argon2id PHC string of this password, with a fresh salt (429
    /// if `hashing` has no turn free in time).
    pub async fn hash(self, hashing: &Hashing) -> Result<String, ApiError> {
        hashing.hash(self.0).await
    }

    /// Whether this password matches the PHC string `stored` (429 if
    /// `hashing` has no turn free in time).
    pub async fn verify(self, stored: String, hashing: &Hashing) -> Result<bool, ApiError> {
        hashing.verify(self.0, stored).await
    }
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
}

//! Slows down guessing passwords (SPEC §12, §15): sign-ins are counted per
//! account (email) and per client address in the database
//! (crate::store::throttles), so every replica counts the same. An attempt
//! is counted as a failure BEFORE its password is checked, so a burst of
//! parallel guesses gets no more checks than a sequence; a success clears
//! the account's and the address's count. After [`FREE_FAILURES`] in a
//! row, each further one locks that account or address for twice as long
//! as the last (1 s, 2 s, 4 s … up to [`MAX_LOCK`]); while locked, a
//! sign-in is refused without checking the password.

use crate::errors::ApiError;
use crate::store::throttles::Rule;
use crate::store::Store;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Failures in a row before the first lock.
pub const FREE_FAILURES: u32 = 3;
/// The longest lock.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// The throttle rows' scope.
const SCOPE: &str = "sign_in";
/// Characters of an email kept as a row's key.
const MAX_EMAIL_CHARS: usize = 320;

const RULE: Rule = Rule::Lockout {
    free: FREE_FAILURES,
    max_lock_ms: MAX_LOCK.as_millis() as u64,
};

/// Unix ms now.
pub fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole seconds of `ms`, rounded up, at least 1 (a `retry-after`).
pub fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// The rows of a sign-in of `email` from `address`: the account's first.
fn keys(email: &str, address: &str) -> [String; 2] {
    let email: String = email
        .trim()
        .to_lowercase()
        .chars()
        .take(MAX_EMAIL_CHARS)
        .collect();
    [format!("account:{email}"), format!("address:{address}")]
}

/// Counts a sign-in of `email` from `address` before its password is
/// checked; `Err(seconds)` to wait while either is locked (uncounted).
pub async fn reserve(
    store: &dyn Store,
    email: &str,
    address: &str,
) -> Result<Result<(), u64>, ApiError> {
    for key in keys(email, address) {
        if let Err(wait) = store.take(SCOPE, key, RULE, now_ms()).await? {
            return Ok(Err(seconds(wait)));
        }
    }
    Ok(Ok(()))
}

/// Clears the counts of `email` and `address` after a success.
pub async fn succeeded(store: &dyn Store, email: &str, address: &str) -> Result<(), ApiError> {
    store.clear(SCOPE, keys(email, address).to_vec()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_seconds() {
        assert_eq!(
            keys(" A@X.test ", "1.2.3.4"),
            ["account:a@x.test".to_string(), "address:1.2.3.4".into()]
        );
        assert_eq!(keys(&"a".repeat(1000), "")[0].len(), 8 + MAX_EMAIL_CHARS);
        assert_eq!((seconds(1), seconds(1000), seconds(1001)), (1, 1, 2));
    }
}

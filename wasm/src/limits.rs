//! A key's own rate limits over Envoy's shared data: the core's counter
//! ([`keygate::limits`]) keeps each key's counts under
//! `keygate:limits:<key id>`, shared by every worker's VM, and writes them
//! with the CAS token of the read (a lost race is read again).
//!
//! Only keys that have limits reach it, so other requests make no host call
//! here. A key's first count is written without a token (the ABI has no
//! "create if absent"): two workers counting a key's very first request in
//! the same instant may count it once. Entries stay for the process's life
//! (16 bytes per key that ever used its limits).

use crate::host::{self, Status};
use keygate::ids::KeyId;
use keygate::limits::{CountStore, Counts, LimitError};

/// The counts of every key, in the VM group's shared data.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedCounts;

fn name(key: KeyId) -> String {
    format!("keygate:limits:{}", key.text().as_str())
}

impl CountStore for SharedCounts {
    type Version = u32;

    fn read(&mut self, key: KeyId) -> Result<Option<(Counts, u32)>, LimitError> {
        let (bytes, cas) = host::shared_data(&name(key)).map_err(|_| LimitError::SharedData)?;
        // A value of another shape is overwritten (with its token).
        Ok(cas.map(|cas| (Counts::from_bytes(&bytes).unwrap_or_default(), cas)))
    }

    fn write(&mut self, key: KeyId, counts: Counts, seen: Option<u32>) -> Result<bool, LimitError> {
        match host::set_shared_data(&name(key), &counts.to_bytes(), seen) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(_) => Err(LimitError::SharedData),
        }
    }
}

//! [`Store`] over Envoy's shared data (process-wide, per `vm_id`).

use crate::host;
use keygate::engine::store::Store;

/// The host's shared data.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        host::shared_data(key).unwrap_or_default()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        host::set_shared_data(key, value, cas).is_ok()
    }
}

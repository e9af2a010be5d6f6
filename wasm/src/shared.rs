//! [`Store`] over Envoy's shared data (process-wide, per `vm_id`).

use crate::sync::Store;
use proxy_wasm::hostcalls;

/// The host's shared data.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => (value.unwrap_or_default(), cas),
            Err(_) => (Vec::new(), None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }
}

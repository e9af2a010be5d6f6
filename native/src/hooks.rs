//! Every function Envoy calls (the ABI's event hooks), each behind
//! [`guard`]: a panic is caught at the boundary, logged, and answered with
//! the hook's safe result (a request is refused with 503, never let through).
//!
//! Envoy requires the per-stream hooks even when they do nothing here (the
//! callout and stream hooks of a filter, the watermark ones); the
//! configuration-level ones (`..._config_scheduled`,
//! `..._config_http_callout_done`) carry the timer and the feed. The hooks
//! keygate leaves idle are in [`crate::idle_hooks`].

use crate::abi::{self, ConfigEnvoy, EnvoyBuffer, EnvoyHeader, FilterEnvoy};
use crate::config::ConfigHandle;
use crate::filter::{send_deny, Filter, Step};
use crate::log;
use crate::shared::{EVENT_CHECK_KEY, EVENT_DECIDE};
use crate::timer::EVENT_TICK;
use keygate::decision::Deny;
use keygate::errors::ErrorFormat;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Runs `f`, or returns `fallback` (after logging) if it panicked.
fn guard<R>(hook: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            // Logging itself may fail: never let that unwind into Envoy.
            let _ = catch_unwind(|| {
                log::error(&format!("panic caught in {hook}; failing closed"));
            });
            fallback
        }
    }
}

/// The configuration behind a module pointer Envoy hands back.
///
/// # Safety
/// `ptr` must be null or a pointer made by `on_http_filter_config_new` and
/// not yet destroyed.
unsafe fn config<'a>(ptr: *const c_void) -> Option<&'a ConfigHandle> {
    // SAFETY: the caller's contract.
    unsafe { ptr.cast::<ConfigHandle>().as_ref() }
}

/// The stream behind a module pointer Envoy hands back.
///
/// # Safety
/// `ptr` must be null or a pointer made by `on_http_filter_new` and not yet
/// destroyed; Envoy calls one stream's hooks on one thread, one at a time.
unsafe fn filter<'a>(ptr: *const c_void) -> Option<&'a mut Filter> {
    // SAFETY: the caller's contract.
    unsafe { ptr.cast::<Filter>().cast_mut().as_mut() }
}

/// Refuses the request on `envoy` with 503 (a caught panic or a missing
/// stream object, so in the default `keygate` dialect): fail closed.
fn refuse_closed(envoy: FilterEnvoy) -> u32 {
    let _ = catch_unwind(|| send_deny(envoy, &Deny::not_ready(), ErrorFormat::default()));
    abi::status::STOP_ITERATION
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr()
}

/// # Safety
/// Envoy's contract: `name` and `config` are valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: ConfigEnvoy,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guard("on_http_filter_config_new", std::ptr::null(), || {
        // SAFETY: Envoy's buffers are valid for this call.
        let (name, json) = unsafe { (name.bytes(), config.bytes()) };
        if name != b"keygate" {
            log::warn(&format!(
                "filter_name is {:?}; this module's filter is \"keygate\"",
                String::from_utf8_lossy(name)
            ));
        }
        match ConfigHandle::new(envoy, json) {
            Ok(handle) => Box::into_raw(Box::new(handle)).cast_const().cast(),
            Err(e) => {
                log::error(&e);
                std::ptr::null()
            }
        }
    })
}

/// # Safety
/// `ptr` comes from `on_http_filter_config_new`, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(ptr: *const c_void) {
    guard("on_http_filter_config_destroy", (), || {
        if !ptr.is_null() {
            // SAFETY: made by `Box::into_raw` in config_new; Envoy destroys it once.
            drop(unsafe { Box::from_raw(ptr.cast::<ConfigHandle>().cast_mut()) });
        }
    })
}

/// # Safety
/// `config_ptr` comes from `on_http_filter_config_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config_ptr: *const c_void,
    envoy: FilterEnvoy,
) -> *const c_void {
    guard("on_http_filter_new", std::ptr::null(), || {
        // SAFETY: Envoy's contract.
        let Some(config) = (unsafe { config(config_ptr) }) else {
            return std::ptr::null();
        };
        let filter = Filter::new(Arc::clone(&config.shared), envoy);
        Box::into_raw(Box::new(filter)).cast_const().cast()
    })
}

/// # Safety
/// Envoy's contract (see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoy,
    ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    let decided = guard("on_http_filter_request_headers", None, || {
        // SAFETY: Envoy's contract.
        let f = unsafe { filter(ptr) }?;
        Some(match f.decide(true) {
            Step::Continue => abi::status::CONTINUE,
            Step::Refused | Step::Waiting => abi::status::STOP_ITERATION,
        })
    });
    decided.unwrap_or_else(|| refuse_closed(envoy))
}

/// Body and trailers wait with their headers; every frame of a WebSocket
/// checks its key.
///
/// # Safety
/// Envoy's contract (see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _envoy: FilterEnvoy,
    ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guard(
        "on_http_filter_request_body",
        abi::status::STOP_AND_BUFFER,
        || {
            // SAFETY: Envoy's contract.
            let hold =
                unsafe { filter(ptr) }.is_none_or(|f| f.is_waiting() || f.close_if_key_died());
            if hold {
                abi::status::STOP_AND_BUFFER
            } else {
                abi::status::CONTINUE
            }
        },
    )
}

/// # Safety
/// Envoy's contract (see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: FilterEnvoy,
    ptr: *const c_void,
) -> u32 {
    guard(
        "on_http_filter_request_trailers",
        abi::status::STOP_ITERATION,
        || {
            // SAFETY: Envoy's contract.
            match unsafe { filter(ptr) } {
                Some(f) if !f.is_waiting() => abi::status::CONTINUE,
                _ => abi::status::STOP_ITERATION,
            }
        },
    )
}

/// Usage counting and the cost header ([`Filter::on_response_headers`]).
///
/// # Safety
/// Envoy's contract (see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _envoy: FilterEnvoy,
    ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guard(
        "on_http_filter_response_headers",
        abi::status::CONTINUE,
        || {
            // SAFETY: Envoy's contract.
            if let Some(f) = unsafe { filter(ptr) } {
                f.on_response_headers();
            }
            abi::status::CONTINUE
        },
    )
}

/// # Safety
/// Envoy's contract (see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: FilterEnvoy,
    ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guard(
        "on_http_filter_response_body",
        abi::status::STOP_AND_BUFFER,
        || {
            // SAFETY: Envoy's contract.
            if unsafe { filter(ptr) }.is_some_and(|f| f.close_if_key_died()) {
                abi::status::STOP_AND_BUFFER
            } else {
                abi::status::CONTINUE
            }
        },
    )
}

/// # Safety
/// Envoy's contract (see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: FilterEnvoy,
    ptr: *const c_void,
) {
    guard("on_http_filter_stream_complete", (), || {
        // SAFETY: Envoy's contract.
        if let Some(f) = unsafe { filter(ptr) } {
            f.on_complete();
        }
    })
}

/// # Safety
/// `ptr` comes from `on_http_filter_new`, destroyed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(ptr: *const c_void) {
    guard("on_http_filter_destroy", (), || {
        if !ptr.is_null() {
            // SAFETY: made by `Box::into_raw` in filter_new; Envoy destroys it once.
            drop(unsafe { Box::from_raw(ptr.cast::<Filter>().cast_mut()) });
        }
    })
}

/// Events committed by the main thread to one stream's scheduler.
///
/// # Safety
/// Envoy's contract (see [`filter`]).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: FilterEnvoy,
    ptr: *const c_void,
    event: u64,
) {
    let done = guard("on_http_filter_scheduled", false, || {
        // SAFETY: Envoy's contract.
        let Some(f) = (unsafe { filter(ptr) }) else {
            return true;
        };
        match event {
            EVENT_DECIDE => f.on_decide_event(),
            EVENT_CHECK_KEY => {
                f.close_if_key_died();
            }
            _ => {}
        }
        true
    });
    if !done && event == EVENT_DECIDE {
        refuse_closed(envoy);
    }
}

/// The timer's ticks, on the main thread.
///
/// # Safety
/// `ptr` comes from `on_http_filter_config_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _envoy: ConfigEnvoy,
    ptr: *const c_void,
    event: u64,
) {
    guard("on_http_filter_config_scheduled", (), || {
        // SAFETY: Envoy's contract.
        if let Some(config) = unsafe { config(ptr) } {
            if event == EVENT_TICK {
                config.on_tick();
            }
        }
    })
}

/// The answer to a feed request, on the main thread.
///
/// # Safety
/// Envoy's contract: `headers` and `chunks` hold the given number of
/// entries (or are null), valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _envoy: ConfigEnvoy,
    ptr: *const c_void,
    id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) {
    guard("on_http_filter_config_http_callout_done", (), || {
        // SAFETY: Envoy's contract.
        let Some(config) = (unsafe { config(ptr) }) else {
            return;
        };
        // SAFETY: Envoy's arrays, valid for this call.
        let (headers, chunks) =
            unsafe { (slice(headers, headers_size), slice(chunks, chunks_size)) };
        let status = (result == abi::CALLOUT_SUCCESS)
            .then(|| status_of(headers))
            .flatten();
        let body = if status == Some(200) {
            // SAFETY: each chunk is valid for this call.
            chunks
                .iter()
                .flat_map(|c| unsafe { c.bytes() })
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        config.on_answer(id, status, &body);
    })
}

/// A slice over an array Envoy lends (empty for null).
///
/// # Safety
/// `ptr` must be null or point to `len` values valid for `'a`.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// The `:status` of a callout answer.
fn status_of(headers: &[EnvoyHeader]) -> Option<u16> {
    headers.iter().find_map(|h| {
        // SAFETY: valid for the hook (see the caller).
        let (name, value) = unsafe { (h.key.bytes(), h.value.bytes()) };
        (name == b":status")
            .then(|| std::str::from_utf8(value).ok()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ModuleBuffer;

    // Stand-ins for the callbacks these tests reach (Envoy exports the real ones).

    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_log(_level: u32, _message: ModuleBuffer) {}

    #[no_mangle]
    extern "C" fn envoy_dynamic_module_callback_log_enabled(_level: u32) -> bool {
        true
    }

    #[test]
    fn a_panic_is_caught_and_answered_with_the_fallback() {
        let answer = guard("test", 7, || -> u32 { panic!("boom") });
        assert_eq!(answer, 7);
    }

    #[test]
    fn the_module_reports_the_abi_it_was_built_for() {
        // SAFETY: a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(envoy_dynamic_module_on_program_init()) };
        assert_eq!(version.to_str().unwrap(), "v0.2.0");
    }
}

//! The floor of any Envoy dynamic module: reads one request header, sets one.
//!
//! The dynamic-module counterpart of `bench/minimal-filter`: an
//! `envoy.filters.http.dynamic_modules` HTTP filter for Envoy 1.40 (ABI
//! `v0.2.0`) that, on request headers, reads `x-api-key` by name (1
//! callback) and sets `x-minimal-seen` (1 callback), then continues. The gap
//! between this and no filter is what any native module costs; between this
//! and keygate native, keygate's own work. Built with the `native` profile:
//! `cargo build --profile native -p minimal-native` ->
//! `target/native/libminimal_native.so`.
//!
//! The types and callbacks come from keygate-native's own bindings
//! (`native/src/abi.rs`, included by path, not linked: linking that crate
//! would bring in its hooks); the one callback they lack, reading a header
//! by name, is declared here from the ABI's documented signature. Nothing
//! here can panic, so the hooks need no unwind guard. Envoy requires every
//! per-stream hook; those this filter does not use do nothing, and those
//! keygate leaves idle too are keygate's own (`native/src/idle_hooks.rs`,
//! included by path as well).

#[allow(dead_code)]
#[path = "../../../native/src/abi.rs"]
mod abi;

#[path = "../../../native/src/idle_hooks.rs"]
mod idle_hooks;

use abi::{ConfigEnvoy, EnvoyBuffer, EnvoyHeader, FilterEnvoy, ModuleBuffer};
use std::ffi::{c_char, c_void};

extern "C" {
    /// The `index`-th value of header `key` into `result` (null if absent);
    /// `optional_size` (may be null) receives how many values it has.
    fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoy,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
}

/// What config_new and filter_new hand Envoy: the filter keeps no state,
/// but Envoy takes a null pointer for a failure.
static NO_STATE: u8 = 0;

fn no_state() -> *const c_void {
    std::ptr::addr_of!(NO_STATE).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _envoy: ConfigEnvoy,
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    no_state()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_ptr: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    _config: *const c_void,
    _envoy: FilterEnvoy,
) -> *const c_void {
    no_state()
}

/// The floor: one header read by name, one header set.
///
/// # Safety
/// Envoy's contract: `envoy` is the stream's filter, valid for this call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoy,
    _ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    let mut key = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
    // SAFETY: Envoy's contract; `key` is written for the length of this hook.
    let found = unsafe {
        envoy_dynamic_module_callback_http_get_header(
            envoy,
            abi::REQUEST_HEADERS,
            ModuleBuffer::of(b"x-api-key"),
            &mut key,
            0,
            std::ptr::null_mut(),
        )
    };
    let seen: &[u8] = if found && key.length > 0 { b"1" } else { b"0" };
    // SAFETY: Envoy's contract; Envoy copies both buffers.
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            envoy,
            abi::REQUEST_HEADERS,
            ModuleBuffer::of(b"x-minimal-seen"),
            ModuleBuffer::of(seen),
        );
    }
    abi::status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    abi::status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
) -> u32 {
    abi::status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    abi::status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    abi::status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_ptr: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _event: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _envoy: ConfigEnvoy,
    _ptr: *const c_void,
    _event: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _envoy: ConfigEnvoy,
    _ptr: *const c_void,
    _id: u64,
    _result: u32,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _body: *const EnvoyBuffer,
    _body_chunks: usize,
) {
}

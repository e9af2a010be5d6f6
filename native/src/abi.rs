//! Our own declarations of the part of Envoy's dynamic-module ABI this
//! module uses (Envoy 1.40, ABI `v0.2.0`): the C types, and the callbacks
//! Envoy exports. Written from the ABI's documented signatures; the hooks
//! Envoy calls are defined in [`crate::hooks`].
//!
//! Every callback declared here must be exported by the Envoy binary:
//! `tests/abi_symbols.rs` compares this module's imports (`nm -D
//! --undefined-only`) with the binary's exports, so a drift fails a test
//! rather than a request (Envoy loads modules with `RTLD_LAZY`: a missing
//! callback would only show when first called).

use std::ffi::c_void;

/// The ABI version this module was built for (Envoy 1.40).
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

/// Envoy's filter configuration object (`..._http_filter_config_envoy_ptr`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct ConfigEnvoy(pub *mut c_void);

/// Envoy's per-stream filter object (`..._http_filter_envoy_ptr`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct FilterEnvoy(pub *mut c_void);
/// A scheduler Envoy allocated for the module (filter or configuration).
pub type SchedulerPtr = *mut c_void;

/// Bytes owned by the module, lent to Envoy for one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// The null buffer (e.g. "no value": remove the header).
    pub fn null() -> ModuleBuffer {
        ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

/// Bytes owned by Envoy, valid for the current hook.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    /// The bytes; empty for a null pointer.
    ///
    /// # Safety
    /// `ptr` must point to `length` readable bytes for the lifetime `'a`.
    pub unsafe fn bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract.
            unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
        }
    }
}

/// A header pair owned by Envoy (request headers, callout answers).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHeader {
    pub key: EnvoyBuffer,
    pub value: EnvoyBuffer,
}

impl EnvoyHeader {
    pub fn empty() -> EnvoyHeader {
        let none = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        EnvoyHeader {
            key: none,
            value: none,
        }
    }
}

/// A header pair owned by the module (local replies, callout requests).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    pub key: ModuleBuffer,
    pub value: ModuleBuffer,
}

impl ModuleHeader {
    pub fn of(name: &str, value: &str) -> ModuleHeader {
        ModuleHeader {
            key: ModuleBuffer::of(name.as_bytes()),
            value: ModuleBuffer::of(value.as_bytes()),
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`: the request header map.
pub const REQUEST_HEADERS: u32 = 0;
/// `envoy_dynamic_module_type_http_header_type`: the response header map.
pub const RESPONSE_HEADERS: u32 = 2;

/// `envoy_dynamic_module_type_log_level` values.
pub mod level {
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
}

/// Hook statuses (`FilterHeadersStatus`, `FilterDataStatus`, `FilterTrailersStatus`).
pub mod status {
    pub const CONTINUE: u32 = 0;
    /// Headers: `StopIteration`; trailers: `StopIteration`.
    pub const STOP_ITERATION: u32 = 1;
    /// Body: `StopIterationAndBuffer`.
    pub const STOP_AND_BUFFER: u32 = 1;
}

/// `envoy_dynamic_module_type_http_callout_init_result_Success`.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result_Success`.
pub const CALLOUT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result_Success`.
pub const METRICS_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_filter_stream_reset_reason_LocalReset`.
pub const RESET_LOCAL: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoy,
        header_type: u32,
    ) -> usize;
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoy,
        header_type: u32,
        result: *mut EnvoyHeader,
    ) -> bool;
    /// Replaces every value of `key`; a null `value` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoy,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// Adds a value of `key`, keeping those it has (cheaper than a set:
    /// nothing is looked for or removed).
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoy,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoy,
        status_code: u32,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoy);
    pub fn envoy_dynamic_module_callback_http_filter_reset_stream(
        filter: FilterEnvoy,
        reason: u32,
        details: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoy,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);

    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigEnvoy,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: SchedulerPtr,
    );

    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoy,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoy,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoy,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoy,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

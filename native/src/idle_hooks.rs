//! The HTTP filter hooks Envoy requires of every module that a filter may
//! leave idle: per-stream callouts and streams, response trailers and the
//! downstream watermarks. keygate starts no per-stream callouts, is no
//! terminal filter and passes response trailers on, so each does nothing;
//! nothing here can panic, so they need no unwind guard. Shared with
//! `bench/minimal-native` (included by path), which leaves them idle too.

use crate::abi::{self, EnvoyBuffer, EnvoyHeader, FilterEnvoy};
use std::ffi::c_void;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
) -> u32 {
    abi::status::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _id: u64,
    _result: u32,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _chunks: *const EnvoyBuffer,
    _chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _stream: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _stream: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _stream: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _stream: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
    _stream: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: FilterEnvoy,
    _ptr: *const c_void,
) {
}

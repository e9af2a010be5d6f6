//! Every call into Envoy, as safe functions over [`crate::abi`].
//!
//! The rest of the crate never touches a raw callback: the pointers Envoy
//! lends are only turned into slices here, for the hook they are valid in,
//! and every status Envoy returns is handled.

use crate::abi::{self, ConfigEnvoy, EnvoyHeader, FilterEnvoy, ModuleBuffer, ModuleHeader};
use keygate::engine::request::FeedRequest;
use keygate::engine::usage::UsageRequest;
use smallvec::SmallVec;
use std::borrow::Cow;

/// Logs `message` at `level` (an [`abi::level`] value) under Envoy's
/// `dynamic_modules` logger.
pub fn log(level: u32, message: &str) {
    // SAFETY: the buffer lives for the call.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

/// True when Envoy would print a line at `level`.
pub fn log_enabled(level: u32) -> bool {
    // SAFETY: no pointer.
    unsafe { abi::envoy_dynamic_module_callback_log_enabled(level) }
}

/// Header maps up to this size are read onto the stack (no allocation);
/// Envoy's request and response maps are far smaller as a rule.
const INLINE_HEADERS: usize = 32;

/// `(name, value)` pairs of a header map, as the core reads them.
pub type HeaderPairs<'h> = SmallVec<[(Cow<'h, str>, Cow<'h, str>); INLINE_HEADERS]>;

/// Bytes as text without a copy when they are UTF-8 (headers are ASCII as
/// a rule: checked first, the fastest test), else with U+FFFD.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        String::from_utf8_lossy(bytes)
    }
}

/// The request (or response) headers of `filter`, in one call, as pointers
/// into Envoy's header map: valid until the hook returns or a header is changed.
pub struct RequestHeaders {
    raw: SmallVec<[EnvoyHeader; INLINE_HEADERS]>,
}

impl RequestHeaders {
    /// Reads them; `None` when Envoy has none to give (no request headers).
    pub fn read(filter: FilterEnvoy) -> Option<RequestHeaders> {
        RequestHeaders::read_map(filter, abi::REQUEST_HEADERS)
    }

    /// Reads the response headers instead (in the response headers hook).
    pub fn read_response(filter: FilterEnvoy) -> Option<RequestHeaders> {
        RequestHeaders::read_map(filter, abi::RESPONSE_HEADERS)
    }

    fn read_map(filter: FilterEnvoy, map: u32) -> Option<RequestHeaders> {
        // SAFETY: `filter` is the pointer Envoy gave the current hook.
        let n = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(filter, map) };
        let mut raw = SmallVec::from_elem(EnvoyHeader::empty(), n);
        // SAFETY: `raw` holds the `n` entries Envoy writes.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(filter, map, raw.as_mut_ptr())
        };
        ok.then_some(RequestHeaders { raw })
    }

    /// The first value of `name` (lowercase), as bytes.
    pub fn value(&self, name: &str) -> Option<&[u8]> {
        self.raw.iter().find_map(|h| {
            // SAFETY: Envoy's buffers are valid while `self` is (this hook).
            let (key, value) = unsafe { (h.key.bytes(), h.value.bytes()) };
            key.eq_ignore_ascii_case(name.as_bytes()).then_some(value)
        })
    }

    /// `(name, value)` pairs; a name or value that is not UTF-8 reads with
    /// U+FFFD (never a valid key, but still a header).
    pub fn pairs(&self) -> HeaderPairs<'_> {
        self.raw
            .iter()
            .map(|h| {
                // SAFETY: Envoy's buffers are valid while `self` is (this hook).
                let (name, value) = unsafe { (h.key.bytes(), h.value.bytes()) };
                (text(name), text(value))
            })
            .collect()
    }
}

/// Writes to a request's header map. A write may free what [`RequestHeaders`]
/// lent: nothing read from it may be used after the first write.
pub trait HeaderWriter {
    /// Sets `name` to `value` (every other value goes), or removes it when
    /// `value` is `None`; false when refused.
    fn set(&mut self, name: &str, value: Option<&str>) -> bool;
    /// Adds `name: value`; false when refused.
    fn add(&mut self, name: &str, value: &str) -> bool;
}

/// The request headers of the stream `filter`, as Envoy holds them.
pub struct EnvoyRequestHeaders(pub FilterEnvoy);

impl HeaderWriter for EnvoyRequestHeaders {
    fn set(&mut self, name: &str, value: Option<&str>) -> bool {
        set_request_header(self.0, name, value)
    }

    fn add(&mut self, name: &str, value: &str) -> bool {
        add_request_header(self.0, name, value)
    }
}

/// Sets request header `name` to `value` (every other value goes), or
/// removes it when `value` is `None`; false when Envoy refused.
pub fn set_request_header(filter: FilterEnvoy, name: &str, value: Option<&str>) -> bool {
    let value = value.map_or(ModuleBuffer::null(), |v| ModuleBuffer::of(v.as_bytes()));
    // SAFETY: the buffers live for the call; `filter` is the current hook's.
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            filter,
            abi::REQUEST_HEADERS,
            ModuleBuffer::of(name.as_bytes()),
            value,
        )
    }
}

/// Adds request header `name` with `value` (one the request does not
/// have: a set would look for it first); false when Envoy refused.
pub fn add_request_header(filter: FilterEnvoy, name: &str, value: &str) -> bool {
    // SAFETY: the buffers live for the call; `filter` is the current hook's.
    unsafe {
        abi::envoy_dynamic_module_callback_http_add_header(
            filter,
            abi::REQUEST_HEADERS,
            ModuleBuffer::of(name.as_bytes()),
            ModuleBuffer::of(value.as_bytes()),
        )
    }
}

/// Removes response header `name`; false when Envoy refused.
pub fn remove_response_header(filter: FilterEnvoy, name: &str) -> bool {
    // SAFETY: the buffer lives for the call; `filter` is the current hook's.
    unsafe {
        abi::envoy_dynamic_module_callback_http_set_header(
            filter,
            abi::RESPONSE_HEADERS,
            ModuleBuffer::of(name.as_bytes()),
            ModuleBuffer::null(),
        )
    }
}

/// Sends a local reply (the stream stops here).
pub fn send_response(filter: FilterEnvoy, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut headers: Vec<ModuleHeader> = headers
        .iter()
        .map(|(n, v)| ModuleHeader::of(n, v))
        .collect();
    // SAFETY: every buffer lives for the call.
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            filter,
            u32::from(status),
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(body),
            ModuleBuffer::of(b"keygate"),
        )
    }
}

/// Lets a paused request go on to the next filter.
pub fn continue_decoding(filter: FilterEnvoy) {
    // SAFETY: `filter` is the current hook's.
    unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(filter) }
}

/// Resets the stream (a WebSocket whose key died).
pub fn reset_stream(filter: FilterEnvoy) {
    // SAFETY: the buffer lives for the call.
    unsafe {
        abi::envoy_dynamic_module_callback_http_filter_reset_stream(
            filter,
            abi::RESET_LOCAL,
            ModuleBuffer::of(b"keygate_key_died"),
        )
    }
}

/// A scheduler of one stream: events committed from any thread run as
/// `on_http_filter_scheduled` on that stream's worker. Deleted on drop.
#[derive(Debug)]
pub struct FilterScheduler(abi::SchedulerPtr);

// SAFETY: Envoy's schedulers are made to be committed from any thread.
unsafe impl Send for FilterScheduler {}
// SAFETY: as above; `commit` takes `&self` and Envoy serialises.
unsafe impl Sync for FilterScheduler {}

impl FilterScheduler {
    pub fn new(filter: FilterEnvoy) -> Option<FilterScheduler> {
        // SAFETY: `filter` is the current hook's.
        let ptr = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter) };
        (!ptr.is_null()).then_some(FilterScheduler(ptr))
    }

    pub fn commit(&self, event: u64) {
        // SAFETY: the scheduler is alive until drop.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, event) }
    }
}

impl Drop for FilterScheduler {
    fn drop(&mut self) {
        // SAFETY: made by `new`, deleted once.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

/// The configuration's scheduler: events run as
/// `on_http_filter_config_scheduled` on the main thread. Deleted on drop.
#[derive(Debug)]
pub struct ConfigScheduler(abi::SchedulerPtr);

// SAFETY: Envoy's schedulers are made to be committed from any thread.
unsafe impl Send for ConfigScheduler {}
// SAFETY: as above.
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    pub fn new(config: ConfigEnvoy) -> Option<ConfigScheduler> {
        // SAFETY: `config` is the pointer of the current config hook.
        let ptr =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        (!ptr.is_null()).then_some(ConfigScheduler(ptr))
    }

    pub fn commit(&self, event: u64) {
        // SAFETY: alive until drop.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event)
        }
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        // SAFETY: made by `new`, deleted once.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}

/// Starts a feed request from the configuration (main thread); its id, or
/// Envoy's init result code when it could not start.
pub fn callout(config: ConfigEnvoy, request: &FeedRequest) -> Result<u64, u32> {
    call(
        config,
        &request.cluster,
        &request.headers(),
        None,
        request.timeout_ms,
    )
}

/// Starts a usage report from the configuration (main thread), as [`callout`].
pub fn post_usage(config: ConfigEnvoy, request: &UsageRequest<'_>) -> Result<u64, u32> {
    call(
        config,
        request.cluster,
        &request.headers(),
        Some(request.body),
        request.timeout_ms,
    )
}

/// A config-level HTTP callout; its id, or Envoy's init result code.
fn call(
    config: ConfigEnvoy,
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<u64, u32> {
    let mut headers: Vec<ModuleHeader> = headers
        .iter()
        .map(|(n, v)| ModuleHeader::of(n, v))
        .collect();
    let mut id = 0u64;
    // SAFETY: every buffer lives for the call; `id` is written by Envoy.
    let result = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
            config,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            headers.as_mut_ptr(),
            headers.len(),
            body.map_or(ModuleBuffer::null(), ModuleBuffer::of),
            timeout_ms,
        )
    };
    if result == abi::CALLOUT_INIT_SUCCESS {
        Ok(id)
    } else {
        Err(result)
    }
}

/// Defines a counter (`gauge` false) or gauge of the configuration; only
/// while the configuration is being made (`on_http_filter_config_new`).
pub fn define_metric(config: ConfigEnvoy, name: &str, gauge: bool) -> Option<usize> {
    let mut id = 0usize;
    let name = ModuleBuffer::of(name.as_bytes());
    // SAFETY: the buffer lives for the call; no labels.
    let result = unsafe {
        if gauge {
            abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                config,
                name,
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        } else {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                config,
                name,
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        }
    };
    (result == abi::METRICS_SUCCESS).then_some(id)
}

/// Adds `n` to a counter, on the main thread.
pub fn count_on_config(config: ConfigEnvoy, id: usize, n: u64) {
    // SAFETY: no labels; `config` is alive (its hooks run on this thread).
    unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
            config,
            id,
            std::ptr::null_mut(),
            0,
            n,
        );
    }
}

/// Sets a gauge, on the main thread.
pub fn set_gauge(config: ConfigEnvoy, id: usize, value: u64) {
    // SAFETY: as for `count_on_config`.
    unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
            config,
            id,
            std::ptr::null_mut(),
            0,
            value,
        );
    }
}

//! Every host call the filter makes, in this one module; the rest of the
//! crate is glue over these functions.
//!
//! The SDK's `proxy_wasm::hostcalls` panic on a host status they do not
//! expect (and read it as an enum, so a code they do not know is not even a
//! valid value), which would crash the VM and make the callers' error
//! branches unreachable. Here each call is declared from the proxy-wasm ABI
//! 0.2.1 signatures with plain integers and returns a `Result` whose error
//! is any status other than Ok, unknown codes included ([`Status`]). The log
//! also goes through here ([`set_log_level`] installs a `log` backend on
//! `proxy_log`), since the SDK's logger unwraps the call's status.
//!
//! One call stays on the SDK: [`dispatch_http_call`]. The SDK's dispatcher
//! routes the answer to this root only if the SDK registered the call's
//! token, and that registration is private to it; its wrapper panics only on
//! a status other than Ok, BadArgument and InternalFailure, and Envoy returns
//! no other for a call made from valid memory. (The dispatcher also sets the
//! effective context before each callback, unwrapping that status.)
//!
//! Buffers the host hands back (header maps, bodies, shared data) were
//! allocated through the SDK's `proxy_on_memory_allocate`, which proxy-wasm
//! 0.2.5 implements as a boxed slice of exactly the asked size from the
//! global allocator: [`owned`] takes them over as a `Vec` of that length and
//! capacity. That is why `wasm/Cargo.toml` pins `proxy-wasm = "=0.2.5"`.

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};
use std::ptr::{null, null_mut};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `proxy_continue_stream` / `proxy_close_stream` stream type of the request.
const STREAM_HTTP_REQUEST: u32 = 0;
/// `proxy_send_local_response` grpc status meaning "not a gRPC answer".
const NO_GRPC_STATUS: i32 = -1;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_register_shared_queue(
        queue_name_data: *const u8,
        queue_name_size: usize,
        return_queue_id: *mut u32,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// A host answer other than Ok: a status of the ABI, or a code it does not
/// define (kept as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    BadExpression,
    InvalidMemoryAccess,
    Empty,
    CasMismatch,
    ResultMismatch,
    InternalFailure,
    BrokenConnection,
    Unimplemented,
    Unknown(u32),
}

/// `Ok` for the ABI's Ok (0), else the status the code stands for.
pub fn check(code: u32) -> Result<(), Status> {
    Err(match code {
        0 => return Ok(()),
        1 => Status::NotFound,
        2 => Status::BadArgument,
        3 => Status::SerializationFailure,
        4 => Status::ParseFailure,
        5 => Status::BadExpression,
        6 => Status::InvalidMemoryAccess,
        7 => Status::Empty,
        8 => Status::CasMismatch,
        9 => Status::ResultMismatch,
        10 => Status::InternalFailure,
        11 => Status::BrokenConnection,
        12 => Status::Unimplemented,
        other => Status::Unknown(other),
    })
}

/// `Ok(None)` for NotFound, `Ok(Some(v))` for Ok, the status otherwise.
fn found<T>(code: u32, value: impl FnOnce() -> T) -> Result<Option<T>, Status> {
    match check(code) {
        Ok(()) => Ok(Some(value())),
        Err(Status::NotFound) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Takes over a buffer the host returned with an Ok status.
///
/// # Safety
/// `data` is null, or was returned by the host for this call, allocated
/// through `proxy_on_memory_allocate(size)` (see the module doc).
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: per the contract, a boxed slice of exactly `size` bytes
        // from the global allocator, handed over to us.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// The serialized header map `map` (format in [`crate::headers`]).
pub fn header_map(map: MapType) -> Result<Vec<u8>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host only writes a pointer and a size into our locals.
    check(unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) })?;
    // SAFETY: Ok, so the buffer is the host's answer to this call.
    Ok(unsafe { owned(data, size) })
}

/// Replaces every header of `map` with the serialized `pairs`.
pub fn set_header_map(map: MapType, pairs: &[u8]) -> Result<(), Status> {
    // SAFETY: the host only reads the serialized map.
    check(unsafe { proxy_set_header_map_pairs(map as u32, pairs.as_ptr(), pairs.len()) })
}

/// The value of header `name` in `map`; `None` when absent.
pub fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host reads `name` and writes a pointer and a size.
    let code = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    // SAFETY: called only on Ok, so the buffer is the host's answer.
    found(code, || unsafe { owned(data, size) })
}

/// Removes every header `name` of `map`.
pub fn remove_header(map: MapType, name: &str) -> Result<(), Status> {
    // SAFETY: the host only reads the string.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// Bytes `start..start + max` of a buffer; `None` when there is no such buffer.
pub fn buffer(buffer: BufferType, start: usize, max: usize) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host only writes a pointer and a size into our locals.
    let code = unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut data, &mut size) };
    // SAFETY: called only on Ok, so the buffer is the host's answer.
    found(code, || unsafe { owned(data, size) })
}

/// A shared-data value and its CAS token; `(empty, None)` when absent.
pub fn shared_data(key: &str) -> Result<(Vec<u8>, Option<u32>), Status> {
    let (mut data, mut size, mut cas) = (null_mut(), 0, 0);
    // SAFETY: the host reads `key` and writes a pointer, a size and a token.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    // SAFETY: called only on Ok, so the buffer is the host's answer.
    let value = found(code, || unsafe { owned(data, size) })?;
    Ok(value.map_or((Vec::new(), None), |v| (v, Some(cas))))
}

/// Stores a shared-data value if its CAS token is still `cas` (any when `None`).
pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: the host only reads the two byte strings.
    check(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Registers (or finds) this VM's shared queue `name`; its id.
pub fn register_shared_queue(name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: the host reads `name` and writes our local.
    check(unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Appends `value` to the shared queue `id`.
pub fn enqueue_shared_queue(id: u32, value: &[u8]) -> Result<(), Status> {
    // SAFETY: the host only reads the bytes.
    check(unsafe { proxy_enqueue_shared_queue(id, value.as_ptr(), value.len()) })
}

/// The oldest value of the shared queue `id`; `None` when it is empty.
pub fn dequeue_shared_queue(id: u32) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host only writes a pointer and a size into our locals.
    let code = unsafe { proxy_dequeue_shared_queue(id, &mut data, &mut size) };
    match check(code) {
        // SAFETY: on Ok the buffer is the host's answer.
        Ok(()) => Ok(Some(unsafe { owned(data, size) })),
        Err(Status::Empty) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Answers the current request locally with `status`, the serialized
/// header map `headers` and `body`.
pub fn send_http_response(status: u32, headers: &[u8], body: &[u8]) -> Result<(), Status> {
    // SAFETY: the host only reads the body and the serialized headers.
    check(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            NO_GRPC_STATUS,
        )
    })
}

/// Resumes the current request after a `Pause`.
pub fn resume_http_request() -> Result<(), Status> {
    // SAFETY: no memory is shared.
    check(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}

/// Resets the current request (Envoy does it once the callback returns).
pub fn reset_http_request() -> Result<(), Status> {
    // SAFETY: no memory is shared.
    check(unsafe { proxy_close_stream(STREAM_HTTP_REQUEST) })
}

/// Makes `context_id` the context the next calls act on.
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no memory is shared.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// Starts calling `on_tick` every `period` (whole milliseconds, saturated).
pub fn set_tick_period(period: Duration) -> Result<(), Status> {
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no memory is shared.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// The host's clock.
pub fn current_time() -> Result<SystemTime, Status> {
    let mut nanos = 0;
    // SAFETY: the host only writes our local.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Defines (or finds) the metric `name`; its id.
pub fn define_metric(metric: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: the host reads `name` and writes our local.
    check(unsafe { proxy_define_metric(metric as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `offset` to a counter or gauge.
pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: no memory is shared.
    check(unsafe { proxy_increment_metric(id, offset) })
}

/// Sets a gauge (or records a histogram value).
pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no memory is shared.
    check(unsafe { proxy_record_metric(id, value) })
}

/// Starts an HTTP call to `cluster` (with `body`, if any); its token.
/// Through the SDK: see the module doc.
pub fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout)
        .map_err(|status| check(status as u32).err().unwrap_or(Status::Unknown(0)))
}

/// The level the host logs at, from the ABI's code.
pub fn log_level_of(code: u32) -> Option<LogLevel> {
    Some(match code {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        5 => LogLevel::Critical,
        _ => return None,
    })
}

/// The level the host logs at (`Err(Unknown)` for a code the ABI lacks).
pub fn log_level() -> Result<LogLevel, Status> {
    let mut code = 0;
    // SAFETY: the host only writes our local.
    check(unsafe { proxy_get_log_level(&mut code) })?;
    log_level_of(code).ok_or(Status::Unknown(code))
}

/// Logs `message` at `level`; a failed log call is dropped.
fn log_line(level: LogLevel, message: &str) {
    // SAFETY: the host only reads the message.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The `log` backend: every line to `proxy_log`.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        log_line(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Makes `log` filter at `level`; the first call installs the backend and a
/// panic hook that logs the panic (at critical) before the VM aborts.
pub fn set_log_level(level: LogLevel) {
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|panic| {
            log_line(LogLevel::Critical, &panic.to_string());
        }));
    }
    log::set_max_level(match level {
        LogLevel::Trace => log::LevelFilter::Trace,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error => log::LevelFilter::Error,
        // `log` has no critical level, and the filter logs none.
        LogLevel::Critical => log::LevelFilter::Off,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_code_is_an_answer() {
        assert_eq!(check(0), Ok(()));
        assert_eq!(check(1), Err(Status::NotFound));
        assert_eq!(check(8), Err(Status::CasMismatch));
        assert_eq!(check(12), Err(Status::Unimplemented));
        for code in [13, 99, u32::MAX] {
            assert_eq!(check(code), Err(Status::Unknown(code)));
        }
        for code in 1..=12 {
            assert!(!matches!(check(code), Ok(()) | Err(Status::Unknown(_))));
        }
    }

    #[test]
    fn not_found_is_an_absent_value() {
        assert_eq!(found(0, || 5), Ok(Some(5)));
        assert_eq!(found(1, || 5), Ok(None));
        assert_eq!(found(7, || 5), Err(Status::Empty));
        assert_eq!(found(77, || 5), Err(Status::Unknown(77)));
    }

    #[test]
    fn log_levels_follow_the_abi() {
        assert_eq!(log_level_of(0), Some(LogLevel::Trace));
        assert_eq!(log_level_of(2), Some(LogLevel::Info));
        assert_eq!(log_level_of(5), Some(LogLevel::Critical));
        assert_eq!(log_level_of(6), None);
    }
}

//! Raw proxy-wasm ABI 0.2.1 host calls, each returning the host's status.
//!
//! The Rust SDK's wrappers panic on statuses they don't expect (a finished stream, a buffer that
//! is not there), and a panic kills the VM for every stream on the worker. Every call here returns
//! `Result<_, Status>` instead, and the roles decide what a failure means.
//!
//! Envoy's buffer semantics (`Buffer::copyFrom`), which shape how the roles edit bodies:
//! `set_buffer(start = 0, size = n, data)` drains the first `n` bytes and prepends `data`;
//! `set_buffer(start >= len, _, data)` appends; any other start is `BadArgument`.
//! So "replace the whole buffer" and "append" are the only edits we use.

#![allow(clippy::missing_safety_doc)]

/// Host status codes (proxy-wasm `WasmResult`).
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
    Other(u32),
}

impl Status {
    fn from_raw(raw: u32) -> Result<(), Status> {
        Err(match raw {
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
            other => Status::Other(other),
        })
    }
}

pub type HostResult<T> = Result<T, Status>;

/// Declares value sets of the ABI: `#[repr(u32)]` enums with the spec's numbers, passed to the
/// host `as u32`. Each holds the spec's whole set, named as in the spec, so not every value is
/// used.
macro_rules! abi_values {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($variant:ident = $value:literal,)* }
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        #[allow(dead_code, clippy::enum_variant_names)]
        pub enum $name {
            $($variant = $value,)*
        }
    )*};
}

abi_values! {
    BufferType {
        HttpRequestBody = 0,
        HttpResponseBody = 1,
        DownstreamData = 2,
        UpstreamData = 3,
        PluginConfiguration = 7,
    }
    MapType {
        HttpRequestHeaders = 0,
        HttpRequestTrailers = 1,
        HttpResponseHeaders = 2,
        HttpResponseTrailers = 3,
    }
    StreamType {
        HttpRequest = 0,
        HttpResponse = 1,
        Downstream = 2,
        Upstream = 3,
    }
    LogLevel {
        Trace = 0,
        Debug = 1,
        Info = 2,
        Warn = 3,
        Error = 4,
        Critical = 5,
    }
    MetricType {
        Counter = 0,
        Gauge = 1,
        Histogram = 2,
    }
}

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        pub fn proxy_get_log_level(return_level: *mut u32) -> u32;
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            buffer_data: *const u8,
            buffer_size: usize,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_map_data: *mut *mut u8,
            return_map_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_header_map_pairs(
            map_type: u32,
            map_data: *const u8,
            map_size: usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_close_stream(stream_type: u32) -> u32;
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            headers_data: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
        pub fn proxy_call_foreign_function(
            function_name_data: *const u8,
            function_name_size: usize,
            arguments_data: *const u8,
            arguments_size: usize,
            results_data: *mut *mut u8,
            results_size: *mut usize,
        ) -> u32;
    }
}

/// Off wasm (native unit tests, benches) there is no host: every call is `Unimplemented`.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
mod raw {
    pub unsafe fn proxy_log(_: u32, _: *const u8, _: usize) -> u32 {
        12
    }
    pub unsafe fn proxy_get_log_level(_: *mut u32) -> u32 {
        12
    }
    pub unsafe fn proxy_get_current_time_nanoseconds(_: *mut u64) -> u32 {
        12
    }
    pub unsafe fn proxy_set_tick_period_milliseconds(_: u32) -> u32 {
        12
    }
    pub unsafe fn proxy_get_buffer_bytes(
        _: u32,
        _: usize,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        12
    }
    pub unsafe fn proxy_set_buffer_bytes(
        _: u32,
        _: usize,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        12
    }
    pub unsafe fn proxy_set_header_map_pairs(_: u32, _: *const u8, _: usize) -> u32 {
        12
    }
    pub unsafe fn proxy_get_header_map_pairs(_: u32, _: *mut *mut u8, _: *mut usize) -> u32 {
        12
    }
    pub unsafe fn proxy_get_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        12
    }
    pub unsafe fn proxy_replace_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        12
    }
    pub unsafe fn proxy_remove_header_map_value(_: u32, _: *const u8, _: usize) -> u32 {
        12
    }
    pub unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        12
    }
    pub unsafe fn proxy_continue_stream(_: u32) -> u32 {
        12
    }
    pub unsafe fn proxy_close_stream(_: u32) -> u32 {
        12
    }
    pub unsafe fn proxy_send_local_response(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: i32,
    ) -> u32 {
        12
    }
    pub unsafe fn proxy_set_effective_context(_: u32) -> u32 {
        12
    }
    pub unsafe fn proxy_define_metric(_: u32, _: *const u8, _: usize, _: *mut u32) -> u32 {
        12
    }
    pub unsafe fn proxy_increment_metric(_: u32, _: i64) -> u32 {
        12
    }
    pub unsafe fn proxy_call_foreign_function(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        12
    }
}

/// Takes ownership of a host-returned allocation (made through `proxy_on_memory_allocate`).
fn take_host_bytes(ptr: *mut u8, len: usize) -> Option<Vec<u8>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the host allocated `len` bytes through our `proxy_on_memory_allocate`, which
    // hands out `Vec<u8>` allocations of exactly that capacity, and gives up ownership.
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Logs built only when the host would keep them: debug and trace messages on the data path
/// otherwise cost a `format!` and a host call per request or chunk. The host's level is asked
/// again every 1024 checks (it can change at run time through Envoy's admin).
pub fn log_with(level: LogLevel, msg: impl FnOnce() -> String) {
    if log_enabled(level) {
        log(level, &msg());
    }
}

fn log_enabled(level: LogLevel) -> bool {
    use std::cell::Cell;
    thread_local! {
        /// (host level, checks left before asking again)
        static LEVEL: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    }
    LEVEL.with(|cell| {
        let (mut host_level, left) = cell.get();
        if left == 0 {
            let mut l = 0u32;
            // SAFETY: l is a valid out-pointer.
            let status = unsafe { raw::proxy_get_log_level(&mut l) };
            // Unknown: log everything (the host filters anyway).
            host_level = if Status::from_raw(status).is_ok() {
                l
            } else {
                0
            };
            cell.set((host_level, 1023));
        } else {
            cell.set((host_level, left - 1));
        }
        level as u32 >= host_level
    })
}

pub fn log(level: LogLevel, msg: &str) {
    // SAFETY: pointer and length describe a live &str.
    unsafe {
        raw::proxy_log(level as u32, msg.as_ptr(), msg.len());
    }
}

pub fn now_nanos() -> u64 {
    let mut t = 0u64;
    // SAFETY: t is a valid out-pointer.
    let status = unsafe { raw::proxy_get_current_time_nanoseconds(&mut t) };
    if Status::from_raw(status).is_ok() {
        t
    } else {
        0
    }
}

pub fn set_tick_period_ms(ms: u32) -> HostResult<()> {
    // SAFETY: plain value call.
    Status::from_raw(unsafe { raw::proxy_set_tick_period_milliseconds(ms) })
}

/// Reads `[start, start + max)` of a buffer. `Ok(None)` when the host has no such buffer or it
/// is empty.
pub fn get_buffer(bt: BufferType, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
    let mut ptr: *mut u8 = core::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: out-pointers are valid; the host writes an allocation it made through us.
    let status = unsafe { raw::proxy_get_buffer_bytes(bt as u32, start, max, &mut ptr, &mut len) };
    match Status::from_raw(status) {
        Ok(()) => Ok(take_host_bytes(ptr, len)),
        Err(Status::NotFound) | Err(Status::Empty) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the first `size` bytes of the buffer with `data` (Envoy: drain + prepend).
pub fn replace_buffer_prefix(bt: BufferType, size: usize, data: &[u8]) -> HostResult<()> {
    // SAFETY: data is a live slice.
    Status::from_raw(unsafe {
        raw::proxy_set_buffer_bytes(bt as u32, 0, size, data.as_ptr(), data.len())
    })
}

/// Appends `data` to the buffer (a start at or past the end appends in Envoy).
pub fn append_buffer(bt: BufferType, data: &[u8]) -> HostResult<()> {
    // A start beyond any real buffer length always takes Envoy's append branch; 0 would prepend.
    let start = i32::MAX as usize;
    // SAFETY: data is a live slice.
    Status::from_raw(unsafe {
        raw::proxy_set_buffer_bytes(bt as u32, start, 0, data.as_ptr(), data.len())
    })
}

/// Decodes the proxy-wasm header map serialization: u32 count, (u32 key len, u32 value len) per
/// pair, then each key and value followed by a NUL.
pub fn decode_map(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let read_u32 = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    let mut at = 4usize;
    for _ in 0..count {
        let k = read_u32(at)?;
        let v = read_u32(at.checked_add(4)?)?;
        sizes.push((k, v));
        at = at.checked_add(8)?;
    }
    let mut out = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = bytes.get(at..at.checked_add(k)?)?;
        at = at.checked_add(k)?;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at = at.checked_add(1)?;
        let value = bytes.get(at..at.checked_add(v)?)?;
        at = at.checked_add(v)?;
        if bytes.get(at) != Some(&0) {
            return None;
        }
        at = at.checked_add(1)?;
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    Some(out)
}

/// Encodes header pairs in the proxy-wasm map serialization.
pub fn encode_map(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut size = 4;
    for (k, v) in pairs {
        size += 8 + k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

pub fn get_map(mt: MapType) -> HostResult<Vec<(String, Vec<u8>)>> {
    let mut ptr: *mut u8 = core::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: valid out-pointers.
    let status = unsafe { raw::proxy_get_header_map_pairs(mt as u32, &mut ptr, &mut len) };
    match Status::from_raw(status) {
        Ok(()) => match take_host_bytes(ptr, len) {
            Some(bytes) => decode_map(&bytes).ok_or(Status::SerializationFailure),
            None => Ok(Vec::new()),
        },
        Err(Status::NotFound) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Replaces a whole header map in one host call (Envoy removes every entry, then adds these).
pub fn set_map(mt: MapType, pairs: &[(&str, &[u8])]) -> HostResult<()> {
    let bytes = encode_map(pairs);
    // SAFETY: bytes is a live slice.
    Status::from_raw(unsafe {
        raw::proxy_set_header_map_pairs(mt as u32, bytes.as_ptr(), bytes.len())
    })
}

pub fn get_map_value(mt: MapType, key: &str) -> HostResult<Option<Vec<u8>>> {
    let mut ptr: *mut u8 = core::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: valid key slice and out-pointers.
    let status = unsafe {
        raw::proxy_get_header_map_value(mt as u32, key.as_ptr(), key.len(), &mut ptr, &mut len)
    };
    match Status::from_raw(status) {
        Ok(()) => Ok(take_host_bytes(ptr, len)),
        Err(Status::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Header value as a string (lossy), `None` when absent or the map is not reachable.
pub fn header(mt: MapType, key: &str) -> Option<String> {
    match get_map_value(mt, key) {
        Ok(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
        _ => None,
    }
}

pub fn replace_map_value(mt: MapType, key: &str, value: &[u8]) -> HostResult<()> {
    // SAFETY: valid slices.
    Status::from_raw(unsafe {
        raw::proxy_replace_header_map_value(
            mt as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_map_value(mt: MapType, key: &str) -> HostResult<()> {
    // SAFETY: valid slice.
    match Status::from_raw(unsafe {
        raw::proxy_remove_header_map_value(mt as u32, key.as_ptr(), key.len())
    }) {
        Err(Status::NotFound) => Ok(()),
        other => other,
    }
}

/// Reads a property by path segments (Envoy attribute names, e.g. `["source", "address"]`).
pub fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    // Segments joined by NUL, no trailing NUL (as the proxy-wasm SDKs send it).
    let mut serialized = Vec::new();
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            serialized.push(0);
        }
        serialized.extend_from_slice(seg.as_bytes());
    }
    let mut ptr: *mut u8 = core::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: valid slice and out-pointers.
    let status = unsafe {
        raw::proxy_get_property(serialized.as_ptr(), serialized.len(), &mut ptr, &mut len)
    };
    match Status::from_raw(status) {
        Ok(()) => Ok(take_host_bytes(ptr, len)),
        Err(Status::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Resumes a paused stream. Envoy defers this until the current VM call returns.
pub fn continue_stream(st: StreamType) -> HostResult<()> {
    // SAFETY: plain value call.
    Status::from_raw(unsafe { raw::proxy_continue_stream(st as u32) })
}

pub fn close_stream(st: StreamType) -> HostResult<()> {
    // SAFETY: plain value call.
    Status::from_raw(unsafe { raw::proxy_close_stream(st as u32) })
}

/// Sends a local reply. `grpc_status` < 0 means "none".
pub fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[(&str, &[u8])],
    grpc_status: i32,
) -> HostResult<()> {
    let map = encode_map(headers);
    // SAFETY: valid slices.
    Status::from_raw(unsafe {
        raw::proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            grpc_status,
        )
    })
}

pub fn set_effective_context(id: u32) -> HostResult<()> {
    // SAFETY: plain value call.
    Status::from_raw(unsafe { raw::proxy_set_effective_context(id) })
}

pub fn define_metric(kind: MetricType, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    // SAFETY: valid slice and out-pointer.
    Status::from_raw(unsafe {
        raw::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: i64) -> HostResult<()> {
    // SAFETY: plain value call.
    Status::from_raw(unsafe { raw::proxy_increment_metric(id, by) })
}

pub fn call_foreign_function(name: &str, args: &[u8]) -> HostResult<Option<Vec<u8>>> {
    let mut ptr: *mut u8 = core::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: valid slices and out-pointers.
    let status = unsafe {
        raw::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut ptr,
            &mut len,
        )
    };
    Status::from_raw(status)?;
    Ok(take_host_bytes(ptr, len))
}

/// Fills `buf` from the host's entropy source (WASI `random_get`; Envoy backs it with its
/// CSPRNG). Off wasm, from the OS through std's hasher seeds is not strong enough, so natively we
/// read /dev/urandom (tests only).
pub fn random_bytes(buf: &mut [u8]) -> HostResult<()> {
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "wasi_snapshot_preview1")]
        extern "C" {
            fn random_get(buf: *mut u8, len: usize) -> u16;
        }
        // SAFETY: buf is a valid, writable slice.
        let errno = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
        if errno == 0 {
            Ok(())
        } else {
            Err(Status::InternalFailure)
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .map_err(|_| Status::InternalFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_serialization_round_trips() {
        let pairs: Vec<(&str, &[u8])> =
            vec![(":status", b"200"), ("grpc-status", b"0"), ("empty", b"")];
        let bytes = encode_map(&pairs);
        let back = decode_map(&bytes).expect("decodes");
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], (":status".to_string(), b"200".to_vec()));
        assert_eq!(back[2], ("empty".to_string(), Vec::new()));
    }

    #[test]
    fn truncated_map_is_rejected_not_panicking() {
        let pairs: Vec<(&str, &[u8])> = vec![("a", b"b")];
        let bytes = encode_map(&pairs);
        for cut in 1..bytes.len() {
            assert!(decode_map(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        // a count that promises more pairs than present
        assert!(decode_map(&[0xff, 0xff, 0xff, 0x7f]).is_none());
    }
}

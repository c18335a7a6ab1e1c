//! Numeric values of proxy-wasm ABI 0.2.1 as Envoy 1.40 (proxy-wasm-cpp-host) uses them.
//!
//! Kept in one place so every hostcall, the stream model and the tests agree on
//! the exact numbers the guest sees.

/// `WasmResult`: the status every hostcall returns to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    BadExpression = 5,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    ResultMismatch = 9,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

impl Status {
    pub(crate) fn code(self) -> i32 {
        self as u32 as i32
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    /// `None` for values above `WasmBufferType::MAX` (Envoy answers BadArgument).
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v as u32 {
            0 => Self::HttpRequestBody,
            1 => Self::HttpResponseBody,
            2 => Self::DownstreamData,
            3 => Self::UpstreamData,
            4 => Self::HttpCallResponseBody,
            5 => Self::GrpcReceiveBuffer,
            6 => Self::VmConfiguration,
            7 => Self::PluginConfiguration,
            8 => Self::CallData,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcReceiveInitialMetadata,
    GrpcReceiveTrailingMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v as u32 {
            0 => Self::RequestHeaders,
            1 => Self::RequestTrailers,
            2 => Self::ResponseHeaders,
            3 => Self::ResponseTrailers,
            4 => Self::GrpcReceiveInitialMetadata,
            5 => Self::GrpcReceiveTrailingMetadata,
            6 => Self::HttpCallResponseHeaders,
            7 => Self::HttpCallResponseTrailers,
            _ => return None,
        })
    }
}

/// `WasmStreamType` for `proxy_continue_stream` / `proxy_close_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    HttpRequest,
    HttpResponse,
    Downstream,
    Upstream,
}

impl StreamType {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v as u32 {
            0 => Self::HttpRequest,
            1 => Self::HttpResponse,
            2 => Self::Downstream,
            3 => Self::Upstream,
            _ => return None,
        })
    }
}

/// proxy-wasm log levels (`proxy_log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub(crate) fn from_raw(v: i32) -> Option<Self> {
        Some(match v as u32 {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }
}

/// What a header callback returned, after Envoy's conversion
/// (`ContextBase::convertVmCallResultToFilterHeadersStatus` + Envoy's own switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersAction {
    Continue,
    /// Envoy 1.40 never lets a wasm filter stop only the headers: a raw `StopIteration`
    /// (1) becomes `StopAllIterationAndWatermark`, as does any value above 4 or any
    /// return after `send_local_response`.
    StopAllBuffer,
    StopAllWatermark,
}

/// A status of an HTTP filter callback, after Envoy's conversion: one type per kind of
/// callback (headers, body, trailers).
pub(crate) trait FilterStatus: Copy + 'static {
    /// The callback's export for the request and for the response.
    const CALLBACKS: (&'static str, &'static str);
    /// Envoy's conversion switch: the status for each raw value the guest may return.
    const BY_RAW: &'static [Self];
    /// Any other raw value; also what the filter manager gets when the filter must not go
    /// on: the callback called `send_local_response` (next iteration stopped), or the VM
    /// failed (cpp-host's CHECK_FAIL answers the same).
    const STOPPED: Self;

    fn from_guest(raw: i32, next_iteration_stopped: bool) -> Self {
        if next_iteration_stopped {
            return Self::STOPPED;
        }
        Self::BY_RAW
            .get(raw as u32 as usize)
            .copied()
            .unwrap_or(Self::STOPPED)
    }
}

impl FilterStatus for HeadersAction {
    const CALLBACKS: (&'static str, &'static str) =
        ("proxy_on_request_headers", "proxy_on_response_headers");
    // 1 (StopIteration) is StopAllIterationAndWatermark; ContinueAndEndStream (2) is not in
    // Envoy's conversion switch: its default, Continue.
    const BY_RAW: &'static [Self] = &[
        Self::Continue,
        Self::StopAllWatermark,
        Self::Continue,
        Self::StopAllBuffer,
    ];
    const STOPPED: Self = Self::StopAllWatermark;
}

/// What a body (or network data) callback returned, after conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataAction {
    Continue,
    StopIterationAndBuffer,
    StopIterationAndWatermark,
    StopIterationNoBuffer,
}

impl FilterStatus for DataAction {
    const CALLBACKS: (&'static str, &'static str) =
        ("proxy_on_request_body", "proxy_on_response_body");
    const BY_RAW: &'static [Self] = &[
        Self::Continue,
        Self::StopIterationAndBuffer,
        Self::StopIterationAndWatermark,
    ];
    const STOPPED: Self = Self::StopIterationNoBuffer;
}

/// What a trailers callback returned, after conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailersAction {
    Continue,
    StopIteration,
}

impl FilterStatus for TrailersAction {
    const CALLBACKS: (&'static str, &'static str) =
        ("proxy_on_request_trailers", "proxy_on_response_trailers");
    const BY_RAW: &'static [Self] = &[Self::Continue];
    const STOPPED: Self = Self::StopIteration;
}

/// Network filter status (`proxy_on_new_connection`, `proxy_on_*_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkAction {
    Continue,
    StopIteration,
}

impl NetworkAction {
    pub(crate) fn from_guest(raw: i32) -> Self {
        if raw == 0 {
            Self::Continue
        } else {
            Self::StopIteration
        }
    }
}

/// Peer type passed to the connection-close callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseType {
    Unknown = 0,
    Local = 1,
    Remote = 2,
}

/// Metric kinds, encoded in the low two bits of a metric id exactly like
/// proxy-wasm-cpp-host (`kMetricTypeMask`), so ids look the same as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

pub(crate) const METRIC_TYPE_MASK: u32 = 0x3;
pub(crate) const METRIC_ID_INCREMENT: u32 = 0x4;

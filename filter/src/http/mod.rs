//! HTTP-filter roles and the host glue they share.

pub mod agent;
pub mod http1_status;
pub mod server;

use crate::abi::HttpStream;
use crate::codec::status;
use crate::host::{self, BufferType, LogLevel, MapType};

/// A stream of a root whose configuration failed: never touches traffic.
pub struct Passthrough;
impl HttpStream for Passthrough {}

/// Response/request header value (lossy UTF-8), `None` when absent.
pub(crate) fn req_header(name: &str) -> Option<String> {
    host::header(MapType::HttpRequestHeaders, name)
}

pub(crate) fn resp_header(name: &str) -> Option<String> {
    host::header(MapType::HttpResponseHeaders, name)
}

/// Sets a header, logging (not failing) when the host refuses: the stream is then already gone.
pub(crate) fn set_header(mt: MapType, name: &str, value: &str) {
    if let Err(e) = host::replace_map_value(mt, name, value.as_bytes()) {
        host::log(LogLevel::Debug, &format!("grpc-bridge: cannot set {name}: {e:?}"));
    }
}

pub(crate) fn remove_header(mt: MapType, name: &str) {
    if let Err(e) = host::remove_map_value(mt, name) {
        host::log(LogLevel::Debug, &format!("grpc-bridge: cannot remove {name}: {e:?}"));
    }
}

/// Replaces the current body chunk (`size` bytes) with `data`.
pub(crate) fn replace_body(bt: BufferType, size: usize, data: &[u8]) -> Result<(), host::Status> {
    host::replace_buffer_prefix(bt, size, data)
}

/// Sends a gRPC error as a local reply: HTTP 200, `content-type` given, `grpc-status` and a
/// percent-encoded `grpc-message` in the headers (a trailers-only response).
pub(crate) fn send_grpc_error(content_type: &str, code: u32, message: &str) {
    let encoded = status::percent_encode(message);
    let code_str = code.to_string();
    let headers: [(&str, &[u8]); 3] = [
        ("content-type", content_type.as_bytes()),
        ("grpc-status", code_str.as_bytes()),
        ("grpc-message", encoded.as_bytes()),
    ];
    host::log(LogLevel::Info, &format!("grpc-bridge: local reply {} ({}): {message}", status::code_name(code), code));
    if let Err(e) = host::send_local_response(200, "grpc_bridge_error", b"", &headers, -1) {
        host::log(LogLevel::Error, &format!("grpc-bridge: local reply refused: {e:?}"));
    }
}

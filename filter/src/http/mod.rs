//! HTTP-filter roles and the host glue they share.

pub(crate) mod agent;
pub(crate) mod flush;
pub(crate) mod guard;
pub mod http1_status;
pub(crate) mod server;
pub(crate) mod stream_host;

use crate::auth::{self, AuthFailure, PeerCertificate};
use crate::codec::grpc_web;
use crate::codec::status::{self, code};
use crate::config::AuthConfig;
use crate::context::HttpStream;
use crate::host::{self, BufferType, LogLevel, MapType};
use crate::metrics::Metrics;

/// A server role's authentication of one request (`server` and `server_guard` share it):
/// `Ok` when `auth` does not require it for this request or it passes (counted as `auth_ok`
/// when the request claims to come from an agent). A failure is counted (`auth_failures.<kind>`
/// and gRPC status UNAUTHENTICATED) and returned: the caller answers it in the client's encoding.
pub(crate) fn authenticate(
    a: &AuthConfig,
    marked: bool,
    grpc_web: bool,
    presented_secret: Option<&[u8]>,
    metrics: &Metrics,
) -> Result<(), AuthFailure> {
    if !auth::required(a, marked, grpc_web) {
        return Ok(());
    }
    match auth::verify(a, presented_secret, &PeerCertificate::for_config(a)) {
        Ok(()) => {
            if marked {
                metrics.inc("auth_ok");
            }
            Ok(())
        }
        Err(f) => {
            metrics.inc(&format!("auth_failures.{}", f.kind()));
            metrics.grpc_status(code::UNAUTHENTICATED);
            Err(f)
        }
    }
}

/// Content type of a server role's local gRPC reply: the client's own gRPC-web encoding
/// (`+proto` when it named no suffix), native gRPC's as sent, else `fallback` (not gRPC at all).
pub(crate) fn reply_content_type(
    web: &Option<(grpc_web::Encoding, String)>,
    ct: &str,
    fallback: impl FnOnce() -> String,
) -> String {
    match web {
        Some((e, sfx)) => {
            grpc_web::grpc_web_content_type(*e, if sfx.is_empty() { "+proto" } else { sfx })
        }
        None if ct.starts_with("application/grpc") => ct.to_string(),
        None => fallback(),
    }
}

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
        host::log(
            LogLevel::Debug,
            &format!("grpc-bridge: cannot set {name}: {e:?}"),
        );
    }
}

pub(crate) fn remove_header(mt: MapType, name: &str) {
    if let Err(e) = host::remove_map_value(mt, name) {
        host::log(
            LogLevel::Debug,
            &format!("grpc-bridge: cannot remove {name}: {e:?}"),
        );
    }
}

/// Replaces the current body chunk (`size` bytes) with `data`.
pub(crate) fn replace_body(bt: BufferType, size: usize, data: &[u8]) -> Result<(), host::Status> {
    host::replace_buffer_prefix(bt, size, data)
}

/// Sends a gRPC error as a local reply: HTTP 200, `content-type` given, `grpc-status` and a
/// percent-encoded `grpc-message` in the headers (a trailers-only response).
///
/// Envoy answers a request whose `content-type` *as it arrived* (the HCM decides before any
/// filter runs) is gRPC (`application/grpc`, `application/grpc+x`) with its own gRPC local
/// reply: it sets `content-type` and `grpc-status` itself (from the `grpc_status` argument, or
/// UNKNOWN mapped from HTTP 200 when it is -1). Adding ours as well would send two
/// `grpc-status` headers, and a client reading the first would see UNKNOWN. So for those
/// requests Envoy gets the code and we add only `grpc-message`.
///
/// `envoy_sets_status`: the request's original `content-type` is gRPC to Envoy.
pub(crate) fn send_grpc_error(
    content_type: &str,
    code: u32,
    message: &str,
    envoy_sets_status: bool,
) {
    let encoded = status::percent_encode(message);
    let code_str = code.to_string();
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(3);
    if !envoy_sets_status {
        headers.push(("content-type", content_type.as_bytes()));
        headers.push(("grpc-status", code_str.as_bytes()));
    }
    headers.push(("grpc-message", encoded.as_bytes()));
    let grpc_status = if envoy_sets_status {
        i32::try_from(code).unwrap_or(2)
    } else {
        -1
    };
    host::log(
        LogLevel::Info,
        &format!(
            "grpc-bridge: local reply {} ({}): {message}",
            status::code_name(code),
            code
        ),
    );
    if let Err(e) = host::send_local_response(200, "grpc_bridge_error", b"", &headers, grpc_status)
    {
        host::log(
            LogLevel::Error,
            &format!("grpc-bridge: local reply refused: {e:?}"),
        );
    }
}

/// Envoy's `Grpc::Common::hasGrpcContentType`: `application/grpc`, optionally followed by `+`
/// and anything (so `application/grpc-web` is not gRPC to Envoy).
pub(crate) fn envoy_sees_grpc(content_type: &str) -> bool {
    let ct = content_type.as_bytes();
    let prefix = b"application/grpc";
    ct.len() >= prefix.len()
        && ct[..prefix.len()].eq_ignore_ascii_case(prefix)
        && (ct.len() == prefix.len() || ct[prefix.len()] == b'+' || ct[prefix.len()] == b';')
}

#[cfg(test)]
mod tests {
    use super::envoy_sees_grpc;

    #[test]
    fn only_grpc_content_types_get_envoys_grpc_local_reply() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=x",
        ] {
            assert!(envoy_sees_grpc(ct), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "text/html",
            "",
        ] {
            assert!(!envoy_sees_grpc(ct), "{ct}");
        }
    }
}

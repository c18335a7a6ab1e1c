//! `http1_status` role: the HTTP status for plain HTTP/1.1 gRPC clients.
//!
//! A client that sends `application/grpc` over HTTP/1.1 (curl, NetScaler-style bridging) cannot
//! read HTTP trailers, so the status must be in the response headers. Holding the response until
//! the trailers arrive is Envoy's own `grpc_http1_bridge` filter: a wasm filter can't do it in
//! Envoy 1.40, because proxy-wasm turns a headers `StopIteration` into stop-all (no body
//! callbacks until the headers are released; docs/ARCHITECTURE.md). That filter puts
//! `grpc-status`/`grpc-message` into the headers but answers 200 for a Trailers-Only error and
//! 503 for every other error. This role runs after it on the response path (it is placed before
//! it in the chain) and sets `:status` from `grpc-status` with NetScaler's table
//! (`codec::status::grpc_to_http`), so a client sees 404 for NOT_FOUND, 503 for UNAVAILABLE.
//!
//! Anything else passes untouched: gRPC-web, HTTP/2, and a response without `grpc-status` in its
//! headers (not gRPC, or not bridged).

use std::rc::Rc;

use crate::abi::{HeadersAction, HttpStream};
use crate::codec::grpc_web;
use crate::codec::status;
use crate::host::{self, LogLevel, MapType};
use crate::http::{req_header, resp_header, set_header};
use crate::metrics::Metrics;

pub struct Http1StatusStream {
    metrics: Rc<Metrics>,
    /// The request is plain gRPC over HTTP/1.x.
    plain_http1: bool,
}

impl Http1StatusStream {
    pub fn new(metrics: Rc<Metrics>) -> Self {
        Http1StatusStream {
            metrics,
            plain_http1: false,
        }
    }
}

/// `request.protocol` says HTTP/1.0 or HTTP/1.1.
fn is_http1(protocol: Option<&[u8]>) -> bool {
    matches!(protocol, Some(b"HTTP/1.1") | Some(b"HTTP/1.0"))
}

impl HttpStream for Http1StatusStream {
    fn on_request_headers(&mut self, _num: usize, _eos: bool) -> HeadersAction {
        let grpc = req_header("content-type")
            .is_some_and(|ct| grpc_web::parse_grpc_content_type(&ct).is_some());
        if !grpc {
            return HeadersAction::Continue;
        }
        let protocol = host::get_property(&["request", "protocol"]).ok().flatten();
        self.plain_http1 = is_http1(protocol.as_deref());
        if self.plain_http1 {
            self.metrics.inc("calls");
        }
        HeadersAction::Continue
    }

    fn on_response_headers(&mut self, _num: usize, _eos: bool) -> HeadersAction {
        if !self.plain_http1 {
            return HeadersAction::Continue;
        }
        let Some(code) =
            resp_header("grpc-status").and_then(|v| status::parse_grpc_status(v.as_bytes()))
        else {
            // No status in the headers: not a gRPC answer, or one the bridge did not hold
            // (it outgrew the buffer limit). Leave it as it is.
            self.metrics.inc("no_status");
            return HeadersAction::Continue;
        };
        self.metrics.grpc_status(code);
        let http = status::grpc_to_http(code);
        let current = resp_header(":status").unwrap_or_default();
        // Only the bridge's own answers (200, or 503 for an error) are remapped; any other HTTP
        // status was chosen by something that knew better (a local reply, a proxy).
        if current == "200" || current == "503" {
            set_header(MapType::HttpResponseHeaders, ":status", &http.to_string());
            host::log(
                LogLevel::Debug,
                &format!("grpc-bridge http1_status: grpc-status {code} -> HTTP {http}"),
            );
        }
        HeadersAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::is_http1;

    #[test]
    fn only_http1_protocols_count() {
        assert!(is_http1(Some(b"HTTP/1.1")));
        assert!(is_http1(Some(b"HTTP/1.0")));
        assert!(!is_http1(Some(b"HTTP/2")));
        assert!(!is_http1(Some(b"HTTP/3")));
        assert!(!is_http1(None));
    }
}

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

use crate::codec::grpc_web;
use crate::codec::status;
use crate::context::{HeadersAction, HttpStream};
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

/// Server role: the bounds on what Envoy's `grpc_http1_bridge` holds for a plain HTTP/1.1 gRPC
/// client (`http1_hold_bytes`, `http1_hold_ms`). The server-role filter sits after the bridge in
/// the chain, so it sees the backend's response before the bridge holds it; past a bound it ends
/// the call with a gRPC error instead of letting the hold grow (the bridge cannot be told to
/// stop holding, so forwarding the response as it is is not possible).
pub struct PlainHold {
    max_bytes: u64,
    max_ms: u64,
    bytes: u64,
    /// When the response headers arrived (host clock), 0 before.
    started_ns: u64,
    done: bool,
}

impl PlainHold {
    /// For a request of a plain HTTP/1.x gRPC client, when some bound is configured.
    /// Reads `request.protocol` from the host only when the rest already calls for a hold.
    pub fn detect(content_type: &str, max_bytes: u32, max_ms: u32) -> Option<PlainHold> {
        if (max_bytes == 0 && max_ms == 0)
            || grpc_web::parse_grpc_content_type(content_type).is_none()
        {
            return None;
        }
        let protocol = host::get_property(&["request", "protocol"]).ok().flatten();
        PlainHold::for_request(content_type, protocol.as_deref(), max_bytes, max_ms)
    }

    /// The pure decision behind [`detect`](Self::detect): a hold for a request with this
    /// content type over this `request.protocol` (`None`: unknown), under these bounds (0: none).
    pub fn for_request(
        content_type: &str,
        protocol: Option<&[u8]>,
        max_bytes: u32,
        max_ms: u32,
    ) -> Option<PlainHold> {
        if (max_bytes == 0 && max_ms == 0)
            || grpc_web::parse_grpc_content_type(content_type).is_none()
        {
            return None;
        }
        is_http1(protocol).then_some(PlainHold {
            max_bytes: u64::from(max_bytes),
            max_ms: u64::from(max_ms),
            bytes: 0,
            started_ns: 0,
            done: false,
        })
    }

    /// The response started; true if the time bound needs ticks.
    pub fn start(&mut self, now_ns: u64) -> bool {
        self.started_ns = now_ns;
        self.max_ms > 0 && !self.done
    }

    /// The call ended normally (trailers or end of stream).
    pub fn finish(&mut self) {
        self.done = true;
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Response bytes counted so far (including those of the check that ended the call).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Counts response bytes; the error to end the call with once past a bound. `now_ns` is
    /// None when the call just ended (its last bytes count; time no longer matters).
    pub fn check(&mut self, new_bytes: u64, now_ns: Option<u64>) -> Option<(u32, String)> {
        if self.done {
            return None;
        }
        self.bytes = self.bytes.saturating_add(new_bytes);
        let elapsed_ms = now_ns.map_or(0, |now| now.saturating_sub(self.started_ns) / 1_000_000);
        let verdict = hold_verdict(self.bytes, elapsed_ms, self.max_bytes, self.max_ms);
        if verdict.is_some() {
            self.done = true;
        }
        verdict
    }
}

/// Past `max_bytes` (0: no bound): RESOURCE_EXHAUSTED; past `max_ms` (0: no bound):
/// DEADLINE_EXCEEDED. The message names the configuration field.
fn hold_verdict(bytes: u64, elapsed_ms: u64, max_bytes: u64, max_ms: u64) -> Option<(u32, String)> {
    if max_bytes > 0 && bytes > max_bytes {
        return Some((
            status::code::RESOURCE_EXHAUSTED,
            format!(
                "grpc-bridge: response larger than http1_hold_bytes ({max_bytes}) for a plain HTTP/1.1 gRPC client; use gRPC-web or HTTP/2 for large responses"
            ),
        ));
    }
    if max_ms > 0 && elapsed_ms >= max_ms {
        return Some((
            status::code::DEADLINE_EXCEEDED,
            format!(
                "grpc-bridge: response not complete within http1_hold_ms ({max_ms} ms) for a plain HTTP/1.1 gRPC client; use gRPC-web or HTTP/2 for streams"
            ),
        ));
    }
    None
}

#[cfg(test)]
mod hold_tests {
    use super::{hold_verdict, PlainHold};

    #[test]
    fn the_end_of_a_call_is_not_timed_out_but_its_bytes_count() {
        let hold = || PlainHold {
            max_bytes: 100,
            max_ms: 1000,
            bytes: 0,
            started_ns: 0,
            done: false,
        };
        let late = Some(5_000_000_000);
        assert_eq!(
            hold().check(10, late).map(|v| v.0),
            Some(code::DEADLINE_EXCEEDED)
        );
        assert_eq!(hold().check(10, None), None);
        assert_eq!(
            hold().check(101, None).map(|v| v.0),
            Some(code::RESOURCE_EXHAUSTED)
        );
        let mut h = hold();
        h.finish();
        assert!(h.is_done());
        assert_eq!(h.check(1_000, late), None);
    }

    use crate::codec::status::code;

    #[test]
    fn a_hold_only_for_plain_http1_grpc_with_a_bound() {
        let h1 = Some(&b"HTTP/1.1"[..]);
        assert!(PlainHold::for_request("application/grpc", h1, 100, 0).is_some());
        assert!(
            PlainHold::for_request("application/grpc+proto", Some(b"HTTP/1.0"), 0, 5).is_some()
        );
        assert!(PlainHold::for_request("application/grpc", h1, 0, 0).is_none());
        assert!(PlainHold::for_request("application/grpc", Some(b"HTTP/2"), 100, 0).is_none());
        assert!(PlainHold::for_request("application/grpc", None, 100, 0).is_none());
        assert!(PlainHold::for_request("application/grpc-web", h1, 100, 0).is_none());
        assert!(PlainHold::for_request("text/plain", h1, 100, 0).is_none());
        let mut h = PlainHold::for_request("application/grpc", h1, 100, 0).unwrap();
        assert!(!h.start(1));
        assert_eq!(h.check(60, Some(2)), None);
        assert_eq!(h.bytes(), 60);
    }

    #[test]
    fn bounds() {
        assert_eq!(hold_verdict(131072, 999, 131072, 1000), None);
        let (c, m) = hold_verdict(131073, 0, 131072, 1000).unwrap();
        assert_eq!(c, code::RESOURCE_EXHAUSTED);
        assert!(m.contains("http1_hold_bytes (131072)"), "{m}");
        let (c, m) = hold_verdict(0, 1000, 131072, 1000).unwrap();
        assert_eq!(c, code::DEADLINE_EXCEEDED);
        assert!(m.contains("http1_hold_ms (1000 ms)"), "{m}");
        // 0 disables a bound.
        assert_eq!(hold_verdict(u64::MAX, u64::MAX, 0, 0), None);
        assert_eq!(hold_verdict(u64::MAX, 0, 0, 1000), None);
    }
}

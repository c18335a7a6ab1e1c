//! Agent role: next to the gRPC client.
//!
//! Request: native gRPC (`application/grpc*`) becomes gRPC-web (`application/grpc-web+proto`)
//! so it can cross HTTP/1.1-only hops; the body framing is identical, so only headers change.
//!
//! Response: gRPC-web data frames pass through as they arrive (we never pause); the `0x80`
//! trailer frame is cut out of the body and becomes real HTTP/2 trailers at end of stream. A
//! response without a trailer frame, or that isn't gRPC-web at all (a proxy's 407 page, a 502),
//! ends with a non-OK status: never a silent OK.

use std::rc::Rc;

use crate::codec::grpc_frame::{FrameScanner, SparseScanError, WHOLE_CHUNK_BYTES};
use crate::codec::grpc_web::{self, Encoding, TrailerFrameReader};
use crate::codec::status::{self, code};
use crate::config::AgentConfig;
use crate::context::{DataAction, HeadersAction, HttpStream};
use crate::host::{BufferType, LogLevel, MapType};
use crate::http::stream_host::{HeaderList, StreamHost, WasmHost};
use crate::metrics::Metrics;

enum Response {
    /// Not converted by us, or not yet seen.
    Untouched,
    /// gRPC-web response being turned back into gRPC.
    GrpcWeb {
        scanner: FrameScanner,
        trailer: Option<TrailerFrameReader>,
        /// `grpc-status`/`grpc-message` found in the response headers (a trailers-only answer
        /// that still carries a body).
        header_status: Option<(String, Option<String>)>,
        error: Option<(u32, String)>,
    },
    /// Not gRPC-web: becomes a gRPC status; the body is swallowed (its start quoted).
    NotGrpc {
        code: u32,
        message: String,
        quote: Vec<u8>,
    },
    /// Trailers are final (sent in headers or already added).
    Finished,
}

pub struct AgentStream {
    #[allow(dead_code)]
    id: u32,
    cfg: Rc<AgentConfig>,
    converted: bool,
    grpc_suffix: String,
    response: Response,
    metrics: Rc<Metrics>,
}

impl AgentStream {
    pub fn new(id: u32, cfg: Rc<AgentConfig>, metrics: Rc<Metrics>) -> Self {
        AgentStream {
            id,
            cfg,
            converted: false,
            grpc_suffix: String::new(),
            response: Response::Untouched,
            metrics,
        }
    }

    /// Counts the final status and, for statuses we made up, why.
    fn count_final(&self, trailers: &[(String, String)], error_kind: Option<&str>) {
        if let Some(kind) = error_kind {
            self.metrics.inc(&format!("errors.{kind}"));
        }
        if let Some(code) = trailers
            .iter()
            .find(|(k, _)| k == "grpc-status")
            .and_then(|(_, v)| status::parse_grpc_status(v.as_bytes()))
        {
            self.metrics.grpc_status(code);
        }
    }

    fn grpc_content_type(&self) -> String {
        grpc_web::grpc_content_type(&self.grpc_suffix)
    }

    /// Trailers that end the response, from the trailer frame or the reason there is none.
    fn final_trailers(&mut self, h: &mut dyn StreamHost) -> Vec<(String, String)> {
        let (trailers, kind) = self.final_trailers_inner(h);
        self.count_final(&trailers, kind);
        trailers
    }

    fn final_trailers_inner(
        &mut self,
        h: &mut dyn StreamHost,
    ) -> (Vec<(String, String)>, Option<&'static str>) {
        let response = std::mem::replace(&mut self.response, Response::Finished);
        match response {
            Response::GrpcWeb {
                scanner,
                trailer,
                header_status,
                error,
            } => {
                self.metrics.add("messages_down", scanner.messages());
                if let Some((code, msg)) = error {
                    let kind = if code == code::RESOURCE_EXHAUSTED {
                        "too_large"
                    } else {
                        "bad_response"
                    };
                    return (status_trailers(h, code, &msg), Some(kind));
                }
                if let Some(reader) = trailer {
                    return match reader.finish() {
                        Ok(pairs) => validate_status(h, pairs),
                        Err(e) => (
                            status_trailers(
                                h,
                                code::INTERNAL,
                                &format!("grpc-bridge: bad gRPC-web trailer frame: {e}"),
                            ),
                            Some("bad_trailer_frame"),
                        ),
                    };
                }
                if let Err(e) = scanner.finish() {
                    return (
                        status_trailers(
                            h,
                            code::INTERNAL,
                            &format!("grpc-bridge: response truncated: {e}"),
                        ),
                        Some("truncated"),
                    );
                }
                if let Some((st, msg)) = header_status {
                    let mut v = vec![("grpc-status".to_string(), st)];
                    if let Some(m) = msg {
                        v.push(("grpc-message".to_string(), m));
                    }
                    return validate_status(h, v);
                }
                (
                    status_trailers(
                        h,
                        code::INTERNAL,
                        "grpc-bridge: response ended without a gRPC-web trailer frame (truncated by an intermediary?)",
                    ),
                    Some("no_trailer_frame"),
                )
            }
            Response::NotGrpc {
                code,
                mut message,
                quote,
            } => {
                let q = quote_body(&quote);
                if !q.is_empty() {
                    message.push_str(": ");
                    message.push_str(&q);
                }
                (
                    status_trailers(h, code, &message),
                    Some("non_grpc_response"),
                )
            }
            Response::Untouched | Response::Finished => (Vec::new(), None),
        }
    }
}

/// `grpc-status`/`grpc-message` pairs for a synthesized status.
fn status_trailers(h: &mut dyn StreamHost, code: u32, message: &str) -> Vec<(String, String)> {
    h.log(
        LogLevel::Info,
        &format!(
            "grpc-bridge agent: ending call with {} ({code}): {message}",
            status::code_name(code)
        ),
    );
    vec![
        ("grpc-status".to_string(), code.to_string()),
        ("grpc-message".to_string(), status::percent_encode(message)),
    ]
}

/// Keeps the upstream's trailers if they carry a valid `grpc-status`; otherwise INTERNAL.
fn validate_status(
    h: &mut dyn StreamHost,
    pairs: Vec<(String, String)>,
) -> (Vec<(String, String)>, Option<&'static str>) {
    match pairs.iter().find(|(k, _)| k == "grpc-status") {
        Some((_, v)) if status::parse_grpc_status(v.as_bytes()).is_some() => (pairs, None),
        Some((_, v)) => (
            status_trailers(
                h,
                code::INTERNAL,
                &format!("grpc-bridge: invalid grpc-status {v:?} from upstream"),
            ),
            Some("bad_trailer_frame"),
        ),
        None => (
            status_trailers(
                h,
                code::INTERNAL,
                "grpc-bridge: upstream trailers carry no grpc-status",
            ),
            Some("bad_trailer_frame"),
        ),
    }
}

/// A printable, single-line excerpt of an error page for `grpc-message`.
fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn is_grpc_web_or_grpc(ct: &str) -> Option<String> {
    if let Some((Encoding::Binary, suffix)) = grpc_web::parse_grpc_web_content_type(ct) {
        return Some(suffix);
    }
    grpc_web::parse_grpc_content_type(ct)
}

impl HttpStream for AgentStream {
    fn on_request_headers(&mut self, _num: usize, _eos: bool) -> HeadersAction {
        self.request_headers(&mut WasmHost)
    }

    fn on_request_body(&mut self, size: usize, _eos: bool) -> DataAction {
        if self.converted {
            self.metrics.add("bytes_up", size as u64);
        }
        DataAction::Continue
    }

    fn on_response_headers(&mut self, _num: usize, eos: bool) -> HeadersAction {
        self.response_headers(&mut WasmHost, eos)
    }

    fn on_response_body(&mut self, size: usize, eos: bool) -> DataAction {
        self.response_body(&mut WasmHost, size, eos)
    }

    fn on_response_trailers(&mut self, _num: usize) -> HeadersAction {
        self.response_trailers(&mut WasmHost)
    }
}

/// The role's logic, against any [`StreamHost`]. One read and at most one write of each header
/// map per callback: on a unary call the agent makes 7 hostcalls (`tests/call_cost.rs`).
impl AgentStream {
    pub(crate) fn request_headers(&mut self, h: &mut dyn StreamHost) -> HeadersAction {
        let mut headers = match h.headers(MapType::HttpRequestHeaders) {
            Ok(m) => m,
            Err(e) => {
                h.log(
                    LogLevel::Debug,
                    &format!("grpc-bridge agent: request headers unreadable: {e:?}"),
                );
                return HeadersAction::Continue;
            }
        };
        let Some(suffix) = headers
            .get("content-type")
            .and_then(|ct| grpc_web::parse_grpc_content_type(&ct))
        else {
            return HeadersAction::Continue;
        };
        if headers.contains(&self.cfg.marker_header) {
            // Already converted by an agent in front of us: converting twice would break it.
            return HeadersAction::Continue;
        }
        let suffix = if suffix.is_empty() {
            "+proto".to_string()
        } else {
            suffix
        };
        headers.set(
            "content-type",
            &grpc_web::grpc_web_content_type(Encoding::Binary, &suffix),
        );
        headers.set("x-grpc-web", "1");
        headers.set(&self.cfg.marker_header, "agent");
        if let Some((header, secret)) = self
            .cfg
            .auth
            .as_ref()
            .and_then(|a| Some((&a.secret_header, a.secret.as_ref()?)))
        {
            headers.set(header, &secret.0);
        }
        // `te: trailers` is an HTTP/2 promise this hop can no longer keep.
        headers.remove("te");
        if let Err(e) = h.set_headers(MapType::HttpRequestHeaders, &headers) {
            h.log(
                LogLevel::Debug,
                &format!("grpc-bridge agent: cannot rewrite request headers: {e:?}"),
            );
            return HeadersAction::Continue;
        }
        self.converted = true;
        self.metrics.inc("calls");
        self.grpc_suffix = if suffix == "+proto" {
            String::new()
        } else {
            suffix
        };
        HeadersAction::Continue
    }

    pub(crate) fn response_headers(&mut self, h: &mut dyn StreamHost, eos: bool) -> HeadersAction {
        if !self.converted {
            return HeadersAction::Continue;
        }
        let mut headers = match h.headers(MapType::HttpResponseHeaders) {
            Ok(m) => m,
            Err(e) => {
                h.log(
                    LogLevel::Debug,
                    &format!("grpc-bridge agent: response headers unreadable: {e:?}"),
                );
                return HeadersAction::Continue;
            }
        };
        let http_status: u16 = headers
            .get(":status")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let ct = headers.get("content-type").unwrap_or_default();
        let grpc_ct = self.grpc_content_type();
        // The body shrinks (the trailer frame is cut out), so a length would be wrong.
        headers.remove("content-length");
        headers.remove(&self.cfg.marker_header);

        if http_status == 200 && is_grpc_web_or_grpc(&ct).is_some() {
            headers.set("content-type", &grpc_ct);
            let header_status = headers
                .get("grpc-status")
                .map(|s| (s, headers.get("grpc-message")));
            if eos {
                // Trailers-only. It must carry a valid status; otherwise it's an error, not OK.
                match header_status
                    .as_ref()
                    .and_then(|(s, _)| status::parse_grpc_status(s.as_bytes()))
                {
                    Some(code) => self.metrics.grpc_status(code),
                    None => {
                        let t = status_trailers(
                            h,
                            code::INTERNAL,
                            "grpc-bridge: empty response without grpc-status",
                        );
                        for (k, v) in &t {
                            headers.set(k, v);
                        }
                        self.count_final(&t, Some("no_status"));
                    }
                }
                self.response = Response::Finished;
            } else {
                if header_status.is_some() {
                    // Status already sent in headers but a body follows: keep the trailers for
                    // the end only (a status in both places would be ambiguous).
                    headers.remove("grpc-status");
                    headers.remove("grpc-message");
                }
                self.response = Response::GrpcWeb {
                    scanner: FrameScanner::new(self.cfg.max_message_bytes),
                    trailer: None,
                    header_status,
                    error: None,
                };
            }
        } else {
            // Not a gRPC-web answer: something on the path (a proxy, a CDN) answered instead.
            let code = status::http_to_grpc(http_status);
            let message = format!(
                "grpc-bridge: upstream answered HTTP {http_status}{} instead of gRPC-web",
                if ct.is_empty() {
                    String::new()
                } else {
                    format!(" ({ct})")
                }
            );
            headers.set(":status", "200");
            headers.set("content-type", &grpc_ct);
            if eos {
                let t = status_trailers(h, code, &message);
                for (k, v) in &t {
                    headers.set(k, v);
                }
                self.count_final(&t, Some("non_grpc_response"));
                self.response = Response::Finished;
            } else {
                self.response = Response::NotGrpc {
                    code,
                    message,
                    quote: Vec::new(),
                };
            }
        }
        if let Err(e) = h.set_headers(MapType::HttpResponseHeaders, &headers) {
            h.log(
                LogLevel::Debug,
                &format!("grpc-bridge agent: cannot rewrite response headers: {e:?}"),
            );
        }
        HeadersAction::Continue
    }

    pub(crate) fn response_body(
        &mut self,
        h: &mut dyn StreamHost,
        size: usize,
        eos: bool,
    ) -> DataAction {
        if self.converted {
            self.metrics.add("bytes_down", size as u64);
        }
        let quote_limit = self.cfg.error_body_quote_bytes as usize;
        let trailer_limit = self.cfg.max_trailer_bytes as usize;
        match &mut self.response {
            Response::Untouched | Response::Finished => return DataAction::Continue,
            Response::NotGrpc { quote, .. } => {
                if size > 0 {
                    if quote.len() < quote_limit {
                        if let Ok(b) = h.body(
                            BufferType::HttpResponseBody,
                            0,
                            size.min(quote_limit - quote.len()),
                        ) {
                            quote.extend_from_slice(&b);
                        }
                    }
                    let _ = h.replace_body(BufferType::HttpResponseBody, size, &[]);
                }
            }
            Response::GrpcWeb {
                scanner,
                trailer,
                error,
                ..
            } => {
                if size > 0 {
                    if error.is_some() {
                        let _ = h.replace_body(BufferType::HttpResponseBody, size, &[]);
                    } else if let Err(e) = split_chunk(h, size, scanner, trailer, trailer_limit) {
                        *error = Some(e);
                        let _ = h.replace_body(BufferType::HttpResponseBody, size, &[]);
                    }
                }
            }
        }
        if eos {
            // Envoy creates the trailer map when a filter writes it in the last body callback.
            let trailers = HeaderList(
                self.final_trailers(h)
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect(),
            );
            if let Err(e) = h.set_headers(MapType::HttpResponseTrailers, &trailers) {
                h.log(
                    LogLevel::Error,
                    &format!("grpc-bridge agent: cannot add trailers: {e:?}"),
                );
            }
        }
        DataAction::Continue
    }

    pub(crate) fn response_trailers(&mut self, h: &mut dyn StreamHost) -> HeadersAction {
        // HTTP/1.1 chunked trailers (or HTTP/2 from a gRPC-aware upstream) are rare here; if the
        // upstream sent real trailers with a status and no trailer frame, they stand.
        let mut existing = h.headers(MapType::HttpResponseTrailers).unwrap_or_default();
        if let Response::GrpcWeb {
            trailer: None,
            error: None,
            ..
        } = &self.response
        {
            if let Some(code) = existing
                .get_bytes("grpc-status")
                .and_then(status::parse_grpc_status)
            {
                self.metrics.grpc_status(code);
                self.response = Response::Finished;
                return HeadersAction::Continue;
            }
        }
        let finals = self.final_trailers(h);
        if finals.is_empty() {
            return HeadersAction::Continue;
        }
        for (k, v) in &finals {
            existing.set(k, v);
        }
        let _ = h.set_headers(MapType::HttpResponseTrailers, &existing);
        HeadersAction::Continue
    }
}

/// `n` bytes of the response body chunk at `start`: exactly `n`, or an error.
fn read_body(h: &mut dyn StreamHost, start: usize, n: usize) -> Result<Vec<u8>, (u32, String)> {
    if n == 0 {
        return Ok(Vec::new());
    }
    match h.body(BufferType::HttpResponseBody, start, n) {
        Ok(b) if b.len() == n => Ok(b),
        Ok(b) => Err((
            code::INTERNAL,
            format!(
                "grpc-bridge: response body read short ({} of {n} bytes at {start})",
                b.len()
            ),
        )),
        Err(e) => Err((
            code::INTERNAL,
            format!("grpc-bridge: response body unreadable: {e:?}"),
        )),
    }
}

/// Passes data frames, moves trailer-frame bytes out of the `size`-byte chunk into `trailer`.
/// Large chunks are not copied into the VM: the scanner reads only their 5-byte frame headers
/// from the host buffer (`get_buffer_bytes` with start and size) and skips payloads by
/// arithmetic.
fn split_chunk(
    h: &mut dyn StreamHost,
    size: usize,
    scanner: &mut FrameScanner,
    trailer: &mut Option<TrailerFrameReader>,
    trailer_limit: usize,
) -> Result<(), (u32, String)> {
    let frame_error = |e: crate::codec::grpc_frame::FrameError| {
        let c = match e {
            crate::codec::grpc_frame::FrameError::MessageTooLarge { .. } => {
                code::RESOURCE_EXHAUSTED
            }
            _ => code::INTERNAL,
        };
        (c, format!("grpc-bridge: {e}"))
    };
    let trailer_error = |e| {
        (
            code::INTERNAL,
            format!("grpc-bridge: bad gRPC-web trailer frame: {e}"),
        )
    };
    if trailer.is_some() || size <= WHOLE_CHUNK_BYTES {
        // Trailer bytes, or a small chunk (a unary response, often with its trailer frame):
        // one read of the whole chunk costs less than a hostcall per frame header.
        let chunk = read_body(h, 0, size)?;
        let cut_at = if let Some(reader) = trailer.as_mut() {
            reader.push(&chunk).map_err(trailer_error)?;
            0
        } else {
            match scanner.scan(&chunk).map_err(frame_error)?.trailers_start {
                Some(at) => {
                    let mut reader = TrailerFrameReader::new(trailer_limit);
                    reader
                        .push(chunk.get(at..).unwrap_or(&[]))
                        .map_err(trailer_error)?;
                    *trailer = Some(reader);
                    at
                }
                None => size,
            }
        };
        if cut_at < size {
            // Envoy can only drain-and-prepend or append: rewrite the chunk as its kept prefix.
            h.replace_body(
                BufferType::HttpResponseBody,
                size,
                chunk.get(..cut_at).unwrap_or(&[]),
            )
            .map_err(|e| {
                (
                    code::INTERNAL,
                    format!("grpc-bridge: cannot edit response body: {e:?}"),
                )
            })?;
        }
        return Ok(());
    }
    let outcome = scanner
        .scan_sparse(size, |start, n| read_body(h, start, n))
        .map_err(|e| match e {
            SparseScanError::Frame(e) => frame_error(e),
            SparseScanError::Peek(e) => e,
            SparseScanError::ShortPeek {
                offset,
                wanted,
                got,
            } => (
                code::INTERNAL,
                format!(
                    "grpc-bridge: response body read short ({got} of {wanted} bytes at {offset})"
                ),
            ),
        })?;
    if let Some(at) = outcome.trailers_start {
        let tail = read_body(h, at, size.saturating_sub(at))?;
        let mut reader = TrailerFrameReader::new(trailer_limit);
        reader.push(&tail).map_err(trailer_error)?;
        *trailer = Some(reader);
        // Rewrite the chunk as its kept prefix (once per call: only the chunk that holds the
        // trailer frame is edited).
        let kept = read_body(h, 0, at)?;
        h.replace_body(BufferType::HttpResponseBody, size, &kept)
            .map_err(|e| {
                (
                    code::INTERNAL,
                    format!("grpc-bridge: cannot edit response body: {e:?}"),
                )
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The agent's state machine through a fake host: what it writes, what it counts, and the
    //! cut of the trailer frame at every chunk boundary.
    use super::*;
    use crate::config::{Config, Role};
    use crate::http::stream_host::fake::{Call, FakeHost};

    fn agent() -> AgentStream {
        let json = br#"{"role":"agent","auth":{"secret":"0123456789abcdef"}}"#;
        let Ok(Config::Agent(cfg)) = Config::parse(json) else {
            panic!("not an agent config")
        };
        AgentStream::new(1, cfg, Rc::new(Metrics::new(Role::Agent)))
    }

    fn list(pairs: &[(&str, &str)]) -> HeaderList {
        HeaderList(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A converted call whose response headers (gRPC-web, 200) have been seen.
    fn converted() -> (AgentStream, FakeHost) {
        let mut a = agent();
        let mut h = FakeHost {
            request_headers: list(&[
                (":path", "/p.S/M"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]),
            response_headers: list(&[
                (":status", "200"),
                ("content-type", "application/grpc-web+proto"),
                ("content-length", "40"),
            ]),
            ..Default::default()
        };
        a.request_headers(&mut h);
        a.response_headers(&mut h, false);
        (a, h)
    }

    #[test]
    fn request_headers_become_grpc_web_in_one_write() {
        let (a, h) = converted();
        let r = &h.request_headers;
        assert_eq!(
            r.get("content-type").as_deref(),
            Some("application/grpc-web+proto")
        );
        assert_eq!(r.get("x-grpc-web").as_deref(), Some("1"));
        assert_eq!(r.get("x-grpc-bridge").as_deref(), Some("agent"));
        assert_eq!(
            r.get("x-grpc-bridge-auth").as_deref(),
            Some("0123456789abcdef")
        );
        assert!(!r.contains("te"));
        assert_eq!(
            r.get(":path").as_deref(),
            Some("/p.S/M"),
            "other headers kept"
        );
        let resp = &h.response_headers;
        assert_eq!(
            resp.get("content-type").as_deref(),
            Some("application/grpc")
        );
        assert!(!resp.contains("content-length"), "the body shrinks");
        assert_eq!(
            h.calls,
            vec![
                Call::Headers(MapType::HttpRequestHeaders),
                Call::SetHeaders(MapType::HttpRequestHeaders),
                Call::Headers(MapType::HttpResponseHeaders),
                Call::SetHeaders(MapType::HttpResponseHeaders),
            ]
        );
        assert_eq!(a.metrics.pending("calls"), 1);
    }

    #[test]
    fn non_grpc_and_already_bridged_requests_are_left_alone() {
        for headers in [
            list(&[("content-type", "text/html")]),
            list(&[
                ("content-type", "application/grpc"),
                ("x-grpc-bridge", "agent"),
            ]),
        ] {
            let mut a = agent();
            let mut h = FakeHost {
                request_headers: headers.clone(),
                ..Default::default()
            };
            a.request_headers(&mut h);
            assert_eq!(h.request_headers, headers);
            assert_eq!(h.calls, vec![Call::Headers(MapType::HttpRequestHeaders)]);
            // The response passes untouched too.
            h.response_headers = list(&[(":status", "502")]);
            a.response_headers(&mut h, true);
            assert_eq!(h.response_headers, list(&[(":status", "502")]));
        }
    }

    #[test]
    fn the_trailer_frame_is_cut_at_every_chunk_boundary_and_becomes_trailers() {
        let mut body = frame(0, b"hello");
        let message_len = body.len();
        body.extend(frame(0x80, b"grpc-status:7\r\ngrpc-message:no%20way\r\n"));
        for cut in 0..=body.len() {
            let (mut a, mut h) = converted();
            let mut out = Vec::new();
            for (i, part) in [&body[..cut], &body[cut..]].into_iter().enumerate() {
                h.chunk = part.to_vec();
                assert_eq!(
                    a.response_body(&mut h, part.len(), i == 1),
                    DataAction::Continue
                );
                out.extend_from_slice(&h.chunk);
            }
            assert_eq!(out, body[..message_len], "cut at {cut}");
            assert_eq!(
                h.response_trailers.get("grpc-status").as_deref(),
                Some("7"),
                "cut at {cut}"
            );
            assert_eq!(
                h.response_trailers.get("grpc-message").as_deref(),
                Some("no%20way"),
                "cut at {cut}"
            );
            assert_eq!(a.metrics.pending("grpc_status.7"), 1);
            assert_eq!(a.metrics.pending("messages_down"), 1);
        }
    }

    /// The budget `host-harness/tests/call_cost.rs` measures through the real ABI: one read and
    /// one write per header map, one body read, one replace and one trailer write.
    #[test]
    fn a_unary_response_in_one_chunk_costs_seven_hostcalls() {
        let mut body = frame(0, b"hello");
        body.extend(frame(0x80, b"grpc-status:0\r\n"));
        let (mut a, mut h) = converted();
        h.chunk = body.clone();
        assert_eq!(
            a.response_body(&mut h, body.len(), true),
            DataAction::Continue
        );
        assert_eq!(h.hostcalls(), 7, "{:?}", h.calls);
        assert_eq!(h.response_trailers.get("grpc-status").as_deref(), Some("0"));
    }

    #[test]
    fn a_response_without_a_trailer_frame_ends_internal_never_ok() {
        let (mut a, mut h) = converted();
        h.chunk = frame(0, b"hello");
        a.response_body(&mut h, 10, true);
        assert_eq!(
            h.response_trailers.get("grpc-status").as_deref(),
            Some("13")
        );
        assert_eq!(
            h.response_trailers.get("grpc-message").as_deref(),
            Some(status::percent_encode(
                "grpc-bridge: response ended without a gRPC-web trailer frame (truncated by an intermediary?)"
            ))
            .as_deref()
        );
        assert_eq!(a.metrics.pending("errors.no_trailer_frame"), 1);
    }

    #[test]
    fn a_proxy_error_page_becomes_a_grpc_status_quoting_the_page() {
        let mut a = agent();
        let mut h = FakeHost {
            request_headers: list(&[("content-type", "application/grpc")]),
            response_headers: list(&[(":status", "407"), ("content-type", "text/html")]),
            ..Default::default()
        };
        a.request_headers(&mut h);
        a.response_headers(&mut h, false);
        assert_eq!(h.response_headers.get(":status").as_deref(), Some("200"));
        assert_eq!(
            h.response_headers.get("content-type").as_deref(),
            Some("application/grpc")
        );
        h.chunk = b"<h1>Proxy\n Authentication Required</h1>".to_vec();
        let n = h.chunk.len();
        a.response_body(&mut h, n, true);
        assert!(h.chunk.is_empty(), "the page is not passed as gRPC data");
        assert_eq!(
            h.response_trailers.get("grpc-status").as_deref(),
            Some("16"),
            "407 is UNAUTHENTICATED"
        );
        let msg = h.response_trailers.get("grpc-message").unwrap_or_default();
        assert_eq!(
            msg,
            status::percent_encode(
                "grpc-bridge: upstream answered HTTP 407 (text/html) instead of gRPC-web: <h1>Proxy Authentication Required</h1>"
            )
        );
    }

    #[test]
    fn a_frame_larger_than_max_message_bytes_ends_resource_exhausted_and_drops_the_rest() {
        let (mut a, mut h) = converted();
        let mut big = vec![0u8];
        big.extend_from_slice(&(17u32 << 20).to_be_bytes());
        h.chunk = big.clone();
        a.response_body(&mut h, big.len(), false);
        assert!(h.chunk.is_empty());
        h.chunk = vec![1, 2, 3];
        a.response_body(&mut h, 3, true);
        assert!(h.chunk.is_empty(), "later data is dropped too");
        assert_eq!(h.response_trailers.get("grpc-status").as_deref(), Some("8"));
        assert_eq!(a.metrics.pending("errors.too_large"), 1);
    }

    #[test]
    fn a_host_failure_reading_the_body_ends_the_call_internal() {
        let (mut a, mut h) = converted();
        h.chunk = frame(0, b"x");
        h.fail = Some(crate::host::Status::BadArgument);
        a.response_body(&mut h, 6, false);
        h.fail = None;
        h.chunk.clear();
        a.response_body(&mut h, 0, true);
        assert_eq!(
            h.response_trailers.get("grpc-status").as_deref(),
            Some("13")
        );
        assert!(
            h.response_trailers
                .get("grpc-message")
                .unwrap_or_default()
                .contains("response body unreadable"),
            "{:?}",
            h.response_trailers
        );
    }
}

//! Drives the whole filter with arbitrary input: one plugin configuration, then a random
//! sequence of callbacks, chunkings and bodies, through the same Envoy-faithful model the
//! scenario tests use. Used by the libFuzzer target in `fuzz/filter/` and by the fuzz smoke
//! test (`tests/filter_fuzz.rs`), which replays the committed corpus and fresh random inputs.
//!
//! Invariants checked after every input ([`run`] returns the first one broken):
//! - the VM never traps (a trap in Envoy fails every later stream on the worker);
//! - the guest's linear memory stays within a bound derived from the configured limits and
//!   the largest chunk the host handed it (nothing grows with the stream's total volume);
//! - every converted gRPC stream ends toward the client, and ends with a status: trailers or
//!   a trailers-only answer carrying `grpc-status` (agent role), a trailer frame, a
//!   `grpc-status` header or trailer (server role), a local reply, or a reset;
//! - a converted stream ends with `grpc-status: 0` only if the upstream said `0` somewhere
//!   (never a truncated OK);
//! - nothing reaches the client after the end of its stream;
//! - the tunnel server lets nothing of the client's reach the backend before a valid
//!   WebSocket handshake.
//!
//! The input is read as a little program (see [`Reader`] and the `op` matches below); every
//! byte string is valid, short inputs are short programs. Coverage guidance only sees the
//! host side (the guest is JIT-compiled wasm), so the generators build structured traffic
//! (gRPC frames, trailer frames, base64, handshakes, WebSocket frames) from the input rather
//! than relying on the fuzzer to discover the formats.

use std::fmt::Write as _;
use std::time::Duration;

use crate::host::abi::CloseType;
use crate::host::headers::Headers;
use crate::host::vm::{LoadError, PluginOptions, WasmSource};
use crate::model::{Direction, Frame, NetFrame, Plugin, StreamId};

/// The shared secret of configurations with `auth`.
const SECRET: &str = "fuzz-secret-0123456789";

/// Most operations one input runs (beyond that the rest of the input is ignored).
const MAX_OPS: usize = 96;
/// Most times one generated chunk is repeated (to push volume past the limits cheaply).
const MAX_REPEAT: usize = 64;

/// What one input did, for statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Which role the input configured (0 agent, 1 server, 2 tunnel_client, 3 tunnel_server).
    pub role: u8,
    /// The configuration was refused at load (a valid outcome: the config fuzz target covers it).
    pub refused: bool,
    /// Operations run.
    pub ops: usize,
    /// The stream was a converted gRPC call and its status was checked.
    pub status_checked: bool,
    /// Peak guest memory in bytes.
    pub memory: usize,
}

/// Runs one input against the filter in `wasm`. `Err` names the broken invariant.
pub fn run(wasm: &[u8], input: &[u8]) -> Result<Outcome, String> {
    let mut r = Reader::new(input);
    let role = r.u8() % 4;
    let setup = Setup::read(role, &mut r);
    let options = PluginOptions::new(WasmSource::Bytes(wasm.to_vec()))
        .plugin_config(setup.config.clone().into_bytes())
        .buffer_limit(setup.buffer_limit);
    let mut plugin = match Plugin::load(options) {
        Ok(p) => p,
        Err(LoadError::ConfigureFailed { .. }) => {
            return Ok(Outcome {
                role,
                refused: true,
                ..Outcome::default()
            })
        }
        Err(e) => return Err(format!("plugin failed to load: {e:?}")),
    };
    let baseline = plugin.guest_memory_bytes();
    let mut run = Run {
        plugin: &mut plugin,
        setup: &setup,
        baseline,
        largest_chunk: 0,
        ops: 0,
        trace: Vec::new(),
    };
    let result = if role < 2 {
        run.http(&mut r)
    } else {
        run.tunnel(&mut r).map(|()| false)
    };
    let status_checked = result.map_err(|e| format!("{e}\n  ops: {}", run.trace.join(" | ")))?;
    let ops = run.ops;
    let memory = plugin.guest_memory_bytes();
    Ok(Outcome {
        role,
        refused: false,
        ops,
        status_checked,
        memory,
    })
}

/// Reads the input as a sequence of small integers and byte strings; past the end, zeros.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn pick<'s, T>(&mut self, items: &'s [T]) -> &'s T {
        &items[self.u8() as usize % items.len()]
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
}

/// The configuration one input chose.
struct Setup {
    role: u8,
    config: String,
    buffer_limit: u32,
    max_message: usize,
    max_held: usize,
    max_frame: usize,
}

impl Setup {
    fn read(role: u8, r: &mut Reader) -> Setup {
        let max_message = *r.pick(&[16usize, 100, 1024, 65536, 16 << 20]);
        let max_trailer = *r.pick(&[64usize, 200, 16384]);
        let flush = *r.pick(&[1u32, 5, 20, 50]);
        let max_held = *r.pick(&[1024usize, 4096, 262144]);
        let max_frame = *r.pick(&[1024usize, 8192, 1 << 20]);
        let quote = *r.pick(&[0u32, 16, 256]);
        let ping = *r.pick(&[0u32, 100, 20000]);
        let buffer_limit = *r.pick(&[65536u32, 1 << 20, 4 << 20]);
        let secret = r.u8() & 1 == 1;
        let config = match role {
            0 => format!(
                r#"{{"role":"agent","max_message_bytes":{max_message},"max_trailer_bytes":{max_trailer},"error_body_quote_bytes":{quote}}}"#
            ),
            1 => {
                // With `secret`: agent-marked requests must carry SECRET (the driver sends it,
                // a wrong one, or none); every other input: no auth.
                let auth = if secret {
                    format!(
                        r#","auth":{{"shared_secrets":["{SECRET}"],"require_for_unmarked":{}}}"#,
                        max_frame == 1024
                    )
                } else {
                    r#","auth":"none""#.to_string()
                };
                format!(
                    r#"{{"role":"server","max_message_bytes":{max_message},"max_trailer_bytes":{max_trailer},"flush_interval_ms":{flush},"max_held_bytes":{max_held}{auth}}}"#
                )
            }
            2 => format!(
                r#"{{"role":"tunnel_client","tunnel_host":"bridge.example:443","max_frame_bytes":{max_frame},"ping_interval_ms":{ping}}}"#
            ),
            _ => {
                let headers = if secret {
                    r#","tunnel_headers":{"x-tunnel-token":"s3cret"}"#
                } else {
                    ""
                };
                format!(
                    r#"{{"role":"tunnel_server","auth":"none","max_frame_bytes":{max_frame}{headers}}}"#
                )
            }
        };
        Setup {
            role,
            config,
            buffer_limit,
            max_message,
            max_held,
            max_frame,
        }
    }

    /// Guest memory allowed past the baseline: every buffer the filter keeps is bounded by a
    /// limit below, plus copies of the largest chunk the host handed over at once (the host
    /// gives a paused body whole, so that chunk can be the whole held body).
    fn memory_bound(&self, largest_chunk: usize) -> usize {
        let limits = match self.role {
            0 | 1 => self.max_message.min(1 << 20) + self.max_held + 16384,
            _ => self.max_frame.saturating_mul(2),
        };
        (4 << 20) + 4 * (limits + largest_chunk)
    }
}

struct Run<'p> {
    plugin: &'p mut Plugin,
    setup: &'p Setup,
    baseline: usize,
    largest_chunk: usize,
    ops: usize,
    /// What each operation did, for failure reports.
    trace: Vec<String>,
}

/// Content types a request or response may claim.
const CONTENT_TYPES: &[&str] = &[
    "application/grpc",
    "application/grpc+proto",
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "text/html",
    "application/GRPC-WEB",
    "",
];

/// `grpc-status` values, well-formed or not.
const STATUSES: &[&str] = &[
    "0",
    "0",
    "2",
    "13",
    "14",
    "8",
    "abc",
    "-1",
    "99999999999",
    "",
    " 0",
    "00",
    "4294967296",
];

/// The HTTP side of one stream, as the driver has played it so far.
#[derive(Default)]
struct HttpState {
    request_headers: bool,
    request_ended: bool,
    response_headers: bool,
    response_ended: bool,
    /// The upstream said `grpc-status: 0` somewhere (headers, trailers or body).
    upstream_ok: bool,
    upstream_body: Vec<u8>,
    request_type: String,
    /// The request carried the agent marker (the agent passes such requests untouched).
    marked: bool,
    text_response: bool,
    /// The upstream's answer claims gRPC-web itself (server role: passed through as is, the
    /// body is the backend's own business).
    upstream_web: bool,
}

impl Run<'_> {
    fn check_vm(&mut self, what: &str) -> Result<(), String> {
        self.trace.push(what.to_string());
        if let Some(failure) = self.plugin.failure() {
            return Err(format!("the VM trapped during {what}: {failure}"));
        }
        let used = self
            .plugin
            .guest_memory_bytes()
            .saturating_sub(self.baseline);
        let bound = self.setup.memory_bound(self.largest_chunk);
        if used > bound {
            return Err(format!(
                "guest memory grew by {used} bytes during {what} (bound {bound}, config {})",
                self.setup.config
            ));
        }
        Ok(())
    }

    fn chunk_seen(&mut self, n: usize, held: usize) {
        self.largest_chunk = self.largest_chunk.max(n).max(held);
    }

    /// Headers from the source of `dir`, written to the trace first.
    fn headers(&mut self, id: StreamId, dir: Direction, headers: Headers, end_stream: bool) {
        self.trace
            .push(format!("{} end={end_stream}", brief(&headers)));
        match dir {
            Direction::Request => self.plugin.http_request_headers(id, headers, end_stream),
            Direction::Response => self.plugin.http_response_headers(id, headers, end_stream),
        }
    }

    /// One HTTP stream. Returns whether its status was checked.
    fn http(&mut self, r: &mut Reader) -> Result<bool, String> {
        let agent = self.setup.role == 0;
        let id = self.plugin.http_new_stream();
        let mut st = HttpState::default();
        let mut out: Vec<Frame> = Vec::new();
        while !r.is_empty() && self.ops < MAX_OPS && !self.plugin.http_is_finished(id) {
            self.ops += 1;
            let op = r.u8() % 10;
            let what = match op {
                0 | 1 if !st.request_headers => {
                    let ct = *r.pick(CONTENT_TYPES);
                    let flags = r.u8();
                    let mut h = Headers::from_pairs(&[
                        (":method", if flags & 0x40 == 0 { "POST" } else { "GET" }),
                        (":scheme", "http"),
                        (":authority", "backend.example"),
                        (":path", "/bridge.test.BridgeTest/Unary"),
                    ]);
                    if !ct.is_empty() {
                        h.add("content-type", ct);
                    }
                    if flags & 1 != 0 {
                        h.add("te", "trailers");
                    }
                    if flags & 2 != 0 {
                        h.add("x-grpc-bridge", "agent");
                        st.marked = true;
                    }
                    if flags & 4 != 0 {
                        h.add("grpc-timeout", "10S");
                    }
                    if flags & 8 != 0 {
                        h.add("grpc-encoding", "gzip");
                    }
                    if flags & 16 != 0 {
                        let n = r.u16() as usize;
                        h.add("x-huge", &"v".repeat(n));
                    }
                    if flags & 32 != 0 {
                        h.add("x-grpc-web", "1");
                    }
                    match r.u8() % 4 {
                        1 => h.add("x-grpc-bridge-auth", SECRET),
                        2 => h.add("x-grpc-bridge-auth", "fuzz-secret-0123456788"),
                        _ => {}
                    }
                    st.request_type = ct.to_string();
                    st.request_headers = true;
                    st.request_ended = flags & 0x80 != 0;
                    self.headers(id, Direction::Request, h, st.request_ended);
                    "request headers"
                }
                0..=2 if st.request_headers && !st.request_ended => {
                    let text = st.request_type.contains("text");
                    let (chunk, end) = self.body(r, text, false);
                    st.request_ended = end;
                    self.plugin.http_data(id, Direction::Request, &chunk, end);
                    "a request body chunk"
                }
                3 if st.request_headers && !st.request_ended => {
                    st.request_ended = true;
                    let t = Headers::from_pairs(&[("x-request-trailer", "1")]);
                    self.plugin.http_trailers(id, Direction::Request, t);
                    "request trailers"
                }
                4 if st.request_headers && !st.response_headers => {
                    let status = *r.pick(&["200", "200", "200", "404", "502", "503", "407", "500"]);
                    let ct = *r.pick(CONTENT_TYPES);
                    let flags = r.u8();
                    let mut h = Headers::from_pairs(&[(":status", status)]);
                    if !ct.is_empty() {
                        h.add("content-type", ct);
                    }
                    st.text_response = ct.contains("text");
                    st.upstream_web = ct.to_ascii_lowercase().starts_with("application/grpc-web");
                    if flags & 1 != 0 {
                        let g = *r.pick(STATUSES);
                        h.add("grpc-status", g);
                        st.upstream_ok |= g.trim() == "0";
                        h.add("grpc-message", "from headers");
                    }
                    st.response_headers = true;
                    st.response_ended = flags & 2 != 0;
                    self.headers(id, Direction::Response, h, st.response_ended);
                    "response headers"
                }
                4..=6 if st.response_headers && !st.response_ended => {
                    let (chunk, end) = self.body(r, st.text_response, true);
                    st.upstream_body.extend_from_slice(&chunk);
                    st.response_ended = end;
                    self.plugin.http_data(id, Direction::Response, &chunk, end);
                    "a response body chunk"
                }
                7 if st.response_headers && !st.response_ended => {
                    let g = *r.pick(STATUSES);
                    st.upstream_ok |= g.trim() == "0";
                    st.response_ended = true;
                    let mut t = Headers::from_pairs(&[("grpc-status", g)]);
                    if r.u8() & 1 != 0 {
                        t.add("grpc-message", "bad%20thing \u{e9}");
                    }
                    self.plugin.http_trailers(id, Direction::Response, t);
                    "response trailers"
                }
                8 => {
                    let ms = r.u8() as u64;
                    self.plugin.advance(Duration::from_millis(ms));
                    "time passing"
                }
                9 if r.u8().is_multiple_of(8) => {
                    if r.u8() & 1 == 0 {
                        self.plugin.http_reset(id);
                        "a reset"
                    } else {
                        self.plugin.http_upstream_failed(id, "connection failure");
                        "an upstream failure"
                    }
                }
                _ => "nothing",
            };
            let held = self.plugin.http_held_bytes(id, Direction::Request)
                + self.plugin.http_held_bytes(id, Direction::Response);
            self.chunk_seen(0, held);
            out.extend(self.plugin.http_take_downstream(id));
            self.plugin.http_take_upstream(id);
            self.check_vm(what)?;
        }
        if !st.request_headers {
            return Ok(false);
        }
        // Finish the exchange the way a well-behaved peer would, so that every stream must end.
        if !self.plugin.http_is_finished(id) {
            if !st.request_ended {
                self.plugin.http_data(id, Direction::Request, &[], true);
            }
            if !st.response_headers {
                let ct = if agent {
                    "application/grpc-web+proto"
                } else {
                    "application/grpc"
                };
                let h = Headers::from_pairs(&[(":status", "200"), ("content-type", ct)]);
                self.plugin.http_response_headers(id, h, false);
            }
            if !st.response_ended {
                self.plugin.http_data(id, Direction::Response, &[], true);
            }
        }
        // Past every timer a stream can have: the flush interval (<= 50 ms here) and the plain
        // HTTP/1.1 hold (1000 ms by default).
        self.plugin.advance(Duration::from_millis(1100));
        out.extend(self.plugin.http_take_downstream(id));
        self.check_vm("the end of the stream")?;
        st.upstream_ok |= body_says_ok(&st.upstream_body);
        self.check_http_end(id, &st, &out)
    }

    /// Checks how the stream ended toward the client.
    fn check_http_end(&self, id: StreamId, st: &HttpState, out: &[Frame]) -> Result<bool, String> {
        // Nothing after the end of the stream.
        if let Some(end) = out.iter().position(frame_ends) {
            if end + 1 < out.len() {
                return Err(format!("frames after the end of the stream: {out:?}"));
            }
        }
        let ct = st.request_type.to_ascii_lowercase();
        let converted = if self.setup.role == 0 {
            ct.starts_with("application/grpc")
                && !ct.starts_with("application/grpc-web")
                && !st.marked
        } else {
            ct.starts_with("application/grpc-web") && !st.upstream_web
        };
        if !converted {
            return Ok(false);
        }
        let local = self.plugin.http_local_reply(id);
        let reset = out.iter().any(|f| matches!(f, Frame::Reset));
        let ended = reset || out.iter().any(frame_ends);
        if !ended && local.is_none() {
            return Err(format!(
                "a converted stream never ended toward the client (config {}); sent: {}",
                self.setup.config,
                summary(out)
            ));
        }
        if reset {
            return Ok(true);
        }
        // The status the client ends up with: headers, trailers, or a trailer frame in the body.
        let mut status: Option<String> = None;
        let mut http_status: Option<String> = None;
        let mut body = Vec::new();
        let mut text = false;
        let mut grpc_type: Option<String> = None;
        for f in out {
            match f {
                Frame::Headers { headers, .. } => {
                    http_status = headers.get(":status").map(str::to_string);
                    grpc_type = headers.get("content-type").map(str::to_string);
                    text = headers
                        .get("content-type")
                        .is_some_and(|c| c.contains("grpc-web-text"));
                    if let Some(s) = headers.get("grpc-status") {
                        status = Some(s.to_string());
                    }
                }
                Frame::Data { bytes, .. } => body.extend_from_slice(bytes),
                Frame::Trailers(t) => {
                    if let Some(s) = t.get("grpc-status") {
                        status = Some(s.to_string());
                    }
                }
                Frame::Reset => {}
            }
        }
        if let Some(reply) = &local {
            if let Some(s) = reply.headers.get("grpc-status") {
                status = Some(s.to_string());
            } else if let Some(s) = reply.grpc_status {
                status = Some(s.to_string());
            }
            http_status = Some(reply.status.to_string());
        }
        if self.setup.role == 1 && status.is_none() {
            let frames = if text {
                lenient_base64(&body)
            } else {
                body.clone()
            };
            status = trailer_frame_status(&frames);
        }
        // A 200 that is not gRPC at all (a backend's HTML page) is a defined answer too: the
        // client sees the content type and maps it (gRPC's HTTP-to-status rules).
        let grpc_answer = grpc_type
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/grpc"));
        let http_ok =
            http_status.as_deref().is_none_or(|s| s == "200") && (grpc_answer || local.is_some());
        match status.as_deref() {
            None if http_ok => Err(format!(
                "a converted stream ended without a grpc-status (config {}); sent: {}; local reply: {local:?}",
                self.setup.config,
                summary(out)
            )),
            Some("0") if !st.upstream_ok => Err(format!(
                "OK toward the client although the upstream never said grpc-status 0 (config {}); upstream body {} bytes; sent: {}",
                self.setup.config,
                st.upstream_body.len(),
                summary(out)
            )),
            _ => Ok(true),
        }
    }

    /// One body chunk: raw bytes, gRPC frames (possibly lying about their length), a trailer
    /// frame, or base64 text of those; repeated to build volume. Returns (chunk, end_stream).
    fn body(&mut self, r: &mut Reader, text: bool, response: bool) -> (Vec<u8>, bool) {
        let kind = r.u8();
        let mut unit = Vec::new();
        match kind % 6 {
            0 => {
                let n = r.u8() as usize;
                unit.extend_from_slice(r.bytes(n));
            }
            1 | 2 => {
                // A gRPC message frame; the flag byte and length may lie.
                let n = r.u16() as usize % 2048;
                let flag = if kind & 0x40 != 0 { r.u8() } else { 0 };
                let declared = if kind & 0x80 != 0 {
                    r.u16() as u32
                } else {
                    n as u32
                };
                unit.push(flag);
                unit.extend_from_slice(&declared.to_be_bytes());
                unit.resize(unit.len() + n, b'm');
            }
            3 if response || kind & 0x80 != 0 => {
                // A trailer frame with fields from the input (names and values may be hostile).
                let mut block = String::new();
                let g = *r.pick(STATUSES);
                let _ = write!(
                    block,
                    "{}:{g}\r\n",
                    r.pick(&[
                        "grpc-status",
                        "GRPC-STATUS",
                        "Grpc-Status",
                        ":status",
                        "grpc status"
                    ])
                );
                let extra = r.u8() as usize % 48;
                let raw = r.bytes(extra);
                block.push_str(&String::from_utf8_lossy(raw));
                if kind & 0x40 == 0 {
                    block.push_str("\r\n");
                }
                let flag = *r.pick(&[0x80u8, 0x80, 0x81, 0x01]);
                unit.push(flag);
                let len = block.len() as u32;
                let declared = if kind & 0x20 != 0 {
                    len.saturating_add(r.u8() as u32)
                } else {
                    len
                };
                unit.extend_from_slice(&declared.to_be_bytes());
                unit.extend_from_slice(block.as_bytes());
            }
            _ => {
                let n = r.u8() as usize % 64;
                unit.extend_from_slice(r.bytes(n));
            }
        }
        if text && r.u8() & 3 != 0 {
            unit = base64(&unit).into_bytes();
        }
        let repeat = 1 + r.u8() as usize % MAX_REPEAT;
        let mut chunk = Vec::with_capacity(unit.len() * repeat);
        for _ in 0..repeat {
            chunk.extend_from_slice(&unit);
        }
        let end = r.u8() & 3 == 0;
        self.chunk_seen(chunk.len(), 0);
        (chunk, end)
    }

    /// One connection through a network role.
    fn tunnel(&mut self, r: &mut Reader) -> Result<(), String> {
        let server = self.setup.role == 3;
        let (id, _) = self.plugin.connection_open();
        let mut upstream_seen: Vec<u8> = Vec::new();
        let mut down_closed = false;
        while !r.is_empty() && self.ops < MAX_OPS && !self.plugin.connection_is_closed(id) {
            self.ops += 1;
            let op = r.u8() % 8;
            let what = match op {
                0..=2 if !down_closed => {
                    let kind = r.u8();
                    let mut chunk = match kind % 4 {
                        0 if server => upgrade_request(r, kind).into_bytes(),
                        0 => {
                            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                                .to_vec()
                        }
                        1 | 2 => ws_frame(r, server),
                        _ => {
                            let n = r.u8() as usize;
                            r.bytes(n).to_vec()
                        }
                    };
                    let repeat = 1 + r.u8() as usize % 16;
                    chunk = chunk.repeat(repeat);
                    let end = r.u8().is_multiple_of(16);
                    down_closed = end;
                    self.chunk_seen(chunk.len(), 0);
                    self.plugin.connection_downstream_data(id, &chunk, end);
                    "downstream data"
                }
                3 | 4 => {
                    let kind = r.u8();
                    let mut chunk = match kind % 4 {
                        0 if !server => {
                            let accept = if kind & 0x80 == 0 {
                                "computed"
                            } else {
                                "wrong"
                            };
                            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: grpc-bridge.tunnel.v1\r\n\r\n").into_bytes()
                        }
                        1 | 2 => ws_frame(r, !server),
                        _ => {
                            let n = r.u8() as usize;
                            r.bytes(n).to_vec()
                        }
                    };
                    let repeat = 1 + r.u8() as usize % 16;
                    chunk = chunk.repeat(repeat);
                    self.chunk_seen(chunk.len(), 0);
                    let end = r.u8().is_multiple_of(16);
                    self.plugin.connection_upstream_data(id, &chunk, end);
                    "upstream data"
                }
                5 => {
                    // Up to ~5 s: past the keepalive period and the close timer, without
                    // spending the run on thousands of ticks.
                    self.plugin
                        .advance(Duration::from_millis(r.u8() as u64 * 20));
                    "time passing"
                }
                6 if r.u8().is_multiple_of(4) => {
                    down_closed = true;
                    self.plugin
                        .connection_downstream_closed(id, CloseType::Remote);
                    "the client closing"
                }
                7 if r.u8().is_multiple_of(4) => {
                    self.plugin.connection_upstream_reset(id);
                    "the upstream failing"
                }
                _ => "nothing",
            };
            let (read, write) = self.plugin.connection_held_bytes(id);
            self.chunk_seen(0, read.max(write));
            for f in self.plugin.connection_take_upstream(id) {
                if let NetFrame::Data { bytes, .. } = f {
                    upstream_seen.extend_from_slice(&bytes);
                }
            }
            self.plugin.connection_take_downstream(id);
            self.check_vm(what)?;
        }
        if server {
            // Until the client's own HTTP/2 preface has come through a valid upgrade, the
            // backend may see only the server's own bytes: its preface and SETTINGS (sent to
            // get a clean refusal or the 101 out) and nudge PINGs (sent so a close frame or
            // pong goes out). Client bytes after the preface would start with the client's
            // SETTINGS frame, which is none of these (the generator never sends that preface
            // inside a WebSocket frame, so no client bytes may pass at all).
            const OWN: &[u8] =
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
            const NUDGE: &[u8] = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00grpc-brg";
            let own_only = match upstream_seen.strip_prefix(OWN) {
                None => OWN.starts_with(&upstream_seen),
                Some(rest) => {
                    rest.len() % NUDGE.len() == 0 && rest.chunks(NUDGE.len()).all(|c| c == NUDGE)
                }
            };
            if !own_only {
                return Err(format!(
                    "client bytes reached the backend without a valid handshake: {:?}",
                    String::from_utf8_lossy(&upstream_seen)
                ));
            }
        }
        if !self.plugin.connection_is_closed(id) {
            self.plugin
                .connection_downstream_closed(id, CloseType::Remote);
        }
        self.plugin.advance(Duration::from_millis(1500));
        self.check_vm("the end of the connection")
    }
}

/// Headers with long values cut.
fn brief(h: &Headers) -> String {
    h.iter()
        .map(|(k, v)| {
            if v.len() > 40 {
                format!("{k}: <{} bytes>", v.len())
            } else {
                format!("{k}: {v}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Frames in short: headers in full, bodies by size and first bytes.
fn summary(out: &[Frame]) -> String {
    out.iter()
        .map(|f| match f {
            Frame::Headers {
                headers,
                end_stream,
            } => format!("headers[{}] end={end_stream}", brief(headers)),
            Frame::Data { bytes, end_stream } => format!(
                "data[{} bytes, starts {:?}, ends {:?}] end={end_stream}",
                bytes.len(),
                &bytes[..bytes.len().min(8)],
                String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(40)..])
            ),
            Frame::Trailers(t) => format!("trailers[{}]", brief(t)),
            Frame::Reset => "reset".to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn frame_ends(f: &Frame) -> bool {
    match f {
        Frame::Headers { end_stream, .. } | Frame::Data { end_stream, .. } => *end_stream,
        Frame::Trailers(_) | Frame::Reset => true,
    }
}

/// A WebSocket upgrade request, valid unless the input says otherwise.
fn upgrade_request(r: &mut Reader, kind: u8) -> String {
    let path = if kind & 0x40 == 0 {
        "/grpc-bridge/tunnel"
    } else {
        "/other"
    };
    let key = if kind & 0x20 == 0 {
        "dGhlIHNhbXBsZSBub25jZQ=="
    } else {
        "short"
    };
    let version = *r.pick(&["13", "13", "8", ""]);
    let protocol = *r.pick(&["grpc-bridge.tunnel.v1", "grpc-bridge.tunnel.v1", "other"]);
    let token = *r.pick(&["", "s3cret", "wrong"]);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: bridge.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: {protocol}\r\n"
    );
    if !version.is_empty() {
        let _ = write!(req, "Sec-WebSocket-Version: {version}\r\n");
    }
    if !token.is_empty() {
        let _ = write!(req, "X-Tunnel-Token: {token}\r\n");
    }
    req.push_str("\r\n");
    req
}

/// A WebSocket frame from the input: any flags and opcode, the three length encodings (the
/// 64-bit one possibly with the top bit set), masked or not.
fn ws_frame(r: &mut Reader, masked_by_default: bool) -> Vec<u8> {
    let b0 = r.u8();
    let flags = r.u8();
    let first = if flags & 1 == 0 {
        0x80 | (b0 & 0x0f)
    } else {
        b0
    };
    let payload_len = r.u8() as usize;
    let payload = r.bytes(payload_len).to_vec();
    let masked = masked_by_default != (flags & 2 != 0);
    let mut f = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match flags >> 5 {
        0..=4 => f.push(mask_bit | payload.len().min(125) as u8),
        5 => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        6 => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        _ => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(u64::MAX - r.u8() as u64).to_be_bytes());
        }
    }
    let body = if flags >> 5 <= 4 {
        &payload[..payload.len().min(125)]
    } else {
        &payload[..]
    };
    if masked {
        let key = [r.u8(), r.u8(), r.u8(), r.u8()];
        f.extend_from_slice(&key);
        f.extend(body.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(body);
    }
    f
}

/// Did the upstream body carry `grpc-status: 0` (binary or base64 text, any case)?
fn body_says_ok(body: &[u8]) -> bool {
    let says = |b: &[u8]| {
        let lower = b.to_ascii_lowercase();
        lower
            .windows(b"grpc-status".len())
            .enumerate()
            .any(|(i, w)| {
                // grpc-status followed by a value of one or more zeros: OK.
                let mut digits = lower[i + w.len()..]
                    .iter()
                    .skip_while(|c| **c == b':' || **c == b' ' || **c == b'\t')
                    .take_while(|c| c.is_ascii_digit())
                    .peekable();
                w == b"grpc-status" && digits.peek().is_some() && digits.all(|c| *c == b'0')
            })
    };
    says(body) || says(&lenient_base64(body))
}

/// The `grpc-status` in the first trailer frame of a gRPC-web body, read independently of the
/// filter's codec.
/// The upstream's message bytes may be garbage (passed through as they came), so when the
/// frames do not walk cleanly, the trailer frame that ends the body is looked for instead.
fn trailer_frame_status(body: &[u8]) -> Option<String> {
    let block_status = |block: &[u8]| {
        String::from_utf8_lossy(block)
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("grpc-status")
                    .then(|| value.trim().to_string())
            })
    };
    let header = |at: usize| {
        let flag = *body.get(at)?;
        let len = u32::from_be_bytes(body.get(at + 1..at + 5)?.try_into().ok()?) as usize;
        Some((flag, (at + 5).checked_add(len)?))
    };
    let mut at = 0usize;
    while let Some((flag, end)) = header(at) {
        if end > body.len() {
            break;
        }
        if flag & 0x80 != 0 {
            if let Some(status) = block_status(&body[at + 5..end]) {
                return Some(status);
            }
            // A backend's message with the trailer bit set (passed through as it came): the
            // frame the filter appended is the one that ends the body.
            break;
        }
        at = end;
    }
    (0..body.len())
        .filter(|&p| header(p).is_some_and(|(flag, end)| flag & 0x80 != 0 && end == body.len()))
        .find_map(|p| block_status(&body[p + 5..]))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.len();
        let v = (group[0] as u32) << 16
            | (group.get(1).copied().unwrap_or(0) as u32) << 8
            | group.get(2).copied().unwrap_or(0) as u32;
        for i in 0..4 {
            if i <= n {
                out.push(B64[(v >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64 text with padding allowed anywhere between groups (grpc-web-text); other
/// bytes skipped.
pub fn lenient_base64(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                (acc, bits) = (0, 0);
                continue;
            }
            _ => continue,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Hand-written programs for the seed corpus (`fuzz/filter/corpus/filter/`): one well-formed
/// exchange per role and transport, so that mutations start from traffic that gets deep.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Setup bytes after the role: max_message, max_trailer, flush, max_held, max_frame,
    // quote, ping, buffer_limit, secret (indexes into the lists in `Setup::read`).
    const DEFAULTS: [u8; 9] = [4, 2, 1, 2, 2, 2, 2, 1, 0];
    let setup = |role: u8| {
        let mut v = vec![role];
        v.extend_from_slice(&DEFAULTS);
        v
    };
    // A gRPC message frame of `n` bytes as a body op: kind 1, u16 n, text byte?, repeat, end.
    let frame = |n: u16, text: bool, end: bool| {
        let mut v = vec![1u8];
        v.extend_from_slice(&n.to_le_bytes());
        if text {
            v.push(1);
        }
        v.extend_from_slice(&[0, if end { 0 } else { 1 }]);
        v
    };
    // A trailer frame `grpc-status: <STATUSES[status]>` as a body op (kind 3, name index 0).
    let trailer_frame = |status: u8, text: bool| {
        let mut v = vec![3u8, status, 0, 0, 0];
        if text {
            v.push(1);
        }
        v.extend_from_slice(&[0, 0]);
        v
    };
    // A stream's start after `setup`: request headers (op 0: content type, flags, secret
    // indexes) and one request message of `n` bytes that ends the request (op 2).
    let request = |mut v: Vec<u8>, headers: [u8; 3], n: u16, text: bool| {
        v.push(0);
        v.extend_from_slice(&headers);
        v.push(2);
        v.extend(frame(n, text, true));
        v
    };
    let mut out = Vec::new();

    // Server role, binary gRPC-web unary: request frame, response frame, trailers OK.
    let mut p = request(setup(1), [3, 0, 0], 12, false); // grpc-web+proto, flags 0, no secret
    p.extend_from_slice(&[4, 0, 0, 0]); // response headers: 200, application/grpc
    p.push(5);
    p.extend(frame(20, false, false));
    p.extend_from_slice(&[7, 0, 0]); // response trailers grpc-status 0
    out.push(("server-unary-binary", p));

    // Server role, text mode, a streamed response with time passing between messages.
    let mut p = request(setup(1), [4, 0, 0], 7, true);
    p.extend_from_slice(&[4, 0, 0, 0]);
    for _ in 0..3 {
        p.push(5);
        p.extend(frame(300, false, false));
        p.extend_from_slice(&[8, 7]);
    }
    p.extend_from_slice(&[7, 3, 1]); // grpc-status 13 with a message
    out.push(("server-stream-text", p));

    // Server role, trailers-only answer (grpc-status in the headers, end of stream).
    let mut p = setup(1);
    p.extend_from_slice(&[0, 3, 0x80, 0]);
    p.extend_from_slice(&[4, 0, 0, 3, 4]); // headers with grpc-status 14, ended
    out.push(("server-trailers-only", p));

    // Agent role, unary: native request, gRPC-web answer with its trailer frame.
    let mut p = request(setup(0), [0, 1, 0], 10, false); // application/grpc, te: trailers
    p.extend_from_slice(&[4, 0, 3, 0]); // 200, grpc-web+proto
    p.push(5);
    p.extend(frame(10, false, false));
    p.push(5);
    p.extend(trailer_frame(0, false));
    out.push(("agent-unary", p));

    // Agent role, an answer cut before its trailer frame, then an HTML error page.
    let mut p = request(setup(0), [0, 1, 0], 10, false);
    p.extend_from_slice(&[4, 0, 3, 0]);
    p.push(5);
    p.extend(frame(100, false, true));
    out.push(("agent-truncated", p));
    let mut p = request(setup(0), [0, 1, 0], 10, false);
    p.extend_from_slice(&[4, 4, 6, 0]); // 502 text/html
    p.extend_from_slice(&[5, 0, 20]);
    p.extend_from_slice(b"<html>bad gateway</html>");
    p.extend_from_slice(&[0, 0]);
    out.push(("agent-error-page", p));

    // Tunnel server: a valid upgrade, then masked frames both ways.
    let mut p = setup(3);
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1]); // upgrade (valid), repeat 1, not ended
    p.extend_from_slice(&[1, 1, 2, 0, 9]); // a masked binary frame: b0, flags, len 9
    p.extend_from_slice(b"PRI * HTT");
    p.extend_from_slice(&[1, 2, 3, 4, 0, 1]);
    p.extend_from_slice(&[3, 1, 2, 1, 5]); // backend bytes in a frame toward the client
    p.extend_from_slice(b"hello");
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&[5, 100, 0]);
    out.push(("tunnel-server", p));

    // Tunnel client: the client's preface, the server's 101, frames back, a ping period.
    let mut p = setup(2);
    p.extend_from_slice(&[0, 0, 0, 1]);
    p.extend_from_slice(&[3, 0, 0, 1]);
    p.extend_from_slice(&[3, 1, 2, 0, 4]);
    p.extend_from_slice(b"data");
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&[5, 0x20, 0x4e]);
    out.push(("tunnel-client", p));
    // Server role with `auth` (the last setup byte: a secret): an agent-marked request with
    // the right secret, then one more stream's worth of response.
    let mut p = request(
        vec![1u8, 4, 2, 1, 2, 2, 2, 2, 1, 1],
        [3, 2, 1], // grpc-web+proto, the marker, the right secret
        12,
        false,
    );
    p.extend_from_slice(&[4, 0, 0, 0]);
    p.push(5);
    p.extend(frame(20, false, false));
    p.extend_from_slice(&[7, 0, 0]);
    out.push(("server-auth", p));
    out
}

/// A deterministic generator of inputs for the smoke test (xorshift64*).
pub struct InputGen(u64);

impl InputGen {
    pub fn new(seed: u64) -> Self {
        InputGen(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Random bytes, 1 to `max` long.
    pub fn input(&mut self, max: usize) -> Vec<u8> {
        let len = 1 + (self.next() as usize) % max.max(1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_helpers_agree() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            assert_eq!(lenient_base64(base64(&data).as_bytes()), data);
        }
        // Padding between groups, as grpc-web-text allows.
        let joined = format!("{}{}", base64(b"ab"), base64(b"cde"));
        assert_eq!(lenient_base64(joined.as_bytes()), b"abcde");
    }

    #[test]
    fn status_readers() {
        let mut body = vec![0, 0, 0, 0, 1, b'x'];
        let block = b"GRPC-Status: 13\r\ngrpc-message: m\r\n";
        body.push(0x80);
        body.extend_from_slice(&(block.len() as u32).to_be_bytes());
        body.extend_from_slice(block);
        assert_eq!(trailer_frame_status(&body).as_deref(), Some("13"));
        assert!(!body_says_ok(&body));
        assert!(body_says_ok(b"\x80\0\0\0\x0fgrpc-status: 0\r\n"));
        assert!(body_says_ok(
            base64(b"\x80\0\0\0\x0egrpc-status:0\r\n").as_bytes()
        ));
        assert!(!body_says_ok(b"grpc-status: 10"));
        assert_eq!(trailer_frame_status(&[0, 0, 0, 0, 9]), None);
    }
}

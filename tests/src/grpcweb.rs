//! A raw, browser-style gRPC-web client over HTTP/1.1 (hyper), and cases that check a server
//! side (our server role or Envoy's grpc_web filter) at the byte level: frames, the 0x80 trailer
//! frame, text mode, Trailers-Only, streaming.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prost::Message;
use tokio::time::timeout;

use crate::backend::pattern;
use crate::cases::{gated_stream, TRICKY_MESSAGE};
use crate::pb::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A length-prefixed frame: flag byte, 4-byte big-endian length, data.
pub fn frame(flag: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len());
    v.push(flag);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

pub fn msg_frame<M: Message>(m: &M) -> Vec<u8> {
    frame(0, &m.encode_to_vec())
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub flag: u8,
    pub data: Vec<u8>,
}

impl Frame {
    pub fn is_trailer(&self) -> bool {
        self.flag & 0x80 != 0
    }
}

/// Split a body into frames; errors on a truncated frame.
pub fn parse_frames(mut b: &[u8]) -> Result<Vec<Frame>, String> {
    let mut out = vec![];
    while !b.is_empty() {
        if b.len() < 5 {
            return Err(format!("truncated frame header ({} bytes left)", b.len()));
        }
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if b.len() < 5 + len {
            return Err(format!(
                "truncated frame: length {len}, {} bytes left",
                b.len() - 5
            ));
        }
        out.push(Frame {
            flag: b[0],
            data: b[5..5 + len].to_vec(),
        });
        b = &b[5 + len..];
    }
    Ok(out)
}

/// Parse an HTTP/1-style header block (`name:value\r\n` lines) from a trailer frame.
pub fn parse_trailer_block(data: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(data)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `grpc-status` and `grpc-message` of the first trailer frame in `frames`; each empty when
/// missing (no trailer frame, or no such trailer).
pub fn trailer_frame_status(frames: &[Frame]) -> (String, String) {
    let trailers = frames
        .iter()
        .find(|f| f.is_trailer())
        .map(|f| parse_trailer_block(&f.data))
        .unwrap_or_default();
    let get = |name: &str| {
        trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

/// Decode a grpc-web-text body: base64, where padding may appear between frames (each 4-char
/// quantum decodes on its own).
pub fn decode_text(b: &[u8]) -> Result<Vec<u8>, String> {
    let clean: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if !clean.len().is_multiple_of(4) {
        return Err(format!(
            "base64 text body of {} chars is not a multiple of 4",
            clean.len()
        ));
    }
    let mut out = vec![];
    for q in clean.chunks(4) {
        out.extend(
            B64.decode(q)
                .map_err(|e| format!("bad base64 quantum {:?}: {e}", String::from_utf8_lossy(q)))?,
        );
    }
    Ok(out)
}

pub fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC-web call in flight over its own HTTP/1.1 connection.
pub struct WebCall {
    pub status: u16,
    pub headers: http::HeaderMap,
    body: Incoming,
    started: Instant,
    /// Raw body chunks with their arrival time since the request was sent.
    pub chunks: Vec<(Duration, Vec<u8>)>,
    /// HTTP/1.1 chunked trailers, if the response had any.
    pub trailers: Option<http::HeaderMap>,
    done: bool,
}

impl WebCall {
    /// POST `body` to `path` with the given content type.
    pub async fn start(
        addr: SocketAddr,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<WebCall, String> {
        Self::start_with_headers(addr, path, content_type, &[], body).await
    }

    /// [`WebCall::start`] with more request headers.
    pub async fn start_with_headers(
        addr: SocketAddr,
        path: &str,
        content_type: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<WebCall, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).ok();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::post(path)
            .header("host", addr.to_string())
            .header("content-type", content_type)
            .header("accept", content_type);
        if content_type.starts_with("application/grpc-web") {
            req = req
                .header("x-grpc-web", "1")
                .header("x-user-agent", "grpc-bridge-tests/raw");
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let resp = timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .map_err(|_| "no response headers within 10 s".to_string())?
            .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = resp.into_parts();
        Ok(WebCall {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            started,
            chunks: vec![],
            trailers: None,
            done: false,
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Next body data chunk (None at the end); fails after `within`.
    pub async fn next_chunk(&mut self, within: Duration) -> Result<Option<Vec<u8>>, String> {
        loop {
            if self.done {
                return Ok(None);
            }
            let f = timeout(within, self.body.frame())
                .await
                .map_err(|_| format!("no body data within {within:?}"))?;
            match f {
                None => {
                    self.done = true;
                    return Ok(None);
                }
                Some(Err(e)) => return Err(format!("body error: {e}")),
                Some(Ok(fr)) => match fr.into_data() {
                    Ok(d) => {
                        if d.is_empty() {
                            continue;
                        }
                        self.chunks.push((self.started.elapsed(), d.to_vec()));
                        return Ok(Some(d.to_vec()));
                    }
                    Err(fr) => {
                        if let Ok(t) = fr.into_trailers() {
                            self.trailers = Some(t);
                        }
                    }
                },
            }
        }
    }

    /// Read until the body has at least one complete frame more than `have` bytes cover.
    pub async fn read_all(&mut self, within: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + within;
        let mut all = vec![];
        while let Some(c) = self
            .next_chunk(deadline.saturating_duration_since(Instant::now()))
            .await?
        {
            all.extend(c);
        }
        Ok(all)
    }
}

/// One complete call: returns (call with headers, frames of the decoded body).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    text: bool,
    body: Vec<u8>,
) -> Result<(WebCall, Vec<Frame>), String> {
    let ct = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web+proto"
    };
    let body = if text {
        B64.encode(&body).into_bytes()
    } else {
        body
    };
    let mut c =
        WebCall::start(addr, &format!("/bridge.test.BridgeTest/{method}"), ct, body).await?;
    let raw = c.read_all(Duration::from_secs(15)).await?;
    let decoded = if text { decode_text(&raw)? } else { raw };
    let frames = parse_frames(&decoded)?;
    Ok((c, frames))
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn trailer_of(frames: &[Frame]) -> Result<Vec<(String, String)>, String> {
    let last = frames.last().ok_or("no frames in the body")?;
    ensure(last.is_trailer(), || {
        format!(
            "last frame has flag {:#x}, not a 0x80 trailer frame",
            last.flag
        )
    })?;
    ensure(
        frames.iter().filter(|f| f.is_trailer()).count() == 1,
        || "more than one trailer frame".into(),
    )?;
    Ok(parse_trailer_block(&last.data))
}

/// The trailer frame's block (see [`trailer_of`]), which must carry `grpc-status: status`.
fn trailer_with_status(frames: &[Frame], status: &str) -> Result<Vec<(String, String)>, String> {
    let t = trailer_of(frames)?;
    ensure(get(&t, "grpc-status") == Some(status), || {
        format!("want grpc-status {status}; trailer block {t:?}")
    })?;
    Ok(t)
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
}

pub const RAW_CASES: &[&str] = &[
    "raw_unary_binary",
    "raw_unary_text",
    "raw_trailers_only",
    "raw_trailer_metadata",
    "raw_error_after_messages",
    "raw_error_without_messages",
    "raw_client_stream",
    "raw_stream_gated",
    "raw_frame_timing",
];

/// Run the raw cases against a server-side Envoy at `server` (backend reachable at `backend`
/// for releasing gates); `status_path` is the one outcome that path gives for an error status
/// with no message before it.
pub async fn run_raw_suite(
    server: SocketAddr,
    backend: SocketAddr,
    status_path: StatusWithoutMessages,
) -> Vec<crate::cases::Outcome> {
    let mut out = vec![];
    for case in RAW_CASES {
        let t0 = Instant::now();
        let result = match timeout(
            Duration::from_secs(30),
            run_raw_case(case, server, backend, status_path),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err("case timed out after 30 s".into()),
        };
        out.push(crate::cases::Outcome {
            case: case.to_string(),
            result,
            elapsed: t0.elapsed(),
        });
    }
    out
}

pub async fn run_raw_case(
    case: &str,
    server: SocketAddr,
    backend: SocketAddr,
    status_path: StatusWithoutMessages,
) -> Result<String, String> {
    match case {
        "raw_unary_binary" => raw_unary(server, false).await,
        "raw_unary_text" => raw_unary(server, true).await,
        "raw_trailers_only" => raw_trailers_only(server).await,
        "raw_trailer_metadata" => raw_trailer_metadata(server).await,
        "raw_error_after_messages" => raw_error_after_messages(server).await,
        "raw_error_without_messages" => raw_error_without_messages(server, status_path).await,
        "raw_client_stream" => raw_client_stream(server).await,
        "raw_stream_gated" => raw_stream_gated(server, backend).await,
        "raw_frame_timing" => raw_frame_timing(server).await,
        other => Err(format!("unknown raw case {other}")),
    }
}

async fn raw_unary(server: SocketAddr, text: bool) -> Result<String, String> {
    let req = UnaryRequest {
        payload: b"raw hello".to_vec(),
        ..Default::default()
    };
    let (c, frames) = call(server, "Unary", text, msg_frame(&req)).await?;
    ensure(c.status == 200, || format!("HTTP status {}", c.status))?;
    let ct = c.header("content-type").unwrap_or_default();
    let ct_ok = if text {
        ct.starts_with("application/grpc-web-text")
    } else {
        ct.starts_with("application/grpc-web") && !ct.contains("text")
    };
    ensure(ct_ok, || format!("response content-type {ct:?}"))?;
    ensure(c.header("grpc-status").is_none(), || {
        "grpc-status in the headers of a response with messages".into()
    })?;
    ensure(frames.len() == 2, || {
        format!(
            "{} frames, want message + trailers: {frames:?}",
            frames.len()
        )
    })?;
    let m = UnaryResponse::decode(frames[0].data.as_slice()).map_err(|e| format!("decode: {e}"))?;
    ensure(frames[0].flag == 0 && m.payload == b"raw hello", || {
        format!("message frame {:?}", frames[0])
    })?;
    let t = trailer_with_status(&frames, "0")?;
    Ok(format!("{ct}: message + trailer frame {t:?}"))
}

async fn raw_trailers_only(server: SocketAddr) -> Result<String, String> {
    let req = UnaryRequest {
        status_code: 5,
        status_message: "nothing here".into(),
        ..Default::default()
    };
    let (c, frames) = call(server, "Unary", false, msg_frame(&req)).await?;
    ensure(c.status == 200, || format!("HTTP status {}", c.status))?;
    // Trailers-Only: grpc-status stays in the headers, no trailer frame is needed.
    let hs = c.header("grpc-status");
    if hs.is_some() {
        ensure(hs.as_deref() == Some("5"), || {
            format!("grpc-status header {hs:?}")
        })?;
        let gm = c.header("grpc-message").map(|m| percent_decode(&m));
        ensure(gm.as_deref() == Some("nothing here"), || {
            format!("grpc-message {gm:?}")
        })?;
        ensure(
            frames.iter().all(|f| {
                !f.is_trailer()
                    || parse_trailer_block(&f.data).is_empty()
                    || get(&parse_trailer_block(&f.data), "grpc-status") == Some("5")
            }),
            || format!("conflicting trailer frame {frames:?}"),
        )?;
        Ok(format!(
            "grpc-status 5 in headers, {} body frames",
            frames.len()
        ))
    } else {
        let t = trailer_of(&frames)?;
        ensure(get(&t, "grpc-status") == Some("5"), || {
            format!("no grpc-status header; trailer block {t:?}")
        })?;
        Ok(format!(
            "grpc-status 5 in a trailer frame (not in headers): {t:?}"
        ))
    }
}

async fn raw_trailer_metadata(server: SocketAddr) -> Result<String, String> {
    let bin: &[u8] = &[b'\r', b'\n', 0x00, b':', 0xc3, 0x28];
    let req = UnaryRequest {
        payload: b"x".to_vec(),
        response_trailers: vec![
            Metadata {
                key: "x-trl".into(),
                value: b"trailer value".to_vec(),
            },
            Metadata {
                key: "x-trl-bin".into(),
                value: bin.to_vec(),
            },
        ],
        ..Default::default()
    };
    let (c, frames) = call(server, "Unary", false, msg_frame(&req)).await?;
    ensure(c.status == 200, || format!("HTTP status {}", c.status))?;
    let t = trailer_with_status(&frames, "0")?;
    ensure(get(&t, "x-trl") == Some("trailer value"), || {
        format!("trailer block {t:?}")
    })?;
    let b = get(&t, "x-trl-bin").ok_or_else(|| format!("no x-trl-bin in {t:?}"))?;
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b.trim_end_matches('='))
        .map_err(|e| format!("x-trl-bin {b:?}: {e}"))?;
    ensure(decoded == bin, || {
        format!("x-trl-bin decodes to {decoded:?}")
    })?;
    let raw = String::from_utf8_lossy(&frames.last().unwrap().data).into_owned();
    let upper = raw
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .any(|(k, _)| k != k.to_ascii_lowercase());
    ensure(!upper, || format!("trailer names not lower case: {raw:?}"))?;
    Ok(format!("trailer block {raw:?}"))
}

async fn raw_error_after_messages(server: SocketAddr) -> Result<String, String> {
    let req = StreamRequest {
        count: 1,
        payload_size: 3,
        final_status_code: 9,
        final_status_message: TRICKY_MESSAGE.into(),
        ..Default::default()
    };
    let (c, frames) = call(server, "ServerStream", false, msg_frame(&req)).await?;
    ensure(c.status == 200, || format!("HTTP status {}", c.status))?;
    ensure(frames.len() == 2 && frames[0].flag == 0, || {
        format!("frames {frames:?}")
    })?;
    let t = trailer_with_status(&frames, "9")?;
    let msg = get(&t, "grpc-message").map(percent_decode);
    ensure(msg.as_deref() == Some(TRICKY_MESSAGE), || {
        format!("grpc-message decodes to {msg:?}")
    })?;
    Ok("message frame, then grpc-status 9 and the exact message in the trailer frame".into())
}

/// Where a gRPC-web server path puts the status of a response that has headers, then trailers
/// with an error, and no message (not Trailers-Only: the backend's headers went out first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWithoutMessages {
    /// Envoy's C++ `grpc_web` filter (native and hybrid servers): a trailer frame in the body
    /// (`encoder_callbacks_->addEncodedData` at trailers time).
    TrailerFrame,
    /// The wasm server role, direct: HTTP/1.1 trailers. A wasm filter in Envoy 1.40 cannot add
    /// body bytes when no body callback ran (docs/ARCHITECTURE.md), and pausing the headers to
    /// wait is StopAllIterationAndWatermark, which holds the trailers callback too.
    Http1Trailers,
    /// The wasm server role through nginx, which drops HTTP/1.1 trailers: headers and an empty
    /// body, no status anywhere. Our agent turns that into INTERNAL "...without a gRPC-web
    /// trailer frame" (faults.rs); `envoy/server-hybrid.yaml` is the configuration that keeps
    /// the status through such a hop.
    DroppedByHop,
}

/// The backend sends response headers, then trailers with an error, and no message at all.
/// Each path must give exactly its one outcome (see [`StatusWithoutMessages`]), never OK.
async fn raw_error_without_messages(
    server: SocketAddr,
    want: StatusWithoutMessages,
) -> Result<String, String> {
    let req = StreamRequest {
        count: 0,
        final_status_code: 14,
        final_status_message: "no messages for you".into(),
        ..Default::default()
    };
    let (c, frames) = call(server, "ServerStream", false, msg_frame(&req)).await?;
    ensure(c.status == 200, || format!("HTTP status {}", c.status))?;
    ensure(c.header("grpc-status").is_none(), || {
        format!("grpc-status in the headers: {:?}", c.header("grpc-status"))
    })?;
    let http1_trailers = c.trailers.as_ref().map(|t| {
        let st = t
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let msg = t
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode);
        (st, msg)
    });
    match want {
        StatusWithoutMessages::TrailerFrame => {
            ensure(frames.len() == 1 && http1_trailers.is_none(), || {
                format!("want only a trailer frame: frames {frames:?}, HTTP trailers {http1_trailers:?}")
            })?;
            let t = trailer_of(&frames)?;
            ensure(
                get(&t, "grpc-status") == Some("14")
                    && get(&t, "grpc-message").map(percent_decode).as_deref()
                        == Some("no messages for you"),
                || format!("trailer block {t:?}"),
            )?;
            Ok("headers, then only a trailer frame with grpc-status 14 and the message".into())
        }
        StatusWithoutMessages::Http1Trailers => {
            ensure(frames.is_empty(), || {
                format!("want no frames, got {frames:?}")
            })?;
            ensure(
                http1_trailers == Some((Some("14".into()), Some("no messages for you".into()))),
                || format!("HTTP/1.1 trailers {http1_trailers:?}"),
            )?;
            Ok("headers, no frame, grpc-status 14 and the message in HTTP/1.1 trailers".into())
        }
        StatusWithoutMessages::DroppedByHop => {
            ensure(frames.is_empty() && http1_trailers.is_none(), || {
                format!("want an empty body and no trailers: frames {frames:?}, HTTP trailers {http1_trailers:?}")
            })?;
            Ok("headers, empty body, no trailers: nginx dropped the HTTP/1.1 trailers".into())
        }
    }
}

async fn raw_client_stream(server: SocketAddr) -> Result<String, String> {
    let mut body = vec![];
    for (i, n) in [3usize, 0, 70_000].iter().enumerate() {
        body.extend(msg_frame(&ClientStreamRequest {
            value: i as i64 + 1,
            payload: pattern(*n),
        }));
    }
    let (c, frames) = call(server, "ClientStream", true, body).await?;
    ensure(c.status == 200, || format!("HTTP status {}", c.status))?;
    ensure(frames.len() == 2, || format!("frames {frames:?}"))?;
    let r = ClientStreamResponse::decode(frames[0].data.as_slice()).map_err(|e| e.to_string())?;
    ensure(
        r.count == 3 && r.sum == 6 && r.sizes == vec![3, 0, 70_000],
        || format!("response {r:?}"),
    )?;
    trailer_with_status(&frames, "0")?;
    Ok("3 frames in one grpc-web-text request body counted".into())
}

/// Starts a gRPC-web call of a [`gated_stream`] of 2 messages of `payload_size` bytes and
/// checks its HTTP 200: (gate, call).
async fn start_gated_stream(
    server: SocketAddr,
    payload_size: i32,
) -> Result<(String, WebCall), String> {
    let (gate, req) = gated_stream(2, payload_size);
    let c = WebCall::start(
        server,
        "/bridge.test.BridgeTest/ServerStream",
        "application/grpc-web+proto",
        msg_frame(&req),
    )
    .await?;
    ensure(c.status == 200, || format!("HTTP status {}", c.status))?;
    Ok((gate, c))
}

/// Reads `c`'s body (up to 5 s a chunk) until it holds a whole frame; returns the bytes read.
async fn read_first_frame(c: &mut WebCall) -> Result<Vec<u8>, String> {
    let mut got = vec![];
    while parse_frames_prefix(&got).0.is_empty() {
        match c.next_chunk(Duration::from_secs(5)).await? {
            Some(ch) => got.extend(ch),
            None => return Err("body ended before the first frame".into()),
        }
    }
    Ok(got)
}

async fn raw_stream_gated(server: SocketAddr, backend: SocketAddr) -> Result<String, String> {
    let (gate, mut c) = start_gated_stream(server, 4).await?;
    let first = read_first_frame(&mut c).await;
    let mut bc = crate::cases::connect(backend).await?;
    bc.release_gate(GateRequest { token: gate })
        .await
        .map_err(|e| e.to_string())?;
    let mut got = first.map_err(|e| {
        format!("first message not delivered while the backend held the stream: {e}")
    })?;
    let t_first = c.chunks.last().map(|x| x.0).unwrap_or_default();
    got.extend(c.read_all(Duration::from_secs(10)).await?);
    let frames = parse_frames(&got)?;
    ensure(frames.len() == 3, || format!("frames {frames:?}"))?;
    trailer_with_status(&frames, "0")?;
    Ok(format!(
        "first frame after {} ms, before the gate was released; {} chunks",
        t_first.as_millis(),
        c.chunks.len()
    ))
}

/// Each frame arrives when it is sent, and the trailer frame follows the last message, checked
/// on events rather than arrival times: the backend sends message 0, then holds message 1 at a
/// gate. Message 0 must arrive alone (nothing held back, no early trailer frame) while the
/// backend still holds the stream; the gate is then released by a gRPC-web ReleaseGate call
/// through the same Envoy, and message 1 and then the single trailer frame must end the body.
/// (How soon the trailer frame follows the last message, at most one flush_interval_ms in the
/// server role, is a latency: the benchmarks measure it.)
async fn raw_frame_timing(server: SocketAddr) -> Result<String, String> {
    let (gate, mut c) = start_gated_stream(server, 8).await?;
    let mut got = read_first_frame(&mut c)
        .await
        .map_err(|e| format!("message 0 not delivered while the backend held the stream: {e}"))?;
    // The backend is still waiting at the gate: exactly message 0 so far.
    let (held, used) = parse_frames_prefix(&got);
    ensure(held.len() == 1 && used == got.len(), || {
        format!(
            "while the backend held the stream: frames {held:?} and {} more bytes",
            got.len() - used
        )
    })?;
    let decode = |f: &Frame| {
        ensure(!f.is_trailer(), || {
            format!("trailer frame {f:?}, want a message")
        })?;
        StreamResponse::decode(f.data.as_slice()).map_err(|e| format!("decode: {e}"))
    };
    let m0 = decode(&held[0])?;
    ensure(m0.index == 0 && m0.payload.len() == 8, || {
        format!("first message {m0:?}")
    })?;
    let (rc, rframes) = call(
        server,
        "ReleaseGate",
        false,
        msg_frame(&GateRequest { token: gate }),
    )
    .await?;
    ensure(rc.status == 200 && rframes.len() == 2, || {
        format!("ReleaseGate: HTTP {}, frames {rframes:?}", rc.status)
    })?;
    let released =
        GateResponse::decode(rframes[0].data.as_slice()).map_err(|e| format!("decode: {e}"))?;
    ensure(released.had_waiter, || {
        "the backend was not holding the stream at its gate".into()
    })?;
    got.extend(c.read_all(Duration::from_secs(10)).await?);
    let frames = parse_frames(&got)?;
    ensure(frames.len() == 3, || format!("frames {frames:?}"))?;
    let m1 = decode(&frames[1])?;
    ensure(m1.index == 1 && m1.payload.len() == 8, || {
        format!("second message {m1:?}")
    })?;
    trailer_with_status(&frames, "0")?;
    Ok(format!(
        "message 0 delivered while the backend held message 1; after the release message 1 \
         and the trailer frame ended the body ({} chunks)",
        c.chunks.len()
    ))
}

/// Complete frames at the start of `b` and the number of bytes they cover.
fn parse_frames_prefix(b: &[u8]) -> (Vec<Frame>, usize) {
    let mut out = vec![];
    let mut off = 0;
    while b.len() - off >= 5 {
        let len = u32::from_be_bytes([b[off + 1], b[off + 2], b[off + 3], b[off + 4]]) as usize;
        if b.len() - off < 5 + len {
            break;
        }
        out.push(Frame {
            flag: b[off],
            data: b[off + 5..off + 5 + len].to_vec(),
        });
        off += 5 + len;
    }
    (out, off)
}

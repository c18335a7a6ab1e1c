//! `host-harness demo`: the whole sample topology in one process, no Envoy.
//!
//!   tonic client (h2c) -> agent proxy (grpc-bridge, role agent) -> HTTP/1.1-only hop
//!     -> server proxy (grpc-bridge, role server) -> tonic echo backend (h2c)
//!
//! The proxies are the harness's proxy mode running the real filter, configured like
//! `envoy/server.yaml` and `envoy/agent.yaml` (HTTP/1.1 trailers enabled on the server's
//! listener and the agent's cluster); the hop is a plain hyper HTTP/1.1 reverse proxy that
//! streams both ways and passes trailers (standing in for nginx). The backend
//! and the client are tonic with a raw-bytes codec, so no code generation is needed. The
//! report has the same shape as `make demo` (`tests/src/bin/demo.rs`).
//!
//! [`Topology::start`] is public so other suites can run against this topology (optionally
//! with their own backend).

/// The shared secret of the demo's agent and server (both in this process; a real deployment
/// generates its own, docs/CONFIG.md "auth").
const DEMO_SECRET: &str = "grpc-bridge-demo-secret-0001";

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

use super::h1_trailers::{Slot, SlotTrailers, TrailerWriter};
use super::proxy::{self, Protocol, ProxyConfig, RunningProxy};
use crate::host::abi::LogLevel;

/// Service path prefix of the echo backend.
pub const SERVICE: &str = "/hostharness.demo.Echo/";
/// Largest message the demo client and backend accept (the 4 MiB case plus framing).
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

// ---- raw-bytes codec -------------------------------------------------------------------

/// A tonic codec whose messages are the raw payload bytes (no protobuf).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

// ---- the echo backend ------------------------------------------------------------------

/// What the backend observed, for checks the client cannot make on its own.
#[derive(Debug, Default)]
pub struct EchoState {
    /// Calls whose handler was dropped before it finished (the client cancelled).
    pub cancelled: AtomicUsize,
    /// Calls started.
    pub calls: AtomicUsize,
}

/// Counts a call as cancelled if it is dropped before `done`.
struct CallGuard {
    state: Arc<EchoState>,
    done: bool,
}

impl CallGuard {
    fn new(state: &Arc<EchoState>) -> Self {
        state.calls.fetch_add(1, Ordering::SeqCst);
        CallGuard {
            state: state.clone(),
            done: false,
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The gRPC echo service (h2c, tonic), methods under [`SERVICE`]:
/// - `Unary`: echoes the payload; `fail:CODE:MESSAGE` answers that status instead;
///   `sleep:MS` waits first. Request metadata `x-demo-*` comes back as response metadata.
/// - `ServerStream`: payload `COUNT,INTERVAL_MS,SIZE[,CODE:MESSAGE]`: COUNT messages of SIZE
///   bytes, INTERVAL_MS apart (message i starts with `i:`), then that status (default OK).
/// - `ClientStream`: answers `messages=N bytes=M`.
/// - `Bidi`: echoes every message as it arrives.
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub state: Arc<EchoState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoBackend {
    pub async fn start(listen: SocketAddr) -> std::io::Result<EchoBackend> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(EchoState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| route(req, st.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(EchoBackend { addr, state, task })
    }
}

fn grpc() -> tonic::server::Grpc<RawCodec> {
    tonic::server::Grpc::new(RawCodec)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

async fn route(
    req: http::Request<Incoming>,
    state: Arc<EchoState>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let method = req
        .uri()
        .path()
        .strip_prefix(SERVICE)
        .unwrap_or("")
        .to_string();
    let resp = match method.as_str() {
        "Unary" => {
            let st = state.clone();
            grpc()
                .unary(tower::service_fn(move |r| unary(r, st.clone())), req)
                .await
        }
        "ServerStream" => {
            let st = state.clone();
            grpc()
                .server_streaming(
                    tower::service_fn(move |r| server_stream(r, st.clone())),
                    req,
                )
                .await
        }
        "ClientStream" => {
            grpc()
                .client_streaming(tower::service_fn(client_stream), req)
                .await
        }
        "Bidi" => grpc().streaming(tower::service_fn(bidi), req).await,
        _ => Status::unimplemented(format!("no method {method:?}")).into_http(),
    };
    Ok(resp)
}

async fn unary(req: Request<Bytes>, state: Arc<EchoState>) -> Result<Response<Bytes>, Status> {
    let mut guard = CallGuard::new(&state);
    let echoed: Vec<_> = req
        .metadata()
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-demo-") => {
                Some((k.clone(), v.clone()))
            }
            _ => None,
        })
        .collect();
    let payload = req.into_inner();
    let text = String::from_utf8_lossy(&payload).into_owned();
    if let Some(rest) = text.strip_prefix("fail:") {
        guard.done = true;
        let (code, message) = rest.split_once(':').unwrap_or((rest, ""));
        return Err(Status::new(
            Code::from_i32(code.parse().unwrap_or(2)),
            message,
        ));
    }
    if let Some(ms) = text.strip_prefix("sleep:") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    let mut resp = Response::new(payload);
    for (k, v) in echoed {
        resp.metadata_mut().insert(k, v);
    }
    guard.done = true;
    Ok(resp)
}

type MessageStream = ReceiverStream<Result<Bytes, Status>>;

async fn server_stream(
    req: Request<Bytes>,
    state: Arc<EchoState>,
) -> Result<Response<MessageStream>, Status> {
    let spec = String::from_utf8_lossy(req.get_ref()).into_owned();
    let mut fields = spec.splitn(4, ',');
    let nums: Vec<u64> = fields
        .by_ref()
        .take(3)
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let [count, interval, size] = nums[..] else {
        return Err(Status::invalid_argument(format!(
            "want COUNT,INTERVAL_MS,SIZE[,CODE:MESSAGE], got {spec:?}"
        )));
    };
    let end = fields.next().map(|f| {
        let (code, message) = f.split_once(':').unwrap_or((f, ""));
        Status::new(Code::from_i32(code.parse().unwrap_or(2)), message)
    });
    let (tx, rx) = mpsc::channel(4);
    let guard = CallGuard::new(&state);
    tokio::spawn(async move {
        let mut guard = guard; // the whole guard moves in (not just the field)
        for i in 0..count {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(interval)).await;
            }
            let mut m = format!("{i}:").into_bytes();
            m.resize((size as usize).max(m.len()), b'.');
            if tx.send(Ok(Bytes::from(m))).await.is_err() {
                return; // the client went away: the guard counts the cancel
            }
        }
        if let Some(status) = end {
            let _ = tx.send(Err(status)).await;
        }
        guard.done = true;
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

async fn client_stream(req: Request<Streaming<Bytes>>) -> Result<Response<Bytes>, Status> {
    let mut s = req.into_inner();
    let (mut n, mut bytes) = (0usize, 0usize);
    while let Some(m) = s.message().await? {
        n += 1;
        bytes += m.len();
    }
    Ok(Response::new(Bytes::from(format!(
        "messages={n} bytes={bytes}"
    ))))
}

async fn bidi(req: Request<Streaming<Bytes>>) -> Result<Response<MessageStream>, Status> {
    let mut s = req.into_inner();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            match s.message().await {
                Ok(Some(m)) => {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

// ---- the HTTP/1.1-only hop ----------------------------------------------------------------

/// A plain HTTP/1.1 reverse proxy (hyper on both sides) that streams request and response
/// bodies as they come, standing in for nginx between the agent and the server.
pub struct Http1Hop {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Http1Hop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type HopBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

impl Http1Hop {
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Http1Hop> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    // Passes response trailers on (hyper alone would drop them), so the agent
                    // gets the server's HTTP/1.1 trailers.
                    let slot = Slot::default();
                    let io = TokioIo::new(TrailerWriter::new(tcp, slot.clone()));
                    let svc =
                        hyper::service::service_fn(move |req| hop(req, upstream, slot.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Ok(Http1Hop { addr, task })
    }
}

async fn hop(
    req: http::Request<Incoming>,
    upstream: SocketAddr,
    slot: Slot,
) -> Result<http::Response<HopBody>, Infallible> {
    let bad_gateway = || {
        let mut r = http::Response::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        r
    };
    let Ok(tcp) = TcpStream::connect(upstream).await else {
        return Ok(bad_gateway());
    };
    let _ = tcp.set_nodelay(true);
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
    else {
        return Ok(bad_gateway());
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    for h in ["connection", "keep-alive", "proxy-connection", "upgrade"] {
        parts.headers.remove(h);
    }
    // TE is hop-by-hop, but `TE: trailers` is what lets the next server send trailers (and
    // this hop's server side send them on): keep exactly that.
    if parts
        .headers
        .get("te")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        parts
            .headers
            .insert("te", http::HeaderValue::from_static("trailers"));
    } else {
        parts.headers.remove("te");
    }
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    match send
        .send_request(http::Request::from_parts(parts, body))
        .await
    {
        Ok(resp) => Ok(resp.map(|b| SlotTrailers::new(b, slot).boxed_unsync())),
        Err(_) => Ok(bad_gateway()),
    }
}

// ---- the topology ------------------------------------------------------------------------

/// backend -> server proxy -> HTTP/1.1 hop -> agent proxy, all on loopback.
pub struct Topology {
    /// Where a gRPC client connects (the agent proxy, h2c).
    pub client_addr: SocketAddr,
    /// Human-readable path, client first.
    pub path: String,
    /// The built-in backend (absent when another backend was given).
    pub backend: Option<EchoBackend>,
    pub agent: RunningProxy,
    pub hop: Http1Hop,
    pub server: RunningProxy,
    /// Guest logs of both proxies (debug and trace included).
    pub logs: proxy::LogSink,
}

impl Topology {
    /// Starts the chain with the filter at `wasm`; `backend` is an h2c gRPC backend to use
    /// instead of the built-in echo service.
    pub async fn start(wasm: &Path, backend: Option<SocketAddr>) -> Result<Topology, String> {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
        let (own, backend_addr) = match backend {
            Some(a) => (None, a),
            None => {
                let b = EchoBackend::start(any)
                    .await
                    .map_err(|e| format!("echo backend: {e}"))?;
                let a = b.addr;
                (Some(b), a)
            }
        };
        let logs = proxy::LogSink::default();
        // One bridge proxy of the chain, collecting its guest logs with the others'.
        let bridge = |role: &str,
                      config: String,
                      upstream,
                      protocols: (Protocol, Protocol),
                      trailers: (bool, bool)| {
            let cfg = ProxyConfig::new(wasm, config.into_bytes(), any, upstream)
                .protocols(protocols.0, protocols.1)
                .http1_trailers(trailers.0, trailers.1)
                .network(false)
                .log_sink(logs.clone());
            let role = role.to_string();
            async move {
                proxy::start(cfg)
                    .await
                    .map_err(|e| format!("{role} proxy: {e}"))
            }
        };
        let server = bridge(
            "server",
            format!(r#"{{"role":"server","auth":{{"shared_secrets":["{DEMO_SECRET}"]}}}}"#),
            backend_addr,
            (Protocol::Http1, Protocol::H2c),
            // envoy/server.yaml: `http_protocol_options: {enable_trailers: true}`
            (true, false),
        )
        .await?;
        let hop = Http1Hop::start(any, server.local_addr)
            .await
            .map_err(|e| format!("HTTP/1.1 hop: {e}"))?;
        let agent = bridge(
            "agent",
            format!(r#"{{"role":"agent","auth":{{"secret":"{DEMO_SECRET}"}}}}"#),
            hop.addr,
            (Protocol::H2c, Protocol::Http1),
            // envoy/agent.yaml: the cluster's `enable_trailers: true`
            (false, true),
        )
        .await?;
        let path = format!(
            "client -> agent proxy (grpc-bridge agent, h2c in, HTTP/1.1 out) {} -> HTTP/1.1 hop {} -> \
             server proxy (grpc-bridge server, HTTP/1.1 in, h2c out) {} -> {} {}",
            agent.local_addr,
            hop.addr,
            server.local_addr,
            if own.is_some() { "tonic echo backend" } else { "backend" },
            backend_addr
        );
        Ok(Topology {
            client_addr: agent.local_addr,
            path,
            backend: own,
            agent,
            hop,
            server,
            logs,
        })
    }

    /// The filter's last `n` log lines at info level or above (both proxies).
    pub fn logs(&self, n: usize) -> String {
        let lines = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let kept: Vec<String> = lines
            .iter()
            .filter(|l| l.level >= LogLevel::Info)
            .map(|l| format!("  [{:?}] {}", l.level, l.message))
            .collect();
        kept[kept.len().saturating_sub(n)..].join("\n")
    }
}

// ---- the client and its cases ----------------------------------------------------------------

/// Calls the demo makes, with the description printed in the report.
pub const CALLS: &[(&str, &str)] = &[
    ("unary", "unary echo"),
    (
        "server_stream_timing",
        "server streaming, 5 messages 150 ms apart",
    ),
    ("client_stream", "client streaming, 5 messages up to 70 kB"),
    ("bidi_ping_pong", "bidi ping-pong, 6 round trips"),
    ("metadata_unary", "metadata in request and response headers"),
    (
        "error_message_unicode",
        "error status with a non-ASCII message",
    ),
    (
        "stream_error_after_messages",
        "stream ends with an error after 2 messages",
    ),
    (
        "stream_error_without_messages",
        "stream ends with an error before any message",
    ),
    ("large_4mib_unary", "4 MiB request and response"),
    (
        "concurrent_unary",
        "20 concurrent unary calls on one connection",
    ),
    ("deadline", "300 ms deadline on a 5 s call"),
    ("cancel_stream", "client cancels a stream"),
];

pub const TRICKY_MESSAGE: &str = "bad input: 100% ünïcødé ✓ 😀 %41 %zz 50%% done, tab\tend";

type Grpc = tonic::client::Grpc<Channel>;

pub async fn connect(addr: SocketAddr) -> Result<Grpc, String> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e:?}"))?;
    Ok(tonic::client::Grpc::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}

fn path(method: &str) -> http::uri::PathAndQuery {
    format!("{SERVICE}{method}")
        .parse()
        .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/"))
}

fn st(s: Status) -> String {
    format!("status {:?} message {:?}", s.code(), s.message())
}

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

async fn ready(g: &mut Grpc) -> Result<(), String> {
    g.ready()
        .await
        .map_err(|e| format!("channel not ready: {e}"))
}

async fn unary_call(g: &mut Grpc, req: Request<Bytes>) -> Result<Response<Bytes>, Status> {
    g.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    g.unary(req, path("Unary"), RawCodec).await
}

/// Runs one case against a client-facing address; `backend` is the built-in backend's
/// state when the topology has one (some cases check what it saw).
pub async fn run_case(
    case: &str,
    addr: SocketAddr,
    backend: Option<&Arc<EchoState>>,
) -> Result<String, String> {
    let mut g = connect(addr).await?;
    let t0 = Instant::now();
    match case {
        "unary" => {
            let r = unary_call(&mut g, Request::new(Bytes::from_static(b"hello bridge")))
                .await
                .map_err(st)?;
            ensure(r.get_ref() == "hello bridge", || {
                format!("payload {:?}", r.get_ref())
            })?;
            Ok(format!("echo ok in {} ms", t0.elapsed().as_millis()))
        }
        "server_stream_timing" => {
            ready(&mut g).await?;
            let req = Request::new(Bytes::from_static(b"5,150,32"));
            let mut s = g.server_stream_req(req).await.map_err(st)?.into_inner();
            let mut arrivals = Vec::new();
            while let Some(m) = s.message().await.map_err(st)? {
                let i = arrivals.len();
                ensure(
                    m.starts_with(format!("{i}:").as_bytes()) && m.len() == 32,
                    || format!("message {i}: {m:?}"),
                )?;
                arrivals.push(t0.elapsed());
            }
            ensure(arrivals.len() == 5, || {
                format!("{} messages, want 5", arrivals.len())
            })?;
            let gaps: Vec<u128> = arrivals
                .windows(2)
                .map(|w| (w[1] - w[0]).as_millis())
                .collect();
            // The backend spaces them 150 ms apart; the gaps are reported for the reader, not
            // asserted (no timing assertions: tests wait on events, timings go in the bench).
            Ok(format!("5 messages, gaps {gaps:?} ms"))
        }
        "client_stream" => {
            ready(&mut g).await?;
            let sizes = [10usize, 100, 1000, 10_000, 70_000];
            let msgs: Vec<Bytes> = sizes.iter().map(|n| Bytes::from(vec![b'x'; *n])).collect();
            let r = g
                .client_streaming(
                    Request::new(tokio_stream::iter(msgs)),
                    path("ClientStream"),
                    RawCodec,
                )
                .await
                .map_err(st)?;
            let want = format!("messages=5 bytes={}", sizes.iter().sum::<usize>());
            ensure(r.get_ref() == want.as_bytes(), || {
                format!("backend answered {:?}, want {want:?}", r.get_ref())
            })?;
            Ok(want)
        }
        "bidi_ping_pong" => {
            ready(&mut g).await?;
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            tx.send(Bytes::from_static(b"ping 0"))
                .await
                .map_err(|e| e.to_string())?;
            let mut s = g
                .streaming(
                    Request::new(ReceiverStream::new(rx)),
                    path("Bidi"),
                    RawCodec,
                )
                .await
                .map_err(st)?
                .into_inner();
            for i in 0..6 {
                if i > 0 {
                    tx.send(Bytes::from(format!("ping {i}")))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let m = tokio::time::timeout(Duration::from_secs(5), s.message())
                    .await
                    .map_err(|_| {
                        format!("no pong {i} within 5 s (the path does not stream both ways)")
                    })?
                    .map_err(st)?;
                ensure(m.as_deref() == Some(format!("ping {i}").as_bytes()), || {
                    format!("round trip {i}: {m:?}")
                })?;
            }
            drop(tx);
            let end = s.message().await.map_err(st)?;
            ensure(end.is_none(), || format!("extra message {end:?}"))?;
            Ok(format!("6 round trips in {} ms", t0.elapsed().as_millis()))
        }
        "metadata_unary" => {
            let mut req = Request::new(Bytes::from_static(b"md"));
            req.metadata_mut()
                .insert("x-demo-token", MetadataValue::from_static("abc123"));
            req.metadata_mut()
                .insert("x-demo-unicode", MetadataValue::from_static("caf%C3%A9"));
            let r = unary_call(&mut g, req).await.map_err(st)?;
            let got = |k: &str| {
                r.metadata()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            ensure(got("x-demo-token").as_deref() == Some("abc123"), || {
                format!("x-demo-token {:?}", got("x-demo-token"))
            })?;
            ensure(
                got("x-demo-unicode").as_deref() == Some("caf%C3%A9"),
                || format!("x-demo-unicode {:?}", got("x-demo-unicode")),
            )?;
            Ok("request metadata came back in the response headers".into())
        }
        "error_message_unicode" => {
            let req = Request::new(Bytes::from(format!("fail:3:{TRICKY_MESSAGE}")));
            match unary_call(&mut g, req).await {
                Ok(r) => Err(format!("call succeeded: {:?}", r.get_ref())),
                Err(s) if s.code() == Code::InvalidArgument && s.message() == TRICKY_MESSAGE => {
                    Ok("INVALID_ARGUMENT with the message intact".into())
                }
                Err(s) => Err(st(s)),
            }
        }
        "stream_error_after_messages" | "stream_error_without_messages" => {
            ready(&mut g).await?;
            let count = if case == "stream_error_after_messages" {
                2
            } else {
                0
            };
            let req = Request::new(Bytes::from(format!("{count},10,8,9:{TRICKY_MESSAGE}")));
            let mut got = 0;
            let status = match g.server_stream_req(req).await {
                Err(s) => s,
                Ok(r) => {
                    let mut s = r.into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(_)) => got += 1,
                            Ok(None) => {
                                return Err(format!(
                                "stream ended OK after {got} messages, want FAILED_PRECONDITION"
                            ))
                            }
                            Err(e) => break e,
                        }
                    }
                }
            };
            ensure(got == count, || {
                format!("{got} messages before the error, want {count}")
            })?;
            ensure(
                status.code() == Code::FailedPrecondition && status.message() == TRICKY_MESSAGE,
                || st(status.clone()),
            )?;
            Ok(format!(
                "{count} messages, then FAILED_PRECONDITION with the message intact"
            ))
        }
        "large_4mib_unary" => {
            let n = 4 * 1024 * 1024;
            let payload: Bytes = (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
            let r = unary_call(&mut g, Request::new(payload.clone()))
                .await
                .map_err(st)?;
            ensure(r.get_ref().len() == n, || {
                format!("{} bytes back, want {n}", r.get_ref().len())
            })?;
            ensure(*r.get_ref() == payload, || "content differs".into())?;
            Ok(format!(
                "4 MiB both ways in {} ms",
                t0.elapsed().as_millis()
            ))
        }
        "concurrent_unary" => {
            let mut calls = Vec::new();
            for i in 0..20 {
                let mut g = g.clone();
                calls.push(tokio::spawn(async move {
                    let body = Bytes::from(format!("call {i} ").repeat(i + 1));
                    let r = unary_call(&mut g, Request::new(body.clone()))
                        .await
                        .map_err(st)?;
                    ensure(*r.get_ref() == body, || format!("call {i}: wrong echo"))
                }));
            }
            for c in calls {
                c.await.map_err(|e| e.to_string())??;
            }
            Ok(format!("20 calls in {} ms", t0.elapsed().as_millis()))
        }
        "deadline" => {
            let before = backend.map(|b| b.cancelled.load(Ordering::SeqCst));
            let mut req = Request::new(Bytes::from_static(b"sleep:5000"));
            req.set_timeout(Duration::from_millis(300));
            let outcome =
                tokio::time::timeout(Duration::from_millis(300), unary_call(&mut g, req)).await;
            match outcome {
                Ok(Ok(_)) => return Err("the 5 s call succeeded within 300 ms".into()),
                Ok(Err(s)) if s.code() != Code::DeadlineExceeded && s.code() != Code::Cancelled => {
                    return Err(st(s))
                }
                _ => {}
            }
            let waited = t0.elapsed().as_millis();
            if backend_saw_cancel(backend, before, "the backend never saw the call cancelled")
                .await?
            {
                return Ok(format!(
                    "gave up after {waited} ms; the backend saw the cancel"
                ));
            }
            Ok(format!("gave up after {waited} ms"))
        }
        "cancel_stream" => {
            ready(&mut g).await?;
            let before = backend.map(|b| b.cancelled.load(Ordering::SeqCst));
            let req = Request::new(Bytes::from_static(b"100,50,16"));
            let mut s = g.server_stream_req(req).await.map_err(st)?.into_inner();
            let first = s.message().await.map_err(st)?;
            ensure(
                first.as_deref().is_some_and(|m| m.starts_with(b"0:")),
                || format!("first message {first:?}"),
            )?;
            drop(s);
            let never = "the backend kept streaming after the client cancelled";
            if backend_saw_cancel(backend, before, never).await? {
                return Ok(format!(
                    "the backend stopped {} ms after the cancel",
                    t0.elapsed().as_millis()
                ));
            }
            Ok("cancelled after the first message".into())
        }
        other => Err(format!("unknown case {other}")),
    }
}

/// With the built-in backend (`before`: its cancel count when the call started), waits until
/// it counted one more cancel (`Err(never)` if not within 3 s); `Ok(false)` without one.
async fn backend_saw_cancel(
    backend: Option<&Arc<EchoState>>,
    before: Option<usize>,
    never: &str,
) -> Result<bool, String> {
    let (Some(b), Some(before)) = (backend, before) else {
        return Ok(false);
    };
    wait_for(
        || b.cancelled.load(Ordering::SeqCst) > before,
        Duration::from_secs(3),
    )
    .await
    .map_err(|_| never.to_string())?;
    Ok(true)
}

async fn wait_for(cond: impl Fn() -> bool, within: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

trait ServerStreamExt {
    async fn server_stream_req(
        &mut self,
        req: Request<Bytes>,
    ) -> Result<Response<Streaming<Bytes>>, Status>;
}

impl ServerStreamExt for Grpc {
    async fn server_stream_req(
        &mut self,
        req: Request<Bytes>,
    ) -> Result<Response<Streaming<Bytes>>, Status> {
        self.server_streaming(req, path("ServerStream"), RawCodec)
            .await
    }
}

// ---- the command -------------------------------------------------------------------------------

/// Where the demo looks for the filter: `--wasm`, `GRPC_BRIDGE_WASM`, or the `make build`
/// output.
pub fn default_wasm() -> PathBuf {
    std::env::var_os("GRPC_BRIDGE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/wasm32-wasip1/release/grpc_bridge.wasm"))
}

/// The demos' start step (this one and `grpc-bridge-tests`' `make demo`): prints `banner`,
/// runs `start`, and prints how long it took; on failure prints why and gives `None`.
pub fn announce_start<T, E: std::fmt::Display>(
    banner: &str,
    start: impl FnOnce() -> Result<T, E>,
) -> Option<T> {
    println!("{banner}");
    let t0 = Instant::now();
    match start() {
        Ok(started) => {
            println!("up in {} ms", t0.elapsed().as_millis());
            Some(started)
        }
        Err(e) => {
            eprintln!("could not start the bridge: {e}");
            None
        }
    }
}

/// One call of a demo (this one and `make demo`'s): runs `call` on `rt` with the demos' 30 s
/// limit, prints its report line (`ok` or `FAIL`, milliseconds, `what`, then the detail), and
/// gives the result and how long the call took.
pub fn timed_call(
    rt: &tokio::runtime::Runtime,
    what: &str,
    call: impl std::future::Future<Output = Result<String, String>>,
) -> (Result<String, String>, Duration) {
    let t = Instant::now();
    let result = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(30), call).await {
            Ok(r) => r,
            Err(_) => Err("timed out after 30 s".into()),
        }
    });
    let elapsed = t.elapsed();
    let (verdict, detail) = match &result {
        Ok(d) => ("ok  ", d),
        Err(e) => ("FAIL", e),
    };
    println!(
        "  {verdict}  {:>5} ms  {what}\n                    {detail}",
        elapsed.as_millis()
    );
    (result, elapsed)
}

/// `host-harness demo [--wasm FILE]`: start the topology, make the calls, print the report;
/// exits non-zero if anything failed.
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: host-harness demo [--wasm FILE]");
        return ExitCode::SUCCESS;
    }
    let wasm = args
        .iter()
        .position(|a| a == "--wasm")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(default_wasm);
    if !wasm.exists() {
        eprintln!(
            "{} is missing: build the filter first with `make build` (or pass --wasm FILE)",
            wasm.display()
        );
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(topo) = announce_start(
        "host-harness demo: starting tonic backend, server proxy, HTTP/1.1 hop, agent proxy (no Envoy) ...",
        || rt.block_on(Topology::start(&wasm, None)),
    ) else {
        return ExitCode::FAILURE;
    };
    println!("path: {}\n", topo.path);
    let state = topo.backend.as_ref().map(|b| b.state.clone());
    let mut failed = 0;
    for (case, what) in CALLS {
        let (result, _) = timed_call(&rt, what, run_case(case, topo.client_addr, state.as_ref()));
        if result.is_err() {
            failed += 1;
        }
    }
    println!("\n{} of {} calls ok", CALLS.len() - failed, CALLS.len());
    if failed > 0 {
        println!("\nfilter log tail:\n{}", topo.logs(30));
    }
    rt.block_on(async { drop(topo) });
    rt.shutdown_timeout(Duration::from_millis(500));
    println!("stopped.");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

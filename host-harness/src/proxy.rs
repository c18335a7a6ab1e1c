//! Proxy mode: one filter role on live traffic.
//!
//! HTTP roles (`agent`, `server`) run behind an HTTP/1.1 or h2c listener and in front of an
//! HTTP/1.1 or h2c upstream, like `envoy.filters.http.wasm` + router. Network roles
//! (`tunnel_client`, `tunnel_server`) run like `envoy.filters.network.wasm` + `tcp_proxy`
//! (see `tcp.rs`): the role in the plugin configuration (or [`ProxyConfig::network`]) decides.
//!
//! The VM lives on its own thread (like an Envoy worker) and owns the [`Plugin`]; connection
//! tasks send it events and receive the frames the filter lets through. Ticks run on the
//! real clock. Flow control: each direction counts the bytes the filter released but the
//! peer has not taken yet (plus what the model holds for the filter); the reader of that
//! direction's source stops reading above the buffer limit, so a slow peer slows its
//! sender (h2 windows / TCP do the rest).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::abi::{CloseType, LogLevel};
use crate::connection::{ConnectionId, NetFrame};
use crate::h1_trailers::{Slot, SlotTrailers, TrailerWriter};
use crate::headers::Headers;
use crate::state::LogEntry;
use crate::stream::{Direction, Frame, StreamId};
use crate::upstream::Upstream;
use crate::vm::{LoadError, Plugin, PluginOptions, WasmSource};

/// Wire protocol of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "h1" | "http1" | "http/1.1" => Ok(Protocol::Http1),
            "h2c" | "h2" | "http2" => Ok(Protocol::H2c),
            other => Err(format!("unknown protocol {other:?} (use h1 or h2c)")),
        }
    }
}

/// Guest log lines collected by a proxy (tests compare them with Envoy's log).
pub type LogSink = Arc<Mutex<Vec<LogEntry>>>;

pub use crate::vm::{DEFAULT_BUFFER_LIMIT, DEFAULT_H2_STREAM_WINDOW};

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub wasm: PathBuf,
    pub plugin_config: Vec<u8>,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub downstream_protocol: Protocol,
    pub upstream_protocol: Protocol,
    /// Run the filter as a network filter in front of a TCP proxy. `None`: decided by the
    /// configuration's `role` (`tunnel_client` / `tunnel_server` are network roles).
    pub network: Option<bool>,
    /// Envoy's `per_connection_buffer_limit_bytes` (listener and cluster): a connection's
    /// read-buffer watermark, and the filter chain's buffer limit per stream for an
    /// HTTP/1.1 client.
    pub buffer_limit_bytes: u32,
    /// The HCM's HTTP/2 `initial_stream_window_size`: the window advertised to an h2c
    /// client and the filter chain's buffer limit per stream for it.
    pub http2_initial_stream_window_size: u32,
    /// Collect guest logs here instead of printing them to stderr.
    pub log_sink: Option<LogSink>,
    /// The HCM's `http_protocol_options.enable_trailers` for an HTTP/1.1 client: without it
    /// Envoy drops trailers both ways on that connection (default false, like Envoy).
    pub downstream_http1_trailers: bool,
    /// The cluster's `http_protocol_options.enable_trailers` for an HTTP/1.1 upstream.
    pub upstream_http1_trailers: bool,
}

impl ProxyConfig {
    /// h2c on both sides, the role decides HTTP vs network, Envoy's default buffer limit.
    pub fn new(
        wasm: impl Into<PathBuf>,
        plugin_config: impl Into<Vec<u8>>,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Self {
        ProxyConfig {
            wasm: wasm.into(),
            plugin_config: plugin_config.into(),
            listen,
            upstream,
            downstream_protocol: Protocol::H2c,
            upstream_protocol: Protocol::H2c,
            network: None,
            buffer_limit_bytes: DEFAULT_BUFFER_LIMIT,
            http2_initial_stream_window_size: DEFAULT_H2_STREAM_WINDOW,
            log_sink: None,
            downstream_http1_trailers: false,
            upstream_http1_trailers: false,
        }
    }

    pub fn protocols(mut self, downstream: Protocol, upstream: Protocol) -> Self {
        self.downstream_protocol = downstream;
        self.upstream_protocol = upstream;
        self
    }

    pub fn network(mut self, on: bool) -> Self {
        self.network = Some(on);
        self
    }

    pub fn log_sink(mut self, sink: LogSink) -> Self {
        self.log_sink = Some(sink);
        self
    }

    pub fn buffer_limit(mut self, bytes: u32) -> Self {
        self.buffer_limit_bytes = bytes;
        self
    }

    /// Envoy's `enable_trailers` on the listener (`downstream`) and the cluster (`upstream`)
    /// HTTP/1.1 protocol options.
    pub fn http1_trailers(mut self, downstream: bool, upstream: bool) -> Self {
        self.downstream_http1_trailers = downstream;
        self.upstream_http1_trailers = upstream;
        self
    }

    /// Whether trailers cross the client side.
    fn downstream_trailers(&self) -> bool {
        self.downstream_protocol == Protocol::H2c || self.downstream_http1_trailers
    }

    /// Whether trailers cross the upstream side.
    fn upstream_trailers(&self) -> bool {
        self.upstream_protocol == Protocol::H2c || self.upstream_http1_trailers
    }

    pub fn http2_initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.http2_initial_stream_window_size = bytes;
        self
    }

    /// The filter chain's buffer limit per stream, as Envoy derives it from the downstream
    /// codec.
    pub fn stream_buffer_limit(&self) -> u32 {
        match self.downstream_protocol {
            Protocol::Http1 => self.buffer_limit_bytes,
            Protocol::H2c => self.http2_initial_stream_window_size,
        }
    }

    /// Whether this proxy runs the filter as a network filter.
    pub fn is_network(&self) -> bool {
        self.network
            .unwrap_or_else(|| is_network_role(&self.plugin_config))
    }
}

/// True when the configuration's `role` is a network-filter role (`tunnel_*`). A small
/// scan, not a JSON parser: the filter itself validates its configuration.
pub fn is_network_role(config: &[u8]) -> bool {
    let text = String::from_utf8_lossy(config);
    let Some(at) = text.find("\"role\"") else {
        return false;
    };
    let rest = text[at + 6..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return false;
    };
    let rest = rest.trim_start();
    rest.strip_prefix('"')
        .is_some_and(|v| v.starts_with("tunnel_"))
}

/// Why the proxy could not start.
#[derive(Debug)]
pub enum ProxyError {
    Load(LoadError),
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::Load(e) => write!(f, "{e}"),
            ProxyError::Listen { addr, error } if error.kind() == std::io::ErrorKind::AddrInUse => {
                write!(f, "cannot listen on {addr}: address already in use")
            }
            ProxyError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// One direction's backlog: bytes released toward a peer and not yet taken by it, plus
/// bytes the model holds for the filter (a paused network filter's buffer). The source of
/// that direction stops reading while the total is over the limit.
pub(crate) struct Flow {
    pending: AtomicUsize,
    held: AtomicUsize,
    /// The model read-disabled this direction's source (watermark back-pressure).
    paused: AtomicBool,
    /// Data handed to the VM thread and not processed yet. The source reads its next chunk
    /// only once the VM has processed the last one, as Envoy runs the filter chain on each
    /// read before the next: back-pressure decided by the filter applies to the very next
    /// read.
    in_vm: AtomicUsize,
    limit: usize,
    drained: Notify,
}

impl Flow {
    pub(crate) fn new(limit: u32) -> Arc<Flow> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        Arc::new(Flow {
            pending: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            in_vm: AtomicUsize::new(0),
            limit,
            drained: Notify::new(),
        })
    }

    fn level(&self) -> usize {
        self.pending
            .load(Ordering::Acquire)
            .saturating_add(self.held.load(Ordering::Acquire))
    }

    pub(crate) fn released(&self, n: usize) {
        self.pending.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn taken(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub(crate) fn set_held(&self, n: usize) {
        let old = self.held.swap(n, Ordering::AcqRel);
        if n < old {
            self.drained.notify_waiters();
        }
    }

    pub(crate) fn sent_to_vm(&self) {
        self.in_vm.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn vm_done(&self) {
        self.in_vm.fetch_sub(1, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        let was = self.paused.swap(paused, Ordering::AcqRel);
        if was && !paused {
            self.drained.notify_waiters();
        }
    }

    pub(crate) async fn wait_for_room(&self) {
        loop {
            // Registered before the check: notify_waiters wakes every Notified created so far.
            let notified = self.drained.notified();
            if self.level() <= self.limit
                && !self.paused.load(Ordering::Acquire)
                && self.in_vm.load(Ordering::Acquire) == 0
            {
                return;
            }
            notified.await;
        }
    }
}

/// Where the VM thread sends what the filter released for one stream.
pub(crate) struct StreamSink {
    upstream: mpsc::UnboundedSender<Frame>,
    downstream: mpsc::UnboundedSender<Frame>,
    upstream_flow: Arc<Flow>,
    downstream_flow: Arc<Flow>,
    /// Fired when the stream is reset either way: the upstream exchange is abandoned (the
    /// router resets the upstream request), even if the request had already ended.
    cancel_upstream: Option<oneshot::Sender<()>>,
}

/// Where the VM thread sends what the filter released for one connection.
pub(crate) struct ConnSink {
    pub(crate) upstream: mpsc::UnboundedSender<NetFrame>,
    pub(crate) downstream: mpsc::UnboundedSender<NetFrame>,
    pub(crate) upstream_flow: Arc<Flow>,
    pub(crate) downstream_flow: Arc<Flow>,
}

pub(crate) enum Command {
    Open {
        headers: Headers,
        end_stream: bool,
        sink: StreamSink,
        opened: oneshot::Sender<StreamId>,
    },
    RequestData(StreamId, Bytes, bool),
    RequestTrailers(StreamId, Headers),
    ResponseHeaders(StreamId, Headers, bool),
    ResponseData(StreamId, Bytes, bool),
    ResponseTrailers(StreamId, Headers),
    Reset(StreamId),
    /// The upstream request failed before or after the response started (connect error,
    /// reset): the router's local reply or a reset.
    UpstreamFailed(StreamId, String),
    /// A client connected (network filter); answers the id and whether the filter already
    /// closed the connection (a failed VM does).
    ConnOpen {
        sink: ConnSink,
        opened: oneshot::Sender<(ConnectionId, bool)>,
    },
    ConnDownstreamData(ConnectionId, Bytes, bool),
    ConnUpstreamData(ConnectionId, Bytes, bool),
    ConnDownstreamClosed(ConnectionId, CloseType),
    ConnUpstreamReset(ConnectionId),
    /// A data command whose source waits (`Flow::in_vm`) until the VM processed it.
    Acked(Box<Command>, Arc<Flow>),
}

impl Command {
    pub(crate) fn acked(self, flow: &Arc<Flow>) -> Command {
        flow.sent_to_vm();
        Command::Acked(Box::new(self), flow.clone())
    }
}

#[derive(Clone)]
pub(crate) struct VmHandle {
    tx: std_mpsc::Sender<Command>,
}

impl VmHandle {
    pub(crate) fn send(&self, c: Command) {
        let _ = self.tx.send(c);
    }
}

/// Guest log lines printed to stderr: `HOST_HARNESS_LOG=trace|debug|info|warn|error`
/// (default info, like Envoy's default log level).
fn stderr_log_level() -> LogLevel {
    match std::env::var("HOST_HARNESS_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "trace" => LogLevel::Trace,
        "debug" => LogLevel::Debug,
        "warn" | "warning" => LogLevel::Warn,
        "error" => LogLevel::Error,
        "critical" | "off" => LogLevel::Critical,
        _ => LogLevel::Info,
    }
}

/// Starts the VM thread; the plugin is loaded there (a wasmtime store stays on one thread).
fn start_vm(options: PluginOptions, log_sink: Option<LogSink>) -> Result<VmHandle, LoadError> {
    let (tx, rx) = std_mpsc::channel::<Command>();
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), LoadError>>();
    std::thread::Builder::new()
        .name("wasm-vm".into())
        .spawn(move || {
            let mut plugin = match Plugin::load(options) {
                Ok(p) => {
                    let _ = ready_tx.send(Ok(()));
                    p
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            vm_loop(&mut plugin, rx, log_sink);
        })
        .expect("spawn vm thread");
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(VmHandle { tx }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(LoadError::Instantiate(
            "vm thread died while loading".into(),
        )),
    }
}

fn vm_loop(plugin: &mut Plugin, rx: std_mpsc::Receiver<Command>, log_sink: Option<LogSink>) {
    let mut sinks: HashMap<StreamId, StreamSink> = HashMap::new();
    let mut conns: HashMap<ConnectionId, ConnSink> = HashMap::new();
    let min_level = stderr_log_level();
    loop {
        let cmd = match plugin.next_tick_in() {
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(c) => Some(c),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            },
        };
        // Data from a source that waits for it to be processed: acknowledged below, after
        // the back-pressure state is published.
        let (cmd, ack) = match cmd {
            Some(Command::Acked(inner, flow)) => (Some(*inner), Some(flow)),
            other => (other, None),
        };
        match cmd {
            Some(Command::Open {
                headers,
                end_stream,
                sink,
                opened,
            }) => {
                let id = plugin.http_new_stream();
                sinks.insert(id, sink);
                let _ = opened.send(id);
                plugin.http_request_headers(id, headers, end_stream);
            }
            Some(Command::RequestData(id, b, end)) => plugin.http_request_data(id, &b, end),
            Some(Command::RequestTrailers(id, h)) => plugin.http_request_trailers(id, h),
            Some(Command::ResponseHeaders(id, h, end)) => plugin.http_response_headers(id, h, end),
            Some(Command::ResponseData(id, b, end)) => plugin.http_response_data(id, &b, end),
            Some(Command::ResponseTrailers(id, h)) => plugin.http_response_trailers(id, h),
            Some(Command::Reset(id)) => plugin.http_reset(id),
            Some(Command::UpstreamFailed(id, reason)) => plugin.http_upstream_failed(id, &reason),
            Some(Command::ConnOpen { sink, opened }) => {
                let (id, _) = plugin.connection_open();
                conns.insert(id, sink);
                let _ = opened.send((id, plugin.connection_is_closed(id)));
            }
            Some(Command::ConnDownstreamData(id, b, end)) => {
                plugin.connection_downstream_data(id, &b, end);
            }
            Some(Command::ConnUpstreamData(id, b, end)) => {
                plugin.connection_upstream_data(id, &b, end);
            }
            Some(Command::ConnDownstreamClosed(id, close)) => {
                plugin.connection_downstream_closed(id, close)
            }
            Some(Command::ConnUpstreamReset(id)) => plugin.connection_upstream_reset(id),
            Some(Command::Acked(..)) | None => {}
        }
        plugin.tick_if_due();
        // Ticks can release data of any stream or connection: pump them all.
        sinks.retain(|id, sink| {
            let mut reset = false;
            for f in plugin.http_take_upstream(*id) {
                match &f {
                    Frame::Data { bytes, .. } => sink.upstream_flow.released(bytes.len()),
                    Frame::Reset => reset = true,
                    _ => {}
                }
                let _ = sink.upstream.send(f);
            }
            for f in plugin.http_take_downstream(*id) {
                match &f {
                    Frame::Data { bytes, .. } => sink.downstream_flow.released(bytes.len()),
                    Frame::Reset => reset = true,
                    _ => {}
                }
                let _ = sink.downstream.send(f);
            }
            if reset {
                if let Some(cancel) = sink.cancel_upstream.take() {
                    let _ = cancel.send(());
                }
            }
            sink.upstream_flow
                .set_paused(plugin.http_read_disabled(*id, Direction::Request));
            sink.downstream_flow
                .set_paused(plugin.http_read_disabled(*id, Direction::Response));
            let done = plugin.http_is_finished(*id);
            if done {
                plugin.http_forget(*id);
            }
            !done
        });
        conns.retain(|id, sink| {
            for f in plugin.connection_take_upstream(*id) {
                if let NetFrame::Data { bytes, .. } = &f {
                    sink.upstream_flow.released(bytes.len());
                }
                let _ = sink.upstream.send(f);
            }
            for f in plugin.connection_take_downstream(*id) {
                if let NetFrame::Data { bytes, .. } = &f {
                    sink.downstream_flow.released(bytes.len());
                }
                let _ = sink.downstream.send(f);
            }
            let (read_held, write_held) = plugin.connection_held_bytes(*id);
            sink.upstream_flow.set_held(read_held);
            sink.downstream_flow.set_held(write_held);
            let closed = plugin.connection_is_closed(*id);
            if closed {
                plugin.connection_forget(*id);
            }
            !closed
        });
        if let Some(flow) = ack {
            flow.vm_done();
        }
        let lines = plugin.take_logs();
        match &log_sink {
            Some(sink) => sink.lock().unwrap_or_else(|e| e.into_inner()).extend(lines),
            None => {
                for line in lines.iter().filter(|l| l.level >= min_level) {
                    eprintln!("[wasm {:?}] {}", line.level, line.message);
                }
            }
        }
    }
}

/// A body fed by frames the filter released; taking data lowers the direction's backlog.
struct ReleasedBody {
    rx: mpsc::UnboundedReceiver<Frame>,
    flow: Arc<Flow>,
    done: bool,
    /// The client side: dropped before the end means the client reset the stream.
    reset_on_drop: Option<(VmHandle, StreamId)>,
    /// An HTTP/1.1 side without `enable_trailers`: trailers end the body instead.
    drop_trailers: bool,
}

impl Drop for ReleasedBody {
    fn drop(&mut self) {
        if let Some((vm, id)) = self.reset_on_drop.take() {
            if !self.done {
                vm.send(Command::Reset(id));
            }
        }
    }
}

impl Body for ReleasedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, std::io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(std::io::Error::other(
                    "stream ended without end of stream",
                ))))
            }
            Poll::Ready(Some(frame)) => match frame {
                Frame::Data { bytes, end_stream } => {
                    self.flow.taken(bytes.len());
                    self.done = end_stream;
                    Poll::Ready(Some(Ok(BodyFrame::data(Bytes::from(bytes)))))
                }
                Frame::Trailers(_) if self.drop_trailers => {
                    self.done = true;
                    Poll::Ready(None)
                }
                Frame::Trailers(t) => {
                    self.done = true;
                    Poll::Ready(Some(Ok(BodyFrame::trailers(to_header_map(&t)))))
                }
                Frame::Reset => {
                    self.done = true;
                    Poll::Ready(Some(Err(std::io::Error::other(
                        "stream reset by the filter",
                    ))))
                }
                Frame::Headers { .. } => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Headers the filter sees for a request (Envoy's view: pseudo-headers, lower-case names).
fn request_headers(parts: &http::request::Parts) -> Headers {
    let mut h = Headers::new();
    h.add(":method", parts.method.as_str());
    h.add(":scheme", "http");
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    h.add(":authority", &authority);
    h.add(
        ":path",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
    );
    for (k, v) in &parts.headers {
        if k == "host" {
            continue;
        }
        h.add(k.as_str(), &String::from_utf8_lossy(v.as_bytes()));
    }
    h
}

/// Connection-specific headers HTTP/2 forbids.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

fn to_header_map(h: &Headers) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in h.iter() {
        if k.starts_with(':') || hop_by_hop(k) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.append(name, value);
        }
    }
    map
}

fn headers_from_map(map: &http::HeaderMap) -> Headers {
    let mut h = Headers::new();
    for (k, v) in map {
        h.add(k.as_str(), &String::from_utf8_lossy(v.as_bytes()));
    }
    h
}

/// Reads a body into VM commands, honouring the direction's backlog.
/// `drop_trailers`: an HTTP/1.1 side without `enable_trailers` (the message ends there).
async fn pump_body(
    mut body: Incoming,
    vm: VmHandle,
    flow: Arc<Flow>,
    data: impl Fn(Bytes, bool) -> Command,
    trailers: impl Fn(Headers) -> Command,
    reset: Command,
    drop_trailers: bool,
) {
    let mut ended = body.is_end_stream();
    while !ended {
        flow.wait_for_room().await;
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(bytes) => {
                    ended = body.is_end_stream();
                    vm.send(data(bytes, ended).acked(&flow));
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        if drop_trailers {
                            vm.send(data(Bytes::new(), true).acked(&flow));
                        } else {
                            vm.send(trailers(headers_from_map(&t)));
                        }
                        ended = true;
                    }
                }
            },
            Some(Err(_)) => {
                vm.send(reset);
                return;
            }
            None => {
                vm.send(data(Bytes::new(), true).acked(&flow));
                ended = true;
            }
        }
    }
}

pub(crate) type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// Resets the stream if the client goes away before the response (hyper drops the service
/// future when the client resets the stream or closes the connection).
struct ResetGuard {
    vm: VmHandle,
    id: StreamId,
    armed: bool,
}

impl Drop for ResetGuard {
    fn drop(&mut self) {
        if self.armed {
            self.vm.send(Command::Reset(self.id));
        }
    }
}

/// One downstream request. An `Err` makes hyper reset the stream (h2) or close the
/// connection (HTTP/1.1): what Envoy does when the filter or the upstream resets.
async fn handle(
    req: Request<Incoming>,
    vm: VmHandle,
    cfg: Arc<ProxyConfig>,
    upstream: Arc<Upstream>,
    trailer_slot: Option<Slot>,
) -> Result<Response<BoxBody>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let headers = request_headers(&parts);
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, mut down_rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let up_flow = Flow::new(cfg.buffer_limit_bytes);
    let down_flow = Flow::new(cfg.buffer_limit_bytes);
    let sink = StreamSink {
        upstream: up_tx,
        downstream: down_tx,
        upstream_flow: up_flow.clone(),
        downstream_flow: down_flow.clone(),
        cancel_upstream: Some(cancel_tx),
    };
    let (opened_tx, opened_rx) = oneshot::channel();
    let end_stream = body.is_end_stream();
    vm.send(Command::Open {
        headers,
        end_stream,
        sink,
        opened: opened_tx,
    });
    let Ok(id) = opened_rx.await else {
        return Ok(error_response(503));
    };
    let mut guard = ResetGuard {
        vm: vm.clone(),
        id,
        armed: true,
    };
    if !end_stream {
        tokio::spawn(pump_body(
            body,
            vm.clone(),
            up_flow.clone(),
            move |b, e| Command::RequestData(id, b, e),
            move |t| Command::RequestTrailers(id, t),
            Command::Reset(id),
            !cfg.downstream_trailers(),
        ));
    }
    let exchange = upstream_exchange(
        up_rx,
        up_flow,
        down_flow.clone(),
        vm.clone(),
        id,
        cfg.clone(),
        upstream,
    );
    tokio::spawn(async move {
        // A reset abandons the upstream request; a stream that ends normally lets the
        // exchange finish on its own (the connection stays reusable).
        let cancelled = async {
            if cancel_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = cancelled => {}
            _ = exchange => {}
        }
    });
    let first = down_rx.recv().await;
    guard.armed = false;
    match first {
        Some(Frame::Headers {
            headers,
            end_stream,
        }) => {
            let status = headers
                .get(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(502u16);
            let mut resp = Response::new(if end_stream {
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync()
            } else {
                let body = ReleasedBody {
                    rx: down_rx,
                    flow: down_flow,
                    done: false,
                    reset_on_drop: Some((vm.clone(), id)),
                    drop_trailers: !cfg.downstream_trailers(),
                };
                match trailer_slot {
                    Some(slot) => SlotTrailers::new(body, slot).boxed_unsync(),
                    None => body.boxed_unsync(),
                }
            });
            *resp.status_mut() =
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
            *resp.headers_mut() = to_header_map(&headers);
            Ok(resp)
        }
        _ => Err(std::io::Error::other(
            "stream reset before response headers",
        )),
    }
}

fn error_response(status: u16) -> Response<BoxBody> {
    let mut r = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r
}

/// Sends what the filter released upstream and feeds the upstream answer back to the VM.
async fn upstream_exchange(
    mut up_rx: mpsc::UnboundedReceiver<Frame>,
    up_flow: Arc<Flow>,
    down_flow: Arc<Flow>,
    vm: VmHandle,
    id: StreamId,
    cfg: Arc<ProxyConfig>,
    upstream: Arc<Upstream>,
) {
    let Some(Frame::Headers {
        headers,
        end_stream,
    }) = up_rx.recv().await
    else {
        return;
    };
    let path = headers.get(":path").unwrap_or("/").to_string();
    let authority = match headers.get(":authority") {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => cfg.upstream.to_string(),
    };
    let method = headers.get(":method").unwrap_or("GET").to_string();
    let body: BoxBody = if end_stream {
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        ReleasedBody {
            rx: up_rx,
            flow: up_flow,
            done: false,
            reset_on_drop: None,
            drop_trailers: !cfg.upstream_trailers(),
        }
        .boxed_unsync()
    };
    let uri = match cfg.upstream_protocol {
        Protocol::Http1 => path.clone(),
        Protocol::H2c => format!("http://{authority}{path}"),
    };
    let mut req = match Request::builder()
        .method(method.as_str())
        .uri(uri)
        .body(body)
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("host-harness: cannot build the upstream request: {e}");
            vm.send(Command::Reset(id));
            return;
        }
    };
    *req.headers_mut() = to_header_map(&headers);
    if cfg.upstream_protocol == Protocol::Http1 {
        if let Ok(v) = http::HeaderValue::from_str(&authority) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    let response = upstream.send(req).await;
    let resp = match response {
        Ok(r) => r,
        Err((reason, e)) => {
            eprintln!("host-harness: upstream {}: {e}", cfg.upstream);
            vm.send(Command::UpstreamFailed(id, reason.to_string()));
            return;
        }
    };
    let (parts, body) = resp.into_parts();
    let mut h = Headers::new();
    h.add(":status", parts.status.as_str());
    for (k, v) in headers_from_map(&parts.headers).iter() {
        h.add(k, v);
    }
    let end = body.is_end_stream();
    vm.send(Command::ResponseHeaders(id, h, end));
    if !end {
        pump_body(
            body,
            vm,
            down_flow,
            move |b, e| Command::ResponseData(id, b, e),
            move |t| Command::ResponseTrailers(id, t),
            Command::Reset(id),
            !cfg.upstream_trailers(),
        )
        .await;
    }
}

/// A started proxy (tests use port 0 and read the bound address).
pub struct RunningProxy {
    pub local_addr: SocketAddr,
    /// Runs the filter as a network filter (TCP proxy) rather than an HTTP filter.
    pub network: bool,
    upstream: Arc<Upstream>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// Upstream connections the HTTP proxy opened so far (reused across requests).
    pub fn upstream_connections(&self) -> usize {
        self.upstream.connections_opened()
    }

    /// Idle HTTP/1.1 upstream connections in the pool.
    pub fn upstream_idle_connections(&self) -> usize {
        self.upstream.idle_connections()
    }

    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads the filter and starts listening; returns once both succeeded.
pub async fn start(cfg: ProxyConfig) -> Result<RunningProxy, ProxyError> {
    let options = PluginOptions::new(WasmSource::File(cfg.wasm.clone()))
        .plugin_config(cfg.plugin_config.clone())
        .real_clock(true);
    let options = PluginOptions {
        record_callbacks: false,
        ..options
    }
    .buffer_limit(cfg.stream_buffer_limit());
    let sink = cfg.log_sink.clone();
    let vm = tokio::task::spawn_blocking(move || start_vm(options, sink))
        .await
        .map_err(|e| ProxyError::Load(LoadError::Instantiate(e.to_string())))?
        .map_err(ProxyError::Load)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|error| ProxyError::Listen {
            addr: cfg.listen,
            error,
        })?;
    let local_addr = listener.local_addr().map_err(|error| ProxyError::Listen {
        addr: cfg.listen,
        error,
    })?;
    let network = cfg.is_network();
    let upstream = Upstream::new(cfg.upstream, cfg.upstream_protocol);
    let pool = upstream.clone();
    let cfg = Arc::new(cfg);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (vm, cfg, upstream) = (vm.clone(), cfg.clone(), upstream.clone());
            if network {
                tokio::spawn(crate::tcp::serve(tcp, vm, cfg));
                continue;
            }
            tokio::spawn(async move {
                let protocol = cfg.downstream_protocol;
                let window = cfg.http2_initial_stream_window_size;
                // Envoy's `enable_trailers` on an HTTP/1.1 listener: trailers are written into
                // the last chunk by the connection's writer (see h1_trailers.rs).
                let slot = (protocol == Protocol::Http1 && cfg.downstream_http1_trailers)
                    .then(Slot::default);
                let io = TokioIo::new(TrailerWriter::new(tcp, slot.clone().unwrap_or_default()));
                let svc = service_fn(move |req| {
                    handle(req, vm.clone(), cfg.clone(), upstream.clone(), slot.clone())
                });
                let result = match protocol {
                    Protocol::Http1 => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                    }
                    Protocol::H2c => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .initial_stream_window_size(window)
                            .initial_connection_window_size(DEFAULT_H2_STREAM_WINDOW)
                            .serve_connection(io, svc)
                            .await
                    }
                };
                let _ = result;
            });
        }
    });
    Ok(RunningProxy {
        local_addr,
        network,
        upstream: pool,
        task,
    })
}

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
//!
//! `config.rs` holds [`ProxyConfig`], `vm_thread.rs` the VM thread, `upstream.rs` the
//! upstream connection pools and `tcp.rs` the network-filter proxy.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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
use tokio::sync::{mpsc, oneshot};

pub use super::config::{is_network_role, LogSink, Protocol, ProxyConfig};
pub use crate::host::vm::{DEFAULT_BUFFER_LIMIT, DEFAULT_H2_STREAM_WINDOW};

use super::h1_trailers::{Slot, SlotTrailers, TrailerWriter};
use super::upstream::{BoxBody, Upstream};
use super::vm_thread::{start_vm, Command, Flow, Sink, StreamSink, VmHandle};
use crate::host::headers::Headers;
use crate::host::vm::{LoadError, PluginOptions, WasmSource};
use crate::model::{Frame, StreamId};

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
    let (sides, (up_rx, mut down_rx)) = Sink::new(cfg.buffer_limit_bytes);
    let (up_flow, down_flow) = sides.flows();
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let sink = StreamSink {
        sides,
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
                tokio::spawn(super::tcp::serve(tcp, vm, cfg));
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

//! Proxy mode on live sockets with the probe guest: h2c and HTTP/1.1, trailers both ways,
//! local replies, and the start-up errors.

mod common;

use common::{grpc_ok_trailers, grpc_response, probe_proxy, serve_http, serve_tcp, wait_for};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use host_harness::proxy::{self, Protocol, ProxyConfig};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Upstream that echoes the request body and ends with grpc-status trailers, reporting the
/// x-probe header it saw in a response header.
async fn echo_upstream(protocol: Protocol) -> SocketAddr {
    let addr = serve_tcp(move |tcp| async move {
        let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
            let seen = req.headers().get("x-probe").cloned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = grpc_ok_trailers();
            trailers.insert("x-extra", "1".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
            let mut resp = grpc_response(StreamBody::new(futures_stream(frames)));
            if let Some(v) = seen {
                resp.headers_mut().insert("x-saw-probe", v);
            }
            Ok::<_, Infallible>(resp)
        });
        serve_http(tcp, protocol, true, svc).await;
    })
    .await;
    addr
}

/// A stream over a vector of body frames.
fn futures_stream<T: Unpin>(items: Vec<T>) -> Iter<std::vec::IntoIter<T>> {
    Iter(items.into_iter())
}

struct Iter<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

async fn client(
    addr: SocketAddr,
    protocol: Protocol,
    req: Request<Full<Bytes>>,
) -> Response<Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = TokioIo::new(tcp);
    match protocol {
        Protocol::H2c => {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
        Protocol::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        }
    }
}

async fn start(
    mode: &str,
    down: Protocol,
    up: Protocol,
    upstream: SocketAddr,
) -> proxy::RunningProxy {
    started(probe_proxy(mode, upstream).protocols(down, up)).await
}

async fn started(cfg: ProxyConfig) -> proxy::RunningProxy {
    proxy::start(cfg).await.unwrap_or_else(|e| panic!("{e}"))
}

fn grpc_request(uri: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// A gRPC call with `body` from a `client_protocol` client through the probe in `mode` to an h2c
/// [`echo_upstream`]: the proxy (it stops when dropped) and the response, whose status was 200.
async fn echo_call_through(
    mode: &str,
    client_protocol: Protocol,
    body: &'static [u8],
) -> (proxy::RunningProxy, Response<Incoming>) {
    let upstream = echo_upstream(Protocol::H2c).await;
    let p = start(mode, client_protocol, Protocol::H2c, upstream).await;
    let uri = match client_protocol {
        Protocol::H2c => format!("http://{}/pkg.Svc/Call", p.local_addr),
        Protocol::Http1 => "/pkg.Svc/Call".to_string(),
    };
    let resp = client(p.local_addr, client_protocol, grpc_request(&uri, body)).await;
    assert_eq!(resp.status(), 200);
    (p, resp)
}

#[tokio::test]
async fn h2c_both_sides_streams_body_and_trailers() {
    let (_p, resp) = echo_call_through("body-continue", Protocol::H2c, b"hello").await;
    assert_eq!(
        resp.headers().get("x-saw-probe").unwrap(),
        "1",
        "the filter's request header reached upstream"
    );
    let collected = resp.into_body().collect().await.unwrap();
    // body-continue mode appends nothing (set_buffer NotFound) and strips grpc-status.
    let trailers = collected.trailers().cloned();
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"hello"));
    assert!(trailers.is_some_and(|t| t.get("grpc-status").is_none()));
}

#[tokio::test]
async fn http1_downstream_h2c_upstream_with_tick_flushed_trailer_frame() {
    let (_p, resp) = echo_call_through("stream", Protocol::Http1, b"abc").await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from_static(b"abc[TRAILERS]"));
}

#[tokio::test]
async fn local_reply_over_http1() {
    let upstream = echo_upstream(Protocol::Http1).await;
    let p = start("local-reply", Protocol::Http1, Protocol::Http1, upstream).await;
    let req = Request::builder()
        .uri("/x")
        .header("host", "a")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client(p.local_addr, Protocol::Http1, req).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        Bytes::from_static(b"go away")
    );
}

#[tokio::test]
async fn startup_errors_are_clear() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ProxyConfig {
        listen: taken.local_addr().unwrap(),
        ..probe_proxy("body-continue", upstream)
    };
    let refused = |cfg: &ProxyConfig| {
        let cfg = cfg.clone();
        async move { proxy::start(cfg).await.err().expect("refused").to_string() }
    };
    let err = refused(&cfg).await;
    assert!(err.ends_with("address already in use"), "{err}");
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.plugin_config = b"reject".to_vec();
    let err = refused(&cfg).await;
    assert!(err.contains("unknown role \"reject\""), "{err}");
    cfg.wasm = "/nonexistent.wasm".into();
    let err = refused(&cfg).await;
    assert!(
        err.contains("cannot read wasm file /nonexistent.wasm"),
        "{err}"
    );
}

/// The real filter in role `config` as a proxy in front of `upstream`, speaking `protocols`
/// (downstream, upstream).
async fn bridge(
    config: &str,
    upstream: SocketAddr,
    (down, up): (Protocol, Protocol),
) -> proxy::RunningProxy {
    let local = "127.0.0.1:0".parse().unwrap();
    let cfg = ProxyConfig::new(common::grpc_bridge_wasm(), config, local, upstream);
    started(cfg.protocols(down, up)).await
}

/// The sample topology minus Envoy: h2c client -> agent proxy (real filter) -> HTTP/1.1 hop
/// -> server proxy (real filter) -> h2c gRPC upstream, unary call with trailers.
#[tokio::test(flavor = "multi_thread")]
async fn real_filter_agent_and_server_over_an_http1_hop() {
    let backend = echo_upstream(Protocol::H2c).await;
    let server = bridge(
        r#"{"role":"server","auth":"none"}"#,
        backend,
        (Protocol::Http1, Protocol::H2c),
    )
    .await;
    let agent = bridge(
        r#"{"role":"agent"}"#,
        server.local_addr,
        (Protocol::H2c, Protocol::Http1),
    )
    .await;
    let message = [0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{}/pkg.Svc/Call", agent.local_addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::copy_from_slice(&message)))
        .unwrap();
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client(agent.local_addr, Protocol::H2c, req),
    )
    .await
    .expect("response in time");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("grpc trailers");
    assert_eq!(collected.to_bytes(), Bytes::copy_from_slice(&message));
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

/// An upstream that counts the connections it accepted, and holds each answer while its gate
/// is closed (so that a test knows how many requests are in flight at once); `keep_alive:
/// false` makes an HTTP/1.1 upstream close each connection after one response.
struct CountingUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Requests that arrived while the gate was closed.
    held: Arc<AtomicUsize>,
    gate_open: tokio::sync::watch::Sender<bool>,
}

impl CountingUpstream {
    async fn start(protocol: Protocol, keep_alive: bool) -> CountingUpstream {
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let (gate_open, gate) = tokio::sync::watch::channel(true);
        let (count, holding) = (accepted.clone(), held.clone());
        let addr = serve_tcp(move |tcp| {
            count.fetch_add(1, Ordering::SeqCst);
            let (holding, gate) = (holding.clone(), gate.clone());
            async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (holding, mut gate) = (holding.clone(), gate.clone());
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if !*gate.borrow() {
                            holding.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = gate.wait_for(|open| *open).await;
                        let trailers = grpc_ok_trailers();
                        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
                            vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
                        let resp = grpc_response(StreamBody::new(futures_stream(frames)));
                        Ok::<_, Infallible>(resp)
                    }
                });
                serve_http(tcp, protocol, keep_alive, svc).await;
            }
        })
        .await;
        CountingUpstream {
            addr,
            accepted,
            held,
            gate_open,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// [`echo_call`]s `numbers` through `proxy`, all at once: the gate stays closed until
    /// every one of them is held at the upstream; then waits for them all to finish.
    async fn calls_at_once(&self, proxy: SocketAddr, numbers: std::ops::Range<usize>) {
        let n = numbers.len();
        self.held.store(0, Ordering::SeqCst);
        self.gate_open.send_replace(false);
        let calls: Vec<_> = numbers.map(|i| tokio::spawn(echo_call(proxy, i))).collect();
        wait_for("requests held at the upstream at once", || {
            match self.held.load(Ordering::SeqCst) {
                held if held >= n => Ok(()),
                held => Err(format!("{held} of {n}")),
            }
        })
        .await;
        self.gate_open.send_replace(true);
        for c in calls {
            c.await.unwrap();
        }
    }
}

/// The probe in body-continue mode (h2c client side) in front of a [`CountingUpstream`].
async fn counted(protocol: Protocol, keep_alive: bool) -> (CountingUpstream, proxy::RunningProxy) {
    let upstream = CountingUpstream::start(protocol, keep_alive).await;
    let p = start("body-continue", Protocol::H2c, protocol, upstream.addr).await;
    (upstream, p)
}

async fn echo_call(proxy: SocketAddr, i: usize) {
    let body: &'static [u8] = Box::leak(format!("call {i}").into_bytes().into_boxed_slice());
    let resp = client(
        proxy,
        Protocol::H2c,
        grpc_request(&format!("http://{proxy}/pkg.Svc/Call"), body),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.to_bytes(), Bytes::from_static(body));
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_upstream_multiplexes_every_request_over_one_connection() {
    let (upstream, p) = counted(Protocol::H2c, true).await;
    for i in 0..5 {
        echo_call(p.local_addr, i).await;
    }
    upstream.calls_at_once(p.local_addr, 5..25).await;
    assert_eq!(
        upstream.accepted(),
        1,
        "25 requests, sequential and 20 at once, on one h2c connection"
    );
    assert_eq!(p.upstream_connections(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_upstream_reuses_idle_connections() {
    let (upstream, p) = counted(Protocol::Http1, true).await;
    // The pool takes a connection back once its exchange is over.
    let pooled = |n: usize| {
        let p = &p;
        move || match p.upstream_idle_connections() {
            idle if idle >= n => Ok(()),
            idle => Err(format!("{idle} of {n} connections back in the pool")),
        }
    };
    for i in 0..5 {
        echo_call(p.local_addr, i).await;
        wait_for("the connection back in the pool", pooled(1)).await;
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "sequential requests reuse the keep-alive connection"
    );
    upstream.calls_at_once(p.local_addr, 5..13).await;
    assert_eq!(
        upstream.accepted(),
        8,
        "8 requests at once: the idle connection and 7 new ones"
    );
    wait_for("every connection back in the pool", pooled(8)).await;
    // Sequential again: pooled connections are reused after the burst.
    for i in 13..18 {
        echo_call(p.local_addr, i).await;
    }
    assert_eq!(upstream.accepted(), 8, "pooled connections are reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_upstream_that_closes_each_connection_still_serves_every_request() {
    let (upstream, p) = counted(Protocol::Http1, false).await;
    for i in 0..4 {
        echo_call(p.local_addr, i).await;
    }
    assert_eq!(upstream.accepted(), 4);
}

/// An HTTP/1.1 upstream that answers every request with a chunked body and trailers.
async fn raw_http1_upstream_with_trailers() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // The request: a head and a 3-byte body from the proxy, with Content-Length or
                // chunked (which one depends on whether the body had arrived whole when the
                // proxy sent the head: timing, on a loaded machine).
                let complete = |seen: &[u8]| {
                    seen.windows(4).any(|w| w == b"\r\n\r\n")
                        && (seen.ends_with(b"abc") || seen.ends_with(b"abc\r\n0\r\n\r\n"))
                };
                while !complete(&seen) {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n\
                          3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-extra: 1\r\n\r\n",
                    )
                    .await;
                let _ = tcp.read(&mut buf).await;
            });
        }
    });
    addr
}

/// The response echoes `abc`, and its trailers are exactly `x-extra` when they cross
/// (`enable_trailers`), none otherwise: body-continue removes grpc-status from the trailers.
async fn assert_echo_with_trailers(resp: Response<Incoming>, trailers_cross: bool) {
    let collected = resp.into_body().collect().await.unwrap();
    let names: Vec<String> = collected
        .trailers()
        .map(|t| t.keys().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"abc"));
    let want: Vec<String> = if trailers_cross {
        vec!["x-extra".into()]
    } else {
        vec![]
    };
    assert_eq!(names, want, "enable_trailers={trailers_cross}");
}

/// The probe in body-continue mode between `down` and `up`, with Envoy's `enable_trailers`
/// on the HTTP/1.1 listener and cluster as `(downstream, upstream)` say.
async fn trailers_proxy(
    upstream: SocketAddr,
    down: Protocol,
    up: Protocol,
    (downstream, upstream_trailers): (bool, bool),
) -> proxy::RunningProxy {
    started(
        probe_proxy("body-continue", upstream)
            .protocols(down, up)
            .http1_trailers(downstream, upstream_trailers),
    )
    .await
}

/// Envoy's `enable_trailers` on an HTTP/1.1 listener: trailers reach an HTTP/1.1 client that
/// sent no `TE: trailers` and got no `Trailer` header; without it they are dropped.
#[tokio::test]
async fn http1_listener_trailers_follow_enable_trailers() {
    let upstream = echo_upstream(Protocol::H2c).await;
    for enabled in [true, false] {
        let p = trailers_proxy(upstream, Protocol::Http1, Protocol::H2c, (enabled, false)).await;
        let req = Request::post("/pkg.Svc/Call")
            .header("host", "x")
            .header("content-type", "application/grpc");
        let resp = client(
            p.local_addr,
            Protocol::Http1,
            req.body(Full::new(Bytes::from_static(b"abc"))).unwrap(),
        )
        .await;
        assert!(resp.headers().get("trailer").is_none());
        assert_echo_with_trailers(resp, enabled).await;
    }
}

/// Envoy's `enable_trailers` on an HTTP/1.1 cluster: the filter sees the upstream's
/// trailers only with it.
#[tokio::test]
async fn http1_upstream_trailers_follow_enable_trailers() {
    let upstream = raw_http1_upstream_with_trailers().await;
    for enabled in [true, false] {
        let p = trailers_proxy(upstream, Protocol::H2c, Protocol::Http1, (false, enabled)).await;
        let resp = client(
            p.local_addr,
            Protocol::H2c,
            grpc_request(&format!("http://{}/pkg.Svc/Call", p.local_addr), b"abc"),
        )
        .await;
        assert_echo_with_trailers(resp, enabled).await;
    }
}

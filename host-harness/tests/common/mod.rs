//! Shared test helpers: the probe guest (built once per test binary), the real filter, and
//! the upstreams, proxy configurations and log waits the harness tests have in common.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use host_harness::proxy::{LogSink, Protocol, ProxyConfig};
use host_harness::{build_wasm_guest, Frame, GuestRustflags, PluginOptions, Scenario, WasmSource};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Builds `test-guests/probe` for wasm32-wasip1 (once) and returns the module bytes.
pub fn probe_wasm() -> Vec<u8> {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let manifest =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-guests/probe/Cargo.toml");
        let dir = build_wasm_guest(&manifest, "harness-guests", GuestRustflags::Workspace)
            .unwrap_or_else(|e| panic!("the probe guest: {e}"));
        let path = dir.join("harness_probe.wasm");
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    })
    .clone()
}

pub fn probe(mode: &str) -> PluginOptions {
    PluginOptions::new(WasmSource::Bytes(probe_wasm())).plugin_config(mode)
}

/// The real filter. Tests that need it fail (never skip) when it is missing.
pub fn grpc_bridge_wasm() -> PathBuf {
    // GRPC_BRIDGE_WASM points elsewhere (e.g. a build under another CARGO_TARGET_DIR).
    let path = std::env::var_os("GRPC_BRIDGE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip1/release/grpc_bridge.wasm")
        });
    assert!(
        path.exists(),
        "{} is missing: build the filter first with `make build` \
         (cargo build --release --target wasm32-wasip1 -p grpc-bridge)",
        path.display()
    );
    path
}

/// Response headers of a trailers-only gRPC answer with status 5 (NOT_FOUND).
pub const TRAILERS_ONLY_NOT_FOUND: &[(&str, &str)] = &[
    (":status", "200"),
    ("content-type", "application/grpc"),
    ("grpc-status", "5"),
];

/// The probe guest as a file (Envoy and the proxy load a path), written once per test binary:
/// tests run in parallel, and rewriting the file while another test's Envoy or proxy loads it
/// gave an empty module.
pub fn probe_file() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "host-harness-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probe.wasm");
        std::fs::write(&path, probe_wasm()).unwrap();
        path
    })
    .clone()
}

/// The proxy running the probe in `mode` on an ephemeral local port, in front of `upstream`.
pub fn probe_proxy(mode: &str, upstream: SocketAddr) -> ProxyConfig {
    ProxyConfig::new(
        probe_file(),
        mode.as_bytes().to_vec(),
        "127.0.0.1:0".parse().unwrap(),
        upstream,
    )
}

/// A body stream fed from a channel, for upstreams that send frames as they go.
pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// A gRPC response (`content-type: application/grpc`) with `body`.
pub fn grpc_response<B>(body: B) -> Response<B> {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp
}

/// Trailers with `grpc-status: 0`.
pub fn grpc_ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers
}

/// A local TCP server on an ephemeral port that runs `handle` on every connection, each in
/// its own task.
pub async fn serve_tcp<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(handle(tcp));
        }
    });
    addr
}

/// TCP echo upstream; closes its side after the client's FIN.
pub async fn tcp_echo() -> SocketAddr {
    serve_tcp(|mut tcp| async move {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tcp.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tcp.shutdown().await;
    })
    .await
}

/// The probe's `net` session against `addr`: writes "abc", reads the 9-byte answer, writes
/// "def", reads 3 bytes, half-closes and reads to the end. Returns the three reads.
pub async fn net_session(addr: SocketAddr) -> Vec<Vec<u8>> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut seen = Vec::new();
    for (send, expect) in [(&b"abc"[..], 9usize), (&b"def"[..], 3)] {
        c.write_all(send).await.unwrap();
        let mut got = vec![0u8; expect];
        tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut got))
            .await
            .expect("answer in time")
            .unwrap();
        seen.push(got);
    }
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
        .await
        .expect("close in time")
        .unwrap();
    seen.push(rest);
    seen
}

/// The messages a proxy's log sink holds so far.
pub fn sink_lines(sink: &LogSink) -> Vec<String> {
    sink.lock()
        .unwrap()
        .iter()
        .map(|l| l.message.clone())
        .collect()
}

/// Polls `poll` every 20 ms until it answers `Ok` (what it waits for happens in other tasks,
/// threads or processes); fails after 10 s with `what` and the last `Err`.
pub async fn wait_for<T>(what: &str, mut poll: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = match poll() {
            Ok(done) => return done,
            Err(last) => last,
        };
        assert!(Instant::now() < deadline, "{what}: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `lines()` contains a line starting with `prefix` (logs are written from other
/// tasks and processes); fails after 10 s naming `what`.
pub async fn wait_for_line(
    what: &str,
    prefix: &str,
    lines: impl Fn() -> Vec<String>,
) -> Vec<String> {
    wait_for_any_line(what, &[prefix], lines).await
}

/// [`wait_for_line`] for the first line that starts with any of `prefixes`.
pub async fn wait_for_any_line(
    what: &str,
    prefixes: &[&str],
    lines: impl Fn() -> Vec<String>,
) -> Vec<String> {
    wait_for(what, || {
        let now = lines();
        if now
            .iter()
            .any(|l| prefixes.iter().any(|p| l.starts_with(p)))
        {
            Ok(now)
        } else {
            Err(format!("no {prefixes:?} line in {now:#?}"))
        }
    })
    .await
}

/// Asserts that `lines` holds each of `expected` (whole lines).
pub fn assert_has_lines(lines: &[String], expected: &[&str]) {
    for want in expected {
        assert!(
            lines.iter().any(|l| l == want),
            "no line {want:?} in {lines:#?}"
        );
    }
}

/// Serves one upstream connection with `svc`: HTTP/2 (h2c), or HTTP/1.1 with or without
/// keep-alive.
pub async fn serve_http<S, B>(tcp: TcpStream, protocol: Protocol, keep_alive: bool, svc: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(tcp);
    match protocol {
        Protocol::H2c => {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await;
        }
        Protocol::Http1 => {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(keep_alive)
                .serve_connection(io, svc)
                .await;
        }
    }
}

/// A gRPC length-prefixed frame: `flag` (0 a message, 0x80 a trailer frame), then `payload`.
pub fn grpc_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One unary call toward a native gRPC backend (the server side of the bridge): the request
/// with `content_type` and `extra` headers, then the backend's answer "yo" and status 0.
/// Returns what reached the client.
pub fn call_native_backend(
    s: &mut Scenario,
    content_type: &str,
    extra: &[(&str, &str)],
) -> Vec<Frame> {
    let mut headers = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/pkg.Svc/Call"),
        (":authority", "backend"),
        ("content-type", content_type),
    ];
    headers.extend_from_slice(extra);
    s.request_headers(&headers, false)
        .request_body(&grpc_frame(0, b"hi"), true);
    s.response_headers(
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    )
    .response_body(&grpc_frame(0, b"yo"), false)
    .response_trailers(&[("grpc-status", "0")]);
    s.take_downstream()
}

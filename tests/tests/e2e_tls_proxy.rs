//! TLS through a forward proxy that intercepts it (squid with `ssl_bump bump all`, Debian's
//! squid-openssl), the network many enterprise users live behind:
//!
//! ```text
//! client (h2c) -> agent Envoy -- CONNECT grpc-bridge.test:PORT, TLS inside (SNI grpc-bridge.test,
//!   trusting only the proxy's CA) --> squid (terminates TLS with a minted certificate, reads the
//!   HTTP, re-originates TLS) --> server Envoy (TLS listener, test CA) -> tonic backend
//! ```
//!
//! - both bridged transports pass the whole e2e suite (tonic and grpcio clients) through the
//!   bumping squid, and squid's access log shows it decrypted the traffic;
//! - control: native gRPC through the same squid fails on every call (squid answers the HTTP/2
//!   preface with 400), while the same native config passes when squid splices instead of
//!   bumping, and the bridge passes on the very same squid;
//! - a proxy that requires basic authentication on CONNECT: no or wrong credentials are refused
//!   (407), the configured `PROXY_AUTHORIZATION` passes;
//! - a proxy that closes idle connections (`read_timeout`, `client_idle_pconn_timeout` 2 s):
//!   tunnel keepalive pings keep one WebSocket tunnel across the silence; without pings the
//!   tunnel is cut and re-established for the next call; gRPC-web re-opens its connection.
//!
//! Certificates, squid config, hosts and password files are generated per test into temp dirs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grpc_bridge_tests::cases::{connect, fmt_status, report, run_case, run_suite, Outcome, CASE_TIMEOUT};
use grpc_bridge_tests::pb::UnaryRequest;
use grpc_bridge_tests::squid_bump::SquidBumpOptions;
use grpc_bridge_tests::tls_proxy::{Agent, AgentOptions, Bridge, TlsProxy, SERVER_NAME};
use tonic::Code;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start(bridge: Bridge, squid: SquidBumpOptions) -> TlsProxy {
    TlsProxy::start(bridge, squid).unwrap_or_else(|e| panic!("could not start the topology: {e}"))
}

fn agent(t: &TlsProxy, opts: &AgentOptions) -> Agent {
    t.start_agent(opts)
        .unwrap_or_else(|e| panic!("could not start the agent: {e}\n{}", t.logs(&[], 40)))
}

/// Run `cases` (names in `cases.rs`) one after the other, each with the suite's time limit.
async fn run_cases(addr: SocketAddr, cases: &[&str]) -> Vec<Outcome> {
    let mut out = vec![];
    for case in cases {
        let t0 = Instant::now();
        let result = match tokio::time::timeout(CASE_TIMEOUT, run_case(case, addr)).await {
            Ok(r) => r,
            Err(_) => Err(format!("case timed out after {} s", CASE_TIMEOUT.as_secs())),
        };
        out.push(Outcome {
            case: case.to_string(),
            result,
            elapsed: t0.elapsed(),
        });
    }
    out
}

/// One unary call on a fresh channel: Ok, or Err(code, description).
async fn unary(addr: SocketAddr, payload: &[u8]) -> Result<(), (Code, String)> {
    let mut c = connect(addr).await.map_err(|e| (Code::Unknown, e))?;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.unary(UnaryRequest {
            payload: payload.to_vec(),
            ..Default::default()
        }),
    )
    .await;
    match r {
        Err(_) => Err((Code::DeadlineExceeded, "no answer within 10 s".into())),
        Ok(Err(s)) => Err((s.code(), fmt_status(&s))),
        Ok(Ok(r)) if r.get_ref().payload == payload => Ok(()),
        Ok(Ok(r)) => Err((Code::Unknown, format!("payload {:?}", r.get_ref().payload))),
    }
}

fn fail(t: &TlsProxy, agents: &[&Agent], what: String) -> ! {
    let path = agents.first().map(|a| t.path(a)).unwrap_or_default();
    panic!("{what}\npath: {path}\n{}", t.logs(agents, 50));
}

/// The full suite with tonic and grpcio through the bumping squid, then proof from squid's
/// access log that it decrypted the calls (`bumped` lines, at least `min_bumped`).
fn full_suite(bridge: Bridge, label: &str, bumped: &[&str], min_bumped: usize) {
    let t = start(bridge, SquidBumpOptions::new(0));
    let a = agent(&t, &AgentOptions::bridge());
    let tonic = rt().block_on(run_suite(a.addr));
    let grpcio = grpc_bridge_tests::py::run_client(a.addr, &[]).unwrap_or_else(|e| {
        vec![Outcome {
            case: "python-client".into(),
            result: Err(e),
            elapsed: Duration::ZERO,
        }]
    });
    let (tonic_text, tonic_failed) = report(&tonic);
    let (grpcio_text, grpcio_failed) = report(&grpcio);
    let connects = t.squid.wait_access_lines(
        &["CONNECT", &format!("{SERVER_NAME}:{}", t.server_addr.port())],
        1,
        Duration::from_secs(5),
    );
    let decrypted = t.squid.wait_access_lines(bumped, min_bumped, Duration::from_secs(5));
    let text = format!(
        "tonic client:\n{tonic_text}grpcio client:\n{grpcio_text}squid access.log: {} CONNECT {SERVER_NAME} lines, {} decrypted lines matching {bumped:?}\n",
        connects.len(),
        decrypted.len()
    );
    if tonic_failed + grpcio_failed > 0 {
        fail(&t, &[&a], format!("{label}: {} case(s) failed\n{text}", tonic_failed + grpcio_failed));
    }
    if connects.is_empty() || decrypted.len() < min_bumped {
        fail(
            &t,
            &[&a],
            format!("{label}: squid did not intercept the calls (want >= 1 CONNECT and >= {min_bumped} decrypted lines)\n{text}"),
        );
    }
    println!("{label}\npath: {}\n{text}", t.path(&a));
}

#[test]
fn grpc_web_passes_the_suite_through_a_bumping_squid() {
    // Every gRPC-web request is decrypted by squid and logged with its https URL.
    full_suite(
        Bridge::GrpcWeb,
        "gRPC-web over HTTP/1.1 in TLS through squid ssl_bump (tonic + grpcio)",
        &["POST https://grpc-bridge.test:", "/bridge.test.BridgeTest/", "application/grpc-web"],
        20,
    );
}

#[test]
fn websocket_tunnel_passes_the_suite_through_a_bumping_squid() {
    // Each tunnel is a decrypted upgrade that squid logs as TCP_TUNNEL/101 when it ends (the
    // tonic suite opens a channel per case).
    full_suite(
        Bridge::WebSocketTunnel,
        "WebSocket tunnel in TLS through squid ssl_bump (tonic + grpcio)",
        &["TCP_TUNNEL/101", "GET https://grpc-bridge.test:", "/grpc-bridge/tunnel"],
        10,
    );
}

/// The control: native gRPC (HTTP/2 in TLS, `agent-native-tls-proxy.yaml`, trusting both CAs)
/// fails on every call through the bumping squid, while the bridge passes through the same
/// squid; the same native config passes when squid splices TLS instead.
#[test]
fn native_grpc_fails_through_a_bumping_squid_where_the_bridge_passes() {
    let rt = rt();
    let native_cases = ["unary", "server_stream_timing", "bidi_ping_pong", "metadata_unary", "concurrent_unary"];

    // 1. Bumping squid (squid-bump.conf defaults): native fails, the bridge passes.
    let t = start(Bridge::GrpcWeb, SquidBumpOptions::new(0));
    let native = agent(&t, &AgentOptions::native());
    let bridge = agent(&t, &AgentOptions::bridge());
    let (native_results, bridge_result) = rt.block_on(async {
        let mut v = vec![];
        for i in 0..6 {
            v.push(unary(native.addr, format!("native {i}").as_bytes()).await);
        }
        (v, unary(bridge.addr, b"bridged").await)
    });
    let native_ok = native_results.iter().filter(|r| r.is_ok()).count();
    let not_unavailable: Vec<_> = native_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|(c, _)| *c != Code::Unavailable)
        .collect();
    let rejected_preface = t
        .squid
        .wait_access_lines(&["/400", "PRI *"], 1, Duration::from_secs(5));
    let summary = format!(
        "native through bump: {native_ok}/{} OK, errors {:?}\nbridge through the same squid: {bridge_result:?}\nsquid 400 answers to the HTTP/2 preface: {}\n",
        native_results.len(),
        native_results.iter().filter_map(|r| r.as_ref().err()).map(|(c, _)| *c).collect::<Vec<_>>(),
        rejected_preface.len()
    );
    if native_ok != 0 || !not_unavailable.is_empty() {
        fail(&t, &[&native, &bridge], format!("native gRPC must fail UNAVAILABLE through the bumping squid\n{summary}"));
    }
    if rejected_preface.is_empty() {
        fail(&t, &[&native, &bridge], format!("squid should have answered 400 to `PRI *`\n{summary}"));
    }
    if let Err(e) = &bridge_result {
        fail(&t, &[&native, &bridge], format!("the bridge must pass through the same squid: {e:?}\n{summary}"));
    }
    drop((native, bridge, t));

    // 2. Same native config, squid splicing (TLS not intercepted): native passes.
    let mut opts = SquidBumpOptions::new(0);
    opts.bump = false;
    let t = start(Bridge::GrpcWeb, opts);
    let native = agent(&t, &AgentOptions::native());
    let outcomes = rt.block_on(run_cases(native.addr, &native_cases));
    let (text, failed) = report(&outcomes);
    // squid logs a spliced tunnel when it ends; the agent keeps its connection, so only the
    // CONNECT is there. Nothing may have been decrypted.
    let connects = t.squid.wait_access_lines(&["CONNECT grpc-bridge.test:"], 1, Duration::from_secs(5));
    let decrypted = t.squid.access_lines(&["https://grpc-bridge.test:"]).len() + t.squid.access_lines(&["PRI *"]).len();
    if failed > 0 || connects.is_empty() || decrypted > 0 {
        fail(
            &t,
            &[&native],
            format!(
                "native gRPC must pass through a splicing squid (the control's control)\n{summary}{text}CONNECT lines: {}, decrypted lines: {decrypted}",
                connects.len()
            ),
        );
    }
    println!(
        "control: native gRPC vs a TLS-intercepting squid\n{summary}native through the same proxy config with ssl_bump splice:\n{text}"
    );
}

/// Basic authentication on CONNECT (squid `proxy_auth REQUIRED`, basic_ncsa_auth, htpasswd file
/// from `openssl passwd -apr1`): no credentials and a wrong password are refused with 407; the
/// agent's PROXY_AUTHORIZATION passes, and squid logs the user on the decrypted traffic.
fn proxy_auth(bridge: Bridge, label: &str, decrypted: &str) {
    let mut opts = SquidBumpOptions::new(0);
    opts.auth = Some(("agent".into(), "s3cret pass".into()));
    let t = start(bridge, opts);
    let none = agent(&t, &AgentOptions::bridge());
    let wrong = agent(&t, &AgentOptions::bridge().credentials("agent", "not the password"));
    let right = agent(&t, &AgentOptions::bridge().credentials("agent", "s3cret pass"));
    let rt = rt();
    let (r_none, r_wrong, outcomes) = rt.block_on(async {
        (
            unary(none.addr, b"no credentials").await,
            unary(wrong.addr, b"wrong password").await,
            run_cases(right.addr, &["unary", "server_stream_timing", "bidi_ping_pong", "large_4mib_unary", "concurrent_unary"]).await,
        )
    });
    let (text, failed) = report(&outcomes);
    let denied = t.squid.wait_access_lines(&["TCP_DENIED/407", "CONNECT"], 2, Duration::from_secs(5));
    let as_user = t.squid.wait_access_lines(&[decrypted, " agent "], 1, Duration::from_secs(5));
    let summary = format!(
        "no credentials: {r_none:?}\nwrong password: {r_wrong:?}\nright credentials:\n{text}squid: {} CONNECTs denied with 407, {} decrypted lines as user `agent`\n",
        denied.len(),
        as_user.len()
    );
    let agents = [&right, &none, &wrong];
    if r_none.is_ok() || r_wrong.is_ok() {
        fail(&t, &agents, format!("{label}: calls without valid credentials must fail\n{summary}"));
    }
    if failed > 0 || denied.len() < 2 || as_user.is_empty() {
        fail(&t, &agents, format!("{label}\n{summary}"));
    }
    println!("{label}\npath: {}\n{summary}", t.path(&right));
}

#[test]
fn grpc_web_through_a_proxy_requiring_authentication() {
    proxy_auth(
        Bridge::GrpcWeb,
        "gRPC-web through squid ssl_bump with basic auth on CONNECT",
        "POST https://grpc-bridge.test:",
    );
}

#[test]
fn websocket_tunnel_through_a_proxy_requiring_authentication() {
    proxy_auth(
        Bridge::WebSocketTunnel,
        "WebSocket tunnel through squid ssl_bump with basic auth on CONNECT",
        "GET https://grpc-bridge.test:",
    );
}

/// squid closing anything idle for 2 s (`read_timeout`, `client_idle_pconn_timeout`).
fn idle_closing() -> SquidBumpOptions {
    let mut opts = SquidBumpOptions::new(0);
    opts.read_timeout = Some("2 seconds".into());
    opts.client_idle_timeout = Some("2 seconds".into());
    opts
}

const SILENCE: Duration = Duration::from_millis(4500);
const PROBE_AT: Duration = Duration::from_millis(3500);

/// One channel: a call, SILENCE of nothing (connections read at PROBE_AT), another call.
/// Returns (first, upstream_cx (active, total) at PROBE_AT, second, upstream_cx after).
async fn call_silence_call(
    a: &Agent,
) -> (Result<(), String>, (u64, u64), Result<(), String>, (u64, u64)) {
    let c = match connect(a.addr).await {
        Ok(c) => c,
        Err(e) => return (Err(e), (0, 0), Err("-".into()), (0, 0)),
    };
    let call = |p: &'static [u8]| {
        let mut c = c.clone();
        async move {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                c.unary(UnaryRequest {
                    payload: p.to_vec(),
                    ..Default::default()
                }),
            )
            .await;
            match r {
                Err(_) => Err("no answer within 10 s".to_string()),
                Ok(Err(s)) => Err(fmt_status(&s)),
                Ok(Ok(r)) if r.get_ref().payload == p => Ok(()),
                Ok(Ok(r)) => Err(format!("payload {:?}", r.get_ref().payload)),
            }
        }
    };
    let first = call(b"before the silence").await;
    tokio::time::sleep(PROBE_AT).await;
    let mid = a.upstream_cx();
    tokio::time::sleep(SILENCE - PROBE_AT).await;
    let second = call(b"after the silence").await;
    drop(c);
    (first, mid, second, a.upstream_cx())
}

#[test]
fn websocket_tunnel_through_a_proxy_that_closes_idle_connections() {
    let t = start(Bridge::WebSocketTunnel, idle_closing());
    let pinging = agent(&t, &AgentOptions::bridge().ping_interval_ms(500));
    let silent = agent(&t, &AgentOptions::bridge().ping_interval_ms(0));
    let rt = rt();
    let (p, s) = rt.block_on(async { tokio::join!(call_silence_call(&pinging), call_silence_call(&silent)) });
    let summary = format!(
        "PING_INTERVAL_MS=500: first {:?}, tunnels (active, total) {:?} at {PROBE_AT:?} into the silence, second {:?}, after {:?}\n\
         PING_INTERVAL_MS=0:   first {:?}, tunnels (active, total) {:?} at {PROBE_AT:?} into the silence, second {:?}, after {:?}\n",
        p.0, p.1, p.2, p.3, s.0, s.1, s.2, s.3
    );
    let agents = [&pinging, &silent];
    // Pings: one tunnel, open through the silence, carries both calls.
    if p.0.is_err() || p.2.is_err() || p.1 != (1, 1) || p.3.1 != 1 {
        fail(&t, &agents, format!("keepalive pings must keep one tunnel through squid's 2 s read_timeout\n{summary}"));
    }
    // No pings: squid cuts the tunnel; the next call gets a new one.
    if s.0.is_err() || s.1.0 != 0 {
        fail(&t, &agents, format!("without pings squid must have cut the idle tunnel\n{summary}"));
    }
    if s.2.is_err() || s.3.1 != 2 {
        fail(&t, &agents, format!("the call after the cut must pass on a second tunnel\n{summary}"));
    }
    println!("WebSocket tunnel through squid ssl_bump with read_timeout 2 s\npath: {}\n{summary}", t.path(&pinging));
}

#[test]
fn grpc_web_through_a_proxy_that_closes_idle_connections() {
    let t = start(Bridge::GrpcWeb, idle_closing());
    let a = agent(&t, &AgentOptions::bridge());
    let (first, mid, second, after) = rt().block_on(call_silence_call(&a));
    let summary = format!(
        "first {first:?}; connections (active, total) {mid:?} at {PROBE_AT:?} into the silence; second {second:?}; after {after:?}\n"
    );
    if first.is_err() || second.is_err() {
        fail(&t, &[&a], format!("both calls must pass\n{summary}"));
    }
    if mid.0 != 0 || after.1 != 2 {
        fail(&t, &[&a], format!("squid must have closed the idle connection and the agent opened a new one\n{summary}"));
    }
    println!("gRPC-web through squid ssl_bump with client_idle_pconn_timeout 2 s\npath: {}\n{summary}", t.path(&a));
}

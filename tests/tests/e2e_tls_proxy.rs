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
//! - the tunnel server sends its 101 on its own: a bare client that sends nothing after the
//!   upgrade request gets it through the bumping squid;
//! - a proxy that closes idle connections (`read_timeout`, `client_idle_pconn_timeout` 2 s):
//!   tunnel keepalive pings keep one WebSocket tunnel across the silence; without pings the
//!   tunnel is cut and re-established for the next call; gRPC-web re-opens its connection;
//! - calls right after bidi calls (gRPC-web): the server Envoy closes after those, squid still
//!   says keep-alive, so `agent-tls-proxy.yaml` uses one call per connection by default.
//!
//! Certificates, squid config, hosts and password files are generated per test into temp dirs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grpc_bridge_tests::cases::{
    connect, echo_within, fmt_status, report, run_case, run_suite, Client, Outcome, CASE_TIMEOUT,
};
use grpc_bridge_tests::pb::{BidiRequest, UnaryRequest};
use grpc_bridge_tests::squid_bump::SquidBumpOptions;
use grpc_bridge_tests::tls_proxy::{
    Agent, AgentKind, AgentOptions, Bridge, TlsProxy, Trust, SERVER_NAME,
};
use grpc_bridge_tests::util::rt;
use tonic::Code;

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
    let c = connect(addr).await.map_err(|e| (Code::Unknown, e))?;
    echo_within(&c, payload, Duration::from_secs(10)).await
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
        &[
            "CONNECT",
            &format!("{SERVER_NAME}:{}", t.server_addr.port()),
        ],
        1,
        Duration::from_secs(5),
    );
    let decrypted = t
        .squid
        .wait_access_lines(bumped, min_bumped, Duration::from_secs(5));
    let text = format!(
        "tonic client:\n{tonic_text}grpcio client:\n{grpcio_text}squid access.log: {} CONNECT {SERVER_NAME} lines, {} decrypted lines matching {bumped:?}\n",
        connects.len(),
        decrypted.len()
    );
    if tonic_failed + grpcio_failed > 0 {
        fail(
            &t,
            &[&a],
            format!(
                "{label}: {} case(s) failed\n{text}",
                tonic_failed + grpcio_failed
            ),
        );
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
        &[
            "POST https://grpc-bridge.test:",
            "/bridge.test.BridgeTest/",
            "application/grpc-web",
        ],
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
        &[
            "TCP_TUNNEL/101",
            "GET https://grpc-bridge.test:",
            "/grpc-bridge/tunnel",
        ],
        10,
    );
}

/// The control: native gRPC (HTTP/2 in TLS, `agent-native-tls-proxy.yaml`, trusting both CAs)
/// fails on every call through the bumping squid, while the bridge passes through the same
/// squid; the same native config passes when squid splices TLS instead.
#[test]
fn native_grpc_fails_through_a_bumping_squid_where_the_bridge_passes() {
    let rt = rt();
    let native_cases = [
        "unary",
        "server_stream_gated",
        "bidi_ping_pong",
        "metadata_unary",
        "concurrent_unary",
    ];

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
        fail(
            &t,
            &[&native, &bridge],
            format!("native gRPC must fail UNAVAILABLE through the bumping squid\n{summary}"),
        );
    }
    if rejected_preface.is_empty() {
        fail(
            &t,
            &[&native, &bridge],
            format!("squid should have answered 400 to `PRI *`\n{summary}"),
        );
    }
    if let Err(e) = &bridge_result {
        fail(
            &t,
            &[&native, &bridge],
            format!("the bridge must pass through the same squid: {e:?}\n{summary}"),
        );
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
    let connects =
        t.squid
            .wait_access_lines(&["CONNECT grpc-bridge.test:"], 1, Duration::from_secs(5));
    let decrypted = t.squid.access_lines(&["https://grpc-bridge.test:"]).len()
        + t.squid.access_lines(&["PRI *"]).len();
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
    let wrong = agent(
        &t,
        &AgentOptions::bridge().credentials("agent", "not the password"),
    );
    let right = agent(
        &t,
        &AgentOptions::bridge().credentials("agent", "s3cret pass"),
    );
    let rt = rt();
    let (r_none, r_wrong, outcomes) = rt.block_on(async {
        (
            unary(none.addr, b"no credentials").await,
            unary(wrong.addr, b"wrong password").await,
            run_cases(
                right.addr,
                &[
                    "unary",
                    "server_stream_gated",
                    "bidi_ping_pong",
                    "large_4mib_unary",
                    "concurrent_unary",
                ],
            )
            .await,
        )
    });
    let (text, failed) = report(&outcomes);
    let denied =
        t.squid
            .wait_access_lines(&["TCP_DENIED/407", "CONNECT"], 2, Duration::from_secs(5));
    let as_user = t
        .squid
        .wait_access_lines(&[decrypted, " agent "], 1, Duration::from_secs(5));
    let summary = format!(
        "no credentials: {r_none:?}\nwrong password: {r_wrong:?}\nright credentials:\n{text}squid: {} CONNECTs denied with 407, {} decrypted lines as user `agent`\n",
        denied.len(),
        as_user.len()
    );
    let agents = [&right, &none, &wrong];
    if bridge == Bridge::GrpcWeb {
        // Envoy's own CONNECT (the http_11_proxy transport socket) fails the connection on the
        // 407 and answers the call itself; the 407 never reaches the filter, so the status is
        // Envoy's UNAVAILABLE with its connect-failure message (the POST path's 407 is
        // UNAUTHENTICATED: e2e_proxy_auth.rs).
        let want = "message \"upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure\"";
        for (what, r) in [("no credentials", &r_none), ("wrong password", &r_wrong)] {
            let exact = matches!(r, Err((Code::Unavailable, m)) if m.contains(want));
            if !exact {
                fail(
                    &t,
                    &agents,
                    format!("{label}: {what}: want UNAVAILABLE {want}, got {r:?}\n{summary}"),
                );
            }
        }
    }
    if r_none.is_ok() || r_wrong.is_ok() {
        fail(
            &t,
            &agents,
            format!("{label}: calls without valid credentials must fail\n{summary}"),
        );
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

/// A unary call on `c` with a 10 s limit.
async fn call(c: &Client, p: &'static [u8]) -> Result<(), String> {
    echo_within(c, p, Duration::from_secs(10))
        .await
        .map_err(|(_, e)| e)
}

/// Poll `cond` every 50 ms until it holds (Some(time it took)) or `within` passes (None).
async fn poll_until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if cond() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= within {
            return None;
        }
        // Poll interval of a wait with a deadline (the condition is the event).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long squid may take to cut an idle connection with its 2 s timeouts (it checks
/// timeouts about once a second; the machine may be busy).
const CUT_WITHIN: Duration = Duration::from_secs(10);
/// Keepalive pings the pinging agent must have counted after the silent tunnel was cut before
/// the silence ends. A ping goes out after 500 ms without tunnel traffic and the counter
/// reaches /stats once a second (it may still owe 2 from before the cut): 6 are at least
/// 1.5 s past the cut, more than squid's once-a-second check of its timeouts.
const PINGS_PAST_THE_CUT: u64 = 6;

/// The agent's tunnel keepalive pings counted so far.
fn pings(a: &Agent) -> u64 {
    a.envoy
        .stat("wasmcustom.grpc_bridge.tunnel_client.pings")
        .unwrap_or(0)
}

#[test]
fn websocket_tunnel_through_a_proxy_that_closes_idle_connections() {
    let t = start(Bridge::WebSocketTunnel, idle_closing());
    let pinging = agent(&t, &AgentOptions::bridge().ping_interval_ms(500));
    let silent = agent(&t, &AgentOptions::bridge().ping_interval_ms(0));
    let rt = rt();
    // Both agents: a call, the same silence, a call on the same channel. The silence lasts
    // until squid has cut the tunnel that carries no pings, then `PINGS_PAST_THE_CUT` pings.
    let r = rt.block_on(async {
        let (cp, cs) = match (connect(pinging.addr).await, connect(silent.addr).await) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => return Err(format!("connect: {:?} {:?}", a.err(), b.err())),
        };
        let first = (
            call(&cp, b"pings, before").await,
            call(&cs, b"no pings, before").await,
        );
        let open_after_first = (pinging.upstream_cx(), silent.upstream_cx());
        let t0 = Instant::now();
        let cut = poll_until(CUT_WITHIN, || silent.upstream_cx().0 == 0).await;
        let pings_at_cut = pings(&pinging);
        let pinged = poll_until(CUT_WITHIN, || {
            pings(&pinging) >= pings_at_cut + PINGS_PAST_THE_CUT
        })
        .await;
        let mid = (pinging.upstream_cx(), silent.upstream_cx());
        let silence = t0.elapsed();
        let second = (
            call(&cp, b"pings, after").await,
            call(&cs, b"no pings, after").await,
        );
        let after = (pinging.upstream_cx(), silent.upstream_cx());
        Ok((
            first,
            open_after_first,
            cut,
            pinged,
            silence,
            mid,
            second,
            after,
        ))
    });
    let (first, open_after_first, cut, pinged, silence, mid, second, after) =
        r.unwrap_or_else(|e| fail(&t, &[&pinging, &silent], e));
    let summary = format!(
        "tunnels (active, total) after the first calls {open_after_first:?}; silence of {silence:?}; the tunnel without pings was cut after {cut:?}, then {PINGS_PAST_THE_CUT} pings after {pinged:?}\n\
         PING_INTERVAL_MS=500: first {:?}, tunnels (active, total) at the end of the silence {:?}, second {:?}, after {:?}\n\
         PING_INTERVAL_MS=0:   first {:?}, tunnels (active, total) at the end of the silence {:?}, second {:?}, after {:?}\n",
        first.0, mid.0, second.0, after.0, first.1, mid.1, second.1, after.1
    );
    let agents = [&pinging, &silent];
    if first.0.is_err() || first.1.is_err() {
        fail(&t, &agents, format!("the first calls must pass\n{summary}"));
    }
    // No pings: squid cuts the tunnel (not at once: it was open after the call).
    if open_after_first.1 != (1, 1) || cut.is_none() {
        fail(&t, &agents, format!("without pings squid must cut the idle tunnel after its 2 s read_timeout\n{summary}"));
    }
    // Pings: the one tunnel stays open through the same silence and carries both calls.
    if open_after_first.0 != (1, 1)
        || pinged.is_none()
        || mid.0 != (1, 1)
        || second.0.is_err()
        || after.0 .1 != 1
    {
        fail(
            &t,
            &agents,
            format!(
                "keepalive pings must keep one tunnel through squid's 2 s read_timeout\n{summary}"
            ),
        );
    }
    // No pings: the next call re-establishes a tunnel.
    if second.1.is_err() || after.1 .1 != 2 {
        fail(
            &t,
            &agents,
            format!("the call after the cut must pass on a second tunnel\n{summary}"),
        );
    }
    println!(
        "WebSocket tunnel through squid ssl_bump with read_timeout 2 s\npath: {}\n{summary}",
        t.path(&pinging)
    );
}

#[test]
fn grpc_web_through_a_proxy_that_closes_idle_connections() {
    let t = start(Bridge::GrpcWeb, idle_closing());
    // Keep-alive on (the sample's default is one call per connection, see
    // calls_right_after_bidi_calls_through_a_bumping_squid), so that there is an idle pooled
    // connection for squid to close.
    let a = agent(
        &t,
        &AgentOptions::bridge().var("MAX_REQUESTS_PER_CONNECTION", "0"),
    );
    let r = rt().block_on(async {
        let c = connect(a.addr).await?;
        let first = call(&c, b"before the silence").await;
        let during = a.upstream_cx();
        let cut = poll_until(CUT_WITHIN, || a.upstream_cx().0 == 0).await;
        let second = call(&c, b"after the silence").await;
        Ok::<_, String>((first, during, cut, second, a.upstream_cx()))
    });
    let (first, during, cut, second, after) = r.unwrap_or_else(|e| fail(&t, &[&a], e));
    let summary = format!(
        "first {first:?} (connections (active, total) {during:?}); squid closed the idle connection after {cut:?}; second {second:?}; after {after:?}\n"
    );
    if first.is_err() || second.is_err() {
        fail(&t, &[&a], format!("both calls must pass\n{summary}"));
    }
    // Not at once: the connection was open (and pooled) after the first call.
    if during != (1, 1) || cut.is_none() || after.1 != 2 {
        fail(&t, &[&a], format!("squid must close the idle connection after its 2 s timeout, and the agent open a new one\n{summary}"));
    }
    println!(
        "gRPC-web through squid ssl_bump with client_idle_pconn_timeout 2 s\npath: {}\n{summary}",
        t.path(&a)
    );
}

/// A bidi call then, at once, a unary call, `ROUNDS` times on one channel, through the bumping
/// squid. The server Envoy closes an HTTP/1.1 connection after a response that started before the
/// request ended (every bidi call); squid, whose client connection is pinned to that server
/// connection, still answers "Connection: keep-alive" and closes right after the response. With
/// keep-alive in the agent (`MAX_REQUESTS_PER_CONNECTION=0`) the next call can land on the
/// closing connection and fail UNAVAILABLE ("connection termination"); the sample's default (one
/// call per connection) must pass every round. Run with `TLS_PROXY_KEEPALIVE=1` to see the
/// keep-alive failures.
#[test]
fn calls_right_after_bidi_calls_through_a_bumping_squid() {
    const ROUNDS: usize = 40;
    let keepalive = std::env::var_os("TLS_PROXY_KEEPALIVE").is_some();
    let t = start(Bridge::GrpcWeb, SquidBumpOptions::new(0));
    let opts = if keepalive {
        AgentOptions::bridge().var("MAX_REQUESTS_PER_CONNECTION", "0")
    } else {
        AgentOptions::bridge()
    };
    let a = agent(&t, &opts);
    let failures = rt().block_on(async {
        let c = connect(a.addr).await?;
        let mut failures = vec![];
        for i in 0..ROUNDS {
            let mut b = c.clone();
            // The request stays open until the pong arrived: the response starts before the
            // request ends, as in every ping-pong.
            let (tx, rx) = tokio::sync::mpsc::channel::<BidiRequest>(1);
            let r = async {
                tx.send(BidiRequest {
                    seq: 1,
                    payload: b"ping".to_vec(),
                    response_size: 0,
                })
                .await
                .map_err(|_| "request stream closed".to_string())?;
                let mut s = b
                    .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .map_err(|s| fmt_status(&s))?
                    .into_inner();
                let pong = s.message().await.map_err(|s| fmt_status(&s))?;
                if pong.is_none() {
                    return Err("no pong".to_string());
                }
                drop(tx);
                while s.message().await.map_err(|s| fmt_status(&s))?.is_some() {}
                Ok::<_, String>(())
            };
            match tokio::time::timeout(Duration::from_secs(10), r).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("round {i} bidi: {e}")),
                Err(_) => failures.push(format!("round {i} bidi: no end within 10 s")),
            }
            if let Err(e) = call(&c, b"right after").await {
                failures.push(format!("round {i} unary: {e}"));
            }
        }
        Ok::<_, String>(failures)
    });
    let failures = failures.unwrap_or_else(|e| fail(&t, &[&a], e));
    let summary = format!(
        "{ROUNDS} rounds of bidi + unary, MAX_REQUESTS_PER_CONNECTION={}: {} failed call(s), TLS connections (active, total) {:?}\n{}",
        if keepalive { "0" } else { "1 (default)" },
        failures.len(),
        a.upstream_cx(),
        failures.join("\n")
    );
    if !failures.is_empty() {
        fail(&t, &[&a], summary);
    }
    println!("{summary}");
}

/// The tunnel server sends its 101 on its own: a bare WebSocket client (Python, `tests/py/
/// upgrade_through_proxy.py`) sends only the upgrade request through the bumping squid (which
/// would hold any further client bytes until it has seen the 101 anyway) and must get a valid 101
/// (Sec-WebSocket-Accept, subprotocol) without sending anything else.
#[test]
fn websocket_101_without_client_data_through_a_bumping_squid() {
    let t = start(Bridge::WebSocketTunnel, SquidBumpOptions::new(0));
    let v = grpc_bridge_tests::py::run_json(
        "upgrade_through_proxy.py",
        &[
            "--proxy",
            &t.squid.addr.to_string(),
            "--connect",
            &format!("{SERVER_NAME}:{}", t.server_addr.port()),
            "--cafile",
            &t.pki.proxy_ca_cert.display().to_string(),
            "--wait",
            "5",
            "--header",
            &format!(
                "x-grpc-bridge-auth: {}",
                grpc_bridge_tests::envoy::TEST_SECRET
            ),
        ],
    )
    .unwrap_or_else(|e| fail(&t, &[], e));
    let ok = v["ok"] == true
        && v["status"] == 101
        && v["accept_ok"] == true
        && v["protocol"] == "grpc-bridge.tunnel.v1"
        && v["ms"].as_u64().is_some_and(|ms| ms < 3000);
    if !ok {
        fail(
            &t,
            &[],
            format!("the 101 must come without client data, within 3 s: {v}"),
        );
    }
    let logged = t.squid.wait_access_lines(
        &["TCP_TUNNEL/101", "GET https://grpc-bridge.test:"],
        1,
        Duration::from_secs(5),
    );
    if logged.is_empty() {
        fail(
            &t,
            &[],
            format!("squid did not log the decrypted upgrade: {v}"),
        );
    }
    println!(
        "bare upgrade through squid ssl_bump, nothing sent after it: {v}\nsquid: {}",
        logged[0]
    );
}

/// mTLS through the hop: `agent-mtls-proxy.yaml` presents a client certificate inside the
/// CONNECT tunnel of a squid that splices (passes TLS through), and the server role
/// (server-tls.yaml, `require_client_certificate` with `allowed_uri_sans`) admits it. An agent
/// with another identity gets the server role's exact UNAUTHENTICATED, and its call never
/// reaches the backend.
#[test]
fn grpc_web_with_a_client_certificate_through_a_splicing_squid() {
    let mut squid = SquidBumpOptions::new(0);
    squid.bump = false;
    let t = TlsProxy::start_with(Bridge::GrpcWeb, squid, |pki| {
        vec![
            ("CLIENT_CA", pki.server_ca_cert.display().to_string()),
            ("REQUIRE_CLIENT_CERT", "true".into()),
            (
                "AUTH",
                r#"{"require_client_certificate":true,"allowed_uri_sans":["spiffe://grpc-bridge.test/agent"]}"#.into(),
            ),
        ]
    })
    .unwrap_or_else(|e| panic!("could not start the topology: {e}"));
    let mtls_agent = |cn: &str, uri: &str| {
        let (cert, key) = t.pki.client_cert(cn, uri).expect("client cert");
        agent(
            &t,
            &AgentOptions {
                kind: AgentKind::BridgeMtls,
                ..AgentOptions::bridge().trust(Trust::BothCas)
            }
            .var("CLIENT_CERT", &cert.display().to_string())
            .var("CLIENT_KEY", &key.display().to_string())
            .var("AUTH", r#""none""#),
        )
    };
    let good = mtls_agent("agent-1", "spiffe://grpc-bridge.test/agent");
    let other = mtls_agent("intruder", "spiffe://grpc-bridge.test/intruder");
    let rt = rt();
    let outcomes = rt.block_on(run_cases(
        good.addr,
        &[
            "unary",
            "server_stream_gated",
            "client_stream",
            "bidi_ping_pong",
        ],
    ));
    let (text, failed) = report(&outcomes);
    if failed > 0 {
        fail(
            &t,
            &[&good],
            format!("mTLS agent through a splicing squid:\n{text}"),
        );
    }
    println!(
        "mTLS agent through a splicing squid ({}):\n{text}",
        t.path(&good)
    );
    let token = grpc_bridge_tests::cases::unique("mtls-intruder");
    let r = rt.block_on(async {
        let mut c = connect(other.addr).await.expect("connect");
        c.unary(UnaryRequest {
            payload: b"x".to_vec(),
            token: token.clone(),
            ..Default::default()
        })
        .await
    });
    match r {
        Err(s)
            if s.code() == Code::Unauthenticated
                && s.message()
                    == "grpc-bridge: bridged request not authenticated: client certificate not allowed" => {}
        other_r => fail(
            &t,
            &[&other],
            format!("intruder certificate: want UNAUTHENTICATED \"...client certificate not allowed\", got {other_r:?}"),
        ),
    }
    assert!(
        t.backend.call(&token).is_none(),
        "the refused call reached the backend"
    );
}

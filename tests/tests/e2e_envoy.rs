//! End-to-end suite against real Envoy 1.40 with the grpc-bridge wasm filter.
//!
//! Full path: client (h2c) -> agent Envoy (wasm, role agent) -> nginx (HTTP/1.1 only) ->
//! server Envoy (wasm role server | Envoy's native grpc_web) -> tonic backend (h2c).
//!
//! Each test builds one topology and runs every case on it in sequence, reporting each case on
//! its own line (`cargo test -p grpc-bridge-tests --test e2e_envoy -- --nocapture` shows them;
//! `E2E_CASES=unary,bidi_ping_pong` runs a subset). On failure the report, Envoy stats and the
//! log tails of every process are printed. Needs the built filter
//! (target/wasm32-wasip1/release/grpc_bridge.wasm, `make build`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grpc_bridge_tests::cases::{connect, fmt_status, report, run_suite, Outcome};
use grpc_bridge_tests::envoy::{built_wasm_path, Envoy};
use grpc_bridge_tests::grpcweb::{run_raw_suite, StatusWithoutMessages, WebCall};
use grpc_bridge_tests::nginx::Nginx;
use grpc_bridge_tests::pb::UnaryRequest;
use grpc_bridge_tests::topology::{ServerSide, Topology};
use grpc_bridge_tests::util::free_port;
use grpc_bridge_tests::util::rt;
use tonic::Code;

fn start(b: grpc_bridge_tests::topology::TopologyBuilder) -> Topology {
    match b.start() {
        Ok(t) => t,
        Err(e) => panic!("could not start the topology: {e}"),
    }
}

fn check(label: &str, outcomes: &[Outcome], topo: &mut Topology) {
    let (text, failed) = report(outcomes);
    if failed > 0 {
        let alive = topo
            .check_alive()
            .err()
            .unwrap_or_else(|| "all processes still running".into());
        let mut stats = String::new();
        if let Some(a) = &topo.agent {
            stats += &format!(
                "--- agent stats (wasm / upstream rq) ---\n{}\n",
                interesting_stats(a)
            );
        }
        stats += &format!(
            "--- server stats ---\n{}\n",
            interesting_stats(&topo.server)
        );
        panic!(
            "{label}: {failed} case(s) failed\npath: {}\n{text}\n{alive}\n{stats}{}",
            topo.path,
            topo.logs(60)
        );
    }
    println!("{label}\npath: {}\n{text}", topo.path);
}

fn interesting_stats(e: &Envoy) -> String {
    e.nonzero_stats_matching(&["wasm", "upstream_rq_", "downstream_rq_", "_reset"])
}

/// The tonic cases through our agent and the nginx hop to `server` (`described` in the report).
fn agent_suite(server: ServerSide, described: &str) {
    let mut topo = start(Topology::builder().server(server));
    let outcomes = rt().block_on(run_suite(topo.client_addr));
    let label = format!("tonic client, grpc-bridge agent + {described}");
    check(&label, &outcomes, &mut topo);
}

grpc_bridge_tests::test_table! {
    /// (a) Our agent and our server role.
    suite_agent_and_wasm_server_role =>
        agent_suite(ServerSide::Wasm, "grpc-bridge server role"),
    /// (b) Our agent against Envoy's native grpc_web filter on the server side.
    suite_agent_and_native_grpc_web_server =>
        agent_suite(ServerSide::NativeGrpcWeb, "native grpc_web server"),
    /// (b') Our agent against the hybrid server: Envoy's grpc_web converts, the wasm guards.
    suite_agent_and_hybrid_server =>
        agent_suite(ServerSide::Hybrid, "hybrid server (grpc_web + server_guard)"),
}

/// Browser-style gRPC-web (binary and text) straight to the hybrid server.
#[test]
fn hybrid_server_raw_grpc_web() {
    let mut topo = start(Topology::builder().server(ServerSide::Hybrid).agent(false));
    let outcomes = rt().block_on(run_raw_suite(
        topo.server_addr,
        topo.backend.addr,
        StatusWithoutMessages::TrailerFrame,
    ));
    check("raw gRPC-web client, hybrid server", &outcomes, &mut topo);
}

/// (c) A grpcio (Python) client through our agent and server role.
#[test]
fn suite_python_grpcio_client() {
    let mut topo = start(Topology::builder().server(ServerSide::Wasm));
    let outcomes = grpc_bridge_tests::py::run_client(topo.client_addr, &[]).unwrap();
    check(
        "grpcio client, grpc-bridge agent + grpc-bridge server role",
        &outcomes,
        &mut topo,
    );
}

/// The server role alone, at the byte level: browser-style gRPC-web (binary and text) over
/// HTTP/1.1, directly and through the nginx hop.
#[test]
fn server_role_raw_grpc_web() {
    let mut topo = start(Topology::builder().server(ServerSide::Wasm).agent(false));
    let rt = rt();
    let mut outcomes = rt.block_on(run_raw_suite(
        topo.server_addr,
        topo.backend.addr,
        StatusWithoutMessages::Http1Trailers,
    ));
    for mut o in rt.block_on(run_raw_suite(
        topo.client_addr,
        topo.backend.addr,
        StatusWithoutMessages::DroppedByHop,
    )) {
        o.case = format!("{} (via nginx)", o.case);
        outcomes.push(o);
    }
    check(
        "raw gRPC-web client, grpc-bridge server role",
        &outcomes,
        &mut topo,
    );
}

/// The agent maps non-gRPC answers from the network to gRPC statuses, and leaves non-gRPC
/// requests alone.
#[test]
fn agent_maps_non_grpc_upstream_errors() {
    built_wasm_path();
    // nginx whose upstream does not exist: it answers 502 with an HTML page.
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nginx = Nginx::start("dead-upstream", dead).unwrap();
    let agent = |upstream: SocketAddr, name: &str| {
        Envoy::start_local(
            name,
            "agent.yaml",
            &[
                ("UPSTREAM_HOST", upstream.ip().to_string()),
                ("UPSTREAM_PORT", upstream.port().to_string()),
            ],
        )
        .unwrap()
    };
    let via_nginx = agent(nginx.addr, "agent-502");
    let nowhere = agent(
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        "agent-refused",
    );
    let a1 = via_nginx.listener_addr("bridge_agent").unwrap();
    let a2 = nowhere.listener_addr("bridge_agent").unwrap();

    let rt = rt();
    let mut outcomes = vec![];
    let mut run = |case: &str, f: &mut dyn FnMut() -> Result<String, String>| {
        let t0 = Instant::now();
        let result = f();
        outcomes.push(Outcome {
            case: case.into(),
            result,
            elapsed: t0.elapsed(),
        });
    };
    // One unary call through `addr` must end UNAVAILABLE (`mapped` says from what).
    let expect_unavailable = |addr: SocketAddr, mapped: &str| -> Result<String, String> {
        let (code, s, el) = rt.block_on(async {
            let mut c = connect(addr).await?;
            let t0 = Instant::now();
            match tokio::time::timeout(Duration::from_secs(10), c.unary(UnaryRequest::default()))
                .await
            {
                Err(_) => Err("no status within 10 s".to_string()),
                Ok(Ok(_)) => Err("call succeeded".into()),
                Ok(Err(e)) => Ok((e.code(), fmt_status(&e), t0.elapsed())),
            }
        })?;
        if code == Code::Unavailable {
            Ok(format!("{s} after {} ms", el.as_millis()))
        } else {
            Err(format!("got {s}, want UNAVAILABLE{mapped}"))
        }
    };
    run("proxy_502_html_becomes_unavailable", &mut || {
        expect_unavailable(a1, " (HTTP 502 -> 14)")
    });
    run("connection_refused_becomes_unavailable", &mut || {
        expect_unavailable(a2, "")
    });
    run("non_grpc_request_untouched", &mut || {
        rt.block_on(async {
            // A plain HTTP/1.1 POST (not gRPC) through the agent reaches nginx, which answers 502
            // with its HTML page: the agent must pass that through as is.
            let mut c = WebCall::start(a1, "/plain", "text/plain", b"hello".to_vec()).await?;
            let body = c.read_all(Duration::from_secs(5)).await?;
            let body = String::from_utf8_lossy(&body).into_owned();
            if c.status != 502 || c.header("grpc-status").is_some() || !body.contains("502") {
                return Err(format!(
                    "status {} grpc-status {:?} body {body:?}",
                    c.status,
                    c.header("grpc-status")
                ));
            }
            Ok("HTTP 502 with nginx's page, no grpc-status".into())
        })
    });
    let (text, failed) = report(&outcomes);
    if failed > 0 {
        panic!(
            "{failed} case(s) failed\n{text}\n--- agent (via nginx) ---\n{}\n--- agent (refused) ---\n{}\n--- nginx ---\n{}",
            via_nginx.log_tail(40),
            nowhere.log_tail(40),
            nginx.process.log_tail(20)
        );
    }
    println!("agent error mapping\n{text}");
}

/// The agent role against a scripted HTTP/1.1 upstream: the exact request it sends, and how it
/// handles responses a real server side rarely produces.
#[test]
fn agent_against_scripted_upstream() {
    use grpc_bridge_tests::fake_upstream::{FakeUpstream, FAKE_BIN};
    use grpc_bridge_tests::grpcweb::msg_frame;
    use tonic::metadata::MetadataValue;

    built_wasm_path();
    let rt = rt();
    let fake = rt.block_on(FakeUpstream::start());
    let agent = Envoy::start_local(
        "agent-scripted",
        "agent.yaml",
        &[
            ("UPSTREAM_HOST", fake.addr.ip().to_string()),
            ("UPSTREAM_PORT", fake.addr.port().to_string()),
        ],
    )
    .unwrap();
    let addr = agent.listener_addr("bridge_agent").unwrap();

    // One unary call with the scenario header; returns the response metadata or the status.
    let call = |scenario: &str| -> Result<
        Result<(Vec<u8>, tonic::metadata::MetadataMap), tonic::Status>,
        String,
    > {
        rt.block_on(async {
            let mut c = connect(addr).await?;
            let mut req = tonic::Request::new(UnaryRequest {
                payload: b"abc".to_vec(),
                ..Default::default()
            });
            req.metadata_mut().insert(
                "x-fake-scenario",
                MetadataValue::try_from(scenario).unwrap(),
            );
            match tokio::time::timeout(Duration::from_secs(10), c.unary(req)).await {
                Err(_) => Err(format!("{scenario}: no answer within 10 s")),
                Ok(Ok(r)) => {
                    let md = r.metadata().clone();
                    Ok(Ok((r.into_inner().payload, md)))
                }
                Ok(Err(s)) => Ok(Err(s)),
            }
        })
    };
    let expect_ok = |scenario: &str| -> Result<String, String> {
        match call(scenario)? {
            Err(s) => Err(format!("got {}", fmt_status(&s))),
            Ok((payload, md)) => {
                if payload != b"fake" {
                    return Err(format!("payload {payload:?}"));
                }
                let trl = md.get("x-fake-trl").map(|v| v.as_bytes().to_vec());
                let bin = md
                    .get_bin("x-fake-trl-bin")
                    .and_then(|v| v.to_bytes().ok())
                    .map(|b| b.to_vec());
                if trl.as_deref() != Some(b"trailer value".as_slice())
                    || bin.as_deref() != Some(FAKE_BIN)
                {
                    return Err(format!(
                        "trailers x-fake-trl={trl:?} x-fake-trl-bin={bin:?}"
                    ));
                }
                Ok("message and trailer metadata (incl. -bin) delivered".into())
            }
        }
    };
    let expect_status = |scenario: &str, code: Code, msg: Option<&str>| -> Result<String, String> {
        match call(scenario)? {
            Ok(_) => Err(format!("call succeeded, want {code:?}")),
            Err(s) if s.code() == code && msg.map(|m| m == s.message()).unwrap_or(true) => {
                Ok(fmt_status(&s))
            }
            Err(s) => Err(format!(
                "got {}, want {code:?}{}",
                fmt_status(&s),
                msg.map(|m| format!(" {m:?}")).unwrap_or_default()
            )),
        }
    };

    let mut outcomes = vec![];
    let mut run = |case: &str, r: Result<String, String>| {
        outcomes.push(Outcome {
            case: case.into(),
            result: r,
            elapsed: Duration::ZERO,
        });
    };
    run("ok_response", expect_ok("ok"));
    run(
        "request_shape",
        (|| {
            let r = fake.last().ok_or("no request recorded")?;
            let want_body = msg_frame(&UnaryRequest {
                payload: b"abc".to_vec(),
                ..Default::default()
            });
            let mut problems = vec![];
            if r.method != "POST"
                || r.path != "/bridge.test.BridgeTest/Unary"
                || r.version != "HTTP/1.1"
            {
                problems.push(format!(
                    "request line {} {} {}",
                    r.method, r.path, r.version
                ));
            }
            let ct = r.header("content-type").unwrap_or("");
            if !ct.starts_with("application/grpc-web") || ct.contains("text") {
                problems.push(format!("content-type {ct:?}"));
            }
            if let Some(te) = r.header("te") {
                problems.push(format!("te: {te} still present"));
            }
            if r.header("x-grpc-bridge") != Some("agent") {
                problems.push(format!("x-grpc-bridge {:?}", r.header("x-grpc-bridge")));
            }
            if r.body != want_body {
                problems.push(format!("body {:?}, want {want_body:?}", r.body));
            }
            if problems.is_empty() {
                Ok(format!(
                    "POST HTTP/1.1, {ct}, no te, x-grpc-bridge: agent, body intact (chunked: {})",
                    r.chunked
                ))
            } else {
                Err(format!("{}; headers {:?}", problems.join("; "), r.headers))
            }
        })(),
    );
    run("ok_1byte_chunks", expect_ok("ok_1byte_chunks"));
    run("ok_content_length", expect_ok("ok_content_length"));
    run(
        "ok_mixed_case_trailers",
        expect_ok("ok_mixed_case_trailers"),
    );
    run(
        "error_in_trailer_frame",
        expect_status(
            "error_in_trailer_frame",
            Code::FailedPrecondition,
            Some("failed über%25"),
        ),
    );
    run(
        "trailers_only",
        expect_status("trailers_only", Code::PermissionDenied, Some("denied here")),
    );
    // grpc/grpc doc/http-grpc-status-mapping.md: each code and the HTTP statuses (answered with
    // an HTML page) that map to it; 500, like any status not listed there, is UNKNOWN.
    for (code, statuses) in [
        (Code::Internal, &[400][..]),
        (Code::Unauthenticated, &[401]),
        (Code::PermissionDenied, &[403]),
        (Code::Unimplemented, &[404]),
        (Code::Unavailable, &[429, 502, 503, 504]),
        (Code::Unknown, &[500]),
    ] {
        for http in statuses {
            run(
                &format!("http_{http}_html"),
                expect_status(&format!("http_{http}"), code, None),
            );
        }
    }
    run(
        "truncated_without_trailer_frame",
        match call("truncated") {
            Err(e) => Err(e),
            Ok(Ok(_)) => Err("call succeeded although the response had no trailer frame".into()),
            Ok(Err(s)) => Ok(fmt_status(&s)),
        },
    );
    let (text, failed) = report(&outcomes);
    if failed > 0 {
        panic!(
            "{failed} case(s) failed\n{text}\n--- agent ---\n{}",
            agent.log_tail(60)
        );
    }
    println!("agent against a scripted upstream\n{text}");
}

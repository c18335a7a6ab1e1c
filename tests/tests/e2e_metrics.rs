//! The filter's counters in Envoy's `/stats` after known traffic (agent + nginx hop + server
//! role): calls, origin, bytes each way, and the final gRPC status per code on both sides.

use grpc_bridge_tests::cases::{connect, unary_failing};
use grpc_bridge_tests::envoy::Envoy;
use grpc_bridge_tests::pb::UnaryRequest;
use grpc_bridge_tests::topology::{ServerSide, Topology};
use grpc_bridge_tests::util::rt;
use grpc_bridge_tests::util::wait_until;
use std::time::Duration;
use tonic::Code;

fn stat(e: &Envoy, name: &str) -> u64 {
    e.stat(&format!("wasmcustom.grpc_bridge.{name}"))
        .unwrap_or(0)
}

#[test]
fn counters_after_known_traffic() {
    let topo = Topology::builder()
        .server(ServerSide::Wasm)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    rt.block_on(async {
        let mut c = connect(topo.client_addr).await.unwrap();
        for _ in 0..3 {
            c.unary(UnaryRequest::default()).await.unwrap();
        }
        for _ in 0..2 {
            let e = unary_failing(&mut c, Code::NotFound, "nope").await.unwrap();
            assert_eq!(e.code(), Code::NotFound);
        }
    });
    let agent = topo.agent.as_ref().unwrap();
    let server = &topo.server;
    // Counters reach the host at each VM's metrics tick (once a second): wait for the last
    // counter each side increments for a call, then read the rest.
    let flushed = wait_until(Duration::from_secs(10), || {
        (stat(agent, "agent.calls") == 5
            && stat(agent, "agent.grpc_status.5") == 2
            && stat(server, "server.messages_up") == 5
            && stat(server, "server.grpc_status.5") == 2)
            .then_some(())
    });
    let report = format!(
        "agent:\n{}\nserver:\n{}",
        agent.stats_matching("grpc_bridge"),
        server.stats_matching("grpc_bridge")
    );
    assert!(
        flushed.is_some(),
        "counters not flushed within 10 s\n{report}"
    );
    assert_eq!(stat(agent, "agent.calls"), 5, "{report}");
    assert_eq!(stat(agent, "agent.grpc_status.0"), 3, "{report}");
    assert_eq!(stat(agent, "agent.grpc_status.5"), 2, "{report}");
    assert!(
        stat(agent, "agent.bytes_up") > 0 && stat(agent, "agent.bytes_down") > 0,
        "{report}"
    );
    assert_eq!(stat(server, "server.calls.agent"), 5, "{report}");
    assert_eq!(stat(server, "server.calls.browser"), 0, "{report}");
    assert_eq!(stat(server, "server.grpc_status.0"), 3, "{report}");
    assert_eq!(stat(server, "server.grpc_status.5"), 2, "{report}");
    // What went up through the agent is what the server received.
    assert_eq!(
        stat(agent, "agent.bytes_up"),
        stat(server, "server.bytes_up"),
        "{report}"
    );
    // Messages: one request message per call reached the server; one response message per OK
    // call came back (the failed calls answer with their status alone).
    assert_eq!(stat(server, "server.messages_up"), 5, "{report}");
    assert_eq!(stat(agent, "agent.messages_down"), 3, "{report}");
    // No per-call histogram of our own: Envoy's `http.<stat_prefix>.downstream_rq_time` times
    // every call for free (docs/METRICS.md), where ours cost three hostcalls per call.
    assert_eq!(
        agent.histogram_count("grpc_bridge.agent.call_ms"),
        None,
        "{report}"
    );
    println!("{report}");
}

/// Per-worker state: calls on many connections, which Envoy spreads over its workers (each
/// with its own wasm VM, own pending counters and own flush tick), must still add up exactly.
/// Meaningful with more workers (`make test` runs this file again with
/// `GRPC_BRIDGE_ENVOY_CONCURRENCY=4`, and then at least two workers must have served calls).
#[test]
fn counters_add_up_over_workers() {
    let workers = grpc_bridge_tests::envoy::concurrency().unwrap();
    let topo = Topology::builder()
        .server(ServerSide::Wasm)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    const CONNECTIONS: usize = 16;
    const CALLS: usize = 2;
    let rt = rt();
    rt.block_on(async {
        let mut tasks = vec![];
        for _ in 0..CONNECTIONS {
            let addr = topo.client_addr;
            tasks.push(tokio::spawn(async move {
                let mut c = connect(addr).await.unwrap();
                for _ in 0..CALLS {
                    c.unary(UnaryRequest::default()).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let agent = topo.agent.as_ref().unwrap();
    let n = (CONNECTIONS * CALLS) as u64;
    let flushed = wait_until(Duration::from_secs(10), || {
        (stat(agent, "agent.grpc_status.0") == n && stat(&topo.server, "server.grpc_status.0") == n)
            .then_some(())
    });
    let report = format!(
        "agent:\n{}\nserver:\n{}",
        agent.stats_matching("grpc_bridge"),
        topo.server.stats_matching("grpc_bridge")
    );
    assert!(flushed.is_some(), "counters never reached {n}\n{report}");
    assert_eq!(stat(agent, "agent.calls"), n, "{report}");
    assert_eq!(stat(&topo.server, "server.calls.agent"), n, "{report}");
    // Which agent workers accepted the client's connections.
    let per_worker = agent.stats_matching(".downstream_cx_total");
    let busy = (0..workers)
        .filter(|w| {
            per_worker.lines().any(|l| {
                l.contains(&format!(".worker_{w}.downstream_cx_total")) && !l.ends_with(": 0")
            })
        })
        .count();
    if workers == 1 {
        println!("one Envoy worker (GRPC_BRIDGE_ENVOY_CONCURRENCY unset): the multi-worker half of this test runs under `make test`'s concurrency-4 pass");
    } else {
        assert!(
            busy >= 2,
            "{workers} workers, but only {busy} served the {CONNECTIONS} connections:\n{per_worker}"
        );
        println!("{n} calls on {CONNECTIONS} connections over {busy} of {workers} agent workers: counters exact");
    }
}

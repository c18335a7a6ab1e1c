//! Fallback in motion (`envoy/agent-fallback.yaml`): the native HTTP/2 path works, then an
//! HTTP/1.1-only hop gets in its way, then it is cleared again. Expected, for each bridged
//! transport (gRPC-web, WebSocket tunnel):
//! 1. open: calls go native (cluster stats);
//! 2. blocked: no call fails: the FAILURES calls that fail on native are retried on the bridged
//!    transport (retry_on reset, previous_priorities), the native host is ejected (outlier
//!    detection), and every later call goes bridged; counted exactly from Envoy's stats;
//! 3. cleared: once the ejection ends and the probe passes, traffic returns to native.
//!
//! The native path goes through a relay the test switches between the server Envoy (open) and a
//! blocker. Blockers: an nginx HTTP/1.1 hop (it answers the HTTP/2 preface with a 400); an
//! HTTP/1.1-only hop that answers `426 Upgrade Required` or `505 HTTP Version Not Supported`;
//! a hop that accepts the connection and closes it at once (a refusal). Switching also cuts the
//! relay's live connections, as a middlebox change would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grpc_bridge_tests::envoy::{built_wasm_path, Envoy};
use grpc_bridge_tests::fallback::{call_once, stat, wait_native_healthy, BridgedPaths, FAILURES};
use grpc_bridge_tests::relay::Relay;
use grpc_bridge_tests::util::{rt, wait_until};
use tokio::net::TcpListener;

const REPROBE: Duration = Duration::from_secs(2);

/// What stands in the native path while it is blocked.
#[derive(Clone, Copy, Debug)]
enum Blocker {
    /// The nginx HTTP/1.1 hop (400 to the HTTP/2 preface).
    Nginx,
    /// A scripted HTTP/1.1-only hop answering this status to whatever arrives, then closing.
    Status(u16),
    /// A hop that closes every connection as soon as it is accepted.
    Refuse,
}

/// A scripted HTTP/1.1-only hop for [`Blocker::Status`] and [`Blocker::Refuse`].
async fn start_blocker(b: Blocker) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                if let Blocker::Status(code) = b {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let reason = match code {
                        426 => "Upgrade Required",
                        505 => "HTTP Version Not Supported",
                        _ => "Refused",
                    };
                    let _ = s
                        .write_all(
                            format!(
                                "HTTP/1.1 {code} {reason}\r\nconnection: close\r\nupgrade: HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn run(fallback: &str, blocker: Blocker) {
    built_wasm_path();
    let rt = rt();
    let paths = BridgedPaths::start().unwrap();
    let (server_addr, hop, ws_hop) = (paths.server_addr, &paths.hop, &paths.ws_hop);
    let relay = rt.block_on(Relay::start(server_addr));
    let (agent, client) = paths
        .start_agent(
            "agent",
            "agent-fallback.yaml",
            relay.addr,
            ws_hop.addr,
            REPROBE,
            &[
                ("TUNNEL_UPSTREAM_HOST", ws_hop.addr.ip().to_string()),
                ("TUNNEL_UPSTREAM_PORT", ws_hop.addr.port().to_string()),
                ("FALLBACK", fallback.into()),
            ],
        )
        .unwrap();
    let native_rq = |a: &Envoy| stat(a, "cluster.native.upstream_rq_total");
    let bridged_rq = |a: &Envoy| stat(a, &format!("cluster.{fallback}.upstream_rq_total"));

    // 1. Open: wait for the HTTP/2 probe to mark native healthy, then calls go native.
    wait_native_healthy(&agent);
    for i in 0..10 {
        rt.block_on(call_once(client))
            .unwrap_or_else(|e| panic!("open call {i}: {e}"));
    }
    assert_eq!(
        (native_rq(&agent), bridged_rq(&agent)),
        (10, 0),
        "(native, bridged) requests while native works"
    );

    // 2. Blocked: no call fails. The first FAILURES calls fail on native (an HTTP/1.1 answer to
    // the HTTP/2 preface is "reset reason: protocol error"; a closed connection "connection
    // termination"), are retried on the bridged priority and succeed there; the native host
    // is then ejected and every later call goes bridged at once.
    let blocked_by = match blocker {
        Blocker::Nginx => hop.addr,
        Blocker::Status(_) | Blocker::Refuse => rt.block_on(start_blocker(blocker)),
    };
    relay.switch(blocked_by);
    let mut results = vec![];
    for _ in 0..(FAILURES + 15) {
        results.push(rt.block_on(call_once(client)));
    }
    let failed: Vec<(usize, &String)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
        .collect();
    assert!(
        failed.is_empty(),
        "want no failed call across the switch, got {failed:?}\n{}",
        agent.stats_matching("retry")
    );
    let counts = (
        native_rq(&agent) - 10,
        bridged_rq(&agent),
        stat(&agent, "cluster.bridge.upstream_rq_retry"),
        stat(&agent, "cluster.bridge.upstream_rq_retry_success"),
        stat(
            &agent,
            "cluster.native.outlier_detection.ejections_enforced_total",
        ),
    );
    assert_eq!(
        counts,
        (FAILURES, FAILURES + 15, FAILURES, FAILURES, 1),
        "(native attempts, bridged requests, retries, successful retries, ejections) while blocked\n{}",
        agent.stats_matching("retry")
    );
    let bridged_after_block = bridged_rq(&agent);

    // 3. Cleared: once the ejection ends and the probe sees native healthy again, traffic goes
    // back to native.
    relay.switch(server_addr);
    let cleared = Instant::now();
    wait_until(REPROBE * 15, || {
        (stat(&agent, "cluster.native.outlier_detection.ejections_active") == 0
            && stat(&agent, "cluster.native.membership_healthy") == 1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("native never came back: {}", agent.stats_matching("native")));
    let native_before = native_rq(&agent);
    rt.block_on(call_once(client))
        .unwrap_or_else(|e| panic!("call after clearing: {e}"));
    assert_eq!(
        native_rq(&agent),
        native_before + 1,
        "the first call after native came back: {}",
        agent.stats_matching("native")
    );
    let back_after = cleared.elapsed();
    // Once back, new calls stay native.
    let bridged_now = bridged_rq(&agent);
    for _ in 0..5 {
        rt.block_on(call_once(client)).unwrap();
    }
    assert_eq!(
        bridged_rq(&agent),
        bridged_now,
        "calls went bridged after native came back"
    );
    println!(
        "{fallback}, native blocked by {blocker:?}: no failed call; {FAILURES} native failures retried bridged, {bridged_after_block} bridged calls; native again {} ms after clearing (re-probe {} s)",
        back_after.as_millis(),
        REPROBE.as_secs()
    );
}

grpc_bridge_tests::test_table! {
    fallback_switches_to_grpc_web_and_back => run("bridged_grpc_web", Blocker::Nginx),
    fallback_switches_to_websocket_and_back => run("bridged_websocket", Blocker::Nginx),
    fallback_when_the_hop_answers_426 => run("bridged_grpc_web", Blocker::Status(426)),
    fallback_when_the_hop_answers_505 => run("bridged_websocket", Blocker::Status(505)),
    fallback_when_the_hop_refuses_connections => run("bridged_grpc_web", Blocker::Refuse),
}

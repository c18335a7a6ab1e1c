//! The transport chain (`envoy/agent-chain.yaml`): native HTTP/2 -> WebSocket tunnel (through a
//! squid CONNECT proxy) -> gRPC-web, with three kinds of hop in the way, switched mid-run:
//!
//! 1. a direct HTTP/2 path: calls go native;
//! 2. native blocked by an HTTP/1.1-only nginx, the tunnel's CONNECT through squid reaching an
//!    nginx WebSocket proxy: calls go over the WebSocket tunnel;
//! 3. the CONNECT target replaced by an nginx that does not pass upgrades (the tunnel server
//!    refuses the upgrade it receives without `Upgrade`): calls go over gRPC-web.
//!
//! Which transport served each call is read from Envoy's per-step cluster stats after each
//! call, and no call may fail: at each switch the FAILURES calls that trip the outlier
//! detection are retried on the next step.

use std::net::SocketAddr;
use std::time::Duration;

use grpc_bridge_tests::envoy::{built_wasm_path, Envoy};
use grpc_bridge_tests::fallback::{call_once, stat, wait_native_healthy, BridgedPaths, FAILURES};
use grpc_bridge_tests::relay::Relay;
use grpc_bridge_tests::squid::Squid;
use grpc_bridge_tests::util::{rt, wait_until};

const STEPS: [&str; 3] = ["native", "bridged_websocket", "bridged_grpc_web"];

/// Requests each step's cluster has sent so far.
fn per_step(agent: &Envoy) -> [u64; 3] {
    STEPS.map(|s| stat(agent, &format!("cluster.{s}.upstream_rq_total")))
}

/// Makes `n` calls one at a time; returns, per call, how many attempts each step took.
fn calls(rt: &tokio::runtime::Runtime, agent: &Envoy, client: SocketAddr, n: u64) -> Vec<[u64; 3]> {
    let mut out = vec![];
    for i in 0..n {
        let before = per_step(agent);
        if let Err(e) = rt.block_on(call_once(client)) {
            panic!(
                "call {i} failed: {e}\n{}\n{}",
                agent.stats_matching("retry"),
                agent.stats_matching("outlier")
            );
        }
        let after = per_step(agent);
        out.push([0, 1, 2].map(|k| after[k] - before[k]));
    }
    out
}

fn expect(phase: &str, got: &[[u64; 3]], first: [u64; 3], rest: [u64; 3], agent: &Envoy) {
    let mut want = vec![first; FAILURES as usize];
    want.resize(got.len(), rest);
    assert_eq!(
        got,
        want.as_slice(),
        "{phase}: attempts per call on (native, websocket, grpc-web)\n{}\n{}",
        agent.stats_matching("outlier"),
        agent.stats_matching("upstream_rq_total")
    );
}

#[test]
fn chain_native_then_websocket_then_grpc_web() {
    built_wasm_path();
    let rt = rt();
    // The HTTP/1.1-only nginx: gRPC-web's path, what blocks native HTTP/2, and (as a CONNECT
    // target) what refuses the tunnel's upgrade.
    let paths = BridgedPaths::start().unwrap();
    let (server_addr, hop) = (paths.server_addr, &paths.hop);
    let ws_hop = &paths.ws_hop;
    let native = rt.block_on(Relay::start(server_addr));
    let connect_target = rt.block_on(Relay::start(ws_hop.addr));
    let squid = Squid::start("connect", connect_target.addr.port()).unwrap();
    let (agent, client) = paths
        .start_agent(
            "agent-chain",
            "agent-chain.yaml",
            native.addr,
            connect_target.addr,
            // Longer than the test: an ejected step stays ejected, so counts are exact.
            Duration::from_secs(60),
            &[
                ("PROXY_HOST", squid.addr.ip().to_string()),
                ("PROXY_PORT", squid.addr.port().to_string()),
            ],
        )
        .unwrap();
    wait_native_healthy(&agent);

    // 1. Direct HTTP/2: every call native, one attempt.
    let open = calls(&rt, &agent, client, 5);
    assert_eq!(open, vec![[1, 0, 0]; 5], "direct path");

    // 2. Native blocked by the HTTP/1.1-only nginx: FAILURES calls fail there and are retried
    // on the tunnel (through squid's CONNECT), then native is ejected and calls go straight
    // to the tunnel.
    native.switch(hop.addr);
    let blocked = calls(&rt, &agent, client, FAILURES + 10);
    expect("native blocked", &blocked, [1, 1, 0], [0, 1, 0], &agent);
    assert_eq!(
        stat(
            &agent,
            "cluster.native.outlier_detection.ejections_enforced_total"
        ),
        1
    );

    // 3. The CONNECT now reaches an nginx that does not pass upgrades: the tunnel fails, the
    // calls fall through to gRPC-web, then the tunnel is ejected too.
    connect_target.switch(hop.addr);
    let no_upgrades = calls(&rt, &agent, client, FAILURES + 10);
    expect(
        "upgrades refused",
        &no_upgrades,
        [0, 1, 1],
        [0, 0, 1],
        &agent,
    );
    assert_eq!(
        stat(
            &agent,
            "cluster.bridged_websocket.outlier_detection.ejections_enforced_total"
        ),
        1
    );
    // Each of those FAILURES tunnel attempts was a refused upgrade, as the tunnel client counts
    // them (its counters reach Envoy at the VM's next metrics tick).
    let refused = "wasmcustom.grpc_bridge.tunnel_client.errors.upgrade_refused";
    let seen = wait_until(Duration::from_secs(10), || {
        (stat(&agent, refused) == FAILURES).then_some(())
    });
    assert!(
        seen.is_some(),
        "{refused}: {}, want {FAILURES}\n{}",
        stat(&agent, refused),
        agent.stats_matching("tunnel_client")
    );
    let served = per_step(&agent);
    println!(
        "chain: {} calls, none failed; requests per step (native, websocket, grpc-web) {served:?}; \
         {FAILURES} refused upgrades",
        5 + 2 * (FAILURES + 10),
    );
}

//! WebSocket tunnel keepalive: nginx cuts a WebSocket connection that stays quiet for its
//! `proxy_read_timeout` (READ_TIMEOUT=2s here); the tunnel client's pings (PING_INTERVAL_MS=500)
//! must keep the tunnel, and with pings off the tunnel must be seen cut (proof that the pings
//! are what keeps it).
//!
//! client (tonic) -> agent Envoy (tunnel_client) -> nginx (READ_TIMEOUT=2s) -> server Envoy
//! (tunnel_server) -> tonic backend. One call, a silence, another call on the same channel. The
//! silence ends on an event, not after a fixed time: with pings once the agent has counted
//! enough of them to span nginx's timeout (`Silence::Pings`), without once nginx has cut the
//! tunnel (`Silence::UntilCut`).

use std::time::Duration;

use grpc_bridge_tests::cases::{connect, echo_within};
use grpc_bridge_tests::topology::{Topology, Transport, TunnelConnections};
use grpc_bridge_tests::util::{rt, wait_until};

/// How long the silence may take to end with its event (the machine may be busy).
const SILENCE_WITHIN: Duration = Duration::from_secs(15);

/// What ends the silence between the two calls.
#[derive(Clone, Copy)]
enum Silence {
    /// The agent's `tunnel_client.pings` counter grew by this much after the first call. A
    /// ping goes out only after PING_INTERVAL_MS without tunnel traffic, and the counter
    /// reaches /stats once a second (so it may still owe up to 2 pings from before the first
    /// call ended): 8 pings at 500 ms are at least 3 s of silence, past nginx's 2 s timeout.
    Pings(u64),
    /// nginx cut the tunnel: no tunnel connection active in either Envoy.
    UntilCut,
}

const PINGS_THROUGH_THE_TIMEOUT: Silence = Silence::Pings(8);

/// The agent's keepalive pings counted so far.
fn pings(topo: &Topology) -> u64 {
    topo.agent
        .as_ref()
        .and_then(|a| a.stat("wasmcustom.grpc_bridge.tunnel_client.pings"))
        .unwrap_or(0)
}

struct Run {
    topo: Topology,
    first: Result<(), String>,
    /// Ok once the silence's event was seen, Err if it was not within `SILENCE_WITHIN`.
    silence: Result<(), String>,
    /// Connections at the end of the silence.
    idle_end: TunnelConnections,
    second: Result<(), String>,
    after: TunnelConnections,
}

fn run(ping_interval_ms: &str, silence: Silence) -> Run {
    let topo = Topology::builder()
        .transport(Transport::WebSocketTunnel)
        .agent_var("PING_INTERVAL_MS", ping_interval_ms)
        .hop_var("READ_TIMEOUT", "2s")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    let (first, silence, idle_end, second) = rt.block_on(async {
        let mut c = match connect(topo.client_addr).await {
            Ok(c) => c,
            Err(e) => {
                let none = || Err("-".to_string());
                return (Err(e), none(), TunnelConnections::default(), none());
            }
        };
        let call = |c: grpc_bridge_tests::cases::Client, p: &'static [u8]| async move {
            echo_within(&c, p, Duration::from_secs(5))
                .await
                .map_err(|(_, e)| e)
        };
        let first = call(c.clone(), b"before the silence").await;
        let pings_before = pings(&topo);
        let ended = wait_until(SILENCE_WITHIN, || {
            let ended = match silence {
                Silence::Pings(n) => pings(&topo) >= pings_before + n,
                Silence::UntilCut => topo
                    .tunnel_connections()
                    .is_ok_and(|c| c.client_upstream.0 == 0 && c.server_listener.0 == 0),
            };
            ended.then_some(())
        })
        .ok_or(format!(
            "not within {SILENCE_WITHIN:?} (pings: {} after the first call, {} now)",
            pings_before,
            pings(&topo)
        ));
        let idle_end = topo.tunnel_connections().unwrap_or_default();
        let second = call(c.clone(), b"after the silence").await;
        let _ = &mut c;
        (first, ended, idle_end, second)
    });
    let after = topo.tunnel_connections().unwrap_or_default();
    Run {
        topo,
        first,
        silence,
        idle_end,
        second,
        after,
    }
}

fn fail(r: &Run, what: &str) -> ! {
    panic!(
        "{what}\nfirst call: {:?}\nend of the silence: {:?}, {}\nsecond call: {:?}\nafter: {}\npath: {}\n{}",
        r.first,
        r.silence,
        r.idle_end,
        r.second,
        r.after,
        r.topo.path,
        r.topo.logs(40)
    );
}

#[test]
fn pings_keep_the_tunnel_through_an_idle_cutting_hop() {
    let r = run("500", PINGS_THROUGH_THE_TIMEOUT);
    if r.first.is_err() || r.second.is_err() {
        fail(&r, "both calls must succeed");
    }
    if r.silence.is_err() {
        fail(
            &r,
            "the agent must send keepalive pings through the silence",
        );
    }
    if r.idle_end.client_upstream != (1, 1) || r.idle_end.server_listener != (1, 1) {
        fail(
            &r,
            "the tunnel must still be open after pings spanning nginx's timeout",
        );
    }
    if r.after.client_upstream.1 != 1 || r.after.server_listener.1 != 1 {
        fail(
            &r,
            "both calls must use one tunnel connection (upstream_cx_total == 1)",
        );
    }
    println!(
        "PING_INTERVAL_MS=500, nginx READ_TIMEOUT=2s: both calls OK around a silence of {} pings on one tunnel\nend of the silence: {}\nafter: {}",
        pings(&r.topo),
        r.idle_end,
        r.after
    );
}

#[test]
fn without_pings_the_hop_cuts_the_idle_tunnel() {
    let r = run("0", Silence::UntilCut);
    if r.first.is_err() {
        fail(&r, "the first call must succeed");
    }
    if r.silence.is_err() {
        fail(&r, "without pings nginx must cut the idle tunnel");
    }
    if pings(&r.topo) != 0 {
        fail(&r, "PING_INTERVAL_MS=0 must send no ping");
    }
    if r.after.client_upstream.1 != 2 {
        fail(
            &r,
            "the second call must have needed a second tunnel (upstream_cx_total == 2)",
        );
    }
    println!(
        "PING_INTERVAL_MS=0, nginx READ_TIMEOUT=2s: tunnel cut during the silence; second call {:?} on a new tunnel\nend of the silence: {}\nafter: {}",
        r.second, r.idle_end, r.after
    );
}

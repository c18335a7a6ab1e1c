//! WebSocket tunnel keepalive: nginx cuts a WebSocket connection that stays quiet for its
//! `proxy_read_timeout` (READ_TIMEOUT=2s here); the tunnel client's pings (PING_INTERVAL_MS=500)
//! must keep the tunnel, and with pings off the tunnel must be seen cut (proof that the pings
//! are what keeps it).
//!
//! client (tonic) -> agent Envoy (tunnel_client) -> nginx (READ_TIMEOUT=2s) -> server Envoy
//! (tunnel_server) -> tonic backend. One call, 5 s of silence, another call on the same channel.

use std::time::Duration;

use grpc_bridge_tests::cases::{connect, echo_within};
use grpc_bridge_tests::topology::{Topology, Transport, TunnelConnections};
use grpc_bridge_tests::util::rt;

const IDLE: Duration = Duration::from_secs(5);

struct Run {
    topo: Topology,
    first: Result<(), String>,
    /// Connections 3.5 s into the silence (nginx's 2 s timeout has passed).
    mid_idle: TunnelConnections,
    second: Result<(), String>,
    after: TunnelConnections,
}

fn run(ping_interval_ms: &str) -> Run {
    let topo = Topology::builder()
        .transport(Transport::WebSocketTunnel)
        .agent_var("PING_INTERVAL_MS", ping_interval_ms)
        .hop_var("READ_TIMEOUT", "2s")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    let (first, mid_idle, second) = rt.block_on(async {
        let mut c = match connect(topo.client_addr).await {
            Ok(c) => c,
            Err(e) => return (Err(e), TunnelConnections::default(), Err("-".into())),
        };
        let call = |c: grpc_bridge_tests::cases::Client, p: &'static [u8]| async move {
            echo_within(&c, p, Duration::from_secs(5))
                .await
                .map_err(|(_, e)| e)
        };
        let first = call(c.clone(), b"before the silence").await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let mid = topo.tunnel_connections().unwrap_or_default();
        tokio::time::sleep(IDLE - Duration::from_millis(3500)).await;
        let second = call(c.clone(), b"after the silence").await;
        let _ = &mut c;
        (first, mid, second)
    });
    let after = topo.tunnel_connections().unwrap_or_default();
    Run {
        topo,
        first,
        mid_idle,
        second,
        after,
    }
}

fn fail(r: &Run, what: &str) -> ! {
    panic!(
        "{what}\nfirst call: {:?}\n3.5 s into the silence: {}\nsecond call: {:?}\nafter: {}\npath: {}\n{}",
        r.first,
        r.mid_idle,
        r.second,
        r.after,
        r.topo.path,
        r.topo.logs(40)
    );
}

#[test]
fn pings_keep_the_tunnel_through_an_idle_cutting_hop() {
    let r = run("500");
    if r.first.is_err() || r.second.is_err() {
        fail(&r, "both calls must succeed");
    }
    if r.mid_idle.client_upstream != (1, 1) || r.mid_idle.server_listener != (1, 1) {
        fail(&r, "the tunnel must still be open 3.5 s into the silence");
    }
    if r.after.client_upstream.1 != 1 || r.after.server_listener.1 != 1 {
        fail(
            &r,
            "both calls must use one tunnel connection (upstream_cx_total == 1)",
        );
    }
    println!(
        "PING_INTERVAL_MS=500, nginx READ_TIMEOUT=2s: both calls OK around {} s of silence on one tunnel\n3.5 s into the silence: {}\nafter: {}",
        IDLE.as_secs(),
        r.mid_idle,
        r.after
    );
}

#[test]
fn without_pings_the_hop_cuts_the_idle_tunnel() {
    let r = run("0");
    if r.first.is_err() {
        fail(&r, "the first call must succeed");
    }
    if r.mid_idle.client_upstream.0 != 0 || r.mid_idle.server_listener.0 != 0 {
        fail(
            &r,
            "without pings nginx must have cut the tunnel 3.5 s into the silence",
        );
    }
    if r.after.client_upstream.1 != 2 {
        fail(
            &r,
            "the second call must have needed a second tunnel (upstream_cx_total == 2)",
        );
    }
    println!(
        "PING_INTERVAL_MS=0, nginx READ_TIMEOUT=2s: tunnel cut during the silence; second call {:?} on a new tunnel\n3.5 s into the silence: {}\nafter: {}",
        r.second, r.mid_idle, r.after
    );
}

//! The same end-to-end cases over the WebSocket transport: the gRPC client's whole h2c
//! connection rides inside one WebSocket connection. Three paths, each with the tonic and the
//! grpcio client:
//!
//! - nginx: client (h2c) -> agent Envoy (wasm network filter, role tunnel_client) -> nginx
//!   (HTTP/1.1 WebSocket proxy) -> server Envoy (role tunnel_server) -> tonic backend;
//! - squid CONNECT: the agent's tcp_proxy opens an HTTP/1.1 CONNECT tunnel through squid
//!   (`tunnel-client-connect.yaml`, `squid-connect.conf`) and the WebSocket runs inside it, to
//!   the server Envoy;
//! - direct: tunnel client -> tunnel server, nothing in between.

use grpc_bridge_tests::cases::{report, run_suite, Outcome};
use grpc_bridge_tests::util::rt;
use std::time::Duration;

use grpc_bridge_tests::topology::{Topology, TopologyBuilder, Transport};
use grpc_bridge_tests::util::wait_until;

#[derive(Clone, Copy)]
enum Path {
    Nginx,
    SquidConnect,
    Direct,
}

impl Path {
    /// The report's heading for `client` over this path.
    fn label(self, client: &str) -> String {
        let path = match self {
            Path::Nginx => "through nginx",
            Path::SquidConnect => "inside a squid CONNECT tunnel",
            Path::Direct => "direct",
        };
        format!("{client}, WebSocket tunnel {path}")
    }
}

fn builder(path: Path) -> TopologyBuilder {
    let b = Topology::builder().transport(Transport::WebSocketTunnel);
    match path {
        Path::Nginx => b,
        Path::SquidConnect => b.hop(false).connect_proxy(true),
        Path::Direct => b.hop(false),
    }
}

fn check(label: &str, outcomes: &[Outcome], topo: &mut Topology) {
    let (mut text, mut failed) = report(outcomes);
    if let Some(squid) = &topo.squid {
        // Proof the calls really went through the proxy: squid logs each CONNECT tunnel when it
        // ends (the tonic suite opens a channel per case and 20 in fresh_connections; the grpcio
        // client uses one channel).
        let tunnels = wait_until(Duration::from_secs(5), || {
            let n = squid.finished_tunnels();
            (n >= 1).then_some(n)
        });
        match tunnels {
            Some(n) => text += &format!("squid access.log: {n} finished CONNECT tunnels\n"),
            None => {
                failed += 1;
                text += &format!(
                    "FAIL: squid logged only {} finished CONNECT tunnels, want >= 1\n",
                    squid.finished_tunnels()
                );
            }
        }
    }
    if failed > 0 {
        let alive = topo
            .check_alive()
            .err()
            .unwrap_or_else(|| "all processes still running".into());
        panic!(
            "{label}: {failed} case(s) failed\npath: {}\n{text}\n{alive}\n{}",
            topo.path,
            topo.logs(60)
        );
    }
    println!("{label}\npath: {}\n{text}", topo.path);
}

/// The tonic cases over `path`.
fn tonic_suite(path: Path) {
    let mut topo = builder(path).start().unwrap_or_else(|e| panic!("{e}"));
    let rt = rt();
    let outcomes = rt.block_on(run_suite(topo.client_addr));
    check(&path.label("tonic client"), &outcomes, &mut topo);
}

/// The same cases from the grpcio client over `path`.
fn grpcio_suite(path: Path) {
    let mut topo = builder(path).start().unwrap_or_else(|e| panic!("{e}"));
    let outcomes = grpc_bridge_tests::py::run_client(topo.client_addr, &[]).unwrap();
    check(&path.label("grpcio client"), &outcomes, &mut topo);
}

grpc_bridge_tests::test_table! {
    suite_websocket_tunnel => tonic_suite(Path::Nginx),
    suite_websocket_tunnel_python_grpcio_client => grpcio_suite(Path::Nginx),
    suite_websocket_tunnel_in_squid_connect => tonic_suite(Path::SquidConnect),
    suite_websocket_tunnel_in_squid_connect_python_grpcio_client =>
        grpcio_suite(Path::SquidConnect),
    suite_websocket_tunnel_direct => tonic_suite(Path::Direct),
    suite_websocket_tunnel_direct_python_grpcio_client => grpcio_suite(Path::Direct),
}

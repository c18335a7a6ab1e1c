//! The same end-to-end cases over the WebSocket transport: the gRPC client's whole h2c
//! connection rides inside one WebSocket connection.
//!
//! client (h2c) -> agent Envoy (wasm network filter, role tunnel_client) -> nginx (HTTP/1.1
//! WebSocket proxy) -> server Envoy (role tunnel_server) -> tonic backend.

use grpc_bridge_tests::cases::{report, run_suite, Outcome};
use grpc_bridge_tests::topology::{Topology, Transport};

fn check(label: &str, outcomes: &[Outcome], topo: &mut Topology) {
    let (text, failed) = report(outcomes);
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

#[test]
fn suite_websocket_tunnel() {
    let mut topo = Topology::builder()
        .transport(Transport::WebSocketTunnel)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcomes = rt.block_on(run_suite(topo.client_addr));
    check("tonic client, WebSocket tunnel", &outcomes, &mut topo);
}

#[test]
fn suite_websocket_tunnel_python_grpcio_client() {
    let mut topo = Topology::builder()
        .transport(Transport::WebSocketTunnel)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let outcomes = grpc_bridge_tests::py::run_client(topo.client_addr, &[]).unwrap();
    check("grpcio client, WebSocket tunnel", &outcomes, &mut topo);
}

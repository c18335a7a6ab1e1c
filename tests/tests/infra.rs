//! Infrastructure checks that need no grpc-bridge wasm: the cases against the backend directly,
//! through a plain Envoy (h2 both sides), and browser-style gRPC-web requests against Envoy's
//! native grpc_web filter (directly and through the nginx HTTP/1.1 hop).
//!
//! If one of these fails, the test infrastructure (or the environment) is broken, not the filter.

use grpc_bridge_tests::backend::Backend;
use grpc_bridge_tests::cases::{report, run_suite};
use grpc_bridge_tests::grpcweb::{run_raw_suite, StatusWithoutMessages};
use grpc_bridge_tests::topology::{ServerSide, Topology};
use grpc_bridge_tests::util::rt;

fn check(
    label: &str,
    outcomes: &[grpc_bridge_tests::cases::Outcome],
    logs: impl FnOnce() -> String,
) {
    let (text, failed) = report(outcomes);
    if failed > 0 {
        panic!("{label}: {failed} case(s) failed\n{text}\n{}", logs());
    }
    println!("{label}\n{text}");
}

#[test]
fn cases_against_backend_directly() {
    let backend = Backend::spawn();
    let outcomes = rt().block_on(run_suite(backend.addr));
    check("client -> tonic backend", &outcomes, String::new);
}

#[test]
fn cases_through_plain_envoy_h2() {
    // server-native-grpc-web.yaml passes native gRPC through untouched: a plain h2 proxy.
    let topo = native_grpc_web_server(false);
    let outcomes = rt().block_on(run_suite(topo.client_addr));
    check(&topo.path, &outcomes, || topo.logs(40));
}

#[test]
fn raw_grpc_web_against_native_filter() {
    raw_suite_against_native_filter(false);
}

#[test]
fn raw_grpc_web_through_nginx_to_native_filter() {
    raw_suite_against_native_filter(true);
}

/// Envoy with its own C++ `grpc_web` filter in front of the backend (no agent), with or without
/// the nginx HTTP/1.1 hop before it.
fn native_grpc_web_server(hop: bool) -> Topology {
    Topology::builder()
        .server(ServerSide::NativeGrpcWeb)
        .hop(hop)
        .agent(false)
        .start()
        .unwrap()
}

/// The raw gRPC-web suite against Envoy's own filter: directly, or through the hop.
fn raw_suite_against_native_filter(hop: bool) {
    let topo = native_grpc_web_server(hop);
    let entry = if hop {
        topo.client_addr
    } else {
        topo.server_addr
    };
    let outcomes = rt().block_on(run_raw_suite(
        entry,
        topo.backend.addr,
        StatusWithoutMessages::TrailerFrame,
    ));
    check(&format!("raw gRPC-web -> {}", topo.path), &outcomes, || {
        topo.logs(40)
    });
}

#[test]
fn python_client_against_backend_directly() {
    let backend = Backend::spawn();
    let outcomes = grpc_bridge_tests::py::run_client(backend.addr, &[]).unwrap();
    check("grpcio client -> tonic backend", &outcomes, String::new);
}

#[test]
fn python_client_through_plain_envoy_h2() {
    let topo = native_grpc_web_server(false);
    let outcomes = grpc_bridge_tests::py::run_client(topo.client_addr, &[]).unwrap();
    check(&format!("grpcio {}", topo.path), &outcomes, || {
        topo.logs(40)
    });
}

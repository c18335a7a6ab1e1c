//! The core end-to-end suite against the native host harness instead of Envoy: the same
//! `.wasm`, the same cases, run by `host-harness`'s proxies (client -> agent-role proxy ->
//! HTTP/1.1-only hop -> server-role proxy -> the tonic test backend). Proves the harness runs the
//! filter like Envoy does for everything the suite checks.

use grpc_bridge_tests::backend::Backend;
use grpc_bridge_tests::cases::{report, run_suite};
use grpc_bridge_tests::envoy::built_wasm_path;
use grpc_bridge_tests::util::rt;

#[test]
fn core_suite_through_the_harness_topology() {
    let wasm = built_wasm_path();
    let backend = Backend::spawn();
    let rt = rt();
    let topo = rt
        .block_on(host_harness::demo::Topology::start(
            &wasm,
            Some(backend.addr),
        ))
        .unwrap_or_else(|e| panic!("harness topology: {e}"));
    let outcomes = rt.block_on(run_suite(topo.client_addr));
    let (text, failed) = report(&outcomes);
    assert_eq!(
        failed, 0,
        "harness topology: {failed} case(s) failed\npath: {}\n{text}",
        topo.path
    );
    println!("harness topology\npath: {}\n{text}", topo.path);
}

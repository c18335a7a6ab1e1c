//! `host-harness demo`: the sample topology without Envoy (tonic client -> agent proxy ->
//! HTTP/1.1 hop -> server proxy -> tonic backend), run as the binary and through the library.

mod common;

use std::process::Command;

use host_harness::demo::{run_case, Topology, CALLS};

#[test]
fn demo_binary_passes_every_call_and_prints_the_report() {
    let wasm = common::grpc_bridge_wasm();
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["demo", "--wasm"])
        .arg(&wasm)
        .output()
        .expect("run host-harness demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("path: client -> agent proxy"), "{stdout}");
    for (_, what) in CALLS {
        assert!(
            stdout.contains(&format!("ms  {what}")),
            "no line for {what:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("  FAIL ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{n} of {n} calls ok", n = CALLS.len())),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("stopped."), "{stdout}");
}

#[test]
fn demo_without_the_filter_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["demo", "--wasm", "/nonexistent/grpc_bridge.wasm"])
        .output()
        .expect("run host-harness demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/grpc_bridge.wasm is missing: build the filter first"),
        "{stderr}"
    );
}

/// With nothing listening behind the server proxy the calls must fail, and fail the way
/// Envoy's chain fails: the server proxy's router answers 503 (upstream connect error), the
/// agent maps it to UNAVAILABLE.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_backend_fails_the_calls_with_unavailable() {
    let wasm = common::grpc_bridge_wasm();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let topo = Topology::start(&wasm, Some(dead)).await.unwrap();
    let err = run_case("unary", topo.client_addr, None)
        .await
        .expect_err("a call to a dead backend succeeded");
    assert!(
        err.contains("Unavailable") && err.contains("upstream connect error"),
        "{err}"
    );
}

//! Smoke run of the `make bench` load generator: a short run over two bridged paths must make
//! calls and have none fail. Nothing about speed is asserted (timings live in the benchmark).

use std::process::Command;

#[test]
fn bench_tool_runs_and_every_call_succeeds() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "--paths",
            "grpc-web,srv-wasm",
            "--workloads",
            "unary,stream",
            "--stream-msgs",
            "2",
            "--stream-bytes",
            "65536",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--runs",
            "1",
            "--concurrency",
            "2",
        ])
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for row in [
        "| unary | grpc-web |",
        "| unary | srv-wasm |",
        "| stream | grpc-web |",
        "| stream | srv-wasm |",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?} in\n{stdout}"));
        assert!(line.ends_with(" (0) |"), "calls failed: {line}");
    }
}

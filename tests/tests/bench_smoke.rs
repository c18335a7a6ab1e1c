//! Smoke run of the `make bench` load generator: a short run over two bridged paths must make
//! calls and have none fail. Nothing about speed is asserted (timings live in the benchmark).

use std::process::Command;

use grpc_bridge_tests::util::command_stdout;

#[test]
fn bench_tool_runs_and_every_call_succeeds() {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_bench"));
    bench.args([
        "--paths",
        "grpc-web,native-h2-hop,srv-wasm,srv-native",
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
    ]);
    let stdout = command_stdout(&mut bench).unwrap_or_else(|e| panic!("bench: {e}"));
    // The one line of the report that starts with `prefix`.
    let line_of = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{stdout}"))
    };
    for row in [
        "| unary | grpc-web |",
        "| unary | srv-wasm |",
        "| stream | grpc-web |",
        "| stream | srv-wasm |",
    ] {
        let line = line_of(row);
        assert!(line.ends_with(" (0) |"), "calls failed: {line}");
    }
    // The machine-readable ratios: each path against its base, both workloads.
    for name in [
        "RATIO unary.c2.grpc-web.cpu_per_call_vs.native-h2-hop ",
        "RATIO unary.c2.grpc-web.calls_per_s_vs.native-h2-hop ",
        "RATIO stream.c2.grpc-web.mb_per_s_vs.native-h2-hop ",
        "RATIO unary.c2.srv-wasm.cpu_per_call_vs.srv-native ",
    ] {
        let line = line_of(name);
        let value: f64 = line[name.len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(value.is_finite() && value > 0.0, "{line}");
    }
}

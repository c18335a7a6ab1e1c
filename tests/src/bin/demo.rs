//! `make demo`: start the whole bridge on loopback and make a few real gRPC calls through it.
//!
//!   tonic client (h2c) -> agent Envoy (grpc-bridge, role agent) -> nginx (HTTP/1.1 only)
//!     -> server Envoy (grpc-bridge, role server) -> tonic backend
//!
//! Prints the path and one line per call (result and latency), stops everything, and exits
//! non-zero if any call failed. Options: `--native-server` uses Envoy's grpc_web filter on the
//! server side instead of grpc-bridge's server role; `--no-hop` leaves nginx out.

use std::process::ExitCode;

use grpc_bridge_tests::cases::{report, run_case, Outcome};
use grpc_bridge_tests::topology::{ServerSide, Topology};
use grpc_bridge_tests::util::rt;
use host_harness::demo::{announce_start, timed_call};

const CALLS: &[(&str, &str)] = &[
    ("unary", "unary echo"),
    (
        "server_stream_timing",
        "server streaming, 5 messages 150 ms apart",
    ),
    (
        "server_stream_gated",
        "server streaming, 1st message while the server holds the stream",
    ),
    ("client_stream", "client streaming, 5 messages up to 70 kB"),
    ("bidi_ping_pong", "bidi ping-pong, 6 round trips"),
    (
        "metadata_unary",
        "metadata in headers and trailers (incl. -bin)",
    ),
    (
        "error_message_unicode",
        "error status with a non-ASCII message",
    ),
    ("large_4mib_unary", "4 MiB request and response"),
    ("deadline", "300 ms deadline on a 5 s call"),
    ("cancel_stream", "client cancels a stream"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server = if args.iter().any(|a| a == "--native-server") {
        ServerSide::NativeGrpcWeb
    } else {
        ServerSide::Wasm
    };
    let hop = !args.iter().any(|a| a == "--no-hop");
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: demo [--native-server] [--no-hop]");
        return ExitCode::SUCCESS;
    }

    let banner = format!(
        "grpc-bridge demo: starting backend, server Envoy, {}agent Envoy ...",
        if hop { "nginx hop, " } else { "" }
    );
    let Some(topo) = announce_start(&banner, || {
        Topology::builder().server(server).hop(hop).start()
    }) else {
        return ExitCode::FAILURE;
    };
    println!("path: {}\n", topo.path);

    let rt = rt();
    let mut outcomes = vec![];
    for (case, what) in CALLS {
        let (result, elapsed) = timed_call(&rt, what, run_case(case, topo.client_addr));
        outcomes.push(Outcome {
            case: format!("{case}: {what}"),
            result,
            elapsed,
        });
    }
    let (_, failed) = report(&outcomes);
    println!(
        "\n{} of {} calls ok",
        outcomes.len() - failed,
        outcomes.len()
    );
    if failed > 0 {
        println!("\nlog tails:\n{}", topo.logs(30));
    }
    drop(topo);
    println!("stopped.");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

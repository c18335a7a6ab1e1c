//! `make demo`: start the whole bridge on loopback and make a few real gRPC calls through it.
//!
//!   tonic client (h2c) -> agent Envoy (grpc-bridge, role agent) -> nginx (HTTP/1.1 only)
//!     -> server Envoy (grpc-bridge, role server) -> tonic backend
//!
//! Prints the path and one line per call (result and latency), stops everything, and exits
//! non-zero if any call failed. Options: `--native-server` uses Envoy's grpc_web filter on the
//! server side instead of grpc-bridge's server role; `--no-hop` leaves nginx out.

use std::process::ExitCode;
use std::time::Instant;

use grpc_bridge_tests::cases::{report, run_case, Outcome};
use grpc_bridge_tests::topology::{ServerSide, Topology};
use grpc_bridge_tests::util::rt;

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

    println!(
        "grpc-bridge demo: starting backend, server Envoy, {}agent Envoy ...",
        if hop { "nginx hop, " } else { "" }
    );
    let t0 = Instant::now();
    let topo = match Topology::builder().server(server).hop(hop).start() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("could not start the bridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("up in {} ms", t0.elapsed().as_millis());
    println!("path: {}\n", topo.path);

    let rt = rt();
    let mut outcomes = vec![];
    for (case, what) in CALLS {
        let t = Instant::now();
        let result = rt.block_on(async {
            match tokio::time::timeout(
                std::time::Duration::from_secs(30),
                run_case(case, topo.client_addr),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err("timed out after 30 s".into()),
            }
        });
        let o = Outcome {
            case: format!("{case}: {what}"),
            result,
            elapsed: t.elapsed(),
        };
        match &o.result {
            Ok(d) => println!(
                "  ok    {:>5} ms  {what}\n                    {d}",
                o.elapsed.as_millis()
            ),
            Err(e) => println!(
                "  FAIL  {:>5} ms  {what}\n                    {e}",
                o.elapsed.as_millis()
            ),
        }
        outcomes.push(o);
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

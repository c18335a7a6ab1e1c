//! Time per native unary call through a proxy-wasm module in the harness (wasmtime), to compare
//! the guest code of grpc-bridge with the do-nothing floor module (benches/wasm-floor) on the
//! same callbacks and crossings (docs/BENCHMARKS.md, "Where the agent's CPU goes"):
//!
//!   cargo run --release -p host-harness --example guest_cost -- MODULE.wasm [CONFIG] [CALLS]
//!
//! Each call: request headers and body, response headers, body and trailers, on a fresh stream
//! of one VM. What it prints includes the harness's own work per call, the same for any module.
#[path = "../tests/common/mod.rs"]
mod common;

use common::call_native_backend;
use host_harness::{PluginOptions, Scenario};
use std::time::Instant;

/// One native unary call on a fresh stream of the VM.
fn call(s: &mut Scenario) {
    s.next_stream();
    call_native_backend(
        s,
        "application/grpc",
        &[("te", "trailers"), ("user-agent", "grpc-rust/1")],
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(wasm) = args.get(1) else {
        eprintln!("usage: guest_cost MODULE.wasm [CONFIG] [CALLS]");
        std::process::exit(2);
    };
    let cfg = args.get(2).cloned().unwrap_or_default();
    let n: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(20000);
    let opts = PluginOptions::from_file(wasm).plugin_config(cfg.as_bytes().to_vec());
    let mut opts = opts;
    opts.record_callbacks = false;
    let mut s = match Scenario::new(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guest_cost: loading {wasm}: {e}");
            std::process::exit(1);
        }
    };
    for _ in 0..2000 {
        call(&mut s);
    }
    let t = Instant::now();
    for _ in 0..n {
        call(&mut s);
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let c = s.plugin().crossings();
    println!("{wasm} {cfg:?}: {per:.2} us/call, crossings {c:?}");
}

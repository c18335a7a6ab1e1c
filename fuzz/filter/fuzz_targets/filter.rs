//! The whole filter, driven through the host harness with random sequences of callbacks,
//! chunkings and bodies. Input layout and invariants: `host_harness::fuzzing` (module docs).
//!
//! The filter is the release `.wasm` (`make build`), or `$GRPC_BRIDGE_WASM`. Coverage guidance
//! sees the host side only (the guest runs as JIT-compiled wasm), which is why the driver
//! builds structured traffic from the input.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let path = std::env::var("GRPC_BRIDGE_WASM").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/wasm32-wasip1/release/grpc_bridge.wasm").to_string()
        });
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read the filter at {path}: {e} (run `make build`)"))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = host_harness::fuzzing::run(wasm(), data) {
        panic!("invariant broken: {broken}");
    }
});

//! The test backend (bridge.test.BridgeTest) as a standalone server, for trying the sample
//! configs by hand:
//!
//!   cargo run -p grpc-bridge-tests --bin test-backend -- [--port 50051]
//!
//! Listens on 127.0.0.1 (h2c) until killed. The address is printed on stdout.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .map(|p| p.parse().expect("--port takes a number"))
        .unwrap_or(50051);
    let backend = grpc_bridge_tests::backend::Backend::spawn_on(("127.0.0.1", port)).expect("bind");
    println!("test backend listening on {}", backend.addr);
    loop {
        std::thread::park();
    }
}

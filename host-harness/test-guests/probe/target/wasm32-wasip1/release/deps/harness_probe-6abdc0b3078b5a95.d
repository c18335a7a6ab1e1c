/work/main/host-harness/test-guests/probe/target/wasm32-wasip1/release/deps/harness_probe-6abdc0b3078b5a95.d: src/lib.rs Cargo.toml

/work/main/host-harness/test-guests/probe/target/wasm32-wasip1/release/deps/libharness_probe-6abdc0b3078b5a95.rmeta: src/lib.rs Cargo.toml

src/lib.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=
# env-dep:CLIPPY_CONF_DIR

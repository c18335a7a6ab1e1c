//! Shared test helpers: building the probe guest once per test binary.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use host_harness::{PluginOptions, WasmSource};

/// Builds `test-guests/probe` for wasm32-wasip1 (once) and returns the module bytes.
pub fn probe_wasm() -> Vec<u8> {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let manifest =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-guests/probe/Cargo.toml");
        let target_dir = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("harness-guests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip1",
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cannot run cargo to build the probe guest");
        assert!(
            status.success(),
            "building the probe guest failed (is the wasm32-wasip1 target installed?)"
        );
        let path = target_dir.join("wasm32-wasip1/release/harness_probe.wasm");
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    })
    .clone()
}

pub fn probe(mode: &str) -> PluginOptions {
    PluginOptions::new(WasmSource::Bytes(probe_wasm())).plugin_config(mode)
}

/// The real filter. Tests that need it fail (never skip) when it is missing.
pub fn grpc_bridge_wasm() -> PathBuf {
    // GRPC_BRIDGE_WASM points elsewhere (e.g. a build under another CARGO_TARGET_DIR).
    let path = std::env::var_os("GRPC_BRIDGE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip1/release/grpc_bridge.wasm")
        });
    assert!(
        path.exists(),
        "{} is missing: build the filter first with `make build` \
         (cargo build --release --target wasm32-wasip1 -p grpc-bridge)",
        path.display()
    );
    path
}

//! Building a wasm guest crate with cargo, for the tests and benches that bring their own
//! guest (the harness's probe in `test-guests/`, the codec bench guest). Outside the layers:
//! it imports nothing of the crate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The rustflags a guest is built with. The caller's `RUSTFLAGS` are never passed on: they
/// are meant for the crate under test, not for a guest built on the side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRustflags<'a> {
    /// The workspace's own for wasm32-wasip1 (`.cargo/config.toml`, the filter's target
    /// features).
    Workspace,
    /// Exactly these, nothing from the configuration (`CARGO_ENCODED_RUSTFLAGS`: flags
    /// separated by `\x1f`; `""` for none).
    Exactly(&'a str),
}

/// Builds the crate at `manifest` for wasm32-wasip1 in release mode, with the cargo that runs
/// this build (`$CARGO`), into `target_subdir` of the target directory (`$CARGO_TARGET_DIR`,
/// else the workspace's `target/`), its own so that it never invalidates the workspace's
/// builds. Returns the directory the `.wasm` lands in.
pub fn build_wasm_guest(
    manifest: &Path,
    target_subdir: &str,
    rustflags: GuestRustflags,
) -> Result<PathBuf, String> {
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join(target_subdir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS");
    match rustflags {
        GuestRustflags::Workspace => build.env_remove("CARGO_ENCODED_RUSTFLAGS"),
        GuestRustflags::Exactly(flags) => build.env("CARGO_ENCODED_RUSTFLAGS", flags),
    };
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building {} failed (is the wasm32-wasip1 target installed?)",
            manifest.display()
        ));
    }
    Ok(target_dir.join("wasm32-wasip1/release"))
}

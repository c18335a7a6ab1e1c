//! Runs the grpcio (Python) client in `tests/py/client.py` with the repo's `.venv` Python and
//! collects its per-case JSON lines.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cases::Outcome;
use crate::util::repo_root;

/// The venv's Python (`$GRPC_BRIDGE_PYTHON` overrides).
pub fn python() -> PathBuf {
    std::env::var_os("GRPC_BRIDGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// Run the Python client against `target`; stubs are generated into a fresh temp directory.
/// Returns the outcomes it printed (plus a synthetic failure if it printed none for a case it
/// was asked to run, or crashed).
pub fn run_client(target: SocketAddr, cases: &[&str]) -> Result<Vec<Outcome>, String> {
    let gen = tempfile::Builder::new()
        .prefix("grpc-bridge-py-gen-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/py/client.py"))
        .arg("--target")
        .arg(target.to_string())
        .arg("--gen-dir")
        .arg(gen.path());
    if !cases.is_empty() {
        cmd.arg("--cases").arg(cases.join(","));
    }
    let out = cmd
        .output()
        .map_err(|e| format!("run {}: {e}", python().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut outcomes = vec![];
    for line in stdout.lines() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let case = v["case"].as_str().unwrap_or("?").to_string();
        let detail = v["detail"].as_str().unwrap_or("").to_string();
        let result = if v["ok"].as_bool() == Some(true) {
            Ok(detail)
        } else {
            Err(detail)
        };
        outcomes.push(Outcome {
            case,
            result,
            elapsed: Duration::from_millis(v["ms"].as_u64().unwrap_or(0)),
        });
    }
    if outcomes.is_empty() || (!out.status.success() && outcomes.iter().all(|o| o.result.is_ok())) {
        outcomes.push(Outcome {
            case: "python-client".into(),
            result: Err(format!(
                "client exited with {} after {} ms; stderr:\n{}",
                out.status,
                t0.elapsed().as_millis(),
                stderr
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )),
            elapsed: t0.elapsed(),
        });
    }
    Ok(outcomes)
}

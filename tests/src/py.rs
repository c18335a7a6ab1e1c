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
    crate::util::env_path("GRPC_BRIDGE_PYTHON", repo_root().join(".venv/bin/python"))
}

/// A command running `tests/py/<script>` with the venv's Python.
fn python_script(name: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/py").join(name));
    cmd
}

/// A command running `tests/py/<script>` against `target`, its gRPC stubs generated into the
/// returned temp directory (keep it while the script runs).
fn script_command(
    script: &str,
    target: SocketAddr,
) -> Result<(Command, tempfile::TempDir), String> {
    let gen = crate::util::temp_dir("grpc-bridge-py-gen-")?;
    let mut cmd = python_script(script);
    cmd.arg("--target")
        .arg(target.to_string())
        .arg("--gen-dir")
        .arg(gen.path());
    Ok((cmd, gen))
}

/// Run the Python client against `target`; stubs are generated into a fresh temp directory.
/// Returns the outcomes it printed (plus a synthetic failure if it printed none for a case it
/// was asked to run, or crashed).
pub fn run_client(target: SocketAddr, cases: &[&str]) -> Result<Vec<Outcome>, String> {
    let t0 = Instant::now();
    let (mut cmd, _gen) = script_command("client.py", target)?;
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

/// `tests/py/hold_stream.py`: a grpcio client holding one open `Hold` stream, for fault tests.
/// It reports (JSON lines) when the stream is open and how and when it ended.
pub struct PyHoldStream {
    process: crate::util::Process,
    _gen: tempfile::TempDir,
}

/// How a [`PyHoldStream`] ended.
#[derive(Debug, Clone)]
pub struct PyStreamEnd {
    /// grpcio's status code name ("OK", "UNAVAILABLE", ...).
    pub code: String,
    pub details: String,
    /// When it ended (wall clock, seconds since the epoch).
    pub at: f64,
}

impl PyHoldStream {
    /// Start the client against `target`; returns once its stream has received its first
    /// message (Err after `within`).
    pub fn open(target: SocketAddr, within: Duration) -> Result<PyHoldStream, String> {
        let (cmd, gen) = script_command("hold_stream.py", target)?;
        let log_dir = crate::util::temp_dir("py-hold-")?;
        let log = log_dir.path().join("out.log");
        let mut process = crate::util::Process::spawn("py-hold-stream", cmd, log, Some(log_dir))?;
        let opened = crate::util::wait_until(within, || {
            if process.check_running().is_err() {
                return Some(false);
            }
            Self::events(&process)
                .iter()
                .any(|v| v["event"] == "open")
                .then_some(true)
        });
        if opened != Some(true) {
            return Err(format!(
                "the grpcio Hold stream did not open within {within:?}:\n{}",
                process.log_tail(30)
            ));
        }
        Ok(PyHoldStream { process, _gen: gen })
    }

    fn events(p: &crate::util::Process) -> Vec<serde_json::Value> {
        p.log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait for the stream's end (Err if it is still open after `within`).
    pub fn wait_end(&mut self, within: Duration) -> Result<PyStreamEnd, String> {
        let end = crate::util::wait_until(within, || {
            Self::events(&self.process)
                .into_iter()
                .find(|v| v["event"] == "end")
        });
        match end {
            Some(v) => Ok(PyStreamEnd {
                code: v["code"].as_str().unwrap_or("?").to_string(),
                details: v["details"].as_str().unwrap_or("").to_string(),
                at: v["t"].as_f64().unwrap_or(0.0),
            }),
            None => Err(format!(
                "the grpcio Hold stream did not end within {within:?}:\n{}",
                self.process.log_tail(30)
            )),
        }
    }
}

/// Now as seconds since the epoch (to compare with [`PyStreamEnd::at`]).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Run `tests/py/<script>` with `args` (venv Python) and return its last JSON line.
pub fn run_json(script: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = python_script(script)
        .args(args)
        .output()
        .map_err(|e| format!("run {}: {e}", python().display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .ok_or_else(|| {
            format!(
                "{script} printed no JSON (exit {}); stdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A long-running `tests/py/<script>` that prints JSON lines (to a log file, polled).
pub struct PyProcess {
    pub process: crate::util::Process,
}

impl PyProcess {
    pub fn spawn(script: &str, args: &[&str]) -> Result<PyProcess, String> {
        let dir = crate::util::temp_dir("py-")?;
        let mut cmd = python_script(script);
        cmd.args(args);
        let log = dir.path().join("out.log");
        let process = crate::util::Process::spawn(script, cmd, log, Some(dir))?;
        Ok(PyProcess { process })
    }

    /// The first JSON line with `"event": event`, waiting up to `within`.
    pub fn wait_event(
        &mut self,
        event: &str,
        within: Duration,
    ) -> Result<serde_json::Value, String> {
        let found = crate::util::wait_until(within, || {
            // Whether it had exited before the log is read: then a missing event is final.
            let exited = self.process.check_running().is_err();
            let v = self
                .process
                .log()
                .lines()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["event"] == event);
            if v.is_none() && exited {
                return Some(None);
            }
            v.map(Some)
        })
        .flatten();
        found.ok_or_else(|| {
            format!(
                "no {event:?} event within {within:?}; output:\n{}",
                self.process.log_tail(40)
            )
        })
    }
}

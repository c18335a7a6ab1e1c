//! Process and network helpers: free ports, waiting for ports, a child-process guard that kills
//! its child on drop, a command that must succeed (`command_stdout`), and a tiny blocking
//! HTTP/1.1 GET (for Envoy's admin interface).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// A path the environment may override: `$var` if set, else `default` (the external tools the
/// tests run, the built filter).
pub fn env_path(var: &str, default: impl Into<PathBuf>) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.into())
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh temp directory named `<prefix>...` (removed when dropped).
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("temp dir {prefix}*: {e}"))
}

/// Runs `cmd` to its end and returns its stdout; if it cannot start or exits non-zero, an error
/// with the command, its exit status and everything it printed.
pub fn command_stdout(cmd: &mut Command) -> Result<String, String> {
    let desc = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {desc}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{desc} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{desc}: output not UTF-8: {e}"))
}

/// A port that was free a moment ago on 127.0.0.1 (bind to port 0, read it, close).
///
/// There is a small race with other processes; prefer binding port 0 directly where the
/// program allows it (Envoy does: see `Envoy::listener_addr`).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Whether process `pid` holds a listening TCP socket on `port` (Linux: a LISTEN entry of
/// /proc/net/tcp{,6} whose socket inode is among the process's file descriptors). Unlike a
/// connect, this tells our server from whoever else may have bound a port from [`free_port`].
pub fn listens_on(pid: u32, port: u16) -> bool {
    const TCP_LISTEN: &str = "0A";
    let port_hex = format!(":{port:04X}");
    let mut inodes = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        // Fields: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for fields in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            if let [_, local, _, st, _, _, _, _, _, inode, ..] = fields[..] {
                if local.ends_with(&port_hex) && st == TCP_LISTEN {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

/// A child process that is killed when this guard is dropped.
///
/// Its stdout and stderr go to a log file; when the guard is dropped while the thread is
/// panicking (a failed test), the tail of the log is printed to help debugging. Set
/// `GRPC_BRIDGE_TEST_LOGS=1` to always print the tail, `GRPC_BRIDGE_KEEP_LOGS=1` to keep the
/// process's directory (config, log) after it stops.
pub struct Process {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
    // Keeps the directory holding the log (and other per-process files) alive.
    _dir: Option<tempfile::TempDir>,
}

impl Process {
    /// Spawn `cmd` with stdout/stderr redirected into `log_path`. On Linux the child also gets
    /// SIGKILL if the spawning thread dies (PR_SET_PDEATHSIG), so an aborted test run leaves no
    /// stray servers behind. Create topologies on a thread that outlives them.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log_path: PathBuf,
        dir: Option<tempfile::TempDir>,
    ) -> Result<Process, String> {
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("create log {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {name} ({cmd:?}): {e}"))?;
        Ok(Process {
            name: name.to_string(),
            child: Some(child),
            log_path,
            _dir: dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far (lossy UTF-8).
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_lines(&self.log(), n)
    }

    /// Err if the process already exited (with its log tail).
    pub fn check_running(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited early with {status}; log tail:\n{}",
                    self.name,
                    self.log_tail(40)
                ));
            }
        }
        Ok(())
    }

    /// Send `sig` (e.g. libc::SIGTERM) without waiting.
    pub fn signal(&self, sig: i32) {
        if let Some(child) = self.child.as_ref() {
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
        }
    }

    /// Kill the process and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("GRPC_BRIDGE_KEEP_LOGS").is_some() {
            if let Some(dir) = self._dir.take() {
                let kept = dir.keep();
                eprintln!("kept {} files in {}", self.name, kept.display());
            }
        }
        let always = std::env::var_os("GRPC_BRIDGE_TEST_LOGS").is_some();
        if std::thread::panicking() || always {
            eprintln!(
                "----- {} log tail ({}) -----\n{}\n----- end {} -----",
                self.name,
                self.log_path.display(),
                self.log_tail(60),
                self.name
            );
        }
    }
}

/// A server the tests run in process, on a thread and tokio runtime of its own (the tonic
/// backend, the scripted hops), so it outlives the runtime of the test that uses it. Dropped,
/// it stops the server and joins the thread: every connection it held is closed.
pub struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `serve` on `runtime` on a thread named `name` until `serve` ends or the guard is
    /// dropped; then the runtime is shut down (its tasks dropped, blocking ones waited for up
    /// to 1 s).
    pub fn spawn(
        name: &str,
        mut runtime: tokio::runtime::Builder,
        serve: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<ServerThread, String> {
        let rt = runtime
            .enable_all()
            .build()
            .map_err(|e| format!("{name} runtime: {e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("spawn {name} thread: {e}"))?;
        Ok(ServerThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A TCP server on 127.0.0.1:0 on a current-thread runtime of its own: each connection it
    /// accepts is handled by `handle` in a task of its own. Returns the bound address.
    pub fn tcp<F, Fut>(name: &str, handle: F) -> Result<(SocketAddr, ServerThread), String>
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let listener = format!("{name} listener");
        let accept = async move {
            let l = tokio::net::TcpListener::from_std(l).expect(&listener);
            while let Ok((conn, _)) = l.accept().await {
                tokio::spawn(handle(conn));
            }
        };
        let server = Self::spawn(name, tokio::runtime::Builder::new_current_thread(), accept)?;
        Ok((addr, server))
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking HTTP/1.1 GET with `Connection: close`; returns (status, body). Handles
/// content-length, chunked and read-to-close bodies. Meant for Envoy's admin interface.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read {addr}{path}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in response from {addr}{path}"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size_str = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_str, 16).map_err(|e| format!("chunk size: {e}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size..];
        if b.starts_with(b"\r\n") {
            b = &b[2..];
        }
    }
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Poll interval of a wait on the condition itself, with a deadline.
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The tokio runtime the tests drive their clients on (2 worker threads, everything enabled).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_names_the_process_that_holds_the_listening_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let connected = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(listens_on(std::process::id(), port));
        // Another process (pid 1) does not hold it; a connected socket on the port is no
        // listener; a closed listener is gone.
        assert!(!listens_on(1, port));
        drop(l);
        assert!(!listens_on(std::process::id(), port));
        drop(connected);
    }
}

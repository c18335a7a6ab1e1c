//! A real gRPC-web browser client: `tests/browser/` (the `grpc-web` npm package, bundled with
//! esbuild) in headless Chromium, served by a tiny in-process static server that also receives
//! the page's results (`POST /result`).
//!
//! `npm ci` runs when `tests/browser/node_modules` is missing or older than the lock file
//! (needs the npm registry once; node_modules is git-ignored and reused).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{command_stdout, repo_root, Process};

/// `$CHROMIUM_BIN`, else Debian's chromium binary (the browser itself, not the
/// `/usr/bin/chromium` wrapper script, so that killing it kills the browser).
pub fn chromium_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM_BIN") {
        return PathBuf::from(p);
    }
    let direct = PathBuf::from("/usr/lib/chromium/chromium");
    if direct.exists() {
        direct
    } else {
        PathBuf::from("/usr/bin/chromium")
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    command_stdout(cmd)
        .map(drop)
        .map_err(|e| format!("{what}: {e}"))
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Installs the pinned npm packages if needed and bundles the client into `out`
/// (`index.html`, `client.js`).
pub fn bundle(out: &Path) -> Result<(), String> {
    // Tests of one binary run in parallel: one `npm ci` at a time.
    static NPM: Mutex<()> = Mutex::new(());
    let _npm = NPM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join("tests/browser");
    let stamp = dir.join("node_modules/.package-lock.json");
    let stale = match (modified(&stamp), modified(&dir.join("package-lock.json"))) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    };
    if stale {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            "npm ci in tests/browser",
        )?;
    }
    run(
        Command::new(dir.join("node_modules/.bin/esbuild"))
            .args([
                "client.js",
                "--bundle",
                "--format=iife",
                "--log-level=warning",
            ])
            .arg(format!("--outfile={}", out.join("client.js").display()))
            .current_dir(&dir),
        "esbuild",
    )?;
    std::fs::copy(dir.join("index.html"), out.join("index.html"))
        .map_err(|e| format!("copy index.html: {e}"))?;
    Ok(())
}

/// Serves the files of one directory (GET) and keeps the body of `POST /result`.
pub struct StaticServer {
    pub addr: SocketAddr,
    result: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    pub fn start(root: PathBuf) -> Result<StaticServer, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let result = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (result.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = serve(conn, &root, &r2);
                    }
                    // Non-blocking accept, so that the stop flag is seen: the server's own poll.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(StaticServer {
            addr,
            result,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://ADDR`, the page's origin.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits for the page's `POST /result`.
    pub fn wait_result(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(r) = self.result.lock().ok().and_then(|r| r.clone()) {
                return Some(r);
            }
            // Poll interval of a wait on the page's POST itself, with a deadline.
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, root: &Path, result: &Mutex<Option<String>>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let path = path.split('?').next().unwrap_or("/");
    let (status, ctype, body): (&str, &str, Vec<u8>) = match (method, path) {
        ("POST", "/result") => {
            let mut b = vec![0u8; length.min(16 << 20)];
            reader.read_exact(&mut b)?;
            if let Ok(mut r) = result.lock() {
                *r = Some(String::from_utf8_lossy(&b).into_owned());
            }
            ("200 OK", "text/plain", b"ok".to_vec())
        }
        ("GET", "/index.html") => (
            "200 OK",
            "text/html",
            std::fs::read(root.join("index.html"))?,
        ),
        ("GET", "/client.js") => (
            "200 OK",
            "text/javascript",
            std::fs::read(root.join("client.js"))?,
        ),
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let mut conn = conn;
    write!(conn, "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len())?;
    conn.write_all(&body)?;
    conn.flush()
}

/// Headless Chromium on `url`, killed on drop.
pub fn chromium(url: &str) -> Result<Process, String> {
    let dir = crate::util::temp_dir("chromium-")?;
    let mut cmd = Command::new(chromium_bin());
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.path().join("profile").display()
    ))
    .arg(url);
    let log = dir.path().join("chromium.log");
    Process::spawn("chromium", cmd, log, Some(dir))
}

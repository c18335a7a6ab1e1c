//! squid launcher for `envoy/squid-bump.conf`: a TLS-intercepting ("SSL bump") forward proxy,
//! optionally requiring basic authentication on CONNECT and closing idle connections early.
//!
//! Runs `squid -N` (foreground, one process plus its helpers) with its pid file, logs, hosts
//! file, password file and minted-certificate store (`ssl_db`, made with
//! `security_file_certgen -c`) in a temp prefix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::certs::{openssl_bin, TestPki};
use crate::util::{env_path, free_port, wait_until, Process};

/// squid's certificate helper (`$SQUID_CERTGEN_BIN` overrides).
pub fn certgen_bin() -> PathBuf {
    env_path("SQUID_CERTGEN_BIN", "/usr/lib/squid/security_file_certgen")
}

#[derive(Clone, Debug)]
pub struct SquidBumpOptions {
    /// The one port CONNECT may reach (the server Envoy's TLS port).
    pub connect_port: u16,
    /// true: `ssl_bump bump all` (intercept); false: `ssl_bump splice all` (TLS untouched).
    pub bump: bool,
    /// `http_upgrade_request_protocols websocket allow all` (else deny).
    pub websocket: bool,
    /// Basic authentication required on CONNECT: (user, password).
    pub auth: Option<(String, String)>,
    /// squid `client_idle_pconn_timeout` (e.g. "2 seconds"); None: squid's default.
    pub client_idle_timeout: Option<String>,
    /// squid `read_timeout` (e.g. "2 seconds"); None: squid's default.
    pub read_timeout: Option<String>,
}

impl SquidBumpOptions {
    /// Bumping, WebSocket allowed, no authentication, default timeouts.
    pub fn new(connect_port: u16) -> SquidBumpOptions {
        SquidBumpOptions {
            connect_port,
            bump: true,
            websocket: true,
            auth: None,
            client_idle_timeout: None,
            read_timeout: None,
        }
    }
}

pub struct SquidBump {
    pub process: Process,
    pub addr: SocketAddr,
    prefix: PathBuf,
}

/// uid of `user`, if it exists.
fn uid_of(user: &str) -> Option<u32> {
    let name = std::ffi::CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        (!pw.is_null()).then(|| (*pw).pw_uid)
    }
}

fn chown_recursive(path: &Path, uid: u32) -> Result<(), String> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: plain syscall on a NUL-terminated path; gid -1 leaves the group unchanged.
    if unsafe { libc::chown(c.as_ptr(), uid, u32::MAX) } != 0 {
        return Err(format!(
            "chown {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    if path.is_dir() {
        for e in std::fs::read_dir(path)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            chown_recursive(&e.path(), uid)?;
        }
    }
    Ok(())
}

impl SquidBump {
    /// Start squid on a free 127.0.0.1 port. It resolves `pki.server_name` to 127.0.0.1 (its
    /// own hosts file), mints certificates from `pki`'s proxy CA and trusts `pki`'s server CA.
    pub fn start(name: &str, pki: &TestPki, opts: &SquidBumpOptions) -> Result<SquidBump, String> {
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::try_start(name, pki, opts) {
                Ok(s) => return Ok(s),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn try_start(name: &str, pki: &TestPki, opts: &SquidBumpOptions) -> Result<SquidBump, String> {
        let dir = crate::util::temp_dir(&format!("squid-bump-{name}-"))?;
        let prefix = dir.path().to_path_buf();
        // Started as root, squid and its helpers run as `proxy`: they write logs here and read
        // the hosts and password files.
        std::fs::set_permissions(&prefix, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let write = |f: &str, text: &str| -> Result<PathBuf, String> {
            let p = prefix.join(f);
            std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
            Ok(p)
        };
        let hosts = write("hosts", &format!("127.0.0.1 {}\n", pki.server_name))?;
        let mut passwd_line = String::new();
        if let Some((user, password)) = &opts.auth {
            let out = Command::new(openssl_bin())
                .args(["passwd", "-apr1", password])
                .output()
                .map_err(|e| format!("openssl passwd: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "openssl passwd: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            passwd_line = format!("{user}:{}\n", String::from_utf8_lossy(&out.stdout).trim());
        }
        let passwd = write("passwd", &passwd_line)?;
        let ssl_db = prefix.join("ssl_db");
        let out = Command::new(certgen_bin())
            .arg("-c")
            .arg("-s")
            .arg(&ssl_db)
            .args(["-M", "4MB"])
            .output()
            .map_err(|e| format!("run {}: {e}", certgen_bin().display()))?;
        if !out.status.success() {
            return Err(format!(
                "security_file_certgen -c: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } == 0 {
            if let Some(uid) = uid_of("proxy") {
                chown_recursive(&ssl_db, uid)?;
            }
        }

        let port = free_port();
        let mut vars: HashMap<String, String> = HashMap::new();
        let mut set = |k: &str, v: String| {
            vars.insert(k.to_string(), v);
        };
        set("LISTEN_ADDR", "127.0.0.1".into());
        set("LISTEN_PORT", port.to_string());
        set("CONNECT_PORT", opts.connect_port.to_string());
        set("PREFIX", prefix.display().to_string());
        set("PROXY_CA_CERT", pki.proxy_ca_cert.display().to_string());
        set("PROXY_CA_KEY", pki.proxy_ca_key.display().to_string());
        set("SERVER_CA_FILE", pki.server_ca_cert.display().to_string());
        set("HOSTS_FILE", hosts.display().to_string());
        set("SSL_BUMP", if opts.bump { "bump" } else { "splice" }.into());
        set(
            "WEBSOCKET",
            if opts.websocket { "allow" } else { "deny" }.into(),
        );
        set("REQUIRE_AUTH", opts.auth.is_some().to_string());
        set("PASSWORD_FILE", passwd.display().to_string());
        if let Some(t) = &opts.client_idle_timeout {
            set("CLIENT_IDLE_TIMEOUT", t.clone());
        }
        if let Some(t) = &opts.read_timeout {
            set("READ_TIMEOUT", t.clone());
        }
        let (process, addr) = crate::squid::spawn(
            &format!("squid-bump-{name}"),
            "squid-bump.conf",
            &vars,
            dir,
            port,
        )?;
        Ok(SquidBump {
            process,
            addr,
            prefix,
        })
    }

    /// squid's access log (a line per finished transaction: CONNECTs, bumped requests, tunnels).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default()
    }

    /// Access-log lines containing every one of `needles`.
    pub fn access_lines(&self, needles: &[&str]) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Wait up to `within` until at least `n` access-log lines contain every one of `needles`
    /// (squid logs a transaction when it ends); returns the lines found.
    pub fn wait_access_lines(&self, needles: &[&str], n: usize, within: Duration) -> Vec<String> {
        wait_until(within, || {
            let l = self.access_lines(needles);
            (l.len() >= n).then_some(l)
        })
        .unwrap_or_else(|| self.access_lines(needles))
    }

    /// The tail of the access log and of the cache log.
    pub fn logs(&self, lines: usize) -> String {
        crate::squid::logs(&self.prefix, lines)
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }
}

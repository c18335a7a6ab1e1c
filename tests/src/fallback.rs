//! What the transport-fallback tests (`tests/e2e_fallback_switch.rs`, `tests/e2e_chain.rs`) share:
//! the bridged paths an agent falls back to, the agent itself, one call, and the agent's stats.

use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::Backend;
use crate::cases::connect;
use crate::envoy::Envoy;
use crate::nginx::Nginx;
use crate::pb::UnaryRequest;
use crate::util::wait_until;

/// The server side behind both bridged transports: the tonic backend; a server Envoy behind an
/// HTTP/1.1-only nginx (the gRPC-web path, and what blocks native HTTP/2 when a relay points at
/// it); a tunnel server Envoy behind an nginx WebSocket proxy (the tunnel's path).
pub struct BridgedPaths {
    pub backend: Backend,
    pub server: Envoy,
    pub server_addr: SocketAddr,
    pub hop: Nginx,
    pub tunnel_server: Envoy,
    pub ws_hop: Nginx,
}

impl BridgedPaths {
    pub fn start() -> Result<BridgedPaths, String> {
        let backend = Backend::spawn();
        let to_backend = [
            ("BACKEND_HOST", backend.addr.ip().to_string()),
            ("BACKEND_PORT", backend.addr.port().to_string()),
        ];
        let server = Envoy::start_local("server", "server.yaml", &to_backend)?;
        let server_addr = server.listener_addr("bridge_server")?;
        let hop = Nginx::start("hop", server_addr)?;
        let tunnel_server = Envoy::start_local("tunnel-server", "tunnel-server.yaml", &to_backend)?;
        let ts_addr = tunnel_server.listener_addr("tunnel_server")?;
        let ws_hop = Nginx::start_template("ws-hop", "nginx-websocket.conf", ts_addr)?;
        Ok(BridgedPaths {
            backend,
            server,
            server_addr,
            hop,
            tunnel_server,
            ws_hop,
        })
    }
}

/// The consecutive failed calls that eject the native path (the agents' `FAILURES`).
pub const FAILURES: u64 = 5;

impl BridgedPaths {
    /// A fallback agent (`agent-fallback.yaml`, `agent-chain.yaml`) named `name`: its native
    /// HTTP/2 next hop `native`, its gRPC-web next hop this HTTP/1.1 nginx, `tunnel_host` as the
    /// tunnel's `Host`, [`FAILURES`] failed calls to eject native, re-probed every `reprobe`;
    /// then the `more` variables of its template. With the address its clients call.
    pub fn start_agent(
        &self,
        name: &str,
        template: &str,
        native: SocketAddr,
        tunnel_host: SocketAddr,
        reprobe: Duration,
        more: &[(&'static str, String)],
    ) -> Result<(Envoy, SocketAddr), String> {
        let mut vars = vec![
            ("NATIVE_HOST", native.ip().to_string()),
            ("NATIVE_PORT", native.port().to_string()),
            ("UPSTREAM_HOST", self.hop.addr.ip().to_string()),
            ("UPSTREAM_PORT", self.hop.addr.port().to_string()),
            ("TUNNEL_HOST", tunnel_host.to_string()),
            ("FAILURES", FAILURES.to_string()),
            ("REPROBE_INTERVAL", format!("{}s", reprobe.as_secs())),
        ];
        vars.extend_from_slice(more);
        let agent = Envoy::start_local(name, template, &vars)?;
        let client = agent.listener_addr("agent")?;
        Ok((agent, client))
    }
}

/// A counter or gauge of `e`, 0 while Envoy has not created it.
pub fn stat(e: &Envoy, name: &str) -> u64 {
    e.stat(name).unwrap_or(0)
}

/// One unary call on a fresh connection, answered within 10 s.
pub async fn call_once(addr: SocketAddr) -> Result<(), String> {
    let mut c = connect(addr).await?;
    match tokio::time::timeout(Duration::from_secs(10), c.unary(UnaryRequest::default())).await {
        Err(_) => Err("no answer within 10 s".into()),
        Ok(Err(e)) => Err(format!("{:?} {}", e.code(), e.message())),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Waits (up to 30 s) until the agent's HTTP/2 health check marks the native path healthy:
/// before that, calls would not go native.
pub fn wait_native_healthy(agent: &Envoy) {
    wait_until(Duration::from_secs(30), || {
        (stat(agent, "cluster.native.membership_healthy") == 1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "native never became healthy: {}",
            agent.stats_matching("native")
        )
    });
}

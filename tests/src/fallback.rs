//! What the transport-fallback tests (`tests/e2e_fallback_switch.rs`, `tests/e2e_chain.rs`) share:
//! the bridged paths an agent falls back to, one call, and the agent's stats.

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

/// The template variables of a fallback agent (`agent-fallback.yaml`, `agent-chain.yaml`)
/// for its native HTTP/2 next hop and its gRPC-web (HTTP/1.1) next hop, then `more`.
pub fn agent_vars(
    native: SocketAddr,
    grpc_web: SocketAddr,
    more: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("NATIVE_HOST", native.ip().to_string()),
        ("NATIVE_PORT", native.port().to_string()),
        ("UPSTREAM_HOST", grpc_web.ip().to_string()),
        ("UPSTREAM_PORT", grpc_web.port().to_string()),
    ];
    vars.extend_from_slice(more);
    vars
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

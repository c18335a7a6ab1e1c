//! Root context: owns the configuration and the flush tick, creates stream contexts.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use crate::config::{Config, Role};
use crate::context::{HttpStream, NetworkStream};
use crate::host::{self, BufferType, LogLevel};
use crate::http::{
    agent::AgentStream, flush::FlushScheduler, guard::GuardStream, http1_status::Http1StatusStream,
    server::ServerStream, Passthrough,
};
use crate::metrics::{self, Metrics};
use crate::tunnel::{client::TunnelClient, server::TunnelServer, TunnelSettings};

pub enum ChildContext {
    Http(Rc<RefCell<dyn HttpStream>>),
    Network(Rc<RefCell<dyn NetworkStream>>),
}

/// Tunnel server: how often connections whose last bytes went out are closed.
pub const CLOSE_TICK_MS: u32 = 100;

pub struct Root {
    id: u32,
    config: Option<Config>,
    /// What the tunnel roles read of `config`, built once per configuration.
    tunnel: Rc<TunnelSettings>,
    flush: Rc<FlushScheduler>,
    /// Live tunnel-client connections (they get keepalive ticks).
    connections: BTreeSet<u32>,
    /// Tunnel server: connections waiting to be closed at the next tick (see tunnel/server.rs).
    closing: Rc<RefCell<BTreeSet<u32>>>,
    metrics: Option<Rc<Metrics>>,
    /// Host clock of the last metrics flush.
    metrics_flushed_ns: u64,
}

impl Root {
    pub fn new(id: u32) -> Self {
        Root {
            id,
            config: None,
            tunnel: Rc::default(),
            flush: Rc::new(FlushScheduler::new(5)),
            connections: BTreeSet::new(),
            closing: Rc::default(),
            metrics: None,
            metrics_flushed_ns: 0,
        }
    }

    pub fn on_configure(&mut self, size: usize) -> bool {
        let bytes = match host::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(Some(b)) => b,
            Ok(None) => Vec::new(),
            Err(e) => {
                host::log(
                    LogLevel::Critical,
                    &format!("grpc-bridge: cannot read plugin configuration: {e:?}"),
                );
                return false;
            }
        };
        match Config::parse(&bytes) {
            Ok(cfg) => {
                if let Config::Server(s) = &cfg {
                    self.flush = Rc::new(FlushScheduler::new(s.flush_interval_ms));
                }
                self.metrics = Some(Rc::new(Metrics::new(cfg.role())));
                // Every role ticks at least this often: the tick sends the counted metrics.
                if let Err(e) = host::set_tick_period_ms(metrics::FLUSH_MS) {
                    host::log(
                        LogLevel::Error,
                        &format!("grpc-bridge: cannot arm metrics tick: {e:?}"),
                    );
                }
                let ping_interval_ms = match &cfg {
                    Config::TunnelClient(t) => t.ping_interval_ms,
                    _ => 0,
                };
                if ping_interval_ms > 0 {
                    // Check twice per interval so an idle tunnel pings within 1.5 intervals.
                    let period = (ping_interval_ms / 2).max(50);
                    if let Err(e) = host::set_tick_period_ms(period) {
                        host::log(
                            LogLevel::Error,
                            &format!("grpc-bridge: cannot arm keepalive tick: {e:?}"),
                        );
                    }
                }
                if cfg.role() == Role::TunnelServer {
                    // Closes refused or failed tunnels once their answer is out (tunnel/server.rs).
                    if let Err(e) = host::set_tick_period_ms(CLOSE_TICK_MS) {
                        host::log(
                            LogLevel::Error,
                            &format!("grpc-bridge: cannot arm close tick: {e:?}"),
                        );
                    }
                }
                host::log(
                    LogLevel::Info,
                    &format!(
                        "grpc-bridge: root {} configured as {:?}",
                        self.id,
                        cfg.role()
                    ),
                );
                // The server roles require `auth`: no settings means it said "none".
                let unauthenticated = match &cfg {
                    Config::Server(s) => s.auth.is_none(),
                    Config::ServerGuard(g) => g.auth.is_none(),
                    Config::TunnelServer(t) => t.auth.is_none(),
                    _ => false,
                };
                if unauthenticated {
                    host::log(
                        LogLevel::Warn,
                        "grpc-bridge: auth is \"none\": bridged requests are NOT authenticated; anyone who reaches this listener can claim to be an agent",
                    );
                }
                self.tunnel = Rc::new(TunnelSettings::from_config(&cfg));
                self.config = Some(cfg);
                true
            }
            Err(e) => {
                host::log(LogLevel::Critical, &e.to_string());
                false
            }
        }
    }

    pub fn new_child(&mut self, id: u32) -> ChildContext {
        let (Some(cfg), Some(m)) = (self.config.clone(), self.metrics.clone()) else {
            return ChildContext::Http(Rc::new(RefCell::new(Passthrough)));
        };
        match cfg {
            Config::Agent(c) => {
                ChildContext::Http(Rc::new(RefCell::new(AgentStream::new(id, c, m))))
            }
            Config::Server(c) => ChildContext::Http(Rc::new(RefCell::new(ServerStream::new(
                id,
                c,
                self.flush.clone(),
                m,
            )))),
            Config::ServerGuard(c) => {
                ChildContext::Http(Rc::new(RefCell::new(GuardStream::new(c, m))))
            }
            Config::TunnelClient(_) => {
                self.connections.insert(id);
                ChildContext::Network(Rc::new(RefCell::new(TunnelClient::new(
                    id,
                    self.tunnel.clone(),
                    m,
                ))))
            }
            Config::Http1Status(_) => {
                ChildContext::Http(Rc::new(RefCell::new(Http1StatusStream::new(m))))
            }
            Config::TunnelServer(_) => ChildContext::Network(Rc::new(RefCell::new(
                TunnelServer::new(id, self.tunnel.clone(), m, self.closing.clone()),
            ))),
        }
    }

    pub fn take_due_streams(&mut self) -> Vec<u32> {
        self.flush.take_due()
    }

    pub fn after_tick(&mut self) {
        // The keepalive tick of a tunnel client stays armed; the flush tick is on demand.
        if self.connections.is_empty() && !self.is_tunnel_client() && !self.is_tunnel_server() {
            self.flush.settle();
        }
        // Faster ticks (holds, keepalive) do not flush faster: once per period is enough.
        if let Some(m) = &self.metrics {
            if m.has_pending() {
                let now = host::now_nanos();
                let period_ns = u64::from(metrics::FLUSH_MS) * 1_000_000;
                if now.saturating_sub(self.metrics_flushed_ns) >= period_ns * 9 / 10 {
                    m.flush();
                    self.metrics_flushed_ns = now;
                }
            }
        }
    }

    fn is_tunnel_server(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.role() == Role::TunnelServer)
    }

    fn is_tunnel_client(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.role() == Role::TunnelClient)
    }

    /// Connections that get this tick: every tunnel client (keepalive), only the tunnel server
    /// connections that wait to be closed.
    pub fn live_connections(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.connections.iter().copied().collect();
        if let Ok(closing) = self.closing.try_borrow() {
            ids.extend(closing.iter().copied());
        }
        ids
    }

    pub fn forget_connection(&mut self, id: u32) {
        self.connections.remove(&id);
        if let Ok(mut closing) = self.closing.try_borrow_mut() {
            closing.remove(&id);
        }
    }

    pub fn on_done(&mut self) {
        if let Some(m) = &self.metrics {
            m.flush();
        }
    }
}

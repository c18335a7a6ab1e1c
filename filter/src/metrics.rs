//! Counters and histograms through proxy-wasm metrics, visible in Envoy's `/stats`.
//!
//! Names follow Envoy's style: a common prefix, the role, then the thing counted, e.g.
//! `grpc_bridge.agent.calls`, `grpc_bridge.server.grpc_status.14`,
//! `grpc_bridge.tunnel_client.bytes_up`. (Envoy shows wasm-defined metrics under its own
//! namespace for custom wasm stats; tests read them by suffix.) A failing metric call never affects
//! traffic: metrics are best effort.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::config::Role;
use crate::host::{self, MetricType};

pub const PREFIX: &str = "grpc_bridge";

/// How often a VM's pending counter increments reach the host (the root's tick).
pub const FLUSH_MS: u32 = 1000;

/// One root's counters. Increments are kept in the VM and sent to the host at the root's tick
/// (every [`FLUSH_MS`]), one hostcall per counter that changed: per call that is no hostcall at
/// all, where sending each increment cost 5-6 of the ~20 crossings of a unary call. Metric ids
/// are defined lazily and cached (a name is defined once per VM).
pub struct Metrics {
    role: &'static str,
    /// name -> (host id, increments not yet sent)
    counters: RefCell<BTreeMap<String, (Option<u32>, u64)>>,
}

impl Metrics {
    pub fn new(role: Role) -> Self {
        let role = match role {
            Role::Agent => "agent",
            Role::Server | Role::ServerGuard => "server",
            Role::TunnelClient => "tunnel_client",
            Role::TunnelServer => "tunnel_server",
            Role::Http1Status => "http1_status",
        };
        Metrics {
            role,
            counters: RefCell::new(BTreeMap::new()),
        }
    }

    /// Adds `by` to the counter `<prefix>.<role>.<name>` (sent at the next flush).
    pub fn add(&self, name: &str, by: u64) {
        if by == 0 {
            return;
        }
        let Ok(mut counters) = self.counters.try_borrow_mut() else {
            return;
        };
        match counters.get_mut(name) {
            Some((_, pending)) => *pending = pending.saturating_add(by),
            None => {
                counters.insert(name.to_string(), (None, by));
            }
        }
    }

    pub fn inc(&self, name: &str) {
        self.add(name, 1);
    }

    /// Counts a call's final gRPC status: `<prefix>.<role>.grpc_status.<code>`.
    pub fn grpc_status(&self, code: u32) {
        self.inc(&format!("grpc_status.{code}"));
    }

    /// Increments not yet sent to the host (unit tests read what a role counted).
    pub fn pending(&self, name: &str) -> u64 {
        self.counters
            .try_borrow()
            .ok()
            .and_then(|c| c.get(name).map(|(_, p)| *p))
            .unwrap_or(0)
    }

    /// Whether some increment waits for a flush.
    pub fn has_pending(&self) -> bool {
        self.counters
            .try_borrow()
            .map(|c| c.values().any(|(_, p)| *p > 0))
            .unwrap_or(false)
    }

    /// Sends every pending increment to the host. A failing metric call never affects traffic:
    /// the increment is dropped (metrics are best effort).
    pub fn flush(&self) {
        let Ok(mut counters) = self.counters.try_borrow_mut() else {
            return;
        };
        for (name, (id, pending)) in counters.iter_mut() {
            if *pending == 0 {
                continue;
            }
            if id.is_none() {
                let full = format!("{PREFIX}.{}.{name}", self.role);
                *id = host::define_metric(MetricType::Counter, &full).ok();
            }
            if let Some(id) = id {
                let _ = host::increment_metric(*id, i64::try_from(*pending).unwrap_or(i64::MAX));
            }
            *pending = 0;
        }
    }
}

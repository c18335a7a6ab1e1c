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

/// One root's counters. Metric ids are defined lazily and cached (a name is defined once per VM).
pub struct Metrics {
    role: &'static str,
    ids: RefCell<BTreeMap<String, Option<u32>>>,
    histograms: RefCell<BTreeMap<String, Option<u32>>>,
}

impl Metrics {
    pub fn new(role: Role) -> Self {
        let role = match role {
            Role::Agent => "agent",
            Role::Server => "server",
            Role::TunnelClient => "tunnel_client",
            Role::TunnelServer => "tunnel_server",
            Role::Http1Status => "http1_status",
        };
        Metrics { role, ids: RefCell::new(BTreeMap::new()), histograms: RefCell::new(BTreeMap::new()) }
    }

    fn id(&self, name: &str) -> Option<u32> {
        self.defined(&self.ids, MetricType::Counter, name)
    }

    fn defined(&self, ids: &RefCell<BTreeMap<String, Option<u32>>>, kind: MetricType, name: &str) -> Option<u32> {
        let mut ids = ids.try_borrow_mut().ok()?;
        if let Some(id) = ids.get(name) {
            return *id;
        }
        let full = format!("{PREFIX}.{}.{name}", self.role);
        let id = host::define_metric(kind, &full).ok();
        ids.insert(name.to_string(), id);
        id
    }

    /// Records one value into the histogram `<prefix>.<role>.<name>`.
    pub fn record(&self, name: &str, value: u64) {
        if let Some(id) = self.defined(&self.histograms, MetricType::Histogram, name) {
            let _ = host::record_metric(id, value);
        }
    }

    /// Adds `by` to the counter `<prefix>.<role>.<name>`.
    pub fn add(&self, name: &str, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(id) = self.id(name) {
            let _ = host::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    pub fn inc(&self, name: &str) {
        self.add(name, 1);
    }

    /// Counts a call's final gRPC status: `<prefix>.<role>.grpc_status.<code>`.
    pub fn grpc_status(&self, code: u32) {
        self.inc(&format!("grpc_status.{code}"));
    }
}

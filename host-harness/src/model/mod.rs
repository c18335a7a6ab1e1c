//! Layer 2 of 3: the stream and connection model that drives a loaded filter the way Envoy
//! 1.40 does — the HTTP filter manager (`stream.rs`), the network filter in front of
//! `tcp_proxy` (`connection.rs`), root-context events and after-call actions (`root.rs`) —
//! and the contexts the hostcalls reach (`contexts.rs`). Imports only the host layer.

mod connection;
mod contexts;
mod root;
mod stream;

pub use connection::{ConnectionId, NetFrame};
pub use stream::{Direction, Frame, StreamId};

/// One loaded filter: one VM with its root context, its HTTP streams and its connections,
/// like one Envoy worker's plugin. Tests drive it through [`crate::Scenario`] and
/// [`crate::ConnectionScenario`]; the live proxy through the crate's own driving API.
pub type Plugin = crate::host::vm::Vm<contexts::ContextTable>;

//! A native proxy-wasm host on wasmtime that runs the grpc-bridge filter the way Envoy 1.40
//! does, for tests without Envoy and as a small proxy.
//!
//! Three layers, each importing only the ones before it (`tests/module_graph.rs` checks):
//! - [`host`](self#layers): the proxy-wasm host — ABI, guest memory, VM, hostcalls, state;
//! - `model`: the stream and connection model that drives a [`Plugin`] like Envoy's filter
//!   manager and network filter;
//! - `live` (the [`proxy`] and the [`demo`]) and `scripted` ([`Scenario`] /
//!   [`ConnectionScenario`] for tests, [`fuzzing`]).
//!
//! # Layers
//! See `docs/ARCHITECTURE.md` (host harness) for what each module owns.

mod host;
mod live;
mod model;
mod scripted;

pub use host::abi::{
    CloseType, DataAction, HeadersAction, LogLevel, MetricKind, NetworkAction, Status, StreamType,
    TrailersAction,
};
pub use host::headers::Headers;
pub use host::state::{
    CallbackRecord, Crossings, HostcallStatus, HttpCallRequest, LocalReply, LogEntry, Metric,
    SharedHandle, SharedStore,
};
pub use host::vm::{
    LoadError, PluginOptions, WasmSource, DEFAULT_BUFFER_LIMIT, DEFAULT_H2_STREAM_WINDOW,
};
pub use live::{demo, proxy};
pub use model::{ConnectionId, Direction, Frame, NetFrame, Plugin, StreamId};
pub use scripted::{body_of, fuzzing, ConnectionScenario, Scenario};

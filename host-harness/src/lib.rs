//! A native proxy-wasm host on wasmtime that runs the grpc-bridge filter the way Envoy 1.40
//! does, for tests without Envoy and as a small proxy.
//!
//! Three layers, each importing only the ones below it (`tests/module_graph.rs` checks):
//! - `host`: the proxy-wasm host — ABI numbers, guest memory, the VM, the hostcalls by
//!   family, the host state; it reaches streams through the `ContextModel` seam;
//! - `model`: the stream and connection model that drives a [`Plugin`] like Envoy's HTTP
//!   filter manager and network filter;
//! - `live` (the [`proxy`] on sockets and the [`demo`]) and `scripted` ([`Scenario`] /
//!   [`ConnectionScenario`] for tests, [`fuzzing`]), which do not import each other.
//!
//! Beside them, [`build_wasm_guest`] builds a test or bench guest crate with cargo.
//!
//! What each module owns: docs/ARCHITECTURE.md, "Host harness". The public names are
//! re-exported here, so callers do not depend on the layout.

mod guest_build;
mod host;
mod live;
mod model;
mod scripted;

pub use guest_build::{build_wasm_guest, GuestRustflags};
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
pub use scripted::{body_of, fuzzing, ConnectionScenario, Scenario, HEADERS_NEVER_UPSTREAM};

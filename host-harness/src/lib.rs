//! A native proxy-wasm host on wasmtime that runs the grpc-bridge filter the way Envoy 1.40
//! does, for tests without Envoy and as a small proxy.
//!
//! - [`Plugin`] loads a filter (ABI 0.2.1, WASI preview1) and drives HTTP streams and
//!   network connections through an Envoy-faithful model.
//! - [`Scenario`] / [`ConnectionScenario`] script one stream or connection for tests.
//! - The `host-harness` binary runs the filter as a proxy (`proxy`) or the whole sample
//!   topology without Envoy (`demo`, see [`demo`]).

mod abi;
mod connection;
pub mod demo;
pub mod fuzzing;
mod h1_trailers;
mod headers;
mod hostcalls;
pub mod proxy;
mod scenario;
mod state;
mod stream;
mod tcp;
mod upstream;
mod vm;
mod wasi;

pub use abi::{
    CloseType, DataAction, HeadersAction, LogLevel, MetricKind, NetworkAction, Status, StreamType,
    TrailersAction,
};
pub use connection::{ConnectionId, NetFrame};
pub use headers::Headers;
pub use scenario::{body_of, ConnectionScenario, Scenario};
pub use state::{
    CallbackRecord, Crossings, HostcallStatus, HttpCallRequest, LogEntry, Metric, SharedHandle,
    SharedStore,
};
pub use stream::{Direction, Frame, LocalReply, StreamId};
pub use vm::{
    LoadError, Plugin, PluginOptions, WasmSource, DEFAULT_BUFFER_LIMIT, DEFAULT_H2_STREAM_WINDOW,
};

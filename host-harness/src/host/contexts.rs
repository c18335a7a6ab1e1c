//! The seam between the hostcalls and the stream and connection model.
//!
//! In Envoy the wasm `Context` reaches the filter manager's header maps and body buffers
//! (and the network filter's connection buffers) through pointers it is handed for each
//! callback. The hostcalls here do the same through [`ContextModel`]: the model above this
//! layer owns the streams and connections and answers what each hostcall may see or change,
//! so the host never imports the model.

use super::abi::{BufferType, MapType};
use super::headers::Headers;

/// The streams and connections of one VM, as the hostcalls see them. Context ids are unique
/// across both kinds; the root context is not part of the model. (Public only so that the
/// public [`Vm`](super::vm::Vm) may name it; the crate does not export it.)
pub trait ContextModel: Default + 'static {
    /// An HTTP stream context with this id exists (finished or not).
    fn is_http_stream(&self, id: u32) -> bool;
    /// A connection context with this id exists (closed or not).
    fn is_connection(&self, id: u32) -> bool;
    /// A stream or connection context that is still alive (not finished, not closed).
    fn is_live(&self, id: u32) -> bool;
    /// wasm `getBuffer` for a body or network-data buffer: `None` when it points at nothing.
    fn buffer(&self, id: u32, t: BufferType) -> Option<&[u8]>;
    fn buffer_mut(&mut self, id: u32, t: BufferType) -> Option<&mut Vec<u8>>;
    /// wasm `getConstMap` for a stream's header or trailer map (`log_phase`: the final maps).
    fn map(&self, id: u32, t: MapType, log_phase: bool) -> Option<&Headers>;
    /// wasm `getMap`: the map writes act on.
    fn map_mut(&mut self, id: u32, t: MapType) -> Option<&mut Headers>;
    /// A property derived from the context (`parts`: `path` split at NUL).
    fn property(&self, id: u32, path: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>>;
    /// `proxy_set_property` into the stream's filter state; false when `id` is no stream.
    fn set_filter_state(&mut self, id: u32, key: Vec<u8>, value: Vec<u8>) -> bool;
    /// Envoy 1.40's `continueStream` quirk (see `stream_control.rs`); false when `id` is no
    /// HTTP stream.
    fn forget_request_pointers(&mut self, id: u32) -> bool;
}

//! Scripting one HTTP stream or one connection against a loaded filter, for tests.
//!
//! ```no_run
//! use host_harness::{PluginOptions, Scenario};
//! let mut s = Scenario::new(PluginOptions::from_file("grpc_bridge.wasm")).unwrap();
//! s.request_headers(&[(":method", "POST"), (":path", "/a.B/C")], false)
//!     .request_body(b"\0\0\0\0\0", true);
//! let upstream = s.take_upstream();
//! ```

use std::time::Duration;

use crate::host::abi::{CloseType, NetworkAction};
use crate::host::headers::Headers;
use crate::host::state::{CallbackRecord, HostcallStatus, LocalReply, LogEntry, Metric};
use crate::host::vm::{LoadError, PluginOptions};
use crate::model::{ConnectionId, Direction, Frame, NetFrame, Plugin, StreamId};

/// One HTTP stream through one filter VM, with a virtual clock.
pub struct Scenario {
    plugin: Plugin,
    stream: StreamId,
}

impl Scenario {
    pub fn new(options: PluginOptions) -> Result<Self, LoadError> {
        Ok(Self::on(Plugin::load(options)?))
    }

    /// Runs the scenario on an already loaded plugin (its VM, root context and clock).
    pub fn on(mut plugin: Plugin) -> Self {
        let stream = plugin.http_new_stream();
        Scenario { plugin, stream }
    }

    /// Starts another stream on the same VM and makes it the current one.
    pub fn next_stream(&mut self) -> &mut Self {
        self.stream = self.plugin.http_new_stream();
        self
    }

    pub fn stream_id(&self) -> StreamId {
        self.stream
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn plugin_mut(&mut self) -> &mut Plugin {
        &mut self.plugin
    }

    pub fn into_plugin(self) -> Plugin {
        self.plugin
    }

    pub fn request_headers(&mut self, headers: &[(&str, &str)], end_stream: bool) -> &mut Self {
        self.plugin
            .http_request_headers(self.stream, Headers::from_pairs(headers), end_stream);
        self
    }

    pub fn request_body(&mut self, bytes: &[u8], end_stream: bool) -> &mut Self {
        self.body(Direction::Request, bytes, end_stream)
    }

    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> &mut Self {
        self.trailers(Direction::Request, trailers)
    }

    pub fn response_headers(&mut self, headers: &[(&str, &str)], end_stream: bool) -> &mut Self {
        self.plugin
            .http_response_headers(self.stream, Headers::from_pairs(headers), end_stream);
        self
    }

    pub fn response_body(&mut self, bytes: &[u8], end_stream: bool) -> &mut Self {
        self.body(Direction::Response, bytes, end_stream)
    }

    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> &mut Self {
        self.trailers(Direction::Response, trailers)
    }

    fn body(&mut self, dir: Direction, bytes: &[u8], end_stream: bool) -> &mut Self {
        self.plugin.http_data(self.stream, dir, bytes, end_stream);
        self
    }

    fn trailers(&mut self, dir: Direction, trailers: &[(&str, &str)]) -> &mut Self {
        self.plugin
            .http_trailers(self.stream, dir, Headers::from_pairs(trailers));
        self
    }

    /// Either peer reset the stream.
    pub fn reset(&mut self) -> &mut Self {
        self.plugin.http_reset(self.stream);
        self
    }

    /// Advances the virtual clock; due ticks fire in order.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.plugin.advance(by);
        self
    }

    pub fn advance_ms(&mut self, ms: u64) -> &mut Self {
        self.advance(Duration::from_millis(ms))
    }

    /// Frames the filter sent upstream since the last take.
    pub fn take_upstream(&mut self) -> Vec<Frame> {
        self.plugin.http_take_upstream(self.stream)
    }

    /// Frames the filter sent downstream since the last take.
    pub fn take_downstream(&mut self) -> Vec<Frame> {
        self.plugin.http_take_downstream(self.stream)
    }

    pub fn local_reply(&self) -> Option<LocalReply> {
        self.plugin.http_local_reply(self.stream)
    }

    pub fn is_finished(&self) -> bool {
        self.plugin.http_is_finished(self.stream)
    }

    /// Bytes held for the filter in one direction (paused data).
    pub fn held_bytes(&self, dir: Direction) -> usize {
        self.plugin.http_held_bytes(self.stream, dir)
    }

    /// Back-pressure on the source of `dir` (see [`Plugin::http_read_disabled`]).
    pub fn read_disabled(&self, dir: Direction) -> bool {
        self.plugin.http_read_disabled(self.stream, dir)
    }

    /// What the filter returned from each callback of the current stream, in order.
    pub fn returns(&self) -> Vec<(&'static str, Option<i64>)> {
        self.plugin
            .callbacks()
            .iter()
            .filter(|c| c.context_id == self.stream.0)
            .map(|c| (c.callback, c.returned))
            .collect()
    }

    /// The last value the filter returned from `callback` on this stream.
    pub fn last_return(&self, callback: &str) -> Option<i64> {
        self.returns()
            .into_iter()
            .rev()
            .find(|(c, _)| *c == callback)
            .and_then(|(_, r)| r)
    }

    pub fn callbacks(&self) -> &[CallbackRecord] {
        self.plugin.callbacks()
    }

    pub fn hostcall_statuses(&self) -> &[HostcallStatus] {
        self.plugin.hostcall_statuses()
    }

    pub fn logs(&self) -> &[LogEntry] {
        self.plugin.logs()
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(needle))
    }

    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.plugin.metric(name)
    }
}

/// Concatenated body bytes of a frame list.
pub fn body_of(frames: &[Frame]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|f| match f {
            Frame::Data { bytes, .. } => bytes.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// One connection through a network-filter VM.
pub struct ConnectionScenario {
    plugin: Plugin,
    conn: ConnectionId,
    pub new_connection: NetworkAction,
}

impl ConnectionScenario {
    pub fn new(options: PluginOptions) -> Result<Self, LoadError> {
        Ok(Self::on(Plugin::load(options)?))
    }

    pub fn on(mut plugin: Plugin) -> Self {
        let (conn, new_connection) = plugin.connection_open();
        ConnectionScenario {
            plugin,
            conn,
            new_connection,
        }
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn plugin_mut(&mut self) -> &mut Plugin {
        &mut self.plugin
    }

    pub fn downstream_data(&mut self, bytes: &[u8], end_stream: bool) -> NetworkAction {
        self.plugin
            .connection_downstream_data(self.conn, bytes, end_stream)
    }

    pub fn upstream_data(&mut self, bytes: &[u8], end_stream: bool) -> NetworkAction {
        self.plugin
            .connection_upstream_data(self.conn, bytes, end_stream)
    }

    pub fn downstream_close(&mut self) -> &mut Self {
        self.plugin
            .connection_downstream_closed(self.conn, CloseType::Remote);
        self
    }

    pub fn advance_ms(&mut self, ms: u64) -> &mut Self {
        self.plugin.advance(Duration::from_millis(ms));
        self
    }

    pub fn take_upstream(&mut self) -> Vec<NetFrame> {
        self.plugin.connection_take_upstream(self.conn)
    }

    pub fn take_downstream(&mut self) -> Vec<NetFrame> {
        self.plugin.connection_take_downstream(self.conn)
    }

    pub fn is_closed(&self) -> bool {
        self.plugin.connection_is_closed(self.conn)
    }

    pub fn logs(&self) -> &[LogEntry] {
        self.plugin.logs()
    }
}

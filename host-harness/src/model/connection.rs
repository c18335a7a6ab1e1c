//! Envoy's network-filter semantics for a wasm filter (`envoy.filters.network.wasm`) in
//! front of `tcp_proxy`: downstream bytes go through `proxy_on_downstream_data`
//! (ReadFilter::onData), upstream bytes through `proxy_on_upstream_data`
//! (WriteFilter::onWrite).
//!
//! As in Envoy, a StopIteration keeps the bytes in the connection's buffer; the next read
//! appends and the filter sees everything held (cumulative size), and the buffer stays
//! reachable so a later callback can rewrite it and `proxy_continue_stream(Downstream)`
//! (continueReading) hands it on. `continue_stream(Upstream)` is Unimplemented.

use super::connection_state::{Connection, ConnectionId, NetFrame};
use super::contexts::Plugin;
use crate::host::abi::{CloseType, NetworkAction, StreamType};
use crate::host::vm::Invocation;

impl Plugin {
    /// A client connected: `proxy_on_context_create` + `proxy_on_new_connection`.
    pub(crate) fn connection_open(&mut self) -> (ConnectionId, NetworkAction) {
        let id = self.alloc_context_id();
        let conn = Connection {
            id,
            read_buffer: Vec::new(),
            read_end_stream: false,
            read_ptr: false,
            write_buffer: Vec::new(),
            write_ptr: false,
            downstream_closed: false,
            upstream_closed: false,
            closed: false,
            upstream_end_sent: false,
            downstream_end_sent: false,
            vm_context_created: !self.is_failed(),
            failed: false,
            to_upstream: Vec::new(),
            to_downstream: Vec::new(),
        };
        self.state_mut().contexts.connections.insert(id, conn);
        let action = if !self.is_failed() {
            let root = self.state().root_context_id as i32;
            self.invoke("proxy_on_context_create", id, &[id as i32, root]);
            self.call_network(id, "proxy_on_new_connection", &[id as i32])
        } else {
            self.fail_connection(id);
            NetworkAction::StopIteration
        };
        self.after_event();
        (ConnectionId(id), action)
    }

    /// Bytes from the client (ReadFilter::onData).
    pub(crate) fn connection_downstream_data(
        &mut self,
        id: ConnectionId,
        data: &[u8],
        end_stream: bool,
    ) -> NetworkAction {
        let id = id.0;
        let Some(c) = self.buffer_arrived(id, data, |c| &mut c.read_buffer) else {
            return NetworkAction::StopIteration;
        };
        c.read_end_stream |= end_stream;
        if c.read_buffer.is_empty() && !c.read_end_stream {
            return NetworkAction::Continue;
        }
        c.read_ptr = true;
        let (len, eos) = (c.read_buffer.len() as i32, c.read_end_stream);
        let action = self.call_network(
            id,
            "proxy_on_downstream_data",
            &[id as i32, len, eos as i32],
        );
        if action == NetworkAction::Continue {
            if let Some(c) = self.conn_mut(id) {
                c.read_ptr = false;
            }
            self.pass_read_buffer(id);
        }
        self.after_event();
        action
    }

    /// Bytes from the upstream toward the client (WriteFilter::onWrite).
    pub(crate) fn connection_upstream_data(
        &mut self,
        id: ConnectionId,
        data: &[u8],
        end_stream: bool,
    ) -> NetworkAction {
        let id = id.0;
        let Some(c) = self.buffer_arrived(id, data, |c| &mut c.write_buffer) else {
            return NetworkAction::StopIteration;
        };
        c.write_ptr = true;
        let len = c.write_buffer.len() as i32;
        let action = self.call_network(
            id,
            "proxy_on_upstream_data",
            &[id as i32, len, end_stream as i32],
        );
        if let Some(c) = self.conn_mut(id) {
            if action == NetworkAction::Continue {
                c.write_ptr = false;
                let bytes = std::mem::take(&mut c.write_buffer);
                if !c.downstream_end_sent && (!bytes.is_empty() || end_stream) {
                    c.downstream_end_sent = end_stream;
                    c.to_downstream.push(NetFrame::Data { bytes, end_stream });
                }
            }
        }
        if end_stream {
            // Envoy reports the upstream close on end_stream, not on a connection event.
            self.upstream_closed(id);
        }
        self.after_event();
        action
    }

    /// The client closed (`Remote`) or Envoy closed it (`Local`).
    pub(crate) fn connection_downstream_closed(&mut self, id: ConnectionId, close: CloseType) {
        self.downstream_closed(id.0, close);
        self.after_event();
    }

    /// The upstream connection failed or was reset (not a clean end of stream): tcp_proxy
    /// closes the downstream connection (FlushWrite), so the filter sees a local close.
    pub(crate) fn connection_upstream_reset(&mut self, id: ConnectionId) {
        self.connection_close(id.0, StreamType::Downstream);
        self.after_event();
    }

    /// Bytes the connection holds for the filter: (read buffer, write buffer). Envoy's
    /// connection read-disables while its read buffer is over the buffer limit.
    pub(crate) fn connection_held_bytes(&self, id: ConnectionId) -> (usize, usize) {
        self.state()
            .contexts
            .connections
            .get(&id.0)
            .map(|c| (c.read_buffer.len(), c.write_buffer.len()))
            .unwrap_or((0, 0))
    }

    pub(crate) fn connection_take_upstream(&mut self, id: ConnectionId) -> Vec<NetFrame> {
        self.conn_mut(id.0)
            .map(|c| std::mem::take(&mut c.to_upstream))
            .unwrap_or_default()
    }

    pub(crate) fn connection_take_downstream(&mut self, id: ConnectionId) -> Vec<NetFrame> {
        self.conn_mut(id.0)
            .map(|c| std::mem::take(&mut c.to_downstream))
            .unwrap_or_default()
    }

    pub(crate) fn connection_is_closed(&self, id: ConnectionId) -> bool {
        self.state()
            .contexts
            .connections
            .get(&id.0)
            .is_none_or(|c| c.closed)
    }

    pub(crate) fn connection_forget(&mut self, id: ConnectionId) {
        if self.connection_is_closed(id) {
            self.state_mut().contexts.connections.remove(&id.0);
        }
    }

    fn conn_mut(&mut self, id: u32) -> Option<&mut Connection> {
        self.state_mut().contexts.connections.get_mut(&id)
    }

    /// Bytes that arrived for the filter join `buffer` of the connection (the read buffer
    /// for downstream data, the write buffer for upstream data); `None`, and the bytes are
    /// dropped, once the connection is closed.
    fn buffer_arrived(
        &mut self,
        id: u32,
        data: &[u8],
        buffer: fn(&mut Connection) -> &mut Vec<u8>,
    ) -> Option<&mut Connection> {
        let c = self.conn_mut(id).filter(|c| !c.closed)?;
        buffer(c).extend_from_slice(data);
        Some(c)
    }

    /// A network callback with CHECK_FAIL_NETWORK and the after-call actions.
    fn call_network(&mut self, id: u32, callback: &'static str, args: &[i32]) -> NetworkAction {
        let created = self
            .state()
            .contexts
            .connections
            .get(&id)
            .is_some_and(|c| c.vm_context_created);
        if self.is_failed() || !created {
            self.fail_connection(id);
            return NetworkAction::StopIteration;
        }
        let invocation = self.invoke(callback, id, args);
        let action = match invocation {
            Invocation::Returned(r) => NetworkAction::from_guest(r.unwrap_or(0)),
            Invocation::Missing => NetworkAction::Continue,
            Invocation::Trapped | Invocation::VmFailed => {
                self.fail_connection(id);
                NetworkAction::StopIteration
            }
        };
        self.run_deferred();
        action
    }

    /// `failStream(Downstream)`: the connection is closed (FlushWrite).
    fn fail_connection(&mut self, id: u32) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.failed {
            return;
        }
        c.failed = true;
        self.connection_close(id, StreamType::Downstream);
    }

    /// tcp_proxy takes whatever is in the read buffer.
    fn pass_read_buffer(&mut self, id: u32) {
        let Some(c) = self.conn_mut(id) else { return };
        let bytes = std::mem::take(&mut c.read_buffer);
        let eos = c.read_end_stream;
        if c.upstream_end_sent || (bytes.is_empty() && !eos) {
            return;
        }
        c.upstream_end_sent = eos;
        c.to_upstream.push(NetFrame::Data {
            bytes,
            end_stream: eos,
        });
    }

    /// Deferred `continueReading()`: later filters get the (possibly rewritten) buffer.
    pub(crate) fn connection_continue_reading(&mut self, id: u32) {
        if self
            .state()
            .contexts
            .connections
            .get(&id)
            .is_some_and(|c| !c.closed)
        {
            self.pass_read_buffer(id);
        }
    }

    /// Deferred `connection().close(FlushWrite)`; both stream types name the downstream
    /// connection (the read and write filter callbacks share it), and tcp_proxy then
    /// closes the upstream side.
    pub(crate) fn connection_close(&mut self, id: u32, _stream: StreamType) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.closed || c.downstream_closed {
            return;
        }
        c.to_downstream.push(NetFrame::Close);
        c.to_upstream.push(NetFrame::Close);
        self.downstream_closed(id, CloseType::Local);
    }

    fn downstream_closed(&mut self, id: u32, close: CloseType) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.downstream_closed || c.closed {
            return;
        }
        c.downstream_closed = true;
        let created = c.vm_context_created;
        if created && !self.is_failed() {
            self.invoke(
                "proxy_on_downstream_connection_close",
                id,
                &[id as i32, close as i32],
            );
            self.run_deferred();
        }
        self.close_tcp(id);
    }

    fn upstream_closed(&mut self, id: u32) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.upstream_closed || c.closed {
            return;
        }
        c.upstream_closed = true;
        let (created, down) = (c.vm_context_created, c.downstream_closed);
        if created && !self.is_failed() {
            self.invoke(
                "proxy_on_upstream_connection_close",
                id,
                &[id as i32, CloseType::Unknown as i32],
            );
            self.run_deferred();
        }
        if down {
            self.close_tcp(id);
        }
    }

    /// Envoy `onCloseTCP`: done, log, delete — then the context is gone.
    fn close_tcp(&mut self, id: u32) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.closed {
            return;
        }
        let created = c.vm_context_created;
        if created && !self.is_failed() {
            self.invoke("proxy_on_done", id, &[id as i32]);
            self.invoke("proxy_on_log", id, &[id as i32]);
            self.invoke("proxy_on_delete", id, &[id as i32]);
            self.run_deferred();
        }
        if let Some(c) = self.conn_mut(id) {
            c.closed = true;
        }
    }
}

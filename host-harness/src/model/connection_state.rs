//! One connection's state as the network filter and `tcp_proxy` keep it: the read and
//! write buffers the hostcalls reach, which halves closed, what left toward each side. The
//! behaviour that moves this state is `connection.rs`.

use crate::host::abi::BufferType;

/// What left the filter toward one side of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFrame {
    Data {
        bytes: Vec<u8>,
        end_stream: bool,
    },
    /// The connection was closed toward this side.
    Close,
}

/// Identifies one connection inside a [`Plugin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u32);

#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) id: u32,
    pub(super) read_buffer: Vec<u8>,
    pub(super) read_end_stream: bool,
    /// `network_downstream_data_buffer_` is set.
    pub(super) read_ptr: bool,
    pub(super) write_buffer: Vec<u8>,
    /// `network_upstream_data_buffer_` is set.
    pub(super) write_ptr: bool,
    pub(super) downstream_closed: bool,
    pub(super) upstream_closed: bool,
    pub(crate) closed: bool,
    pub(super) upstream_end_sent: bool,
    pub(super) downstream_end_sent: bool,
    pub(super) vm_context_created: bool,
    pub(super) failed: bool,
    pub(crate) to_upstream: Vec<NetFrame>,
    pub(crate) to_downstream: Vec<NetFrame>,
}

impl Connection {
    pub(crate) fn data(&self, t: BufferType) -> Option<&[u8]> {
        match t {
            BufferType::DownstreamData if self.read_ptr => Some(&self.read_buffer),
            BufferType::UpstreamData if self.write_ptr => Some(&self.write_buffer),
            _ => None,
        }
    }

    pub(crate) fn data_mut(&mut self, t: BufferType) -> Option<&mut Vec<u8>> {
        match t {
            BufferType::DownstreamData if self.read_ptr => Some(&mut self.read_buffer),
            BufferType::UpstreamData if self.write_ptr => Some(&mut self.write_buffer),
            _ => None,
        }
    }
}

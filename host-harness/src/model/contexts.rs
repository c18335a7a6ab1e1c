//! The model's streams and connections, and what each hostcall may see of them
//! ([`ContextModel`], the host's seam).

use std::collections::BTreeMap;

use super::connection_state::Connection;
use super::stream_state::HttpStream;
use crate::host::abi::{BufferType, MapType};
use crate::host::contexts::ContextModel;
use crate::host::headers::Headers;
use crate::host::vm::Vm;

/// One loaded filter: one VM with its root context, its HTTP streams and its connections,
/// like one Envoy worker's plugin. Tests drive it through `Scenario` and
/// `ConnectionScenario` (layer `scripted`), the live proxy through its VM thread.
pub type Plugin = Vm<ContextTable>;

/// Every HTTP stream and connection context of one VM, by context id.
#[derive(Default)]
pub struct ContextTable {
    pub(crate) http_streams: BTreeMap<u32, HttpStream>,
    pub(crate) connections: BTreeMap<u32, Connection>,
}

impl ContextModel for ContextTable {
    fn is_http_stream(&self, id: u32) -> bool {
        self.http_streams.contains_key(&id)
    }

    fn is_connection(&self, id: u32) -> bool {
        self.connections.contains_key(&id)
    }

    fn is_live(&self, id: u32) -> bool {
        self.http_streams.get(&id).is_some_and(|s| !s.finished)
            || self.connections.get(&id).is_some_and(|c| !c.closed)
    }

    fn buffer(&self, id: u32, t: BufferType) -> Option<&[u8]> {
        match t {
            BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
                self.http_streams.get(&id)?.body(t)
            }
            _ => self.connections.get(&id)?.data(t),
        }
    }

    fn buffer_mut(&mut self, id: u32, t: BufferType) -> Option<&mut Vec<u8>> {
        match t {
            BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
                self.http_streams.get_mut(&id)?.body_mut(t)
            }
            _ => self.connections.get_mut(&id)?.data_mut(t),
        }
    }

    fn map(&self, id: u32, t: MapType, log_phase: bool) -> Option<&Headers> {
        self.http_streams.get(&id)?.map(t, log_phase)
    }

    fn map_mut(&mut self, id: u32, t: MapType) -> Option<&mut Headers> {
        self.http_streams.get_mut(&id)?.map_mut(t)
    }

    fn property(&self, id: u32, path: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
        if let Some(st) = self.http_streams.get(&id) {
            if let Some(v) = st.property(parts) {
                return Some(v);
            }
            if let Some(v) = st.filter_state.get(path) {
                return Some(v.clone());
            }
        }
        let conn = self.connections.get(&id)?;
        (parts == [b"connection_id".as_slice()]).then(|| (conn.id as u64).to_le_bytes().to_vec())
    }

    fn set_filter_state(&mut self, id: u32, key: Vec<u8>, value: Vec<u8>) -> bool {
        let Some(st) = self.http_streams.get_mut(&id) else {
            return false;
        };
        st.filter_state.insert(key, value);
        true
    }

    fn forget_request_pointers(&mut self, id: u32) -> bool {
        let Some(st) = self.http_streams.get_mut(&id) else {
            return false;
        };
        st.forget_request_pointers();
        true
    }
}

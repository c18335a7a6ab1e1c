//! The I/O seam of the HTTP roles: what a role may ask of the host for the stream it serves.
//!
//! A role is a state machine driven by the stream's callbacks; everything it does to the stream
//! goes through [`StreamHost`]. [`WasmHost`] implements it with proxy-wasm hostcalls; the unit
//! tests implement it with a fake that records every action (`http::agent` tests).
//!
//! The trait is shaped by what a call costs in Envoy 1.40: each crossing of the VM boundary
//! costs about half a microsecond, more than the role's own work (docs/BENCHMARKS.md). So a role
//! reads a header map once ([`StreamHost::headers`]) and writes it back once
//! ([`StreamHost::set_headers`]) instead of one hostcall per header.

use crate::host::{self, BufferType, HostResult, LogLevel, MapType};

/// A header map as the host serializes it: lower-case names, values as bytes, in order,
/// duplicates kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, Vec<u8>)>);

impl HeaderList {
    /// The first value of `name`, lossy UTF-8.
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_bytes(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// Removes every `name`; true if there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != name);
        self.0.len() != before
    }

    /// Sets `name` to one value: the first entry keeps its place, later duplicates go.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.iter().position(|(k, _)| k == name) {
            Some(i) => {
                if let Some(entry) = self.0.get_mut(i) {
                    entry.1 = value.as_bytes().to_vec();
                }
                let mut seen = 0usize;
                self.0.retain(|(k, _)| {
                    if k == name {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.0.push((name.to_string(), value.as_bytes().to_vec())),
        }
    }

    pub fn pairs(&self) -> Vec<(&str, &[u8])> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect()
    }
}

/// What an HTTP role asks of the host for its stream. Every call can fail (the stream may be
/// gone); the role decides what a failure means.
pub trait StreamHost {
    /// The whole header (or trailer) map, in one call.
    fn headers(&mut self, map: MapType) -> HostResult<HeaderList>;
    /// Replaces the whole map in one call.
    fn set_headers(&mut self, map: MapType, headers: &HeaderList) -> HostResult<()>;
    /// Exactly `len` bytes of the current body chunk at `start`.
    fn body(&mut self, buffer: BufferType, start: usize, len: usize) -> HostResult<Vec<u8>>;
    /// Replaces the first `size` bytes of the current body chunk with `data`.
    fn replace_body(&mut self, buffer: BufferType, size: usize, data: &[u8]) -> HostResult<()>;
    fn log(&mut self, level: LogLevel, message: &str);
    /// Ends the stream with a gRPC status as a local reply (`http::send_grpc_error`).
    fn send_grpc_error(
        &mut self,
        content_type: &str,
        code: u32,
        message: &str,
        envoy_sets_status: bool,
    );
}

/// [`StreamHost`] over proxy-wasm hostcalls, for the stream whose callback is running.
pub struct WasmHost;

impl StreamHost for WasmHost {
    fn headers(&mut self, map: MapType) -> HostResult<HeaderList> {
        host::get_map(map).map(HeaderList)
    }

    fn set_headers(&mut self, map: MapType, headers: &HeaderList) -> HostResult<()> {
        host::set_map(map, &headers.pairs())
    }

    fn body(&mut self, buffer: BufferType, start: usize, len: usize) -> HostResult<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        host::get_buffer(buffer, start, len).map(Option::unwrap_or_default)
    }

    fn replace_body(&mut self, buffer: BufferType, size: usize, data: &[u8]) -> HostResult<()> {
        host::replace_buffer_prefix(buffer, size, data)
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        host::log(level, message);
    }

    fn send_grpc_error(
        &mut self,
        content_type: &str,
        code: u32,
        message: &str,
        envoy_sets_status: bool,
    ) {
        crate::http::send_grpc_error(content_type, code, message, envoy_sets_status);
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A host for unit tests: one stream's maps and current body chunk, and a record of every
    //! call the role made.
    use super::*;
    use crate::host::Status;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Headers(MapType),
        SetHeaders(MapType),
        Body {
            start: usize,
            len: usize,
        },
        ReplaceBody {
            size: usize,
            len: usize,
        },
        Log(LogLevel, String),
        GrpcError {
            content_type: String,
            code: u32,
            message: String,
            envoy_sets_status: bool,
        },
    }

    #[derive(Default)]
    pub struct FakeHost {
        pub request_headers: HeaderList,
        pub response_headers: HeaderList,
        pub response_trailers: HeaderList,
        /// The current response body chunk as the role sees and edits it.
        pub chunk: Vec<u8>,
        pub calls: Vec<Call>,
        /// Makes every call fail with this status (a stream the host already ended).
        pub fail: Option<Status>,
    }

    impl FakeHost {
        fn map(&mut self, map: MapType) -> &mut HeaderList {
            match map {
                MapType::HttpRequestHeaders | MapType::HttpRequestTrailers => {
                    &mut self.request_headers
                }
                MapType::HttpResponseHeaders => &mut self.response_headers,
                MapType::HttpResponseTrailers => &mut self.response_trailers,
            }
        }

        /// Hostcalls made, logs excluded.
        pub fn hostcalls(&self) -> usize {
            self.calls
                .iter()
                .filter(|c| !matches!(c, Call::Log(..)))
                .count()
        }
    }

    impl StreamHost for FakeHost {
        fn headers(&mut self, map: MapType) -> HostResult<HeaderList> {
            self.calls.push(Call::Headers(map));
            if let Some(s) = self.fail {
                return Err(s);
            }
            Ok(self.map(map).clone())
        }
        fn set_headers(&mut self, map: MapType, headers: &HeaderList) -> HostResult<()> {
            self.calls.push(Call::SetHeaders(map));
            if let Some(s) = self.fail {
                return Err(s);
            }
            *self.map(map) = headers.clone();
            Ok(())
        }
        fn body(&mut self, _: BufferType, start: usize, len: usize) -> HostResult<Vec<u8>> {
            self.calls.push(Call::Body { start, len });
            if let Some(s) = self.fail {
                return Err(s);
            }
            Ok(self
                .chunk
                .get(start..)
                .unwrap_or(&[])
                .iter()
                .take(len)
                .copied()
                .collect())
        }
        fn replace_body(&mut self, _: BufferType, size: usize, data: &[u8]) -> HostResult<()> {
            self.calls.push(Call::ReplaceBody {
                size,
                len: data.len(),
            });
            if let Some(s) = self.fail {
                return Err(s);
            }
            let n = size.min(self.chunk.len());
            self.chunk.splice(..n, data.iter().copied());
            Ok(())
        }
        fn log(&mut self, level: LogLevel, message: &str) {
            self.calls.push(Call::Log(level, message.to_string()));
        }
        fn send_grpc_error(
            &mut self,
            content_type: &str,
            code: u32,
            message: &str,
            envoy_sets_status: bool,
        ) {
            self.calls.push(Call::GrpcError {
                content_type: content_type.to_string(),
                code,
                message: message.to_string(),
                envoy_sets_status,
            });
        }
    }
}

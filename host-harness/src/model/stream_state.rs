//! One HTTP stream's state: per direction, the filter manager's view (iteration, what is
//! buffered, what left) and the wasm context's pointers (which body and maps the hostcalls
//! reach), and what `getBuffer` / `getMap` / the properties expose of it. The behaviour
//! that moves this state is `stream.rs`.

use std::collections::BTreeMap;

use crate::host::abi::{BufferType, MapType};
use crate::host::headers::Headers;
use crate::host::state::LocalReply;

/// The two directions of an HTTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Downstream (client) -> upstream: Envoy's decode path.
    Request,
    /// Upstream -> downstream (client): Envoy's encode path.
    Response,
}

/// What left the filter toward one side, in order (chunk boundaries preserved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Headers {
        headers: Headers,
        end_stream: bool,
    },
    Data {
        bytes: Vec<u8>,
        end_stream: bool,
    },
    Trailers(Headers),
    /// The stream was reset toward this side.
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Iteration {
    Continue,
    /// StopSingleIteration: the filter is still called for later frames.
    StopSingle,
    /// StopAllIteration*: later frames are held without calling the filter.
    StopAll,
}

/// Which bytes Envoy's `request_body_buffer_` / `response_body_buffer_` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyPtr {
    Null,
    /// The data handed to the current (or last) body callback.
    Incoming,
    /// The filter manager's buffered body (when the callback was fed buffered data).
    Buffered,
}

/// One direction's state: the filter manager's view plus the wasm context's pointers.
#[derive(Debug, Clone)]
pub(crate) struct Half {
    pub(super) headers: Option<Headers>,
    pub(super) headers_ptr: bool,
    pub(super) headers_continued: bool,
    pub(super) trailers: Option<Headers>,
    pub(super) trailers_ptr: bool,
    pub(super) iteration: Iteration,
    pub(super) iterate_from_current: bool,
    /// The filter manager's `bufferedData()`: `None` until first created.
    pub(super) buffered: Option<Vec<u8>>,
    pub(super) incoming: Vec<u8>,
    pub(super) body_ptr: BodyPtr,
    /// wasm `buffering_*_body_`: the last body callback returned StopIterationAndBuffer.
    pub(super) buffering: bool,
    /// The source sent end of stream (`complete()`).
    pub(super) complete: bool,
    pub(super) end_forwarded: bool,
    /// No more processing: a local reply or reset took over.
    pub(super) aborted: bool,
    /// The StopAll came from StopAllIterationAndWatermark (not ...AndBuffer).
    pub(super) stop_all_watermark: bool,
    /// Envoy's `{decoder,encoder}_filters_streaming_`: the data being buffered is a stream
    /// held with a watermark (back-pressure) rather than a body buffered whole (too large
    /// fails the stream).
    pub(super) streaming: bool,
    /// The buffered data's high watermark fired and has not dropped to the low one since.
    pub(super) above_high: bool,
    /// Back-pressure: the source of this direction should stop reading.
    pub(super) read_disabled: bool,
    pub(crate) out: Vec<Frame>,
}

impl Half {
    pub(super) fn new() -> Self {
        Half {
            headers: None,
            headers_ptr: false,
            headers_continued: false,
            trailers: None,
            trailers_ptr: false,
            iteration: Iteration::Continue,
            iterate_from_current: false,
            buffered: None,
            incoming: Vec::new(),
            body_ptr: BodyPtr::Null,
            buffering: false,
            complete: false,
            end_forwarded: false,
            aborted: false,
            stop_all_watermark: false,
            streaming: false,
            above_high: false,
            read_disabled: false,
            out: Vec::new(),
        }
    }

    pub(super) fn body(&self) -> Option<&Vec<u8>> {
        if self.buffering {
            return self.buffered.as_ref();
        }
        match self.body_ptr {
            BodyPtr::Null => None,
            BodyPtr::Incoming => Some(&self.incoming),
            BodyPtr::Buffered => self.buffered.as_ref(),
        }
    }

    pub(super) fn body_mut(&mut self) -> Option<&mut Vec<u8>> {
        if self.buffering {
            return self.buffered.as_mut();
        }
        match self.body_ptr {
            BodyPtr::Null => None,
            BodyPtr::Incoming => Some(&mut self.incoming),
            BodyPtr::Buffered => self.buffered.as_mut(),
        }
    }

    /// commonHandleBufferData: move the handed-in data behind what is already buffered.
    pub(super) fn buffer_incoming(&mut self, from_buffer: bool) {
        if !from_buffer {
            let data = std::mem::take(&mut self.incoming);
            self.buffered.get_or_insert_with(Vec::new).extend(data);
        }
    }
}

/// One HTTP stream context.
#[derive(Debug, Clone)]
pub(crate) struct HttpStream {
    pub(crate) request: Half,
    pub(crate) response: Half,
    /// wasm `end_of_stream_`: end_stream of the last headers/data callback (either way).
    pub(super) end_of_stream: bool,
    pub(crate) filter_state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) local_reply: Option<LocalReply>,
    /// Context created in the VM (false for streams that arrive after the VM failed).
    pub(super) vm_context_created: bool,
    pub(super) stream_failed: bool,
    pub(super) failure_local_reply_sent: bool,
    pub(crate) finished: bool,
    /// The final maps, for the access-log phase.
    pub(super) log_request_headers: Option<Headers>,
    /// Envoy's HCM decides "gRPC request" (for local replies) from the request headers as they
    /// arrive, before any filter: a filter that rewrites `content-type` does not change it.
    pub(super) grpc_request: bool,
}

impl HttpStream {
    pub(super) fn new() -> Self {
        HttpStream {
            request: Half::new(),
            response: Half::new(),
            end_of_stream: false,
            filter_state: BTreeMap::new(),
            local_reply: None,
            vm_context_created: false,
            stream_failed: false,
            failure_local_reply_sent: false,
            finished: false,
            log_request_headers: None,
            grpc_request: false,
        }
    }

    pub(super) fn half(&self, dir: Direction) -> &Half {
        match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    pub(super) fn half_mut(&mut self, dir: Direction) -> &mut Half {
        match dir {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// wasm `getBuffer(Http*Body)`.
    pub(crate) fn body(&self, t: BufferType) -> Option<&[u8]> {
        match t {
            BufferType::HttpRequestBody => self.request.body().map(|v| v.as_slice()),
            BufferType::HttpResponseBody => self.response.body().map(|v| v.as_slice()),
            _ => None,
        }
    }

    pub(crate) fn body_mut(&mut self, t: BufferType) -> Option<&mut Vec<u8>> {
        match t {
            BufferType::HttpRequestBody => self.request.body_mut(),
            BufferType::HttpResponseBody => self.response.body_mut(),
            _ => None,
        }
    }

    /// wasm `getConstMap`.
    pub(crate) fn map(&self, t: MapType, log_phase: bool) -> Option<&Headers> {
        fn live(h: &Half, headers: bool) -> Option<&Headers> {
            if headers {
                h.headers.as_ref().filter(|_| h.headers_ptr)
            } else {
                h.trailers.as_ref().filter(|_| h.trailers_ptr)
            }
        }
        match t {
            MapType::RequestHeaders if log_phase => self.log_request_headers.as_ref(),
            MapType::RequestHeaders => live(&self.request, true),
            MapType::RequestTrailers if log_phase => None,
            MapType::RequestTrailers => live(&self.request, false),
            MapType::ResponseHeaders if log_phase => self.response.headers.as_ref(),
            MapType::ResponseHeaders => live(&self.response, true),
            MapType::ResponseTrailers if log_phase => self.response.trailers.as_ref(),
            MapType::ResponseTrailers => live(&self.response, false),
            _ => None,
        }
    }

    /// wasm `getMap`: trailers are created on demand only at the end of the stream.
    pub(crate) fn map_mut(&mut self, t: MapType) -> Option<&mut Headers> {
        let eos = self.end_of_stream;
        let (half, headers) = match t {
            MapType::RequestHeaders => (&mut self.request, true),
            MapType::RequestTrailers => (&mut self.request, false),
            MapType::ResponseHeaders => (&mut self.response, true),
            MapType::ResponseTrailers => (&mut self.response, false),
            _ => return None,
        };
        if headers {
            return if half.headers_ptr {
                half.headers.as_mut()
            } else {
                None
            };
        }
        if !half.trailers_ptr && half.body_ptr != BodyPtr::Null && eos && half.trailers.is_none() {
            half.trailers = Some(Headers::new());
            half.trailers_ptr = true;
        }
        if half.trailers_ptr {
            half.trailers.as_mut()
        } else {
            None
        }
    }

    pub(crate) fn forget_request_pointers(&mut self) {
        self.request.headers_ptr = false;
        self.request.body_ptr = BodyPtr::Null;
        self.request.trailers_ptr = false;
    }

    /// The documented property subset derived from the stream.
    pub(crate) fn property(&self, parts: &[&[u8]]) -> Option<Vec<u8>> {
        let req = self.request.headers.as_ref();
        let resp = self.response.headers.as_ref();
        let s = |v: Option<&str>| v.map(|v| v.as_bytes().to_vec());
        match parts {
            [b"request", b"path"] => s(req?.get(":path")),
            [b"request", b"url_path"] => {
                s(req?.get(":path").map(|p| p.split('?').next().unwrap_or(p)))
            }
            [b"request", b"method"] => s(req?.get(":method")),
            [b"request", b"host"] => s(req?.get(":authority")),
            [b"request", b"scheme"] => s(req?.get(":scheme")),
            [b"request", b"id"] => s(req?.get("x-request-id")),
            [b"request", b"headers", name] => s(req?.get(&String::from_utf8_lossy(name))),
            [b"response", b"code"] => {
                let code: i64 = resp?.get(":status")?.parse().ok()?;
                Some(code.to_le_bytes().to_vec())
            }
            [b"response", b"headers", name] => s(resp?.get(&String::from_utf8_lossy(name))),
            [b"response", b"trailers", name] => s(self
                .response
                .trailers
                .as_ref()?
                .get(&String::from_utf8_lossy(name))),
            _ => None,
        }
    }
}

/// Identifies one HTTP stream inside a [`Plugin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

//! Envoy's HTTP filter-manager semantics for one wasm filter, with the wasm `Context`
//! bookkeeping on top (which buffer/map pointers are live when).
//!
//! The code follows Envoy 1.40's `FilterManager` (commonContinue, commonHandleBufferData,
//! commonHandleAfter*Callback, handleDataIfStopAll) and `extensions/common/wasm/context.cc`
//! (decodeData/encodeData with `buffering_*_body_`, getBuffer, getMap, continueStream)
//! step by step, so the failure modes in envoy-wasm-facts.md fall out of the model instead
//! of being special-cased:
//! - a flush by `continue_stream` from a tick, then Continue from the trailers callback,
//!   strands bytes appended in that callback (iteration state is already Continue);
//! - after a body callback returned Continue the body buffer points at nothing: reads are
//!   Ok and empty, writes BadArgument (measured in Envoy 1.40);
//! - a stream that finished has no context (set_effective_context -> BadArgument).

use super::contexts::Plugin;
use super::stream_state::{BodyPtr, Direction, Frame, Half, HttpStream, Iteration, StreamId};
use crate::host::abi::{DataAction, FilterStatus, HeadersAction, TrailersAction};
use crate::host::headers::Headers;
use crate::host::state::LocalReply;
use crate::host::vm::Invocation;

/// Result of one filter callback after cpp-host's CHECK_FAIL.
enum CallOutcome {
    /// The guest ran (or has no such export: `None`), plus the send_local_response flag.
    Ran(Option<i32>, bool),
    /// The VM is failed: Envoy failed the stream and forces a stop status.
    Failed,
}

impl Plugin {
    // ---- public driving API --------------------------------------------------------

    /// Starts a stream (a new context id); nothing is called until request headers arrive.
    pub(crate) fn http_new_stream(&mut self) -> StreamId {
        let id = self.alloc_context_id();
        self.state_mut()
            .contexts
            .http_streams
            .insert(id, HttpStream::new());
        StreamId(id)
    }

    /// Request headers from downstream (Envoy `decodeHeaders`).
    pub(crate) fn http_request_headers(
        &mut self,
        id: StreamId,
        headers: Headers,
        end_stream: bool,
    ) {
        let id = id.0;
        if self
            .stream(id)
            .is_none_or(|s| s.finished || s.request.headers.is_some())
        {
            return;
        }
        // onCreate: the VM context exists from the first callback on (unless the VM is dead).
        if !self.is_failed() {
            let root = self.state().root_context_id as i32;
            if let Some(st) = self.stream_mut(id) {
                st.vm_context_created = true;
            }
            self.invoke("proxy_on_context_create", id, &[id as i32, root]);
        }
        self.on_headers(id, Direction::Request, headers, end_stream);
        self.after_event();
    }

    /// Response headers from upstream (Envoy `encodeHeaders`).
    pub(crate) fn http_response_headers(
        &mut self,
        id: StreamId,
        headers: Headers,
        end_stream: bool,
    ) {
        if self
            .stream(id.0)
            .is_none_or(|s| s.finished || s.response.aborted)
        {
            return;
        }
        self.on_headers(id.0, Direction::Response, headers, end_stream);
        self.after_event();
    }

    /// Body bytes from the source of `dir`: downstream for requests (Envoy `decodeData`),
    /// upstream for responses (`encodeData`).
    pub(crate) fn http_data(
        &mut self,
        id: StreamId,
        dir: Direction,
        data: &[u8],
        end_stream: bool,
    ) {
        self.on_data(id.0, dir, data.to_vec(), end_stream);
        self.after_event();
    }

    /// Trailers from the source of `dir`.
    pub(crate) fn http_trailers(&mut self, id: StreamId, dir: Direction, trailers: Headers) {
        self.on_trailers(id.0, dir, trailers);
        self.after_event();
    }

    /// Downstream or upstream reset the stream.
    pub(crate) fn http_reset(&mut self, id: StreamId) {
        self.reset_stream(id.0);
        self.after_event();
    }

    /// The upstream request failed (`reason` like Envoy's reset reason: "connection
    /// failure", "remote reset"). Before response headers the router sends its 503 local
    /// reply through the filter chain; afterwards the stream is reset.
    pub(crate) fn http_upstream_failed(&mut self, id: StreamId, reason: &str) {
        let Some(st) = self.stream(id.0) else { return };
        if st.finished {
            return;
        }
        if st.response.headers.is_some() {
            self.reset_stream(id.0);
        } else {
            let reply = LocalReply {
                status: 503,
                body: format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}")
                    .into_bytes(),
                headers: Headers::new(),
                grpc_status: None,
                details: format!("upstream_reset_before_response_started{{{}}}", reason.replace(' ', "_")),
            };
            self.send_local_reply(id.0, reply, false);
        }
        self.after_event();
    }

    /// Frames the filter let through toward upstream (request way) since the last take.
    pub(crate) fn http_take_upstream(&mut self, id: StreamId) -> Vec<Frame> {
        self.stream_mut(id.0)
            .map(|s| std::mem::take(&mut s.request.out))
            .unwrap_or_default()
    }

    /// Frames the filter let through toward downstream (response way) since the last take.
    pub(crate) fn http_take_downstream(&mut self, id: StreamId) -> Vec<Frame> {
        self.stream_mut(id.0)
            .map(|s| std::mem::take(&mut s.response.out))
            .unwrap_or_default()
    }

    pub(crate) fn http_local_reply(&self, id: StreamId) -> Option<LocalReply> {
        self.stream(id.0).and_then(|s| s.local_reply.clone())
    }

    pub(crate) fn http_is_finished(&self, id: StreamId) -> bool {
        self.stream(id.0).is_none_or(|s| s.finished)
    }

    /// Back-pressure: the filter held data past the buffer limit with a watermark status
    /// (StopIterationAndWatermark, or StopAllIterationAndWatermark from headers), so the
    /// source of `dir` (the client for requests, the upstream for responses) should stop
    /// reading until the held data drains to half the limit.
    pub(crate) fn http_read_disabled(&self, id: StreamId, dir: Direction) -> bool {
        self.stream(id.0)
            .is_some_and(|s| !s.finished && s.half(dir).read_disabled)
    }

    /// Bytes the filter manager holds for the filter in one direction (paused data).
    pub(crate) fn http_held_bytes(&self, id: StreamId, dir: Direction) -> usize {
        self.stream(id.0)
            .and_then(|s| s.half(dir).buffered.as_ref().map(|b| b.len()))
            .unwrap_or(0)
    }

    /// Forgets a finished stream's record (proxy mode, to bound memory).
    pub(crate) fn http_forget(&mut self, id: StreamId) {
        if self.http_is_finished(id) {
            self.state_mut().contexts.http_streams.remove(&id.0);
        }
    }

    // ---- helpers --------------------------------------------------------------------

    pub(crate) fn stream(&self, id: u32) -> Option<&HttpStream> {
        self.state().contexts.http_streams.get(&id)
    }

    pub(crate) fn stream_mut(&mut self, id: u32) -> Option<&mut HttpStream> {
        self.state_mut().contexts.http_streams.get_mut(&id)
    }

    fn half_mut(&mut self, id: u32, dir: Direction) -> Option<&mut Half> {
        self.stream_mut(id).map(|s| s.half_mut(dir))
    }

    /// One filter callback with cpp-host's CHECK_FAIL before and after, then the deferred
    /// actions (which Envoy runs before it looks at the returned status).
    fn call_filter(&mut self, id: u32, callback: &'static str, args: &[i32]) -> CallOutcome {
        let created = self.stream(id).is_some_and(|s| s.vm_context_created);
        if self.is_failed() || !created {
            self.fail_stream(id);
            return CallOutcome::Failed;
        }
        let invocation = self.invoke(callback, id, args);
        let stopped = self.take_next_iteration_stopped();
        let outcome = match invocation {
            Invocation::Returned(r) => CallOutcome::Ran(r, stopped),
            Invocation::Missing => CallOutcome::Ran(None, stopped),
            Invocation::Trapped | Invocation::VmFailed => {
                self.fail_stream(id);
                CallOutcome::Failed
            }
        };
        self.run_deferred();
        outcome
    }

    /// [`Self::call_filter`] of `dir`'s callback for status `A`, and Envoy's conversion of
    /// the status (0, Continue, for a missing export; `A::STOPPED` when the VM failed).
    fn call_filter_for<A: FilterStatus>(&mut self, id: u32, dir: Direction, args: &[i32]) -> A {
        let callback = match dir {
            Direction::Request => A::CALLBACKS.0,
            Direction::Response => A::CALLBACKS.1,
        };
        match self.call_filter(id, callback, args) {
            CallOutcome::Ran(r, stopped) => A::from_guest(r.unwrap_or(0), stopped),
            CallOutcome::Failed => A::STOPPED,
        }
    }

    /// The half a callback's status applies to, unless a local reply or reset took over.
    fn unaborted_half_mut(&mut self, id: u32, dir: Direction) -> Option<&mut Half> {
        self.half_mut(id, dir).filter(|h| !h.aborted)
    }

    /// cpp-host `failStream(Request)` + `failStream(Response)`: one 503 local reply
    /// (gRPC requests: 200 + grpc-status 14), or a reset if the response already started.
    fn fail_stream(&mut self, id: u32) {
        let Some(st) = self.stream_mut(id) else {
            return;
        };
        if st.stream_failed || st.failure_local_reply_sent {
            return;
        }
        st.stream_failed = true;
        let reply = LocalReply {
            status: 503,
            body: Vec::new(),
            headers: Headers::new(),
            grpc_status: Some(14),
            details: "wasm_fail_stream".into(),
        };
        self.send_local_reply(id, reply, true);
    }

    fn on_headers(&mut self, id: u32, dir: Direction, headers: Headers, end_stream: bool) {
        let Some(st) = self.stream_mut(id) else {
            return;
        };
        if st.finished || st.half(dir).aborted {
            return;
        }
        let count = headers.len() as i32;
        if dir == Direction::Request {
            st.log_request_headers = Some(headers.clone());
            st.grpc_request = is_grpc_request(&headers);
        }
        // The failure local reply passes through the encoder chain without the VM.
        let skip_vm = dir == Direction::Response && st.failure_local_reply_sent;
        st.end_of_stream = end_stream;
        let half = st.half_mut(dir);
        half.headers = Some(headers);
        half.headers_ptr = true;
        half.complete = end_stream;
        let action = if skip_vm {
            HeadersAction::Continue
        } else {
            self.call_filter_for(id, dir, &[id as i32, count, end_stream as i32])
        };
        let Some(half) = self.unaborted_half_mut(id, dir) else {
            return;
        };
        match action {
            HeadersAction::Continue => {
                half.headers_ptr = false;
                if !half.headers_continued {
                    half.headers_continued = true;
                    self.forward_headers(id, dir, end_stream);
                }
            }
            HeadersAction::StopAllBuffer | HeadersAction::StopAllWatermark => {
                half.iteration = Iteration::StopAll;
                half.stop_all_watermark = action == HeadersAction::StopAllWatermark;
            }
        }
    }

    /// The half of `dir` while its source may still send body or trailers: the stream is
    /// not finished, its headers came, and neither its end nor an abort did.
    fn receiving_half_mut(&mut self, id: u32, dir: Direction) -> Option<&mut Half> {
        let st = self.stream_mut(id).filter(|s| !s.finished)?;
        Some(st.half_mut(dir)).filter(|h| !h.aborted && h.headers.is_some() && !h.complete)
    }

    fn on_data(&mut self, id: u32, dir: Direction, data: Vec<u8>, end_stream: bool) {
        let Some(half) = self.receiving_half_mut(id, dir) else {
            return;
        };
        if end_stream {
            half.complete = true;
        }
        // handleDataIfStopAll: held without calling the filter.
        if half.iteration == Iteration::StopAll {
            half.streaming = half.stop_all_watermark;
            half.buffered.get_or_insert_with(Vec::new).extend(data);
            self.check_high_watermark(id, dir);
            return;
        }
        let eos = end_stream && half.trailers.is_none();
        half.incoming = data;
        self.filter_data(id, dir, false, eos);
    }

    /// One body callback (wasm `decodeData`/`encodeData`) and what the filter manager does
    /// with its status. `from_buffer`: the callback is fed the buffered data on a resume.
    fn filter_data(&mut self, id: u32, dir: Direction, from_buffer: bool, end_stream: bool) {
        let skip_vm = dir == Direction::Response
            && self.stream(id).is_some_and(|s| s.failure_local_reply_sent);
        let Some(st) = self.stream_mut(id) else {
            return;
        };
        st.end_of_stream = end_stream;
        let half = st.half_mut(dir);
        let had_trailers = half.trailers.is_some();
        let action = if skip_vm {
            DataAction::Continue
        } else {
            // addEncodedData(data, streaming=false): while buffering, new data joins the
            // buffered body first, so the callback sees (and get_buffer reads) everything
            // held so far. Over the buffer limit this fails the stream before the VM is
            // called (Envoy's wasm context then finds itself destroyed and skips the VM).
            if half.buffering {
                if !from_buffer {
                    half.streaming = false;
                }
                half.buffer_incoming(from_buffer);
                self.check_high_watermark(id, dir);
                if self
                    .stream(id)
                    .is_none_or(|s| s.finished || s.half(dir).aborted)
                {
                    return;
                }
            }
            let Some(half) = self.half_mut(id, dir) else {
                return;
            };
            half.body_ptr = if from_buffer {
                BodyPtr::Buffered
            } else {
                BodyPtr::Incoming
            };
            let size = half.body().map(|b| b.len()).unwrap_or(0) as i32;
            let args = [id as i32, size, end_stream as i32];
            self.call_filter_for(id, dir, &args)
        };
        let Some(half) = self.unaborted_half_mut(id, dir) else {
            return;
        };
        half.buffering = false;
        match action {
            DataAction::Continue => half.body_ptr = BodyPtr::Null,
            DataAction::StopIterationAndBuffer => half.buffering = true,
            _ => {}
        }
        let trailers_added = !had_trailers && half.trailers.is_some();
        match action {
            DataAction::Continue => {
                if half.iteration == Iteration::StopSingle {
                    half.buffer_incoming(from_buffer);
                    self.common_continue(id, dir);
                } else {
                    let bytes = if from_buffer {
                        half.buffered
                            .as_mut()
                            .map(std::mem::take)
                            .unwrap_or_default()
                    } else {
                        std::mem::take(&mut half.incoming)
                    };
                    self.forward_data(id, dir, bytes, end_stream && !trailers_added);
                    if trailers_added {
                        self.forward_trailers(id, dir);
                    }
                }
            }
            DataAction::StopIterationAndBuffer | DataAction::StopIterationAndWatermark => {
                half.iteration = Iteration::StopSingle;
                half.streaming = action == DataAction::StopIterationAndWatermark;
                half.buffer_incoming(from_buffer);
                self.check_high_watermark(id, dir);
                return;
            }
            DataAction::StopIterationNoBuffer => {
                half.iteration = Iteration::StopSingle;
                if !from_buffer {
                    half.incoming.clear();
                }
                if half.complete && half.trailers.is_none() && half.buffered.is_none() {
                    half.buffered = Some(Vec::new());
                }
            }
        }
        self.check_low_watermark(id, dir);
    }

    fn on_trailers(&mut self, id: u32, dir: Direction, trailers: Headers) {
        let Some(half) = self.receiving_half_mut(id, dir) else {
            return;
        };
        half.complete = true;
        half.trailers = Some(trailers);
        if half.iteration == Iteration::StopAll {
            return;
        }
        self.filter_trailers(id, dir);
    }

    fn filter_trailers(&mut self, id: u32, dir: Direction) {
        let skip_vm = dir == Direction::Response
            && self.stream(id).is_some_and(|s| s.failure_local_reply_sent);
        let Some(half) = self.half_mut(id, dir) else {
            return;
        };
        half.trailers_ptr = true;
        let count = half.trailers.as_ref().map(|t| t.len()).unwrap_or(0) as i32;
        let action = if skip_vm {
            TrailersAction::Continue
        } else {
            self.call_filter_for(id, dir, &[id as i32, count])
        };
        let Some(half) = self.unaborted_half_mut(id, dir) else {
            return;
        };
        match action {
            TrailersAction::Continue => {
                half.trailers_ptr = false;
                if half.iteration == Iteration::StopSingle {
                    self.common_continue(id, dir);
                } else {
                    self.forward_trailers(id, dir);
                }
            }
            TrailersAction::StopIteration => {
                if half.iteration == Iteration::Continue {
                    half.iteration = Iteration::StopSingle;
                }
            }
        }
    }

    /// Envoy's `commonContinue` (continueDecoding / continueEncoding).
    pub(super) fn common_continue(&mut self, id: u32, dir: Direction) {
        let Some(st) = self.stream_mut(id) else {
            return;
        };
        if st.finished {
            return;
        }
        let half = st.half_mut(dir);
        if half.aborted || half.end_forwarded || half.headers.is_none() {
            return;
        }
        if half.iteration == Iteration::StopAll {
            half.iterate_from_current = true;
        }
        half.iteration = Iteration::Continue;
        if !half.headers_continued {
            half.headers_continued = true;
            let eos = half.complete && half.buffered.is_none() && half.trailers.is_none();
            self.forward_headers(id, dir, eos);
        }
        let Some(half) = self.half_mut(id, dir) else {
            return;
        };
        let had_trailers = half.trailers.is_some();
        if half.buffered.is_some() {
            let eos = half.complete && !had_trailers;
            if half.iterate_from_current {
                self.filter_data(id, dir, true, eos);
            } else {
                let bytes = half
                    .buffered
                    .as_mut()
                    .map(std::mem::take)
                    .unwrap_or_default();
                self.forward_data(id, dir, bytes, eos);
            }
        }
        if had_trailers {
            let from_current = self
                .half_mut(id, dir)
                .is_some_and(|h| h.iterate_from_current);
            if from_current {
                self.filter_trailers(id, dir);
            } else {
                self.forward_trailers(id, dir);
            }
        }
        if let Some(half) = self.half_mut(id, dir) {
            half.iterate_from_current = false;
        }
        self.check_low_watermark(id, dir);
    }

    /// The buffered data's high watermark (`WatermarkBuffer`, high = the stream's buffer
    /// limit, fired once when the length goes above it): while streaming, back-pressure
    /// (`on{De,En}coderFilterAboveWriteBufferHighWatermark`: the source stops reading);
    /// otherwise `requestDataTooLarge` (413 local reply) / `responseDataTooLarge` (500 local
    /// reply: a reset if the client already got headers, a direct reply if they are held).
    fn check_high_watermark(&mut self, id: u32, dir: Direction) {
        let limit = self.state().buffer_limit as usize;
        let Some(half) = self.half_mut(id, dir) else {
            return;
        };
        let len = half.buffered.as_ref().map_or(0, |b| b.len());
        if limit == 0 || len <= limit || half.above_high || half.aborted {
            return;
        }
        half.above_high = true;
        if half.streaming {
            half.read_disabled = true;
            return;
        }
        let (status, text, details) = match dir {
            Direction::Request => (413, "Payload Too Large", "request_payload_too_large"),
            Direction::Response => (500, "Internal Server Error", "response_payload_too_large"),
        };
        let reply = LocalReply {
            status,
            body: text.as_bytes().to_vec(),
            headers: Headers::new(),
            grpc_status: None,
            details: details.into(),
        };
        self.send_local_reply(id, reply, false);
    }

    /// The low watermark (half the limit): reading resumes.
    fn check_low_watermark(&mut self, id: u32, dir: Direction) {
        let limit = self.state().buffer_limit as usize;
        let Some(half) = self.half_mut(id, dir) else {
            return;
        };
        let len = half.buffered.as_ref().map_or(0, |b| b.len());
        if !half.above_high || len > limit / 2 {
            return;
        }
        half.above_high = false;
        half.read_disabled = false;
    }

    fn push_frame(&mut self, id: u32, dir: Direction, frame: Frame, ends: bool) {
        let Some(half) = self.half_mut(id, dir) else {
            return;
        };
        if half.end_forwarded {
            return;
        }
        half.out.push(frame);
        if ends {
            half.end_forwarded = true;
            if dir == Direction::Response {
                self.finish_stream(id);
            }
        }
    }

    fn forward_headers(&mut self, id: u32, dir: Direction, end_stream: bool) {
        let Some(headers) = self.half_mut(id, dir).and_then(|h| h.headers.clone()) else {
            return;
        };
        self.push_frame(
            id,
            dir,
            Frame::Headers {
                headers,
                end_stream,
            },
            end_stream,
        );
    }

    fn forward_data(&mut self, id: u32, dir: Direction, bytes: Vec<u8>, end_stream: bool) {
        // Codecs send nothing for an empty non-final chunk.
        if bytes.is_empty() && !end_stream {
            return;
        }
        self.push_frame(id, dir, Frame::Data { bytes, end_stream }, end_stream);
    }

    fn forward_trailers(&mut self, id: u32, dir: Direction) {
        let Some(trailers) = self.half_mut(id, dir).and_then(|h| h.trailers.clone()) else {
            return;
        };
        self.push_frame(id, dir, Frame::Trailers(trailers), true);
    }

    /// `sendLocalReply`: through the encoder chain (our filter sees it) if no response has
    /// started, straight to the codec if upstream headers are held, a reset if the client
    /// already got headers. The upstream request is abandoned either way.
    pub(crate) fn send_local_reply(&mut self, id: u32, reply: LocalReply, failure: bool) {
        let Some(st) = self.stream_mut(id) else {
            return;
        };
        if st.finished {
            return;
        }
        if st.response.headers_continued {
            // Recorded (Envoy's response code details), but the client gets a reset.
            st.local_reply = Some(reply);
            self.reset_stream(id);
            return;
        }
        if failure {
            st.failure_local_reply_sent = true;
        }
        let is_grpc = st.grpc_request;
        st.local_reply = Some(reply.clone());
        if st.request.headers_continued && !st.request.end_forwarded {
            st.request.out.push(Frame::Reset);
        }
        st.request.end_forwarded = true;
        st.request.aborted = true;
        let direct = st.response.headers.is_some();
        let (headers, body) = local_reply_message(&reply, is_grpc);
        let out = std::mem::take(&mut st.response.out);
        st.response = Half::new();
        st.response.out = out;
        if direct {
            st.response.aborted = true;
            let eos = body.is_empty();
            st.response.out.push(Frame::Headers {
                headers,
                end_stream: eos,
            });
            if !eos {
                st.response.out.push(Frame::Data {
                    bytes: body,
                    end_stream: true,
                });
            }
            st.response.end_forwarded = true;
            self.finish_stream(id);
            return;
        }
        let eos = body.is_empty();
        self.on_headers(id, Direction::Response, headers, eos);
        if !eos {
            self.on_data(id, Direction::Response, body, true);
        }
    }

    /// A reset from either side, or `proxy_close_stream`.
    pub(crate) fn reset_stream(&mut self, id: u32) {
        let Some(st) = self.stream_mut(id) else {
            return;
        };
        if st.finished {
            return;
        }
        for half in [&mut st.request, &mut st.response] {
            if !half.end_forwarded {
                half.out.push(Frame::Reset);
                half.end_forwarded = true;
            }
            half.aborted = true;
        }
        self.finish_stream(id);
    }

    /// End of the stream: access log, then `proxy_on_done` and `proxy_on_delete`; the
    /// context is gone afterwards (set_effective_context to it answers BadArgument).
    fn finish_stream(&mut self, id: u32) {
        let Some(st) = self.stream_mut(id) else {
            return;
        };
        if st.finished {
            return;
        }
        st.finished = true;
        st.request.aborted = st.request.aborted || !st.request.end_forwarded;
        let created = st.vm_context_created;
        if created && !self.is_failed() {
            self.state_mut().in_log_phase = true;
            // Context ids of finished streams must still resolve during these calls.
            self.with_live_context(id, |p| {
                p.invoke("proxy_on_log", id, &[id as i32]);
            });
            self.state_mut().in_log_phase = false;
            self.with_live_context(id, |p| {
                p.invoke("proxy_on_done", id, &[id as i32]);
                p.invoke("proxy_on_delete", id, &[id as i32]);
            });
            self.run_deferred();
        }
    }

    fn with_live_context(&mut self, id: u32, f: impl FnOnce(&mut Plugin)) {
        if let Some(st) = self.stream_mut(id) {
            st.finished = false;
        }
        f(self);
        if let Some(st) = self.stream_mut(id) {
            st.finished = true;
        }
    }
}

/// Envoy's `Grpc::Common::hasGrpcContentType`: `application/grpc` exactly or followed by
/// `+` or `;` (so gRPC-web is *not* gRPC here).
pub(crate) fn is_grpc_request(headers: &Headers) -> bool {
    let Some(ct) = headers.get("content-type") else {
        return false;
    };
    match ct.strip_prefix("application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'),
        None => false,
    }
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus`.
fn http_to_grpc_status(code: u32) -> u32 {
    match code {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

fn percent_encode(body: &[u8]) -> String {
    let mut out = String::new();
    for &b in body {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Envoy's `Utility::encodeLocalReply`: gRPC requests get a trailers-only 200 with
/// grpc-status (and grpc-message from the body); others get the status and a text body.
fn local_reply_message(reply: &LocalReply, is_grpc: bool) -> (Headers, Vec<u8>) {
    let mut h = Headers::new();
    let body = if is_grpc {
        h.add(":status", "200");
        h.add("content-type", "application/grpc");
        let grpc = reply
            .grpc_status
            .unwrap_or_else(|| http_to_grpc_status(reply.status));
        h.add("grpc-status", &grpc.to_string());
        if !reply.body.is_empty() {
            h.add("grpc-message", &percent_encode(&reply.body));
        }
        Vec::new()
    } else {
        h.add(":status", &reply.status.to_string());
        if !reply.body.is_empty() {
            h.add("content-length", &reply.body.len().to_string());
            h.add("content-type", "text/plain");
        }
        reply.body.clone()
    };
    for (k, v) in reply.headers.iter() {
        h.add(k, v);
    }
    (h, body)
}

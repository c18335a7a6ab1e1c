//! The in-process tonic test backend implementing `bridge.test.BridgeTest`.
//!
//! `Backend::spawn()` runs it on its own Tokio runtime in a background thread (so it outlives any
//! test's runtime), listening on 127.0.0.1:0, and returns its address plus a handle on its shared
//! state (call records and gates). Everything the state holds is also reachable over RPC
//! (`ReleaseGate`, `GetCallInfo`) for out-of-process clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::pb::bridge_test_server::{BridgeTest, BridgeTestServer};
use crate::pb::*;
use crate::util::ServerThread;

/// Largest message the backend accepts or sends.
pub const MAX_MESSAGE: usize = 64 << 20;

/// The byte at offset `i` of a generated payload (a pattern that catches reordering and
/// truncation, not just wrong lengths).
pub fn pattern_byte(i: usize) -> u8 {
    ((i * 31 + i / 251) % 251) as u8
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// Parse a grpc-timeout header value ("300m", "5S", ...).
pub fn parse_grpc_timeout(s: &str) -> Option<Duration> {
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (num, unit) = s.split_at(s.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What the backend recorded about one call made with a token.
#[derive(Clone, Debug, Default)]
pub struct CallRecord {
    pub started: bool,
    pub deadline_exceeded: bool,
    pub finished: bool,
    pub cancelled: bool,
    pub grpc_timeout: String,
    pub elapsed_ms: i64,
    pub request_metadata: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
pub struct State {
    calls: Mutex<HashMap<String, CallRecord>>,
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    /// Seq* RPCs: barriers by `x-barrier` token (calls arrived so far).
    barriers: Mutex<HashMap<String, Arc<tokio::sync::watch::Sender<usize>>>>,
    /// SeqServerStream: payload bytes handed to the transport so far, by token.
    seq_sent: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
}

/// A Seq* call's place at its barrier (request metadata `x-barrier`, `x-parties`).
struct SeqBarrier {
    arrived: Arc<tokio::sync::watch::Sender<usize>>,
    parties: usize,
}

impl SeqBarrier {
    /// Arrive and wait (at most 30 s) until all parties have arrived.
    async fn arrive_and_wait(&self) -> Result<(), Status> {
        self.arrived.send_modify(|n| *n += 1);
        let mut rx = self.arrived.subscribe();
        let parties = self.parties;
        let arrived = tokio::time::timeout(Duration::from_secs(30), async {
            rx.wait_for(|n| *n >= parties).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if arrived {
            return Ok(());
        }
        let n = *self.arrived.borrow();
        Err(Status::aborted(format!(
            "barrier: only {n} of {parties} calls arrived within 30 s"
        )))
    }
}

impl State {
    pub fn call(&self, token: &str) -> Option<CallRecord> {
        self.calls.lock().unwrap().get(token).cloned()
    }

    fn gate(&self, token: &str) -> (Arc<Notify>, bool) {
        let mut g = self.gates.lock().unwrap();
        let existed = g.contains_key(token);
        (g.entry(token.to_string()).or_default().clone(), existed)
    }

    /// SeqServerStream calls with `token`: payload bytes handed to the transport so far;
    /// SeqClientStream calls with `x-pause-gate: token`: payload bytes read so far.
    pub fn seq_sent(&self, token: &str) -> u64 {
        self.seq_counter(token)
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn seq_counter(&self, token: &str) -> Arc<std::sync::atomic::AtomicU64> {
        self.seq_sent
            .lock()
            .unwrap()
            .entry(token.to_string())
            .or_default()
            .clone()
    }

    fn seq_barrier(&self, md: &MetadataMap) -> Result<Option<SeqBarrier>, Status> {
        let Some(token) = md.get("x-barrier").and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let parties = md
            .get("x-parties")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or_else(|| Status::invalid_argument("x-barrier needs x-parties"))?;
        let arrived = self
            .barriers
            .lock()
            .unwrap()
            .entry(token.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::watch::Sender::new(0)))
            .clone();
        Ok(Some(SeqBarrier { arrived, parties }))
    }

    /// Release the gate `token` (a permit is stored if nobody waits yet). Returns whether the
    /// gate had been registered by a call.
    pub fn release_gate(&self, token: &str) -> bool {
        let (n, existed) = self.gate(token);
        n.notify_one();
        existed
    }
}

/// Marks a call record finished, or cancelled when dropped before `finish()`.
struct CallGuard {
    state: Arc<State>,
    token: String,
    start: Instant,
    done: bool,
}

impl CallGuard {
    fn new(state: &Arc<State>, token: &str, md: &MetadataMap) -> Option<CallGuard> {
        if token.is_empty() {
            return None;
        }
        let rec = CallRecord {
            started: true,
            grpc_timeout: md
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            request_metadata: metadata_pairs(md),
            ..Default::default()
        };
        state.calls.lock().unwrap().insert(token.to_string(), rec);
        Some(CallGuard {
            state: state.clone(),
            token: token.to_string(),
            start: Instant::now(),
            done: false,
        })
    }

    fn finish(mut self) {
        self.done = true;
        self.update(|r, ms| {
            r.finished = true;
            r.elapsed_ms = ms
        });
    }

    /// Mark the call as ended (neither finished normally nor cancelled) after `f`.
    fn done_with(mut self, f: impl FnOnce(&mut CallRecord)) {
        self.done = true;
        self.update(|r, ms| {
            f(r);
            r.elapsed_ms = ms
        });
    }

    fn update(&self, f: impl FnOnce(&mut CallRecord, i64)) {
        let ms = self.start.elapsed().as_millis() as i64;
        if let Some(r) = self.state.calls.lock().unwrap().get_mut(&self.token) {
            f(r, ms);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.update(|r, ms| {
                r.cancelled = true;
                r.elapsed_ms = ms
            });
        }
    }
}

/// Runs a streaming call's `work` (true: it ran to its end) until the client drops the
/// response stream (`tx` closes); the call is recorded finished only if the work ended first and
/// completed, else its guard drops unfinished: recorded as cancelled.
async fn finish_unless_dropped<T>(
    work: impl std::future::Future<Output = bool>,
    tx: &mpsc::Sender<T>,
    guard: Option<CallGuard>,
) {
    let completed = tokio::select! {
        c = work => c,
        _ = tx.closed() => false,
    };
    if completed {
        if let Some(g) = guard {
            g.finish();
        }
    }
}

/// All non-pseudo request metadata; `-bin` values decoded.
pub fn metadata_pairs(md: &MetadataMap) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for kv in md.iter() {
        match kv {
            KeyAndValueRef::Ascii(k, v) => out.push((k.to_string(), v.as_bytes().to_vec())),
            KeyAndValueRef::Binary(k, v) => {
                let val = v
                    .to_bytes()
                    .map(|b| b.to_vec())
                    .unwrap_or_else(|_| b"<bad base64>".to_vec());
                out.push((k.to_string(), val))
            }
        }
    }
    out
}

/// Append `entries` to `md` (`-bin` keys as binary, others as ASCII).
pub fn add_metadata(md: &mut MetadataMap, entries: &[Metadata]) -> Result<(), Status> {
    for e in entries {
        if e.key.ends_with("-bin") {
            let k = MetadataKey::from_bytes(e.key.as_bytes())
                .map_err(|_| Status::invalid_argument(format!("bad key {}", e.key)))?;
            md.append_bin(k, MetadataValue::from_bytes(&e.value));
        } else {
            let k = MetadataKey::from_bytes(e.key.as_bytes())
                .map_err(|_| Status::invalid_argument(format!("bad key {}", e.key)))?;
            let v = MetadataValue::try_from(e.value.as_slice())
                .map_err(|_| Status::invalid_argument(format!("bad value for {}", e.key)))?;
            md.append(k, v);
        }
    }
    Ok(())
}

fn to_proto_md(pairs: &[(String, Vec<u8>)]) -> Vec<Metadata> {
    pairs
        .iter()
        .map(|(k, v)| Metadata {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// Trailers a successful response should carry in addition to grpc-status (tonic itself has no
/// API for custom trailers on success). Put into the response extensions by a handler and
/// merged into the trailers by `trailer_layer`.
#[derive(Clone)]
struct ExtraTrailers(http::HeaderMap);

fn extra_trailers(entries: &[Metadata]) -> Result<Option<ExtraTrailers>, Status> {
    if entries.is_empty() {
        return Ok(None);
    }
    let mut md = MetadataMap::new();
    add_metadata(&mut md, entries)?;
    Ok(Some(ExtraTrailers(md.into_headers())))
}

fn status_with(code: i32, message: &str, trailers: &[Metadata]) -> Result<Status, Status> {
    let mut md = MetadataMap::new();
    add_metadata(&mut md, trailers)?;
    Ok(Status::with_metadata(
        tonic::Code::from_i32(code),
        message.to_string(),
        md,
    ))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct Service {
    state: Arc<State>,
}

#[tonic::async_trait]
impl BridgeTest for Service {
    async fn unary(&self, req: Request<UnaryRequest>) -> Result<Response<UnaryResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let guard = CallGuard::new(&self.state, &r.token, &md);
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(r.delay_ms as u64)).await;
        }
        if r.status_code != 0 {
            // Trailers-Only: tonic puts the status and its metadata into the response headers.
            let mut all = r.response_headers.clone();
            all.extend(r.response_trailers.iter().cloned());
            let st = status_with(r.status_code, &r.status_message, &all)?;
            if let Some(g) = guard {
                g.finish();
            }
            return Err(st);
        }
        let payload = if r.response_size > 0 {
            pattern(r.response_size as usize)
        } else {
            r.payload.clone()
        };
        let mut resp = Response::new(UnaryResponse {
            payload,
            request_metadata: if r.echo_metadata {
                to_proto_md(&metadata_pairs(&md))
            } else {
                vec![]
            },
            request_payload_size: r.payload.len() as i32,
        });
        add_metadata(resp.metadata_mut(), &r.response_headers)?;
        if let Some(t) = extra_trailers(&r.response_trailers)? {
            resp.extensions_mut().insert(t);
        }
        if let Some(g) = guard {
            g.finish();
        }
        Ok(resp)
    }

    type ServerStreamStream = BoxStream<StreamResponse>;

    async fn server_stream(
        &self,
        req: Request<StreamRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let guard = CallGuard::new(&self.state, &r.token, &md);
        let final_status = if r.final_status_code != 0 {
            Some(status_with(
                r.final_status_code,
                &r.final_status_message,
                &r.response_trailers,
            )?)
        } else {
            None
        };
        // On success the requested trailers ride in the extensions (see `trailer_layer`); on a
        // final error they are part of the error status.
        let success_trailers = if final_status.is_none() {
            extra_trailers(&r.response_trailers)?
        } else {
            None
        };
        let mut headers = MetadataMap::new();
        add_metadata(&mut headers, &r.response_headers)?;
        // Register the gate before the first message goes out, so a release can never be lost.
        let gate = if r.gate_token.is_empty() {
            None
        } else {
            Some(self.state.gate(&r.gate_token).0)
        };
        let (tx, rx) = mpsc::channel::<Result<StreamResponse, Status>>(4);
        tokio::spawn(async move {
            let work = async {
                for i in 0..r.count {
                    if i > 0 && r.interval_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(r.interval_ms as u64)).await;
                    }
                    let msg = StreamResponse {
                        index: i,
                        payload: pattern(r.payload_size.max(0) as usize),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return false;
                    }
                    if i == 0 {
                        if let Some(g) = &gate {
                            if tokio::time::timeout(Duration::from_secs(20), g.notified())
                                .await
                                .is_err()
                            {
                                let _ = tx.send(Err(Status::aborted("gate timeout"))).await;
                                return true;
                            }
                        }
                    }
                }
                if let Some(st) = final_status {
                    let _ = tx.send(Err(st)).await;
                }
                true
            };
            finish_unless_dropped(work, &tx, guard).await;
        });
        let mut resp = Response::new(Box::pin(ReceiverStream::new(rx)) as Self::ServerStreamStream);
        *resp.metadata_mut() = headers;
        if let Some(t) = success_trailers {
            resp.extensions_mut().insert(t);
        }
        Ok(resp)
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<ClientStreamRequest>>,
    ) -> Result<Response<ClientStreamResponse>, Status> {
        let mut s = req.into_inner();
        let mut out = ClientStreamResponse::default();
        while let Some(m) = s.message().await? {
            out.count += 1;
            out.sum += m.value;
            out.sizes.push(m.payload.len() as i32);
        }
        Ok(Response::new(out))
    }

    type BidiStream = BoxStream<BidiResponse>;

    async fn bidi(
        &self,
        req: Request<Streaming<BidiRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let mut s = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<BidiResponse, Status>>(4);
        tokio::spawn(async move {
            loop {
                match s.message().await {
                    Ok(Some(m)) => {
                        let payload = if m.response_size > 0 {
                            pattern(m.response_size as usize)
                        } else {
                            m.payload
                        };
                        if tx
                            .send(Ok(BidiResponse {
                                seq: m.seq,
                                payload,
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(st) => {
                        let _ = tx.send(Err(st)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn sleep(&self, req: Request<SleepRequest>) -> Result<Response<SleepResponse>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let guard = CallGuard::new(&self.state, &r.token, &md);
        // Enforce the deadline a little before tonic's own server-side timeout would (which
        // answers CANCELLED), so the status is DEADLINE_EXCEEDED as from grpc-go/grpc-java.
        let deadline = md
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|d| d.saturating_sub(Duration::from_millis(2)));
        let sleep = tokio::time::sleep(Duration::from_millis(r.sleep_ms.max(0) as u64));
        match deadline {
            Some(d) if d < Duration::from_millis(r.sleep_ms.max(0) as u64) => {
                tokio::time::sleep(d).await;
                if let Some(g) = guard {
                    g.done_with(|rec| rec.deadline_exceeded = true);
                }
                return Err(Status::deadline_exceeded("deadline exceeded (backend)"));
            }
            _ => sleep.await,
        }
        if let Some(g) = guard {
            g.finish();
        }
        Ok(Response::new(SleepResponse {
            slept_ms: r.sleep_ms,
        }))
    }

    type HoldStream = BoxStream<HoldResponse>;

    async fn hold(&self, req: Request<HoldRequest>) -> Result<Response<Self::HoldStream>, Status> {
        let md = req.metadata().clone();
        let r = req.into_inner();
        let guard = CallGuard::new(&self.state, &r.token, &md);
        let hold = Duration::from_millis(if r.hold_ms > 0 {
            r.hold_ms as u64
        } else {
            30_000
        });
        let (tx, rx) = mpsc::channel::<Result<HoldResponse, Status>>(2);
        tokio::spawn(async move {
            let work = async {
                if tx
                    .send(Ok(HoldResponse {
                        note: "holding".into(),
                    }))
                    .await
                    .is_err()
                {
                    return false;
                }
                tokio::time::sleep(hold).await;
                true
            };
            finish_unless_dropped(work, &tx, guard).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SeqServerStreamStream = BoxStream<SeqMessage>;

    async fn seq_server_stream(
        &self,
        req: Request<SeqRequest>,
    ) -> Result<Response<Self::SeqServerStreamStream>, Status> {
        let barrier = self.state.seq_barrier(req.metadata())?;
        let r = req.into_inner();
        let sent = (!r.token.is_empty()).then(|| self.state.seq_counter(&r.token));
        let (tx, rx) = mpsc::channel::<Result<SeqMessage, Status>>(4);
        tokio::spawn(async move {
            for seq in 0..r.count {
                let m = crate::seq::message(r.stream, seq, r.payload_size as usize);
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
                if let Some(n) = &sent {
                    n.fetch_add(
                        u64::from(r.payload_size),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                if seq == 0 {
                    if let Some(b) = &barrier {
                        if let Err(st) = b.arrive_and_wait().await {
                            let _ = tx.send(Err(st)).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn seq_client_stream(
        &self,
        req: Request<Streaming<SeqMessage>>,
    ) -> Result<Response<SeqSummary>, Status> {
        let barrier = self.state.seq_barrier(req.metadata())?;
        // `x-pause-gate: <token>`: stop reading after the first message until the gate is
        // released (backpressure tests); `seq_sent(token)` counts the payload bytes read.
        let pause = req
            .metadata()
            .get("x-pause-gate")
            .and_then(|v| v.to_str().ok())
            .map(|t| (self.state.gate(t).0, self.state.seq_counter(t)));
        let mut s = req.into_inner();
        let mut count = 0u32;
        let mut stream = None;
        while let Some(m) = s.message().await? {
            let id = *stream.get_or_insert(m.stream);
            crate::seq::check(&m, id, count, None).map_err(Status::data_loss)?;
            count += 1;
            if let Some((_, read)) = &pause {
                read.fetch_add(m.payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            if count == 1 {
                if let Some(b) = &barrier {
                    b.arrive_and_wait().await?;
                }
                if let Some((gate, _)) = &pause {
                    tokio::time::timeout(Duration::from_secs(60), gate.notified())
                        .await
                        .map_err(|_| Status::aborted("pause gate not released within 60 s"))?;
                }
            }
        }
        Ok(Response::new(SeqSummary { count }))
    }

    type SeqBidiStream = BoxStream<SeqMessage>;

    async fn seq_bidi(
        &self,
        req: Request<Streaming<SeqMessage>>,
    ) -> Result<Response<Self::SeqBidiStream>, Status> {
        let barrier = self.state.seq_barrier(req.metadata())?;
        let mut s = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<SeqMessage, Status>>(4);
        tokio::spawn(async move {
            let mut expect = 0u32;
            let mut stream = None;
            loop {
                let m = match s.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(st) => {
                        let _ = tx.send(Err(st)).await;
                        return;
                    }
                };
                let id = *stream.get_or_insert(m.stream);
                if let Err(e) = crate::seq::check(&m, id, expect, None) {
                    let _ = tx.send(Err(Status::data_loss(e))).await;
                    return;
                }
                let answer = crate::seq::message(id, expect, m.payload.len());
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
                if expect == 0 {
                    if let Some(b) = &barrier {
                        if let Err(st) = b.arrive_and_wait().await {
                            let _ = tx.send(Err(st)).await;
                            return;
                        }
                    }
                }
                expect += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn release_gate(
        &self,
        req: Request<GateRequest>,
    ) -> Result<Response<GateResponse>, Status> {
        let had_waiter = self.state.release_gate(&req.into_inner().token);
        Ok(Response::new(GateResponse { had_waiter }))
    }

    async fn get_call_info(
        &self,
        req: Request<CallInfoRequest>,
    ) -> Result<Response<CallInfo>, Status> {
        let token = req.into_inner().token;
        let info = match self.state.call(&token) {
            None => CallInfo::default(),
            Some(r) => CallInfo {
                known: true,
                started: r.started,
                finished: r.finished,
                cancelled: r.cancelled,
                deadline_exceeded: r.deadline_exceeded,
                grpc_timeout: r.grpc_timeout.clone(),
                elapsed_ms: r.elapsed_ms,
                request_metadata: to_proto_md(&r.request_metadata),
            },
        };
        Ok(Response::new(info))
    }
}

/// Merge `ExtraTrailers` from the response extensions into the response's trailers.
fn merge_trailers(resp: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let Some(ExtraTrailers(extra)) = resp.extensions().get::<ExtraTrailers>().cloned() else {
        return resp;
    };
    let (parts, body) = resp.into_parts();
    let body = body.map_frame(move |f| match f.into_trailers() {
        Ok(mut t) => {
            for (k, v) in extra.iter() {
                t.append(k.clone(), v.clone());
            }
            http_body::Frame::trailers(t)
        }
        Err(f) => f,
    });
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}

/// A running backend. Dropping it shuts the server down.
pub struct Backend {
    pub addr: SocketAddr,
    /// Call records and gates (empty for a backend in its own process: use the RPCs).
    pub state: Arc<State>,
    /// The in-process server (None for a backend process, or once killed).
    server: Option<ServerThread>,
    /// Set when the backend runs as its own process (`test-backend`), so it can be SIGKILLed.
    process: Option<crate::util::Process>,
}

impl Backend {
    /// Start on 127.0.0.1:0 on a dedicated runtime thread.
    pub fn spawn() -> Backend {
        Self::spawn_on("127.0.0.1:0").expect("bind backend")
    }

    /// Start on `addr` on a dedicated runtime thread.
    pub fn spawn_on(addr: impl std::net::ToSocketAddrs) -> std::io::Result<Backend> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let serve = async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let svc = BridgeTestServer::new(Service { state: st })
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let server = tonic::transport::Server::builder()
                .layer(tower::util::MapResponseLayer::new(merge_trailers))
                .add_service(svc)
                .serve_with_incoming(incoming);
            if let Err(e) = server.await {
                eprintln!("test backend: {e}")
            }
        };
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.worker_threads(2);
        let server =
            ServerThread::spawn("test-backend", runtime, serve).map_err(std::io::Error::other)?;
        Ok(Backend {
            addr,
            state,
            server: Some(server),
            process: None,
        })
    }

    /// Start the `test-backend` binary (`bin`, e.g. `env!("CARGO_BIN_EXE_test-backend")` in an
    /// integration test) as a child process on a free port: a backend that can really be killed
    /// (see [`Backend::kill`]). Call records are reachable over RPC only.
    pub fn spawn_process(bin: &std::path::Path) -> Result<Backend, String> {
        let dir = crate::util::temp_dir("test-backend-")?;
        let log = dir.path().join("backend.log");
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["--port", "0"]);
        let mut process = crate::util::Process::spawn("test-backend", cmd, log, Some(dir))?;
        let addr = crate::util::wait_until(Duration::from_secs(10), || {
            if process.check_running().is_err() {
                return Some(None);
            }
            process
                .log()
                .lines()
                .find_map(|l| l.strip_prefix("test backend listening on "))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
                .map(Some)
        })
        .flatten();
        let Some(addr) = addr else {
            process.check_running()?;
            return Err(format!(
                "test-backend printed no address\n{}",
                process.log_tail(20)
            ));
        };
        Ok(Backend {
            addr,
            state: Arc::new(State::default()),
            server: None,
            process: Some(process),
        })
    }

    /// Kill the backend now: SIGKILL for a backend process (the kernel closes its sockets);
    /// for an in-process backend, its runtime is dropped, which closes every connection
    /// without a GOAWAY. Idempotent.
    pub fn kill(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.signal(libc::SIGKILL);
            p.stop();
        }
        // Dropping the server thread stops the runtime and joins it.
        self.server = None;
    }

    /// The backend's process (None for an in-process backend).
    pub fn process(&self) -> Option<&crate::util::Process> {
        self.process.as_ref()
    }

    pub fn call(&self, token: &str) -> Option<CallRecord> {
        self.state.call(token)
    }
}

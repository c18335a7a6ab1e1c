//! Tunnel server side (server Envoy): `client -> [wasm tunnel_server] -> tcp_proxy -> backend`.
//!
//! Parses and checks the upgrade request (path, subprotocol, required headers), then unwraps
//! the client's masked frames toward the backend and wraps the backend's bytes as unmasked
//! frames. A network filter can write toward the client only inside `on_upstream_data`, so the
//! `101`, pongs and closes go out with the next backend bytes. `tcp_proxy` connects to the backend
//! at once, so its HTTP/2 SETTINGS can arrive before the upgrade request is complete: those bytes
//! are kept and sent behind the `101`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use crate::auth::{self, PeerCertificate};
use crate::codec::h2::{
    ping_frame, BackendFrameFilter, FrameWalker, PrefaceStripper, EMPTY_SETTINGS, NUDGE_OPAQUE,
    PREFACE,
};
use crate::codec::websocket::{
    accept_key, close_code, close_payload, encode_frame, encode_handshake_rejection,
    encode_server_handshake, parse_client_handshake, FrameDecoder, HandshakeError, Opcode,
    ParsedRequest, Side, WsEvent,
};
use crate::config::TunnelServerConfig;
use crate::context::{NetworkAction, NetworkStream};
use crate::host::{self, BufferType, LogLevel, StreamType};
use crate::metrics::Metrics;
use crate::tunnel::{tunnel_headers_match, wrap_binary, MAX_CONTROL_QUEUE, MAX_HANDSHAKE_BYTES};

/// Root ticks (`root::CLOSE_TICK_MS` each, so 1 s) a connection that failed keeps open after
/// its close frame, so the frame reaches the client before the connection drops.
const CLOSE_GRACE_TICKS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingUpgrade,
    Open,
    /// Rejected or closed: nothing more is forwarded to the backend.
    Closed,
}

pub struct TunnelServer {
    id: u32,
    cfg: Rc<TunnelServerConfig>,
    state: State,
    head: Vec<u8>,
    decoder: FrameDecoder,
    /// The `101` (or a rejection), sent with the next backend bytes.
    pending_head: Option<Vec<u8>>,
    /// Backend bytes that arrived before the upgrade was accepted.
    early_upstream: Vec<u8>,
    /// Control frames waiting for the next chance to go to the client.
    to_downstream: Vec<u8>,
    /// The client's own HTTP/2 preface is removed: the backend got ours (see codec::h2).
    client_preface: PrefaceStripper,
    /// The backend's answers to our own frames (SETTINGS ACK, nudge PING ACKs) are removed.
    backend_filter: BackendFrameFilter,
    /// Frame boundaries of what goes to the backend, so a nudge PING can be slipped in.
    to_backend: FrameWalker,
    /// Something waits to go to the client (pong, close): make the backend speak.
    nudge_wanted: bool,
    /// Payload of the latest unanswered ping.
    pending_pong: Option<Vec<u8>>,
    close_sent: bool,
    /// Our last bytes (a refusal, a close for a protocol error) went out: close the connection
    /// at the next downstream event or tick.
    close_due: bool,
    /// Root ticks to wait before closing (see `schedule_close_after_close_frame`).
    close_grace_ticks: u32,
    /// The root's set of connections to close at its next tick.
    closing: Rc<RefCell<BTreeSet<u32>>>,
    metrics: Rc<Metrics>,
}

impl TunnelServer {
    pub fn new(
        id: u32,
        cfg: Rc<TunnelServerConfig>,
        metrics: Rc<Metrics>,
        closing: Rc<RefCell<BTreeSet<u32>>>,
    ) -> Self {
        let max = u64::from(cfg.max_frame_bytes);
        TunnelServer {
            id,
            cfg,
            state: State::AwaitingUpgrade,
            head: Vec::new(),
            decoder: FrameDecoder::new(Side::Server, max),
            pending_head: None,
            early_upstream: Vec::new(),
            to_downstream: Vec::new(),
            pending_pong: None,
            client_preface: PrefaceStripper::new(),
            backend_filter: BackendFrameFilter::new(),
            to_backend: FrameWalker::new(),
            nudge_wanted: false,
            close_sent: false,
            close_due: false,
            close_grace_ticks: 0,
            closing,
            metrics,
        }
    }

    /// Checks path, subprotocol and required headers; returns the HTTP status of a refusal.
    fn check(&self, req: &ParsedRequest) -> Result<(), (u16, String)> {
        let path = req.path.split('?').next().unwrap_or("");
        if path != self.cfg.tunnel_path {
            return Err((404, format!("no tunnel at {path}")));
        }
        if !req.protocols.iter().any(|p| p == &self.cfg.tunnel_protocol) {
            return Err((
                400,
                format!("subprotocol {} required", self.cfg.tunnel_protocol),
            ));
        }
        if !tunnel_headers_match(&self.cfg.tunnel_headers, |name| req.header(name)) {
            return Err((403, "tunnel authentication failed".to_string()));
        }
        if let Some(a) = self.cfg.auth.as_ref() {
            if let Err(f) = auth::verify(
                a,
                req.header(&a.secret_header).map(str::as_bytes),
                &PeerCertificate::for_config(a),
            ) {
                self.metrics.inc(&format!("auth_failures.{}", f.kind()));
                return Err((f.http_status(), f.message().to_string()));
            }
        }
        Ok(())
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.close_sent && self.to_downstream.len() <= MAX_CONTROL_QUEUE {
            self.close_sent = true;
            encode_frame(
                true,
                Opcode::Close,
                None,
                &close_payload(code, reason),
                &mut self.to_downstream,
            );
        }
    }

    /// The refusal (like the 101) can only go out with backend bytes: a preface and an empty
    /// SETTINGS make the backend answer at once. The connection is refused, so nothing else of
    /// the client ever reaches the backend.
    fn make_backend_answer(out: &mut Vec<u8>) {
        out.extend_from_slice(PREFACE);
        out.extend_from_slice(&EMPTY_SETTINGS);
    }

    fn refuse(&mut self, status: u16, reason: &str) {
        host::log(
            LogLevel::Info,
            &format!(
                "grpc-bridge tunnel server {}: refusing upgrade: {status} {reason}",
                self.id
            ),
        );
        self.metrics.inc(&format!("upgrades_refused.{status}"));
        self.pending_head = Some(encode_handshake_rejection(status, reason));
        self.state = State::Closed;
    }

    fn unwrap(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut events = Vec::new();
        let before = out.len();
        let res = if self.client_preface.is_done() {
            // Steady state: unmask straight into the output (one copy).
            self.decoder.decode_into(input, out, &mut events)
        } else {
            let mut raw = Vec::with_capacity(input.len());
            let res = self.decoder.decode_into(input, &mut raw, &mut events);
            if self.client_preface.feed(&raw, out).is_err() {
                self.queue_close(close_code::PROTOCOL_ERROR, "the tunnel carries HTTP/2 only");
                self.state = State::Closed;
                self.nudge_wanted = true;
                return;
            }
            res
        };
        self.to_backend.feed(out.get(before..).unwrap_or(&[]));
        for ev in events {
            match ev {
                // Only the latest ping is answered (RFC 6455 5.5.3 allows it): pongs wait for
                // the next backend bytes, and an idle tunnel must not pile them up.
                WsEvent::Ping(p) => {
                    self.pending_pong = Some(p);
                    self.nudge_wanted = true;
                }
                WsEvent::Close { code, .. } => {
                    self.queue_close(code.unwrap_or(close_code::NORMAL), "");
                    self.nudge_wanted = true;
                }
                WsEvent::Pong(_) | WsEvent::Data(_) | WsEvent::MessageEnd => {}
            }
        }
        if let Err(e) = res {
            self.metrics.inc("errors.bad_frame");
            host::log(
                LogLevel::Info,
                &format!("grpc-bridge tunnel server {}: invalid frame: {e}", self.id),
            );
            self.queue_close(e.close_code, &e.reason);
            self.state = State::Closed;
            // The close frame goes out with the backend's next bytes: make it speak now (the
            // backend may wait for the rest of a request it will never get).
            self.nudge_wanted = true;
        }
    }
}

impl NetworkStream for TunnelServer {
    /// The root's tick (tunnel_server roots tick every `CLOSE_TICK_MS`): closes a connection
    /// whose last bytes went out.
    fn on_tick(&mut self) {
        if self.close_due {
            if self.close_grace_ticks > 0 {
                self.close_grace_ticks -= 1;
            } else {
                self.close_connection();
            }
        }
    }

    fn on_downstream_data(&mut self, size: usize, _eos: bool) -> NetworkAction {
        let data = match host::get_buffer(BufferType::DownstreamData, 0, size) {
            Ok(d) => d.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut out = Vec::with_capacity(data.len());
        match self.state {
            State::AwaitingUpgrade => {
                self.head.extend_from_slice(&data);
                match parse_client_handshake(&self.head, MAX_HANDSHAKE_BYTES) {
                    Ok(None) if self.head.len() <= MAX_HANDSHAKE_BYTES => {}
                    Ok(None) | Err(HandshakeError::TooLarge) => {
                        self.refuse(431, "upgrade request too large");
                        Self::make_backend_answer(&mut out);
                    }
                    Err(e) => {
                        self.refuse(400, &e.to_string());
                        Self::make_backend_answer(&mut out);
                    }
                    Ok(Some((req, consumed))) => match self.check(&req) {
                        Err((status, why)) => {
                            self.refuse(status, &why);
                            Self::make_backend_answer(&mut out);
                        }
                        Ok(()) => {
                            self.pending_head = Some(encode_server_handshake(
                                &accept_key(&req.key),
                                Some(&self.cfg.tunnel_protocol),
                            ));
                            self.state = State::Open;
                            self.metrics.inc("upgrades");
                            // Speak first so the backend answers and the 101 can go out now,
                            // whether or not the client sends anything before it has the 101.
                            out.extend_from_slice(PREFACE);
                            out.extend_from_slice(&EMPTY_SETTINGS);
                            let rest = self.head.split_off(consumed.min(self.head.len()));
                            self.head = Vec::new();
                            self.unwrap(&rest, &mut out);
                        }
                    },
                }
            }
            State::Open => self.unwrap(&data, &mut out),
            State::Closed => {
                // Not during the grace after a close frame: closing here, right after that
                // frame went out, lost it now and then (its bytes never reached the client).
                if self.close_due && self.close_grace_ticks == 0 {
                    self.close_connection();
                }
            }
        }
        self.metrics.add("bytes_up", out.len() as u64);
        // We can write to the client only when the backend sends bytes: a pong or close reply
        // would wait for the backend's next frame. An HTTP/2 PING makes it answer now (its ACK
        // is removed on the way back), without changing the connection's semantics.
        // Before the client's preface is through, the backend has seen only our own preface and
        // SETTINGS (the stripper forwards nothing until then): a PING is in place there too.
        if self.nudge_wanted
            && self.state != State::AwaitingUpgrade
            && self.to_backend.at_boundary()
        {
            self.nudge_wanted = false;
            out.extend_from_slice(&ping_frame(NUDGE_OPAQUE));
            self.backend_filter.expect_nudge_ack();
        } else if self.nudge_wanted && self.state == State::Closed && !self.close_due {
            // Failed inside a frame toward the backend, where no PING fits: the close frame
            // may never go out, so drop the connection at the next tick; the tunnel client
            // sees the connection end (RFC 6455 7.1.7).
            host::log(
                LogLevel::Debug,
                &format!(
                    "grpc-bridge tunnel server {}: no frame boundary toward the backend; closing without a close frame",
                    self.id
                ),
            );
            self.nudge_wanted = false;
            self.schedule_close();
        }
        let _ = host::replace_buffer_prefix(BufferType::DownstreamData, size, &out);
        NetworkAction::Continue
    }

    fn on_upstream_data(&mut self, size: usize, eos: bool) -> NetworkAction {
        let data = match host::get_buffer(BufferType::UpstreamData, 0, size) {
            Ok(d) => d.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let max_frame = self.cfg.max_frame_bytes as usize;
        let mut out = Vec::new();
        if self.pending_head.is_none() && self.state == State::AwaitingUpgrade {
            // The backend spoke before the client's upgrade arrived: keep it for after the 101.
            if self.early_upstream.len() + data.len() > MAX_CONTROL_QUEUE * 16 {
                host::log(
                    LogLevel::Warn,
                    "grpc-bridge tunnel server: backend sent too much before the upgrade",
                );
                self.state = State::Closed;
                let _ = host::close_stream(StreamType::Downstream);
            } else {
                self.early_upstream.extend_from_slice(&data);
            }
            let _ = host::replace_buffer_prefix(BufferType::UpstreamData, size, &[]);
            return NetworkAction::Continue;
        }
        let rejected = self.state == State::Closed && !self.close_sent;
        if let Some(head) = self.pending_head.take() {
            out.extend_from_slice(&head);
        }
        if rejected {
            // A refused upgrade gets its HTTP answer and nothing of the backend, then the
            // connection closes (the answer says `Connection: close`). Not from here: a close
            // requested while Envoy writes these bytes loses them (measured), so the next
            // event or the root's tick closes it (`close_due`).
            let _ = host::replace_buffer_prefix(BufferType::UpstreamData, size, &out);
            self.close_sent = true;
            self.schedule_close();
            return NetworkAction::Continue;
        }
        let failing = self.state == State::Closed && !self.to_downstream.is_empty();
        if let Some(p) = self.pending_pong.take() {
            encode_frame(true, Opcode::Pong, None, &p, &mut out);
        }
        out.append(&mut self.to_downstream);
        if self.state == State::Open {
            let mut backend = Vec::with_capacity(self.early_upstream.len() + data.len());
            let early = std::mem::take(&mut self.early_upstream);
            self.backend_filter.feed(&early, &mut backend);
            self.backend_filter.feed(&data, &mut backend);
            self.metrics.add("bytes_down", backend.len() as u64);
            wrap_binary(&backend, max_frame, None, &mut out);
            if eos {
                self.queue_close(close_code::GOING_AWAY, "backend closed");
                out.append(&mut self.to_downstream);
            }
        }
        let _ = host::replace_buffer_prefix(BufferType::UpstreamData, size, &out);
        if failing {
            // RFC 6455 7.1.7: after a protocol error the endpoint sends its close frame and
            // drops the connection; a hostile client must not keep it open.
            self.schedule_close_after_close_frame();
        }
        NetworkAction::Continue
    }
}

impl TunnelServer {
    /// Closes after a grace of `CLOSE_GRACE_TICKS`: closing as soon as the client sent more
    /// bytes lost the close frame now and then (measured: about one run in five,
    /// `e2e_limits.rs`), and then the tunnel client cannot say why its calls ended.
    fn schedule_close_after_close_frame(&mut self) {
        self.schedule_close();
        self.close_grace_ticks = CLOSE_GRACE_TICKS;
    }

    fn schedule_close(&mut self) {
        self.close_due = true;
        if let Ok(mut c) = self.closing.try_borrow_mut() {
            c.insert(self.id);
        }
    }

    fn close_connection(&mut self) {
        self.close_due = false;
        if let Ok(mut c) = self.closing.try_borrow_mut() {
            c.remove(&self.id);
        }
        host::log(
            LogLevel::Debug,
            &format!(
                "grpc-bridge tunnel server {}: closing the connection",
                self.id
            ),
        );
        let _ = host::close_stream(StreamType::Downstream);
    }
}

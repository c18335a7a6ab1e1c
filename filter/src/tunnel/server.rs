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
    accept_key, close_code, encode_handshake_rejection, encode_server_handshake,
    parse_client_handshake, HandshakeError, Opcode, ParsedRequest, Side, WsEvent,
};
use crate::context::{NetworkAction, NetworkStream};
use crate::host::LogLevel;
use crate::metrics::Metrics;
use crate::tunnel::net_host::{Flow, NetHost, WasmNetHost};
use crate::tunnel::session::WsSession;
use crate::tunnel::{tunnel_headers_match, TunnelSettings, MAX_CONTROL_QUEUE, MAX_HANDSHAKE_BYTES};

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
    cfg: Rc<TunnelSettings>,
    state: State,
    head: Vec<u8>,
    /// Our WebSocket side: unmasked frames down, the client's masked frames decoded, the close
    /// frame waiting for the next chance to go to the client.
    session: WsSession,
    /// The `101` (or a rejection), sent with the next backend bytes.
    pending_head: Option<Vec<u8>>,
    /// Backend bytes that arrived before the upgrade was accepted.
    early_upstream: Vec<u8>,
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
        cfg: Rc<TunnelSettings>,
        metrics: Rc<Metrics>,
        closing: Rc<RefCell<BTreeSet<u32>>>,
    ) -> Self {
        let session = WsSession::new(Side::Server, cfg.max_frame_bytes);
        TunnelServer {
            id,
            cfg,
            state: State::AwaitingUpgrade,
            head: Vec::new(),
            session,
            pending_head: None,
            early_upstream: Vec::new(),
            pending_pong: None,
            client_preface: PrefaceStripper::new(),
            backend_filter: BackendFrameFilter::new(),
            to_backend: FrameWalker::new(),
            nudge_wanted: false,
            close_due: false,
            close_grace_ticks: 0,
            closing,
            metrics,
        }
    }

    /// Checks path, subprotocol and required headers; returns the HTTP status of a refusal.
    fn check(&self, h: &mut dyn NetHost, req: &ParsedRequest) -> Result<(), (u16, String)> {
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
            // Each property read is a CEL evaluation in Envoy: only when auth looks at the
            // certificate (as `PeerCertificate::for_config`).
            let peer = if a.require_client_certificate {
                h.peer_certificate()
            } else {
                PeerCertificate::default()
            };
            if let Err(f) = auth::verify(a, req.header(&a.secret_header).map(str::as_bytes), &peer)
            {
                self.metrics.inc(&format!("auth_failures.{}", f.kind()));
                return Err((f.http_status(), f.message().to_string()));
            }
        }
        Ok(())
    }

    fn queue_close(&mut self, h: &mut dyn NetHost, code: u16, reason: &str) {
        // The server side never masks, so this cannot fail for want of entropy; and the queue
        // holds only this one close frame, far below its bound (pongs go out apart).
        let _ = self.session.queue_close(code, reason, h);
    }

    /// The refusal (like the 101) can only go out with backend bytes: a preface and an empty
    /// SETTINGS make the backend answer at once. The connection is refused, so nothing else of
    /// the client ever reaches the backend.
    fn make_backend_answer(out: &mut Vec<u8>) {
        out.extend_from_slice(PREFACE);
        out.extend_from_slice(&EMPTY_SETTINGS);
    }

    fn refuse(&mut self, h: &mut dyn NetHost, status: u16, reason: &str) {
        h.log(
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

    fn unwrap(&mut self, h: &mut dyn NetHost, input: &[u8], out: &mut Vec<u8>) {
        let mut events = Vec::new();
        let before = out.len();
        let res = if self.client_preface.is_done() {
            // Steady state: unmask straight into the output (one copy).
            self.session.decode_into(input, out, &mut events)
        } else {
            let mut raw = Vec::with_capacity(input.len());
            let res = self.session.decode_into(input, &mut raw, &mut events);
            if self.client_preface.feed(&raw, out).is_err() {
                self.queue_close(
                    h,
                    close_code::PROTOCOL_ERROR,
                    "the tunnel carries HTTP/2 only",
                );
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
                    self.queue_close(h, code.unwrap_or(close_code::NORMAL), "");
                    self.nudge_wanted = true;
                }
                WsEvent::Pong(_) | WsEvent::Data(_) | WsEvent::MessageEnd => {}
            }
        }
        if let Err(e) = res {
            self.metrics.inc("errors.bad_frame");
            h.log(
                LogLevel::Info,
                &format!("grpc-bridge tunnel server {}: invalid frame: {e}", self.id),
            );
            self.queue_close(h, e.close_code, &e.reason);
            self.state = State::Closed;
            // The close frame goes out with the backend's next bytes: make it speak now (the
            // backend may wait for the rest of a request it will never get).
            self.nudge_wanted = true;
        }
    }
}

impl NetworkStream for TunnelServer {
    fn on_tick(&mut self) {
        self.tick(&mut WasmNetHost)
    }

    fn on_downstream_data(&mut self, size: usize, eos: bool) -> NetworkAction {
        self.downstream_data(&mut WasmNetHost, size, eos)
    }

    fn on_upstream_data(&mut self, size: usize, eos: bool) -> NetworkAction {
        self.upstream_data(&mut WasmNetHost, size, eos)
    }
}

impl TunnelServer {
    /// The root's tick (tunnel_server roots tick every `CLOSE_TICK_MS`): closes a connection
    /// whose last bytes went out.
    pub fn tick(&mut self, h: &mut dyn NetHost) {
        if self.close_due {
            if self.close_grace_ticks > 0 {
                self.close_grace_ticks -= 1;
            } else {
                self.close_connection(h);
            }
        }
    }

    pub fn downstream_data(
        &mut self,
        h: &mut dyn NetHost,
        size: usize,
        _eos: bool,
    ) -> NetworkAction {
        let data = h.read(Flow::Downstream, size).unwrap_or_default();
        let mut out = Vec::with_capacity(data.len());
        match self.state {
            State::AwaitingUpgrade => {
                self.head.extend_from_slice(&data);
                match parse_client_handshake(&self.head, MAX_HANDSHAKE_BYTES) {
                    Ok(None) if self.head.len() <= MAX_HANDSHAKE_BYTES => {}
                    Ok(None) | Err(HandshakeError::TooLarge) => {
                        self.refuse(h, 431, "upgrade request too large");
                        Self::make_backend_answer(&mut out);
                    }
                    Err(e) => {
                        self.refuse(h, 400, &e.to_string());
                        Self::make_backend_answer(&mut out);
                    }
                    Ok(Some((req, consumed))) => match self.check(h, &req) {
                        Err((status, why)) => {
                            self.refuse(h, status, &why);
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
                            self.unwrap(h, &rest, &mut out);
                        }
                    },
                }
            }
            State::Open => self.unwrap(h, &data, &mut out),
            State::Closed => {
                // Not during the grace after a close frame: closing here, right after that
                // frame went out, lost it now and then (its bytes never reached the client).
                if self.close_due && self.close_grace_ticks == 0 {
                    self.close_connection(h);
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
            h.log(
                LogLevel::Debug,
                &format!(
                    "grpc-bridge tunnel server {}: no frame boundary toward the backend; closing without a close frame",
                    self.id
                ),
            );
            self.nudge_wanted = false;
            self.schedule_close();
        }
        let _ = h.replace(Flow::Downstream, size, &out);
        NetworkAction::Continue
    }

    pub fn upstream_data(&mut self, h: &mut dyn NetHost, size: usize, eos: bool) -> NetworkAction {
        let data = h.read(Flow::Upstream, size).unwrap_or_default();
        let mut out = Vec::new();
        if self.pending_head.is_none() && self.state == State::AwaitingUpgrade {
            // The backend spoke before the client's upgrade arrived: keep it for after the 101.
            if self.early_upstream.len() + data.len() > MAX_CONTROL_QUEUE * 16 {
                h.log(
                    LogLevel::Warn,
                    "grpc-bridge tunnel server: backend sent too much before the upgrade",
                );
                self.state = State::Closed;
                let _ = h.close(Flow::Downstream);
            } else {
                self.early_upstream.extend_from_slice(&data);
            }
            let _ = h.replace(Flow::Upstream, size, &[]);
            return NetworkAction::Continue;
        }
        let rejected = self.state == State::Closed && !self.session.close_sent();
        if let Some(head) = self.pending_head.take() {
            out.extend_from_slice(&head);
        }
        if rejected {
            // A refused upgrade gets its HTTP answer and nothing of the backend, then the
            // connection closes (the answer says `Connection: close`). Not from here: a close
            // requested while Envoy writes these bytes loses them (measured), so the next
            // event or the root's tick closes it (`close_due`).
            let _ = h.replace(Flow::Upstream, size, &out);
            self.session.mark_close_sent();
            self.schedule_close();
            return NetworkAction::Continue;
        }
        let failing = self.state == State::Closed && !self.session.control().is_empty();
        if let Some(p) = self.pending_pong.take() {
            let _ = self.session.encode(Opcode::Pong, &p, h, &mut out);
        }
        self.session.take_control(&mut out);
        if self.state == State::Open {
            let mut backend = Vec::with_capacity(self.early_upstream.len() + data.len());
            let early = std::mem::take(&mut self.early_upstream);
            self.backend_filter.feed(&early, &mut backend);
            self.backend_filter.feed(&data, &mut backend);
            self.metrics.add("bytes_down", backend.len() as u64);
            // Unmasked (server side): cannot fail for want of entropy.
            let _ = self.session.wrap_binary(&backend, h, &mut out);
            if eos {
                self.queue_close(h, close_code::GOING_AWAY, "backend closed");
                self.session.take_control(&mut out);
            }
        }
        let _ = h.replace(Flow::Upstream, size, &out);
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

    fn close_connection(&mut self, h: &mut dyn NetHost) {
        self.close_due = false;
        if let Ok(mut c) = self.closing.try_borrow_mut() {
            c.remove(&self.id);
        }
        h.log(
            LogLevel::Debug,
            &format!(
                "grpc-bridge tunnel server {}: closing the connection",
                self.id
            ),
        );
        let _ = h.close(Flow::Downstream);
    }
}

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
            self.session.decoder().decode_into(input, out, &mut events)
        } else {
            let mut raw = Vec::with_capacity(input.len());
            let res = self
                .session
                .decoder()
                .decode_into(input, &mut raw, &mut events);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::websocket::{
        close_payload, encode_client_handshake, encode_frame, parse_server_handshake,
        ClientHandshake, FrameDecoder, WsError,
    };
    use crate::config::{AuthConfig, Role, Secret};
    use crate::tunnel::net_host::fake::{Call, FakeNetHost};

    const MAX_FRAME: u32 = 64;
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const SECRET: &str = "0123456789abcdef";
    /// An HTTP/2 SETTINGS frame with one setting, as a gRPC client sends after its preface.
    const CLIENT_SETTINGS: [u8; 15] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    /// The backend's SETTINGS ACK (answers ours: removed on the way to the client).
    const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

    fn auth(require_client_certificate: bool) -> AuthConfig {
        AuthConfig {
            secret: None,
            shared_secrets: vec![Secret(SECRET.to_string())],
            secret_header: "x-grpc-bridge-auth".to_string(),
            require_client_certificate,
            allowed_uri_sans: Vec::new(),
            allowed_dns_sans: Vec::new(),
            allowed_subjects: Vec::new(),
            require_for_unmarked: false,
        }
    }

    fn settings() -> TunnelSettings {
        let mut tunnel_headers = std::collections::BTreeMap::new();
        tunnel_headers.insert("x-tunnel-key".to_string(), "k1".to_string());
        TunnelSettings {
            max_frame_bytes: MAX_FRAME,
            tunnel_host: None,
            tunnel_path: "/grpc-bridge/tunnel".to_string(),
            tunnel_protocol: "grpc-bridge.tunnel.v1".to_string(),
            tunnel_headers,
            ping_interval_ms: 0,
            auth: Some(auth(false)),
        }
    }

    fn request_with(path: &str, protocol: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        encode_client_handshake(&ClientHandshake {
            host: "tunnel.example".to_string(),
            path: path.to_string(),
            key: KEY.to_string(),
            protocol: Some(protocol.to_string()),
            extra_headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    fn good_request() -> Vec<u8> {
        request_with(
            "/grpc-bridge/tunnel",
            "grpc-bridge.tunnel.v1",
            &[("x-tunnel-key", "k1"), ("x-grpc-bridge-auth", SECRET)],
        )
    }

    /// One masked frame as a tunnel client sends it.
    fn masked(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(
            fin,
            opcode,
            Some([0x11, 0x22, 0x33, 0x44]),
            payload,
            &mut out,
        );
        out
    }

    fn unmasked(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(true, opcode, None, payload, &mut out);
        out
    }

    /// A server over a fake host, and what went each way.
    struct Conn {
        server: TunnelServer,
        host: FakeNetHost,
        metrics: Rc<Metrics>,
        closing: Rc<RefCell<BTreeSet<u32>>>,
        /// Everything passed on toward the backend.
        to_backend: Vec<u8>,
        /// Everything passed on toward the tunnel client.
        to_client: Vec<u8>,
    }

    impl Conn {
        fn new(cfg: TunnelSettings) -> Conn {
            let metrics = Rc::new(Metrics::new(Role::TunnelServer));
            let closing: Rc<RefCell<BTreeSet<u32>>> = Rc::default();
            Conn {
                server: TunnelServer::new(3, Rc::new(cfg), metrics.clone(), closing.clone()),
                host: FakeNetHost::default(),
                metrics,
                closing,
                to_backend: Vec::new(),
                to_client: Vec::new(),
            }
        }

        fn forward(&mut self) {
            self.host.forward(&mut self.to_backend, &mut self.to_client);
        }

        fn client_sends(&mut self, bytes: &[u8]) {
            self.host.downstream = bytes.to_vec();
            let a = self
                .server
                .downstream_data(&mut self.host, bytes.len(), false);
            assert_eq!(a, NetworkAction::Continue);
            self.forward();
        }

        fn backend_sends(&mut self, bytes: &[u8], eos: bool) {
            self.host.upstream = bytes.to_vec();
            let a = self.server.upstream_data(&mut self.host, bytes.len(), eos);
            assert_eq!(a, NetworkAction::Continue);
            self.forward();
        }

        fn tick(&mut self) {
            self.server.tick(&mut self.host);
            self.forward();
        }

        /// An upgraded tunnel whose client sent its preface and SETTINGS, and whose backend
        /// answered; both directions cleared.
        fn open() -> Conn {
            let mut c = Conn::new(settings());
            let mut input = good_request();
            input.extend(masked(true, Opcode::Binary, PREFACE));
            input.extend(masked(true, Opcode::Binary, &CLIENT_SETTINGS));
            c.client_sends(&input);
            c.backend_sends(&SETTINGS_ACK, false);
            c.to_backend.clear();
            c.to_client.clear();
            c
        }

        /// The tunnel client's view of what it got after the `101`.
        fn client_reads(&self) -> (Vec<u8>, Vec<WsEvent>, Result<(), WsError>) {
            let consumed = parse_server_handshake(
                &self.to_client,
                MAX_HANDSHAKE_BYTES,
                &accept_key(KEY),
                Some("grpc-bridge.tunnel.v1"),
            )
            .ok()
            .flatten()
            .unwrap_or(0);
            client_decodes(&self.to_client[consumed..])
        }
    }

    fn client_decodes(bytes: &[u8]) -> (Vec<u8>, Vec<WsEvent>, Result<(), WsError>) {
        let mut d = FrameDecoder::new(Side::Client, u64::from(MAX_FRAME));
        let (mut data, mut events) = (Vec::new(), Vec::new());
        let res = d.decode_into(bytes, &mut data, &mut events);
        (data, events, res)
    }

    fn ours() -> Vec<u8> {
        let mut v = PREFACE.to_vec();
        v.extend_from_slice(&EMPTY_SETTINGS);
        v
    }

    fn closed(code: u16, reason: &str) -> WsEvent {
        WsEvent::Close {
            code: Some(code),
            reason: reason.to_string(),
        }
    }

    fn nudge() -> Vec<u8> {
        ping_frame(NUDGE_OPAQUE).to_vec()
    }

    /// The backend's ACK of our nudge PING (flag ACK set).
    fn nudge_ack() -> Vec<u8> {
        let mut ack = nudge();
        ack[4] = 1;
        ack
    }

    /// The backend's answer to what we sent first: the ACK of our SETTINGS, then of the nudge.
    fn settings_and_nudge_acks() -> Vec<u8> {
        let mut answer = SETTINGS_ACK.to_vec();
        answer.extend(nudge_ack());
        answer
    }

    #[test]
    fn an_accepted_upgrade_makes_the_backend_speak_and_the_101_goes_out_with_its_answer() {
        let mut c = Conn::new(settings());
        let mut input = good_request();
        input.extend(masked(true, Opcode::Binary, PREFACE));
        input.extend(masked(true, Opcode::Binary, &CLIENT_SETTINGS));
        c.client_sends(&input);
        // Our preface and empty SETTINGS, then the client's SETTINGS (its preface removed).
        let mut want = ours();
        want.extend_from_slice(&CLIENT_SETTINGS);
        assert_eq!(c.to_backend, want);
        assert_eq!(c.metrics.pending("upgrades"), 1);
        assert!(c.to_client.is_empty());
        // The backend's SETTINGS and the ACK of ours: the ACK is removed, the rest framed.
        let backend_settings = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        let mut answer = SETTINGS_ACK.to_vec();
        answer.extend_from_slice(&backend_settings);
        c.backend_sends(&answer, false);
        let head = encode_server_handshake(&accept_key(KEY), Some("grpc-bridge.tunnel.v1"));
        assert!(c.to_client.starts_with(&head));
        assert_eq!(
            c.to_client[head.len()..],
            unmasked(Opcode::Binary, &backend_settings)[..]
        );
        assert_eq!(c.metrics.pending("bytes_down"), 9);
        assert!(c.host.closes().is_empty());
        assert!(c.closing.borrow().is_empty());
    }

    #[test]
    fn backend_bytes_before_the_upgrade_wait_behind_the_101() {
        let mut c = Conn::new(settings());
        let early = [0, 0, 0, 4, 0, 0, 0, 0, 0];
        c.backend_sends(&early, false);
        assert!(c.to_client.is_empty());
        c.client_sends(&good_request());
        c.backend_sends(&SETTINGS_ACK, false);
        let (data, events, res) = c.client_reads();
        assert_eq!((data, events, res), (early.to_vec(), vec![], Ok(())));
    }

    #[test]
    fn backend_bytes_are_framed_at_most_max_frame_bytes_each() {
        let mut c = Conn::open();
        c.backend_sends(&[5u8; 150], false);
        assert_eq!(c.to_client.len(), 150 + 3 * 2);
        let (data, events, res) = client_decodes(&c.to_client);
        assert_eq!((data, events, res), (vec![5u8; 150], vec![], Ok(())));
    }

    /// Two HTTP/2 DATA frames on stream 1: 21 bytes, then 51.
    fn client_data() -> Vec<u8> {
        let mut d = vec![0, 0, 21, 0, 0, 0, 0, 0, 1];
        d.extend_from_slice(b"frag-1/frag-2/frag-3/");
        d.extend_from_slice(&[0, 0, 51, 0, 1, 0, 0, 0, 1]);
        d.extend_from_slice(&[0xCD; 51]);
        d
    }

    /// The upgrade request, then the client's preface, SETTINGS, [`client_data`] as a message
    /// in three fragments and a lone frame, and a ping last (its nudge then always ends the
    /// output).
    fn client_stream() -> Vec<u8> {
        let data = client_data();
        let mut s = good_request();
        s.extend(masked(true, Opcode::Binary, PREFACE));
        s.extend(masked(true, Opcode::Binary, &CLIENT_SETTINGS));
        s.extend(masked(false, Opcode::Binary, &data[..16]));
        s.extend(masked(false, Opcode::Continuation, &data[16..23]));
        s.extend(masked(true, Opcode::Continuation, &data[23..30]));
        s.extend(masked(true, Opcode::Binary, &data[30..]));
        s.extend(masked(true, Opcode::Ping, b"ping"));
        s
    }

    #[test]
    fn every_cut_of_the_clients_bytes_gives_the_same_output() {
        let input = client_stream();
        let mut want = ours();
        want.extend_from_slice(&CLIENT_SETTINGS);
        want.extend(client_data());
        want.extend(nudge());
        let mut whole = Conn::new(settings());
        whole.client_sends(&input);
        assert_eq!(whole.to_backend, want);
        for cut in 0..=input.len() {
            let mut c = Conn::new(settings());
            c.client_sends(&input[..cut]);
            c.client_sends(&input[cut..]);
            assert_eq!(c.to_backend, want, "cut at {cut}");
            assert!(c.host.closes().is_empty(), "cut at {cut}");
        }
        let mut c = Conn::new(settings());
        for b in &input {
            c.client_sends(std::slice::from_ref(b));
        }
        assert_eq!(c.to_backend, want);
        // The backend's answer carries the 101 and the pong; the nudge's ACK is removed.
        c.backend_sends(&settings_and_nudge_acks(), false);
        let (data, events, res) = c.client_reads();
        assert_eq!(
            (data, events, res),
            (vec![], vec![WsEvent::Pong(b"ping".to_vec())], Ok(()))
        );
    }

    /// The connection is refused with `status`: the backend is made to answer, its answer is
    /// replaced by the refusal, and the next tick closes the connection.
    fn refused(request: &[u8], status: u16, reason: &str) -> Conn {
        let mut c = Conn::new(settings());
        let mut input = request.to_vec();
        input.extend(masked(true, Opcode::Binary, PREFACE));
        c.client_sends(&input);
        assert_eq!(c.to_backend, ours(), "{status}");
        assert_eq!(c.metrics.pending(&format!("upgrades_refused.{status}")), 1);
        assert!(
            c.host
                .logged(&format!("refusing upgrade: {status} {reason}")),
            "{:?}",
            c.host.calls
        );
        c.backend_sends(&SETTINGS_ACK, false);
        assert_eq!(c.to_client, encode_handshake_rejection(status, reason));
        assert_eq!(
            c.closing.borrow().iter().copied().collect::<Vec<_>>(),
            vec![3]
        );
        assert!(c.host.closes().is_empty());
        // Nothing more of the backend passes.
        c.backend_sends(&SETTINGS_ACK, false);
        assert_eq!(c.to_client, encode_handshake_rejection(status, reason));
        c.tick();
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
        assert!(c.closing.borrow().is_empty());
        c
    }

    /// Each way the upgrade request can be wrong, with the refusal it gets and the counter it
    /// adds besides `upgrades_refused.<status>`.
    #[test]
    fn a_wrong_upgrade_request_is_refused_with_its_status() {
        const PATH: &str = "/grpc-bridge/tunnel";
        const PROTOCOL: &str = "grpc-bridge.tunnel.v1";
        let key = ("x-tunnel-key", "k1");
        let secret = ("x-grpc-bridge-auth", SECRET);
        for (path, protocol, headers, status, reason, counter) in [
            (
                "/elsewhere?x=1",
                PROTOCOL,
                vec![key, secret],
                404,
                "no tunnel at /elsewhere",
                None,
            ),
            (
                PATH,
                "other.v1",
                vec![key, secret],
                400,
                "subprotocol grpc-bridge.tunnel.v1 required",
                None,
            ),
            // A wrong or missing tunnel header.
            (
                PATH,
                PROTOCOL,
                vec![("x-tunnel-key", "k2"), secret],
                403,
                "tunnel authentication failed",
                None,
            ),
            (
                PATH,
                PROTOCOL,
                vec![secret],
                403,
                "tunnel authentication failed",
                None,
            ),
            // A missing or wrong secret.
            (
                PATH,
                PROTOCOL,
                vec![key],
                401,
                "grpc-bridge: bridged request not authenticated: no credentials",
                Some("auth_failures.missing_secret"),
            ),
            (
                PATH,
                PROTOCOL,
                vec![key, ("x-grpc-bridge-auth", "fedcba9876543210")],
                403,
                "grpc-bridge: bridged request not authenticated: invalid credentials",
                Some("auth_failures.wrong_secret"),
            ),
        ] {
            let c = refused(&request_with(path, protocol, &headers), status, reason);
            if let Some(counter) = counter {
                assert_eq!(c.metrics.pending(counter), 1, "{reason}");
            }
            // A secret-only configuration never reads the certificate properties.
            assert!(!c.host.calls.contains(&Call::PeerCertificate), "{reason}");
        }
    }

    #[test]
    fn a_client_certificate_is_read_only_when_required() {
        let mut cfg = settings();
        cfg.auth = Some(auth(true));
        let mut c = Conn::new(cfg.clone());
        c.client_sends(&good_request());
        assert_eq!(c.metrics.pending("upgrades_refused.401"), 1);
        assert_eq!(c.metrics.pending("auth_failures.no_client_certificate"), 1);
        assert!(c.host.calls.contains(&Call::PeerCertificate));
        let mut c = Conn::new(cfg);
        c.host.peer.mtls = true;
        c.client_sends(&good_request());
        assert_eq!(c.metrics.pending("upgrades"), 1);
    }

    #[test]
    fn a_malformed_or_endless_upgrade_request_is_refused() {
        refused(
            b"POST /grpc-bridge/tunnel HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "not a websocket upgrade: method POST, not GET",
        );
        let mut head = b"GET /grpc-bridge/tunnel HTTP/1.1\r\n".to_vec();
        while head.len() <= MAX_HANDSHAKE_BYTES {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        refused(&head, 431, "upgrade request too large");
    }

    #[test]
    fn a_ping_is_answered_with_the_backends_next_bytes_which_a_nudge_brings_at_once() {
        let mut c = Conn::open();
        c.client_sends(&masked(true, Opcode::Ping, b"p1"));
        c.client_sends(&masked(true, Opcode::Ping, b"p2"));
        // One nudge per ping; only the latest ping is answered.
        let mut want = nudge();
        want.extend(nudge());
        assert_eq!(c.to_backend, want);
        let ack = nudge_ack();
        let mut answer = ack.clone();
        answer.extend_from_slice(&ack);
        c.backend_sends(&answer, false);
        assert_eq!(c.to_client, unmasked(Opcode::Pong, b"p2"));
        // The backend's own PING ACKs pass.
        c.to_client.clear();
        c.backend_sends(&ack, false);
        assert_eq!(c.to_client, unmasked(Opcode::Binary, &ack));
    }

    #[test]
    fn a_close_from_the_client_is_echoed() {
        let mut c = Conn::open();
        c.client_sends(&masked(true, Opcode::Close, &close_payload(1000, "bye")));
        assert_eq!(c.to_backend, nudge());
        c.backend_sends(&nudge_ack(), false);
        assert_eq!(
            c.to_client,
            unmasked(Opcode::Close, &close_payload(1000, ""))
        );
        assert!(c.host.closes().is_empty());
    }

    #[test]
    fn the_backend_closing_sends_close_1001_after_its_last_bytes() {
        let mut c = Conn::open();
        let last = [0, 0, 1, 0, 1, 0, 0, 0, 1, b'!'];
        c.backend_sends(&last, true);
        let (data, events, res) = client_decodes(&c.to_client);
        assert_eq!(data, last);
        assert_eq!(
            events,
            vec![closed(close_code::GOING_AWAY, "backend closed")]
        );
        assert_eq!(res, Ok(()));
    }

    /// `bad` fails the tunnel with `code`: its close frame goes out with the nudged backend's
    /// answer, and the connection closes after the grace ticks.
    fn fails_on(bad: &[u8], code: u16) {
        let mut c = Conn::open();
        c.client_sends(bad);
        assert_eq!(c.to_backend, nudge(), "{code}");
        c.backend_sends(&nudge_ack(), false);
        let (_, events, res) = client_decodes(&c.to_client);
        assert_eq!(res, Ok(()));
        let [WsEvent::Close { code: got, .. }] = events.as_slice() else {
            panic!("{code}: {events:?}");
        };
        assert_eq!(*got, Some(code));
        for _ in 0..CLOSE_GRACE_TICKS {
            c.tick();
        }
        assert!(c.host.closes().is_empty(), "{code}");
        c.tick();
        assert_eq!(c.host.closes(), vec![Flow::Downstream], "{code}");
        // Nothing of the client reaches the backend any more.
        c.to_backend.clear();
        c.client_sends(&masked(true, Opcode::Binary, b"late"));
        assert!(c.to_backend.is_empty());
    }

    #[test]
    fn invalid_frames_from_the_client_close_with_the_rfc_code() {
        fails_on(
            &masked(true, Opcode::Binary, &[0; MAX_FRAME as usize + 1]),
            close_code::MESSAGE_TOO_BIG,
        );
        // Unmasked (a client must mask): 1002.
        fails_on(&unmasked(Opcode::Binary, b"x"), close_code::PROTOCOL_ERROR);
        fails_on(
            &masked(true, Opcode::Text, &[0xff]),
            close_code::INVALID_PAYLOAD,
        );
        let mut c = Conn::open();
        c.client_sends(&unmasked(Opcode::Binary, b"x"));
        assert_eq!(c.metrics.pending("errors.bad_frame"), 1);
        assert!(c.host.logged("invalid frame"));
    }

    #[test]
    fn a_tunnel_that_does_not_carry_http2_is_closed_with_1002() {
        let mut c = Conn::new(settings());
        let mut input = good_request();
        input.extend(masked(true, Opcode::Binary, b"GET / HTTP/1.1\r\n\r\n"));
        c.client_sends(&input);
        // Only our preface and SETTINGS, then the nudge.
        let mut want = ours();
        want.extend(nudge());
        assert_eq!(c.to_backend, want);
        c.backend_sends(&settings_and_nudge_acks(), false);
        let (data, events, res) = c.client_reads();
        assert_eq!(data, b"");
        assert_eq!(
            events,
            vec![closed(
                close_code::PROTOCOL_ERROR,
                "the tunnel carries HTTP/2 only"
            )]
        );
        assert_eq!(res, Ok(()));
    }

    #[test]
    fn a_failure_inside_a_backend_frame_closes_without_a_close_frame() {
        let mut c = Conn::open();
        // Half of an HTTP/2 DATA frame header toward the backend: no PING fits there.
        c.client_sends(&masked(true, Opcode::Binary, &[0, 0, 10, 0]));
        c.to_backend.clear();
        c.client_sends(&unmasked(Opcode::Binary, b"x"));
        assert!(c.to_backend.is_empty());
        assert!(c.host.logged("no frame boundary toward the backend"));
        assert_eq!(
            c.closing.borrow().iter().copied().collect::<Vec<_>>(),
            vec![3]
        );
        c.tick();
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
    }

    #[test]
    fn a_backend_that_floods_before_the_upgrade_is_cut_off() {
        let mut c = Conn::new(settings());
        c.backend_sends(&vec![0; MAX_CONTROL_QUEUE * 16], false);
        assert!(c.host.closes().is_empty());
        c.backend_sends(&[0], false);
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
        assert!(c.to_client.is_empty());
    }
}

//! Tunnel client side (agent Envoy): `[wasm tunnel_client] -> tcp_proxy -> (proxies) -> server`.
//!
//! On the gRPC client's first bytes, the upgrade request goes out with the bytes already
//! wrapped behind it ("pipelined"): measured dependable directly, through nginx and through a
//! squid CONNECT tunnel, while holding data until the `101` deadlocks when the server side can
//! only answer once its backend spoke. Upstream bytes are held until the `101` has been read and
//! its `Sec-WebSocket-Accept` checked, then unwrapped.

use std::rc::Rc;

use crate::codec::h2_streams::StreamLedger;
use crate::codec::websocket::{
    accept_key, close_code, encode_client_handshake, parse_server_handshake, ClientHandshake,
    Opcode, Side, WsEvent,
};
use crate::context::{NetworkAction, NetworkStream};
use crate::host::LogLevel;
use crate::metrics::Metrics;
use crate::tunnel::net_host::{Flow, NetHost, WasmNetHost};
use crate::tunnel::session::WsSession;
use crate::tunnel::{TunnelSettings, MAX_HANDSHAKE_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing sent yet.
    Fresh,
    /// Upgrade request sent; reading the server's response head.
    AwaitingUpgrade,
    Open,
    /// Failed or closed: nothing more is forwarded.
    Closed,
}

pub struct TunnelClient {
    id: u32,
    cfg: Rc<TunnelSettings>,
    state: State,
    expected_accept: String,
    head: Vec<u8>,
    /// Our WebSocket side: masked frames up, the server's frames decoded, control frames (pong,
    /// close, ping) waiting for a chance to go upstream.
    session: WsSession,
    /// When we last sent anything upstream (ns, host clock): keepalive pings fill silences.
    last_sent_ns: u64,
    /// The client's open calls, so a broken tunnel ends each with UNAVAILABLE (codec::h2_streams).
    ledger: StreamLedger,
    /// Why the server side closed the tunnel (its Close frame's reason), once it has.
    server_closed: Option<String>,
    /// The open calls have been ended: done once.
    calls_ended: bool,
    metrics: Rc<Metrics>,
}

impl TunnelClient {
    pub fn new(id: u32, cfg: Rc<TunnelSettings>, metrics: Rc<Metrics>) -> Self {
        let session = WsSession::new(Side::Client, cfg.max_frame_bytes);
        TunnelClient {
            id,
            cfg,
            state: State::Fresh,
            expected_accept: String::new(),
            head: Vec::new(),
            session,
            last_sent_ns: 0,
            ledger: StreamLedger::new(),
            server_closed: None,
            calls_ended: false,
            metrics,
        }
    }

    fn handshake(&mut self, h: &mut dyn NetHost) -> Option<Vec<u8>> {
        let key = self.session.handshake_key(h).ok()?;
        self.expected_accept = accept_key(&key);
        let hs =
            ClientHandshake {
                host: self.cfg.tunnel_host.clone().unwrap_or_default(),
                path: self.cfg.tunnel_path.clone(),
                key,
                protocol: Some(self.cfg.tunnel_protocol.clone()),
                extra_headers: self
                    .cfg
                    .tunnel_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain(self.cfg.auth.as_ref().and_then(|a| {
                        Some((a.secret_header.clone(), a.secret.as_ref()?.0.clone()))
                    }))
                    .collect(),
            };
        Some(encode_client_handshake(&hs))
    }

    fn queue_control(&mut self, h: &mut dyn NetHost, opcode: Opcode, payload: &[u8]) {
        if self.session.queue_control(opcode, payload, h).is_err() {
            self.fail(h, "no entropy for mask keys");
        }
    }

    fn queue_close(&mut self, h: &mut dyn NetHost, code: u16, reason: &str) {
        if self.session.queue_close(code, reason, h).is_err() {
            self.fail(h, "no entropy for mask keys");
        }
    }

    /// Sends queued control frames now, outside `on_downstream_data`: append to the downstream
    /// buffer and let Envoy continue reading it into `tcp_proxy`.
    fn flush_control(&mut self, h: &mut dyn NetHost) {
        if self.session.control().is_empty() {
            return;
        }
        if h.append(Flow::Downstream, self.session.control()).is_ok()
            && h.resume(Flow::Downstream).is_ok()
        {
            self.session.clear_control();
            self.last_sent_ns = h.now_nanos();
        }
    }

    fn fail(&mut self, h: &mut dyn NetHost, why: &str) {
        h.log(
            LogLevel::Warn,
            &format!("grpc-bridge tunnel client {}: closing: {why}", self.id),
        );
        self.state = State::Closed;
        let _ = h.close(Flow::Downstream);
    }

    /// The tunnel is ending (the server side closed it, or the connection toward it did): end
    /// every call still open with UNAVAILABLE, as a direct connection to a backend that went
    /// away would, rather than let the client's HTTP/2 connection break under them (which tonic
    /// reports as UNKNOWN). Only possible between the server's frames; otherwise, or with no
    /// call open, the connection just closes as before.
    fn end_open_calls(&mut self, h: &mut dyn NetHost, out: &mut Vec<u8>) {
        if self.calls_ended {
            return;
        }
        self.calls_ended = true;
        let message = match self.server_closed.as_deref() {
            Some("") | None => {
                "grpc-bridge: the tunnel to the server closed before the call ended".to_string()
            }
            Some(why) => {
                format!("grpc-bridge: the tunnel to the server closed before the call ended: {why}")
            }
        };
        let calls = self.ledger.open_streams();
        if let Some(frames) = self.ledger.unavailable_frames(&message) {
            out.extend_from_slice(&frames);
            self.metrics.add("calls_ended_unavailable", calls as u64);
            h.log(
                LogLevel::Info,
                &format!(
                    "grpc-bridge tunnel client {}: tunnel closed; {calls} open call(s) ended with UNAVAILABLE",
                    self.id
                ),
            );
        }
    }

    /// Unwraps server frames into `out`; control frames are answered.
    fn unwrap(&mut self, h: &mut dyn NetHost, input: &[u8], out: &mut Vec<u8>) {
        let mut events = Vec::new();
        let res = self.session.decoder().decode_into(input, out, &mut events);
        for ev in events {
            match ev {
                // Answer only the latest ping (RFC 6455 5.5.3): no pile-up if sending stalls.
                WsEvent::Ping(p) => {
                    if self.session.control().is_empty() {
                        self.queue_control(h, Opcode::Pong, &p);
                    }
                }
                WsEvent::Close { code, reason } => {
                    h.log(
                        LogLevel::Debug,
                        &format!("grpc-bridge tunnel client: server closed ({code:?}) {reason}"),
                    );
                    self.queue_close(h, code.unwrap_or(close_code::NORMAL), "");
                    self.server_closed = Some(reason);
                }
                WsEvent::Pong(_) | WsEvent::Data(_) | WsEvent::MessageEnd => {}
            }
        }
        if let Err(e) = res {
            self.metrics.inc("errors.bad_frame");
            self.queue_close(h, e.close_code, &e.reason);
            self.flush_control(h);
            self.fail(h, &format!("invalid frame from server: {e}"));
        }
    }

    pub fn downstream_data(
        &mut self,
        h: &mut dyn NetHost,
        size: usize,
        eos: bool,
    ) -> NetworkAction {
        if self.state == State::Closed {
            let _ = h.replace(Flow::Downstream, size, &[]);
            return NetworkAction::Continue;
        }
        let data = match h.read(Flow::Downstream, size) {
            Ok(d) => d,
            Err(e) => {
                self.fail(h, &format!("downstream data unreadable: {e:?}"));
                return NetworkAction::Continue;
            }
        };
        let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 256);
        if self.state == State::Fresh {
            match self.handshake(h) {
                Some(hs) => out.extend_from_slice(&hs),
                None => {
                    self.fail(h, "no entropy for the handshake key");
                    return NetworkAction::Continue;
                }
            }
            self.state = State::AwaitingUpgrade;
            self.metrics.inc("connections");
        }
        self.metrics.add("bytes_up", data.len() as u64);
        self.ledger.client_bytes(&data);
        self.session.take_control(&mut out);
        if self.session.wrap_binary(&data, h, &mut out).is_err() {
            self.fail(h, "no entropy for mask keys");
            return NetworkAction::Continue;
        }
        if eos {
            // The gRPC client closed its side: say so in-band before the FIN.
            self.queue_close(h, close_code::NORMAL, "client closed");
            self.session.take_control(&mut out);
        }
        if let Err(e) = h.replace(Flow::Downstream, size, &out) {
            self.fail(h, &format!("cannot write upstream: {e:?}"));
        }
        self.last_sent_ns = h.now_nanos();
        // Pass the data on now, but leave the read side "paused": Envoy keeps the downstream
        // buffer reachable only for a filter that stopped, and the keepalive tick needs it to
        // send pings from outside this callback. Envoy runs the continue after we return.
        if self.state != State::Closed && h.resume(Flow::Downstream).is_ok() {
            return NetworkAction::StopIteration;
        }
        NetworkAction::Continue
    }

    pub fn upstream_data(&mut self, h: &mut dyn NetHost, size: usize, eos: bool) -> NetworkAction {
        let data = match h.read(Flow::Upstream, size) {
            Ok(d) => d,
            Err(e) => {
                self.fail(h, &format!("upstream data unreadable: {e:?}"));
                return NetworkAction::Continue;
            }
        };
        let mut out = Vec::with_capacity(data.len());
        match self.state {
            State::AwaitingUpgrade => {
                self.head.extend_from_slice(&data);
                let proto = self.cfg.tunnel_protocol.clone();
                match parse_server_handshake(
                    &self.head,
                    MAX_HANDSHAKE_BYTES,
                    &self.expected_accept,
                    Some(&proto),
                ) {
                    Ok(None) if self.head.len() <= MAX_HANDSHAKE_BYTES => {}
                    Ok(None) => self.fail(h, "upgrade response head too large"),
                    Ok(Some(consumed)) => {
                        self.state = State::Open;
                        self.metrics.inc("upgrades");
                        let rest = self.head.split_off(consumed.min(self.head.len()));
                        self.head = Vec::new();
                        self.unwrap(h, &rest, &mut out);
                    }
                    Err(e) => {
                        self.metrics.inc("errors.upgrade_refused");
                        self.fail(h, &format!("WebSocket upgrade refused: {e}"));
                    }
                }
            }
            State::Open => self.unwrap(h, &data, &mut out),
            State::Fresh | State::Closed => {}
        }
        if self.state == State::Open {
            self.ledger.server_bytes(&out);
            if eos || self.server_closed.is_some() {
                self.end_open_calls(h, &mut out);
            }
        }
        self.metrics.add("bytes_down", out.len() as u64);
        if let Err(e) = h.replace(Flow::Upstream, size, &out) {
            self.fail(h, &format!("cannot write downstream: {e:?}"));
        }
        self.flush_control(h);
        NetworkAction::Continue
    }

    pub fn tick(&mut self, h: &mut dyn NetHost) {
        if self.state != State::Open || self.cfg.ping_interval_ms == 0 {
            return;
        }
        let now = h.now_nanos();
        let interval_ns = u64::from(self.cfg.ping_interval_ms) * 1_000_000;
        if now.saturating_sub(self.last_sent_ns) >= interval_ns {
            self.queue_control(h, Opcode::Ping, b"grpc-bridge keepalive");
            self.metrics.inc("pings");
            self.flush_control(h);
            h.log(
                LogLevel::Debug,
                &format!(
                    "grpc-bridge tunnel client {}: keepalive ping (sent: {})",
                    self.id,
                    self.session.control().is_empty()
                ),
            );
        }
    }
}

impl NetworkStream for TunnelClient {
    fn on_downstream_data(&mut self, size: usize, eos: bool) -> NetworkAction {
        self.downstream_data(&mut WasmNetHost, size, eos)
    }

    fn on_upstream_data(&mut self, size: usize, eos: bool) -> NetworkAction {
        self.upstream_data(&mut WasmNetHost, size, eos)
    }

    fn on_tick(&mut self) {
        self.tick(&mut WasmNetHost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::h2::PREFACE;
    use crate::codec::websocket::{
        close_payload, encode_base64, encode_frame, encode_server_handshake,
        parse_client_handshake, FrameDecoder, WsError,
    };
    use crate::config::{AuthConfig, Role, Secret};
    use crate::host::Status;
    use crate::tunnel::net_host::fake::{Call, FakeNetHost};

    const PING_INTERVAL_MS: u32 = 1000;
    const MAX_FRAME: u32 = 64;

    fn settings() -> TunnelSettings {
        let mut tunnel_headers = std::collections::BTreeMap::new();
        tunnel_headers.insert("x-tunnel-key".to_string(), "k1".to_string());
        TunnelSettings {
            max_frame_bytes: MAX_FRAME,
            tunnel_host: Some("tunnel.example".to_string()),
            tunnel_path: "/grpc-bridge/tunnel".to_string(),
            tunnel_protocol: "grpc-bridge.tunnel.v1".to_string(),
            tunnel_headers,
            ping_interval_ms: PING_INTERVAL_MS,
            auth: Some(AuthConfig {
                secret: Some(Secret("0123456789abcdef".to_string())),
                shared_secrets: Vec::new(),
                secret_header: "x-grpc-bridge-auth".to_string(),
                require_client_certificate: false,
                allowed_uri_sans: Vec::new(),
                allowed_dns_sans: Vec::new(),
                allowed_subjects: Vec::new(),
                require_for_unmarked: false,
            }),
        }
    }

    /// A client over a fake host, and what went each way.
    struct Conn {
        client: TunnelClient,
        host: FakeNetHost,
        metrics: Rc<Metrics>,
        /// Everything passed on toward the server (the handshake head first).
        up: Vec<u8>,
        /// Everything passed on toward the gRPC client.
        down: Vec<u8>,
    }

    impl Conn {
        fn new(cfg: TunnelSettings) -> Conn {
            let metrics = Rc::new(Metrics::new(Role::TunnelClient));
            Conn {
                client: TunnelClient::new(7, Rc::new(cfg), metrics.clone()),
                host: FakeNetHost::default(),
                metrics,
                up: Vec::new(),
                down: Vec::new(),
            }
        }

        fn forward(&mut self) {
            self.host.forward(&mut self.up, &mut self.down);
        }

        fn client_sends(&mut self, bytes: &[u8], eos: bool) -> NetworkAction {
            self.host.downstream = bytes.to_vec();
            let a = self
                .client
                .downstream_data(&mut self.host, bytes.len(), eos);
            self.forward();
            a
        }

        fn server_sends(&mut self, bytes: &[u8], eos: bool) -> NetworkAction {
            self.host.upstream = bytes.to_vec();
            let a = self.client.upstream_data(&mut self.host, bytes.len(), eos);
            self.forward();
            a
        }

        fn tick(&mut self) {
            self.client.tick(&mut self.host);
            self.forward();
        }

        /// The `101` for the upgrade request at the start of `up`, and where its frames begin.
        fn accept(&self) -> (Vec<u8>, usize) {
            let (req, consumed) = parse_client_handshake(&self.up, MAX_HANDSHAKE_BYTES)
                .expect("a valid upgrade request")
                .expect("a complete upgrade request");
            (
                encode_server_handshake(&accept_key(&req.key), Some("grpc-bridge.tunnel.v1")),
                consumed,
            )
        }

        /// An open tunnel that carried the client's preface; `up` is cleared.
        fn open(cfg: TunnelSettings) -> Conn {
            Conn::open_after(cfg, PREFACE)
        }

        /// An open tunnel whose client sent `first` (from its preface on) before the `101`;
        /// `up` is cleared.
        fn open_after(cfg: TunnelSettings, first: &[u8]) -> Conn {
            let mut c = Conn::new(cfg);
            c.client_sends(first, false);
            let (ok, _) = c.accept();
            c.server_sends(&ok, false);
            c.up.clear();
            c
        }
    }

    /// The server's view of frames the client sent: data, control events, error.
    fn server_reads(bytes: &[u8]) -> (Vec<u8>, Vec<WsEvent>, Result<(), WsError>) {
        let mut d = FrameDecoder::new(Side::Server, u64::from(MAX_FRAME));
        let (mut data, mut events) = (Vec::new(), Vec::new());
        let res = d.decode_into(bytes, &mut data, &mut events);
        (data, events, res)
    }

    fn frame(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(fin, opcode, None, payload, &mut out);
        out
    }

    fn closed(code: u16) -> WsEvent {
        WsEvent::Close {
            code: Some(code),
            reason: String::new(),
        }
    }

    #[test]
    fn first_bytes_send_the_upgrade_request_with_the_data_framed_behind_it() {
        let mut c = Conn::new(settings());
        assert_eq!(c.client_sends(PREFACE, false), NetworkAction::StopIteration);
        let (req, consumed) = parse_client_handshake(&c.up, MAX_HANDSHAKE_BYTES)
            .unwrap()
            .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/grpc-bridge/tunnel");
        assert_eq!(req.header("host"), Some("tunnel.example"));
        assert_eq!(req.protocols, vec!["grpc-bridge.tunnel.v1".to_string()]);
        assert_eq!(req.header("x-tunnel-key"), Some("k1"));
        assert_eq!(req.header("x-grpc-bridge-auth"), Some("0123456789abcdef"));
        // The key is the host's first 16 random bytes (the fake counts from 0).
        assert_eq!(
            req.key,
            encode_base64(&core::array::from_fn::<u8, 16, _>(|i| i as u8))
        );
        let (data, events, res) = server_reads(&c.up[consumed..]);
        assert_eq!(
            (data.as_slice(), events, res),
            (&PREFACE[..], vec![], Ok(()))
        );
        // Framed with a mask (the next 4 random bytes).
        assert_eq!(
            &c.up[consumed..consumed + 6],
            &[0x82, 0x80 | 24, 16, 17, 18, 19]
        );
        // Passed on, read side left paused for the keepalive tick.
        assert_eq!(
            c.host.calls,
            vec![
                Call::Read(Flow::Downstream, 24),
                Call::Replace {
                    flow: Flow::Downstream,
                    size: 24,
                    len: c.up.len()
                },
                Call::Resume(Flow::Downstream),
            ]
        );
        assert_eq!(c.metrics.pending("connections"), 1);
        assert_eq!(c.metrics.pending("bytes_up"), 24);
    }

    #[test]
    fn later_bytes_are_framed_at_most_max_frame_bytes_each() {
        let mut c = Conn::open(settings());
        c.client_sends(&[9u8; 150], false);
        let (data, events, res) = server_reads(&c.up);
        assert_eq!((data, events, res), (vec![9u8; 150], vec![], Ok(())));
        // 64 + 64 + 22 bytes, each frame: 2 header + 4 mask bytes.
        assert_eq!(c.up.len(), 150 + 3 * 6);
        assert_eq!(c.up[1], 0x80 | 64);
        assert_eq!(c.up[2 * 70 + 1], 0x80 | 22);
    }

    #[test]
    fn server_bytes_are_held_until_the_101_and_then_unwrapped() {
        let mut c = Conn::new(settings());
        c.client_sends(PREFACE, false);
        let (ok, _) = c.accept();
        let mut input = ok.clone();
        input.extend(frame(true, Opcode::Binary, b"settings"));
        c.server_sends(&input[..ok.len() - 1], false);
        assert!(c.down.is_empty());
        assert_eq!(c.metrics.pending("upgrades"), 0);
        c.server_sends(&input[ok.len() - 1..], false);
        assert_eq!(c.down, b"settings");
        assert_eq!(c.metrics.pending("upgrades"), 1);
        assert_eq!(c.metrics.pending("bytes_down"), 8);
        assert!(c.host.closes().is_empty());
    }

    /// The 101, a data message in three fragments, a ping, a lone frame, a pong (ignored).
    fn server_stream(ok: &[u8]) -> Vec<u8> {
        let mut s = ok.to_vec();
        s.extend(frame(false, Opcode::Binary, b"frag-1/"));
        s.extend(frame(false, Opcode::Continuation, b"frag-2/"));
        s.extend(frame(true, Opcode::Continuation, b"frag-3/"));
        s.extend(frame(true, Opcode::Ping, b"are you there"));
        s.extend(frame(true, Opcode::Binary, &[0xAB; 60]));
        s.extend(frame(true, Opcode::Pong, b"ignored"));
        s
    }

    #[test]
    fn every_cut_of_the_servers_bytes_gives_the_same_output() {
        let mut whole = Conn::new(settings());
        whole.client_sends(PREFACE, false);
        let (ok, consumed) = whole.accept();
        let input = server_stream(&ok);
        whole.server_sends(&input, false);
        let mut want_down = b"frag-1/frag-2/frag-3/".to_vec();
        want_down.extend([0xAB; 60]);
        assert_eq!(whole.down, want_down);
        // The ping is answered once, masked, with its payload.
        let (_, events, res) = server_reads(&whole.up[consumed + 30..]);
        assert_eq!(res, Ok(()));
        assert_eq!(events, vec![WsEvent::Pong(b"are you there".to_vec())]);

        for cut in 0..=input.len() {
            let mut c = Conn::new(settings());
            c.client_sends(PREFACE, false);
            c.server_sends(&input[..cut], false);
            c.server_sends(&input[cut..], false);
            assert_eq!(c.down, whole.down, "cut at {cut}");
            assert_eq!(c.up, whole.up, "cut at {cut}");
            assert!(c.host.closes().is_empty(), "cut at {cut}");
        }
        let mut c = Conn::new(settings());
        c.client_sends(PREFACE, false);
        for b in &input {
            c.server_sends(std::slice::from_ref(b), false);
        }
        assert_eq!((c.down, c.up), (whole.down, whole.up));
    }

    fn refused_with(response: &[u8], why: &str) {
        let mut c = Conn::new(settings());
        c.client_sends(PREFACE, false);
        let mut input = response.to_vec();
        input.extend(frame(true, Opcode::Binary, b"never delivered"));
        c.server_sends(&input, false);
        assert!(c.down.is_empty(), "{why}");
        assert_eq!(c.host.closes(), vec![Flow::Downstream], "{why}");
        assert!(c.host.logged(why), "{why}: {:?}", c.host.calls);
        assert_eq!(c.metrics.pending("errors.upgrade_refused"), 1, "{why}");
        // Closed: later bytes from either side are dropped.
        c.up.clear();
        assert_eq!(c.client_sends(b"more", false), NetworkAction::Continue);
        c.server_sends(&frame(true, Opcode::Binary, b"more"), false);
        assert!(c.up.is_empty() && c.down.is_empty(), "{why}");
    }

    #[test]
    fn a_refused_upgrade_closes_the_connection() {
        refused_with(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            "WebSocket upgrade refused",
        );
        refused_with(
            b"HTTP/1.1 404 Not Found\r\n\r\n",
            "WebSocket upgrade refused",
        );
    }

    #[test]
    fn a_101_with_a_wrong_accept_or_subprotocol_closes_the_connection() {
        let bad_accept =
            encode_server_handshake(&accept_key("not our key"), Some("grpc-bridge.tunnel.v1"));
        refused_with(&bad_accept, "WebSocket upgrade refused");
        let mut c = Conn::new(settings());
        c.client_sends(PREFACE, false);
        let (ok, _) = c.accept();
        let text = String::from_utf8(ok).unwrap();
        let other = text.replace("grpc-bridge.tunnel.v1", "something.else");
        refused_with_key(&mut c, other.as_bytes());
        let none = text.replace("Sec-WebSocket-Protocol: grpc-bridge.tunnel.v1\r\n", "");
        assert_ne!(none, text);
        let mut c = Conn::new(settings());
        c.client_sends(PREFACE, false);
        refused_with_key(&mut c, none.as_bytes());
    }

    /// `response` answers `c`'s own upgrade request (the fake's keys repeat).
    fn refused_with_key(c: &mut Conn, response: &[u8]) {
        c.server_sends(response, false);
        assert!(c.down.is_empty());
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
        assert!(c.host.logged("WebSocket upgrade refused"));
        assert_eq!(c.metrics.pending("errors.upgrade_refused"), 1);
    }

    #[test]
    fn an_endless_response_head_closes_the_connection() {
        let mut c = Conn::new(settings());
        c.client_sends(PREFACE, false);
        let mut head = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        while head.len() <= MAX_HANDSHAKE_BYTES {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        c.server_sends(&head, false);
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
        // The codec reports the size (head_end), so this is a refusal of the handshake.
        assert!(c
            .host
            .logged("WebSocket upgrade refused: websocket handshake head too large"));
        assert_eq!(c.metrics.pending("errors.upgrade_refused"), 1);
        assert!(c.down.is_empty());
    }

    #[test]
    fn an_idle_open_tunnel_pings_once_per_interval() {
        let mut c = Conn::open(settings());
        let interval_ns = u64::from(PING_INTERVAL_MS) * 1_000_000;
        c.host.now_ns = interval_ns - 1;
        c.tick();
        assert!(c.up.is_empty());
        c.host.now_ns = interval_ns;
        c.tick();
        let (_, events, res) = server_reads(&c.up);
        assert_eq!(res, Ok(()));
        assert_eq!(
            events,
            vec![WsEvent::Ping(b"grpc-bridge keepalive".to_vec())]
        );
        assert_eq!(c.metrics.pending("pings"), 1);
        // Sent from outside a data callback: appended to the paused downstream buffer.
        assert!(c.host.calls.ends_with(&[
            Call::Append {
                flow: Flow::Downstream,
                len: c.up.len()
            },
            Call::Resume(Flow::Downstream),
            Call::Log(
                LogLevel::Debug,
                "grpc-bridge tunnel client 7: keepalive ping (sent: true)".to_string()
            ),
        ]));
        // The ping counts as traffic: no second ping within the interval.
        c.up.clear();
        c.host.now_ns = 2 * interval_ns - 1;
        c.tick();
        assert!(c.up.is_empty());
        // Client traffic also counts.
        c.host.now_ns = 2 * interval_ns;
        c.client_sends(b"x", false);
        c.up.clear();
        c.host.now_ns = 3 * interval_ns - 1;
        c.tick();
        assert!(c.up.is_empty());
    }

    #[test]
    fn no_ping_before_the_tunnel_is_open_or_when_disabled() {
        let mut c = Conn::new(settings());
        c.host.now_ns = u64::MAX;
        c.tick();
        c.client_sends(PREFACE, false);
        c.up.clear();
        c.tick();
        assert!(c.up.is_empty());
        let mut off = settings();
        off.ping_interval_ms = 0;
        let mut c = Conn::open(off);
        c.host.now_ns = u64::MAX;
        c.tick();
        assert!(c.up.is_empty());
        assert_eq!(c.metrics.pending("pings"), 0);
    }

    #[test]
    fn a_ping_that_cannot_be_sent_waits_and_is_not_repeated() {
        let mut c = Conn::open(settings());
        c.host.now_ns = u64::from(PING_INTERVAL_MS) * 1_000_000;
        c.host.fail = Some(Status::NotFound);
        c.tick();
        assert!(c.host.logged("keepalive ping (sent: false)"));
        c.host.fail = None;
        // The server's ping is not answered while our own ping still waits; both go out once.
        c.server_sends(&frame(true, Opcode::Ping, b"p"), false);
        let (_, events, _) = server_reads(&c.up);
        assert_eq!(
            events,
            vec![WsEvent::Ping(b"grpc-bridge keepalive".to_vec())]
        );
    }

    /// The gRPC client's preface and a HEADERS frame opening stream 1.
    fn one_open_call() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend_from_slice(&[0, 0, 0, 1, 0x4, 0, 0, 0, 1]);
        b
    }

    fn unavailable(reason: &str) -> Vec<u8> {
        let mut ledger = StreamLedger::new();
        ledger.client_bytes(&one_open_call());
        ledger
            .unavailable_frames(&format!(
                "grpc-bridge: the tunnel to the server closed before the call ended{reason}"
            ))
            .unwrap()
    }

    #[test]
    fn a_close_from_the_server_is_answered_and_ends_the_open_calls() {
        let mut c = Conn::open_after(settings(), &one_open_call());
        let mut close = Vec::new();
        encode_frame(
            true,
            Opcode::Close,
            None,
            &close_payload(1001, "backend closed"),
            &mut close,
        );
        c.server_sends(&close, false);
        assert_eq!(c.down, unavailable(": backend closed"));
        assert_eq!(c.metrics.pending("calls_ended_unavailable"), 1);
        // The close is echoed with its code, masked.
        let (_, events, res) = server_reads(&c.up);
        assert_eq!((events, res), (vec![closed(1001)], Ok(())));
        // Once: the connection's end adds nothing.
        c.down.clear();
        c.server_sends(&[], true);
        assert!(c.down.is_empty());
        assert_eq!(c.metrics.pending("calls_ended_unavailable"), 1);
        assert!(c.host.closes().is_empty());
    }

    #[test]
    fn the_server_connection_ending_ends_the_open_calls() {
        let mut c = Conn::open_after(settings(), &one_open_call());
        c.server_sends(&[], true);
        assert_eq!(c.down, unavailable(""));
        assert_eq!(c.metrics.pending("calls_ended_unavailable"), 1);
    }

    #[test]
    fn a_close_from_the_client_side_goes_out_in_band_before_the_fin() {
        let mut c = Conn::open(settings());
        c.client_sends(b"last", true);
        let (data, events, res) = server_reads(&c.up);
        let want = vec![WsEvent::Close {
            code: Some(close_code::NORMAL),
            reason: "client closed".to_string(),
        }];
        assert_eq!((data, events, res), (b"last".to_vec(), want, Ok(())));
        // The server's echo needs no answer: our close went out already.
        c.up.clear();
        c.server_sends(&frame(true, Opcode::Close, &close_payload(1000, "")), false);
        assert!(c.up.is_empty());
    }

    fn fails_on(frame_bytes: &[u8], code: u16) {
        let mut c = Conn::open(settings());
        c.server_sends(frame_bytes, false);
        let (_, events, res) = server_reads(&c.up);
        assert_eq!(res, Ok(()), "{code}");
        let [WsEvent::Close { code: got, .. }] = events.as_slice() else {
            panic!("{code}: {events:?}");
        };
        assert_eq!(*got, Some(code));
        assert_eq!(c.host.closes(), vec![Flow::Downstream], "{code}");
        assert!(c.host.logged("invalid frame from server"), "{code}");
        assert_eq!(c.metrics.pending("errors.bad_frame"), 1, "{code}");
    }

    #[test]
    fn invalid_frames_from_the_server_close_with_the_rfc_code() {
        // Larger than max_frame_bytes: 1009.
        fails_on(
            &frame(true, Opcode::Binary, &[0; MAX_FRAME as usize + 1]),
            1009,
        );
        // Masked (a server must not mask): 1002.
        let mut masked = Vec::new();
        encode_frame(true, Opcode::Binary, Some([1, 2, 3, 4]), b"x", &mut masked);
        fails_on(&masked, close_code::PROTOCOL_ERROR);
        // A continuation with no message started: 1002.
        fails_on(
            &frame(true, Opcode::Continuation, b"x"),
            close_code::PROTOCOL_ERROR,
        );
        // Invalid UTF-8 in a text message: 1007.
        fails_on(
            &frame(true, Opcode::Text, &[0xff]),
            close_code::INVALID_PAYLOAD,
        );
    }

    #[test]
    fn no_entropy_means_no_tunnel() {
        let mut c = Conn::new(settings());
        c.host.no_entropy = true;
        assert_eq!(c.client_sends(PREFACE, false), NetworkAction::Continue);
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
        assert!(c.host.logged("no entropy for the handshake key"));
        // Nothing was written: the host forwards nothing of ours.
        assert!(!c
            .host
            .calls
            .iter()
            .any(|call| matches!(call, Call::Replace { len, .. } if *len > 0)));
    }

    #[test]
    fn unreadable_buffers_close_the_connection() {
        let mut c = Conn::new(settings());
        c.host.fail = Some(Status::BadArgument);
        c.client_sends(PREFACE, false);
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
        assert!(c.host.logged("downstream data unreadable"));
        let mut c = Conn::open(settings());
        c.host.fail = Some(Status::BadArgument);
        c.server_sends(b"x", false);
        assert_eq!(c.host.closes(), vec![Flow::Downstream]);
        assert!(c.host.logged("upstream data unreadable"));
    }
}

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
    accept_key, close_code, close_payload, encode_base64, encode_client_handshake, encode_frame,
    parse_server_handshake, ClientHandshake, FrameDecoder, Opcode, Side, WsEvent,
};
use crate::config::TunnelClientConfig;
use crate::context::{NetworkAction, NetworkStream};
use crate::host::{self, BufferType, LogLevel, StreamType};
use crate::metrics::Metrics;
use crate::tunnel::{wrap_binary, Entropy, MAX_CONTROL_QUEUE, MAX_HANDSHAKE_BYTES};

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
    cfg: Rc<TunnelClientConfig>,
    state: State,
    entropy: Entropy,
    expected_accept: String,
    head: Vec<u8>,
    decoder: FrameDecoder,
    /// Control frames (pong, close) waiting for a chance to go upstream.
    to_upstream: Vec<u8>,
    close_sent: bool,
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
    pub fn new(id: u32, cfg: Rc<TunnelClientConfig>, metrics: Rc<Metrics>) -> Self {
        let max = u64::from(cfg.max_frame_bytes);
        TunnelClient {
            id,
            cfg,
            state: State::Fresh,
            entropy: Entropy::new(),
            expected_accept: String::new(),
            head: Vec::new(),
            decoder: FrameDecoder::new(Side::Client, max),
            to_upstream: Vec::new(),
            close_sent: false,
            last_sent_ns: 0,
            ledger: StreamLedger::new(),
            server_closed: None,
            calls_ended: false,
            metrics,
        }
    }

    fn handshake(&mut self) -> Option<Vec<u8>> {
        let key = encode_base64(&self.entropy.take16()?);
        self.expected_accept = accept_key(&key);
        let h =
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
        Some(encode_client_handshake(&h))
    }

    fn queue_control(&mut self, opcode: Opcode, payload: &[u8]) {
        if self.to_upstream.len() > MAX_CONTROL_QUEUE {
            return;
        }
        match self.entropy.take4() {
            Some(mask) => encode_frame(true, opcode, Some(mask), payload, &mut self.to_upstream),
            None => self.fail("no entropy for mask keys"),
        }
    }

    fn queue_close(&mut self, code: u16, reason: &str) {
        if !self.close_sent {
            self.close_sent = true;
            self.queue_control(Opcode::Close, &close_payload(code, reason));
        }
    }

    /// Sends queued control frames now, outside `on_downstream_data`: append to the downstream
    /// buffer and let Envoy continue reading it into `tcp_proxy`.
    fn flush_control(&mut self) {
        if self.to_upstream.is_empty() {
            return;
        }
        if host::append_buffer(BufferType::DownstreamData, &self.to_upstream).is_ok()
            && host::continue_stream(StreamType::Downstream).is_ok()
        {
            self.to_upstream.clear();
            self.last_sent_ns = host::now_nanos();
        }
    }

    fn fail(&mut self, why: &str) {
        host::log(
            LogLevel::Warn,
            &format!("grpc-bridge tunnel client {}: closing: {why}", self.id),
        );
        self.state = State::Closed;
        let _ = host::close_stream(StreamType::Downstream);
    }

    /// The tunnel is ending (the server side closed it, or the connection toward it did): end
    /// every call still open with UNAVAILABLE, as a direct connection to a backend that went
    /// away would, rather than let the client's HTTP/2 connection break under them (which tonic
    /// reports as UNKNOWN). Only possible between the server's frames; otherwise, or with no
    /// call open, the connection just closes as before.
    fn end_open_calls(&mut self, out: &mut Vec<u8>) {
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
            host::log(
                LogLevel::Info,
                &format!(
                    "grpc-bridge tunnel client {}: tunnel closed; {calls} open call(s) ended with UNAVAILABLE",
                    self.id
                ),
            );
        }
    }

    /// Unwraps server frames into `out`; control frames are answered.
    fn unwrap(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut events = Vec::new();
        let res = self.decoder.decode_into(input, out, &mut events);
        for ev in events {
            match ev {
                // Answer only the latest ping (RFC 6455 5.5.3): no pile-up if sending stalls.
                WsEvent::Ping(p) => {
                    if self.to_upstream.is_empty() {
                        self.queue_control(Opcode::Pong, &p);
                    }
                }
                WsEvent::Close { code, reason } => {
                    host::log(
                        LogLevel::Debug,
                        &format!("grpc-bridge tunnel client: server closed ({code:?}) {reason}"),
                    );
                    self.queue_close(code.unwrap_or(close_code::NORMAL), "");
                    self.server_closed = Some(reason);
                }
                WsEvent::Pong(_) | WsEvent::Data(_) | WsEvent::MessageEnd => {}
            }
        }
        if let Err(e) = res {
            self.metrics.inc("errors.bad_frame");
            self.queue_close(e.close_code, &e.reason);
            self.flush_control();
            self.fail(&format!("invalid frame from server: {e}"));
        }
    }
}

impl NetworkStream for TunnelClient {
    fn on_downstream_data(&mut self, size: usize, eos: bool) -> NetworkAction {
        if self.state == State::Closed {
            let _ = host::replace_buffer_prefix(BufferType::DownstreamData, size, &[]);
            return NetworkAction::Continue;
        }
        let data = match host::get_buffer(BufferType::DownstreamData, 0, size) {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => {
                self.fail(&format!("downstream data unreadable: {e:?}"));
                return NetworkAction::Continue;
            }
        };
        let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 256);
        if self.state == State::Fresh {
            match self.handshake() {
                Some(h) => out.extend_from_slice(&h),
                None => {
                    self.fail("no entropy for the handshake key");
                    return NetworkAction::Continue;
                }
            }
            self.state = State::AwaitingUpgrade;
            self.metrics.inc("connections");
        }
        self.metrics.add("bytes_up", data.len() as u64);
        self.ledger.client_bytes(&data);
        out.append(&mut self.to_upstream);
        if !wrap_binary(
            &data,
            self.cfg.max_frame_bytes as usize,
            Some(&mut self.entropy),
            &mut out,
        ) {
            self.fail("no entropy for mask keys");
            return NetworkAction::Continue;
        }
        if eos {
            // The gRPC client closed its side: say so in-band before the FIN.
            self.queue_close(close_code::NORMAL, "client closed");
            out.append(&mut self.to_upstream);
        }
        if let Err(e) = host::replace_buffer_prefix(BufferType::DownstreamData, size, &out) {
            self.fail(&format!("cannot write upstream: {e:?}"));
        }
        self.last_sent_ns = host::now_nanos();
        // Pass the data on now, but leave the read side "paused": Envoy keeps the downstream
        // buffer reachable only for a filter that stopped, and the keepalive tick needs it to
        // send pings from outside this callback. Envoy runs the continue after we return.
        if self.state != State::Closed && host::continue_stream(StreamType::Downstream).is_ok() {
            return NetworkAction::StopIteration;
        }
        NetworkAction::Continue
    }

    fn on_upstream_data(&mut self, size: usize, eos: bool) -> NetworkAction {
        let data = match host::get_buffer(BufferType::UpstreamData, 0, size) {
            Ok(d) => d.unwrap_or_default(),
            Err(e) => {
                self.fail(&format!("upstream data unreadable: {e:?}"));
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
                    Ok(None) => self.fail("upgrade response head too large"),
                    Ok(Some(consumed)) => {
                        self.state = State::Open;
                        self.metrics.inc("upgrades");
                        let rest = self.head.split_off(consumed.min(self.head.len()));
                        self.head = Vec::new();
                        self.unwrap(&rest, &mut out);
                    }
                    Err(e) => {
                        self.metrics.inc("errors.upgrade_refused");
                        self.fail(&format!("WebSocket upgrade refused: {e}"));
                    }
                }
            }
            State::Open => self.unwrap(&data, &mut out),
            State::Fresh | State::Closed => {}
        }
        if self.state == State::Open {
            self.ledger.server_bytes(&out);
            if eos || self.server_closed.is_some() {
                self.end_open_calls(&mut out);
            }
        }
        self.metrics.add("bytes_down", out.len() as u64);
        if let Err(e) = host::replace_buffer_prefix(BufferType::UpstreamData, size, &out) {
            self.fail(&format!("cannot write downstream: {e:?}"));
        }
        self.flush_control();
        NetworkAction::Continue
    }

    fn on_tick(&mut self) {
        if self.state != State::Open || self.cfg.ping_interval_ms == 0 {
            return;
        }
        let now = host::now_nanos();
        let interval_ns = u64::from(self.cfg.ping_interval_ms) * 1_000_000;
        if now.saturating_sub(self.last_sent_ns) >= interval_ns {
            self.queue_control(Opcode::Ping, b"grpc-bridge keepalive");
            self.metrics.inc("pings");
            self.flush_control();
            host::log(
                LogLevel::Debug,
                &format!(
                    "grpc-bridge tunnel client {}: keepalive ping (sent: {})",
                    self.id,
                    self.to_upstream.is_empty()
                ),
            );
        }
    }
}

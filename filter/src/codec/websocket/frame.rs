//! RFC 6455 frames: coding, masking, and the streaming decoder.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! Roles: the agent Envoy is the WebSocket *client* (its frames are masked), the server Envoy is
//! the *server* (its frames are not). [`FrameDecoder`] is built for the side that *receives*:
//! a [`Side::Server`] decoder requires masked frames, a [`Side::Client`] decoder unmasked ones.
//!
//! The decoder is a streaming state machine: input may be split anywhere, data payload bytes are
//! unmasked and handed out as they arrive (a data frame is never buffered whole, so a frame's
//! size costs no memory), and only control-frame payloads (at most 125 bytes) and the frame
//! header (at most 14 bytes) are held between calls. Every limit is checked from the header
//! alone, before any payload byte is stored. Errors carry the close code we must send
//! ([`WsError::close_code`]) and are sticky.
//!
//! No extensions are negotiated, so any RSV bit is a protocol error. Text messages are checked
//! for valid UTF-8 incrementally (a code point may be split across frames and chunks); their
//! Data events only ever hold whole code points, so the bytes delivered before a 1007 error are
//! the same however the input was split. (The tunnel itself sends Binary.)
//!
//! Masking ([`apply_mask`]) is word-wise with a rotated key, so a payload can be (un)masked in
//! pieces at any offset; this is the hot loop of the tunnel.

use std::fmt;

/// Largest frame header: 2 bytes + 8-byte length + 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest control-frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Frame opcodes (RFC 6455 §5.2). Reserved opcodes (3-7, 11-15) have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// The opcode for the low 4 bits of a frame's first byte, or None for reserved values
    /// (and anything above 15).
    pub fn from_u8(b: u8) -> Option<Opcode> {
        match b {
            0 => Some(Opcode::Continuation),
            1 => Some(Opcode::Text),
            2 => Some(Opcode::Binary),
            8 => Some(Opcode::Close),
            9 => Some(Opcode::Ping),
            10 => Some(Opcode::Pong),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }

    /// Close, Ping and Pong: at most 125 bytes, never fragmented, allowed between fragments.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// The side that *receives* with a decoder: a `Server` decoder reads client frames (which must
/// be masked), a `Client` decoder reads server frames (which must not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// Close status codes (RFC 6455 §7.4.1) that this crate sends.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Whether `code` may appear in a Close frame on the wire: 1000-1003, 1007-1014 (the IANA
/// registered ones that are not reserved for local use) and 3000-4999 (registered/private).
/// 1004-1006 and 1015 are reserved and must never be sent; 1016-2999 are unassigned.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends a frame header (2..=14 bytes) for a payload of `len` bytes, with the minimal length
/// form (7-bit up to 125, 16-bit up to 65535, else 64-bit). RSV bits are zero. The caller keeps
/// the RFC's rules: control frames are FIN and at most 125 bytes, and `len` < 2^63.
pub fn encode_header(
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    len: u64,
    out: &mut Vec<u8>,
) {
    let b0 = if fin { 0x80 } else { 0 } | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80u8 } else { 0 };
    out.push(b0);
    if len <= 125 {
        out.push(mask_bit | len as u8);
    } else if let Ok(l16) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&l16.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Payload is masked in blocks this size right after being copied, while the block is still in
/// L1: one pass over memory. A multiple of 4 so every block starts at mask phase 0.
const MASK_BLOCK: usize = 4096;

/// Appends a complete frame (header + payload). When `mask` is Some, the payload is masked
/// while it is copied.
pub fn encode_frame(
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.reserve(payload.len().saturating_add(MAX_HEADER_LEN));
    encode_header(fin, opcode, mask, payload.len() as u64, out);
    match mask {
        None => out.extend_from_slice(payload),
        Some(m) => {
            for block in payload.chunks(MASK_BLOCK) {
                let start = out.len();
                out.extend_from_slice(block);
                if let Some(tail) = out.get_mut(start..) {
                    apply_mask(tail, m, 0);
                }
            }
        }
    }
}

/// Appends a Close frame with [`close_payload`]`(code, reason)`.
pub fn encode_close_frame(mask: Option<[u8; 4]>, code: u16, reason: &str, out: &mut Vec<u8>) {
    encode_frame(true, Opcode::Close, mask, &close_payload(code, reason), out);
}

/// With wasm SIMD: XORs 64-byte blocks with the key in 16-byte lanes and returns the rest
/// (a multiple of 64 bytes was done, so the rest starts at phase 0 of the key). V8 and
/// Cranelift keep wasm scalar code scalar: without this the wasm masking loop runs 5x slower
/// than the auto-vectorized native one (docs/BENCHMARKS.md).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn xor_simd(data: &mut [u8], k8: u64) -> &mut [u8] {
    use core::arch::wasm32::{u64x2_splat, v128, v128_load, v128_store, v128_xor};
    let k = u64x2_splat(k8);
    let mut blocks = data.chunks_exact_mut(64);
    for block in &mut blocks {
        let p = block.as_mut_ptr().cast::<v128>();
        // SAFETY: `block` is exactly 64 bytes (four v128) of `data`, borrowed mutably and
        // exclusively here; wasm `v128.load`/`v128.store` have no alignment requirement.
        // Four independent lanes per step, unrolled by hand (Cranelift does not unroll).
        unsafe {
            let (a, b, c, d) = (p, p.add(1), p.add(2), p.add(3));
            let (va, vb, vc, vd) = (v128_load(a), v128_load(b), v128_load(c), v128_load(d));
            v128_store(a, v128_xor(va, k));
            v128_store(b, v128_xor(vb, k));
            v128_store(c, v128_xor(vc, k));
            v128_store(d, v128_xor(vd, k));
        }
    }
    blocks.into_remainder()
}

/// Without wasm SIMD the word loop below does everything.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn xor_simd(data: &mut [u8], _k8: u64) -> &mut [u8] {
    data
}

/// XORs `data` in place with the masking key, starting at mask phase `offset % 4` (the offset
/// of `data[0]` within the frame payload), so a payload can be (un)masked in pieces.
///
/// Word-wise: the key is rotated to the phase and repeated into a `u64`, and the data is
/// processed 32 bytes per step as four native-endian `u64`s (which LLVM turns into SIMD where
/// the target has it); the tail (< 8 bytes) goes byte by byte. Masking is an involution:
/// applying it twice restores the data.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset & 3);
    let [k0, k1, k2, k3] = key;
    let k8 = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);

    let data = xor_simd(data, k8);
    let mut big = data.chunks_exact_mut(32);
    for chunk in &mut big {
        for word in chunk.chunks_exact_mut(8) {
            if let Ok(w) = <&mut [u8; 8]>::try_from(word) {
                *w = (u64::from_ne_bytes(*w) ^ k8).to_ne_bytes();
            }
        }
    }
    let rest = big.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        if let Ok(w) = <&mut [u8; 8]>::try_from(word) {
            *w = (u64::from_ne_bytes(*w) ^ k8).to_ne_bytes();
        }
    }
    // Everything before the tail was a multiple of 8 (hence of 4) bytes: the tail starts at
    // phase 0 of the rotated key.
    for (b, k) in words.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// Close frame payload: 2-byte big-endian `code` + UTF-8 `reason`, the reason truncated (on a
/// char boundary) so that the payload fits a control frame (125 bytes).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let max_reason = MAX_CONTROL_PAYLOAD.saturating_sub(2);
    let mut cut = reason.len().min(max_reason);
    while !reason.is_char_boundary(cut) {
        cut = cut.saturating_sub(1);
    }
    let reason = reason.get(..cut).unwrap_or("");
    let mut out = Vec::with_capacity(reason.len().saturating_add(2));
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// Decoding

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// Unmasked payload bytes of a data message (binary or text, any fragment), delivered
    /// incrementally as they arrive: a frame's payload may be split over several events, and
    /// the decoder never buffers a whole data frame. Never empty.
    Data(Vec<u8>),
    /// A complete data message ended (FIN seen on the last fragment).
    MessageEnd,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// Peer's close: code (None when the payload is empty) and reason.
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// Why the connection must be failed, with the close code to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError {
    pub close_code: u16,
    pub reason: String,
}

impl WsError {
    fn new(close_code: u16, reason: impl Into<String>) -> WsError {
        WsError {
            close_code,
            reason: reason.into(),
        }
    }

    fn protocol(reason: impl Into<String>) -> WsError {
        WsError::new(close_code::PROTOCOL_ERROR, reason)
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "websocket error (close {}): {}",
            self.close_code, self.reason
        )
    }
}

impl std::error::Error for WsError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Accumulating a frame header in `hdr[..hdr_len]`.
    Header,
    /// Inside the payload of `frame`.
    Payload,
    /// The peer's Close frame has been decoded; nothing may follow it.
    Closed,
    Failed(WsError),
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct FrameInfo {
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already seen (its low 2 bits are the mask phase).
    pos: u64,
}

/// Incremental UTF-8 validation of a Text message across chunk and frame boundaries. Only
/// complete code points are passed on: an incomplete one at the end of a piece (at most 3
/// bytes) is held back until the next piece completes it. So the bytes delivered before an
/// error are exactly the valid prefix of the message, however the input was split.
#[derive(Debug, Clone, Default)]
struct Utf8Stream {
    carry: [u8; 4],
    len: usize,
}

impl Utf8Stream {
    /// Takes the next unmasked piece; Ok(bytes to deliver) or Err(the valid prefix to deliver
    /// before failing).
    fn push(&mut self, mut piece: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
        if self.len > 0 {
            let carried = self.carry.get(..self.len).unwrap_or(&[]);
            let mut joined = Vec::with_capacity(carried.len().saturating_add(piece.len()));
            joined.extend_from_slice(carried);
            joined.extend_from_slice(&piece);
            piece = joined;
            self.len = 0;
        }
        match std::str::from_utf8(&piece) {
            Ok(_) => Ok(piece),
            Err(e) => {
                let valid = e.valid_up_to();
                if e.error_len().is_some() {
                    piece.truncate(valid);
                    return Err(piece);
                }
                // Incomplete code point at the end: at most 3 bytes.
                let tail = piece.get(valid..).unwrap_or(&[]);
                match self.carry.get_mut(..tail.len()) {
                    Some(dst) if tail.len() < 4 => {
                        dst.copy_from_slice(tail);
                        self.len = tail.len();
                        piece.truncate(valid);
                        Ok(piece)
                    }
                    _ => {
                        piece.truncate(valid);
                        Err(piece)
                    }
                }
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.len == 0
    }
}

/// Where decoded payload goes: [`FrameDecoder::decode`] makes events of everything,
/// [`FrameDecoder::decode_into`] appends data bytes to one buffer.
trait Sink {
    /// Appends `chunk` (non-empty), unmasking it with `mask` at `phase`.
    fn data(&mut self, chunk: &[u8], mask: Option<[u8; 4]>, phase: usize);
    /// Appends already unmasked bytes (may be empty: then nothing is delivered).
    fn plain(&mut self, bytes: Vec<u8>);
    fn message_end(&mut self);
    fn control(&mut self, ev: WsEvent);
}

struct EventSink<'a>(&'a mut Vec<WsEvent>);

impl Sink for EventSink<'_> {
    fn data(&mut self, chunk: &[u8], mask: Option<[u8; 4]>, phase: usize) {
        let mut v = chunk.to_vec();
        if let Some(m) = mask {
            apply_mask(&mut v, m, phase);
        }
        self.0.push(WsEvent::Data(v));
    }

    fn plain(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.0.push(WsEvent::Data(bytes));
        }
    }

    fn message_end(&mut self) {
        self.0.push(WsEvent::MessageEnd);
    }

    fn control(&mut self, ev: WsEvent) {
        self.0.push(ev);
    }
}

struct SplitSink<'a> {
    data: &'a mut Vec<u8>,
    events: &'a mut Vec<WsEvent>,
}

impl Sink for SplitSink<'_> {
    fn data(&mut self, chunk: &[u8], mask: Option<[u8; 4]>, phase: usize) {
        let start = self.data.len();
        self.data.extend_from_slice(chunk);
        if let (Some(m), Some(tail)) = (mask, self.data.get_mut(start..)) {
            apply_mask(tail, m, phase);
        }
    }

    fn plain(&mut self, bytes: Vec<u8>) {
        self.data.extend_from_slice(&bytes);
    }

    fn message_end(&mut self) {}

    fn control(&mut self, ev: WsEvent) {
        self.events.push(ev);
    }
}

/// Streaming frame decoder for one direction of one connection.
///
/// Events produced before an error in the same call stay in the caller's vectors; after an
/// error every call returns that error again. `max_payload` bounds each *data frame's* payload
/// (checked from its header; control frames are bounded by the RFC's 125 bytes instead). A data
/// message may span many frames; bounding the message is the caller's business, since the
/// decoder never holds its bytes.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    side: Side,
    max_payload: u64,
    state: State,
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: usize,
    frame: FrameInfo,
    /// Unmasked payload of the control frame being read (<= 125 bytes).
    control: Vec<u8>,
    /// Opcode (Text/Binary) of the data message in progress: set by its first frame, cleared
    /// when its FIN frame ends.
    message: Option<Opcode>,
    utf8: Utf8Stream,
}

/// Header length implied by the second header byte.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2usize.saturating_add(ext).saturating_add(mask)
}

impl FrameDecoder {
    pub fn new(side: Side, max_payload: u64) -> Self {
        FrameDecoder {
            side,
            max_payload,
            state: State::Header,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            frame: FrameInfo {
                fin: true,
                opcode: Opcode::Binary,
                mask: None,
                remaining: 0,
                pos: 0,
            },
            control: Vec::new(),
            message: None,
            utf8: Utf8Stream::default(),
        }
    }

    /// Decodes `input`, appending events. Input may be split anywhere.
    pub fn decode(&mut self, input: &[u8], events: &mut Vec<WsEvent>) -> Result<(), WsError> {
        self.run(input, &mut EventSink(events))
    }

    /// Like [`decode`](Self::decode), but all data payload bytes (unmasked, contiguous) are
    /// appended to `data_out`, and only control events to `events` (no `MessageEnd`).
    pub fn decode_into(
        &mut self,
        input: &[u8],
        data_out: &mut Vec<u8>,
        events: &mut Vec<WsEvent>,
    ) -> Result<(), WsError> {
        self.run(
            input,
            &mut SplitSink {
                data: data_out,
                events,
            },
        )
    }

    /// At a frame boundary with no partial header (a data message may still be unfinished; see
    /// [`in_message`](Self::in_message)).
    pub fn is_idle(&self) -> bool {
        self.state == State::Header && self.hdr_len == 0
    }

    /// A fragmented data message has started and its final frame has not ended yet.
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// The peer's Close frame has been decoded.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The sticky error, if decoding has failed.
    pub fn error(&self) -> Option<&WsError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn run(&mut self, input: &[u8], sink: &mut impl Sink) -> Result<(), WsError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        match self.run_inner(input, sink) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.state = State::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// Copies up to `need - hdr_len` bytes of `input` into the header buffer; returns the rest.
    fn fill_header<'i>(&mut self, input: &'i [u8], need: usize) -> &'i [u8] {
        let take = need.saturating_sub(self.hdr_len).min(input.len());
        let (head, rest) = input.split_at_checked(take).unwrap_or((input, &[]));
        let end = self.hdr_len.saturating_add(head.len());
        if let Some(dst) = self.hdr.get_mut(self.hdr_len..end) {
            dst.copy_from_slice(head);
            self.hdr_len = end;
        }
        rest
    }

    fn run_inner(&mut self, mut input: &[u8], sink: &mut impl Sink) -> Result<(), WsError> {
        while !input.is_empty() {
            match self.state {
                State::Failed(_) => return Ok(()), // unreachable: errors return at once
                State::Closed => {
                    return Err(WsError::protocol("data after the close frame"));
                }
                State::Header => {
                    if self.hdr_len < 2 {
                        input = self.fill_header(input, 2);
                        if self.hdr_len < 2 {
                            continue;
                        }
                        self.check_first_two()?;
                    }
                    let [_, b1, ..] = self.hdr;
                    let need = header_len(b1);
                    if self.hdr_len < need {
                        input = self.fill_header(input, need);
                        if self.hdr_len < need {
                            continue;
                        }
                    }
                    self.start_frame(sink)?;
                }
                State::Payload => {
                    let n = usize::try_from(self.frame.remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    let (chunk, rest) = input.split_at_checked(n).unwrap_or((input, &[]));
                    input = rest;
                    let phase = (self.frame.pos & 3) as usize;
                    if self.frame.opcode.is_control() {
                        let start = self.control.len();
                        self.control.extend_from_slice(chunk);
                        if let (Some(m), Some(tail)) =
                            (self.frame.mask, self.control.get_mut(start..))
                        {
                            apply_mask(tail, m, phase);
                        }
                    } else if self.message == Some(Opcode::Text) {
                        let mut piece = chunk.to_vec();
                        if let Some(m) = self.frame.mask {
                            apply_mask(&mut piece, m, phase);
                        }
                        match self.utf8.push(piece) {
                            Ok(valid) => sink.plain(valid),
                            Err(valid) => {
                                sink.plain(valid);
                                return Err(WsError::new(
                                    close_code::INVALID_PAYLOAD,
                                    "invalid UTF-8 in a text message",
                                ));
                            }
                        }
                    } else {
                        sink.data(chunk, self.frame.mask, phase);
                    }
                    self.frame.pos = self.frame.pos.saturating_add(chunk.len() as u64);
                    self.frame.remaining = self.frame.remaining.saturating_sub(chunk.len() as u64);
                    if self.frame.remaining == 0 {
                        self.finish_frame(sink)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks everything the first two header bytes decide.
    fn check_first_two(&mut self) -> Result<(), WsError> {
        let [b0, b1, ..] = self.hdr;
        if b0 & 0x70 != 0 {
            return Err(WsError::protocol(
                "reserved bits set without a negotiated extension",
            ));
        }
        let Some(opcode) = Opcode::from_u8(b0 & 0x0F) else {
            return Err(WsError::protocol(format!("reserved opcode {}", b0 & 0x0F)));
        };
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        match (self.side, masked) {
            (Side::Server, false) => return Err(WsError::protocol("unmasked client frame")),
            (Side::Client, true) => return Err(WsError::protocol("masked server frame")),
            _ => {}
        }
        if opcode.is_control() {
            if !fin {
                return Err(WsError::protocol("fragmented control frame"));
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(WsError::protocol("control frame payload over 125 bytes"));
            }
        } else if opcode == Opcode::Continuation {
            if self.message.is_none() {
                return Err(WsError::protocol(
                    "continuation frame without a started message",
                ));
            }
        } else if self.message.is_some() {
            return Err(WsError::protocol(
                "new data message while a fragmented one is unfinished",
            ));
        }
        Ok(())
    }

    /// The header is complete: decode the length and mask, check the limit, enter the payload.
    fn start_frame(&mut self, sink: &mut impl Sink) -> Result<(), WsError> {
        let [b0, b1, x0, x1, x2, x3, x4, x5, x6, x7, ..] = self.hdr;
        let fin = b0 & 0x80 != 0;
        let opcode = Opcode::from_u8(b0 & 0x0F).unwrap_or(Opcode::Binary); // checked already
        let (len, key_at) = match b1 & 0x7F {
            126 => (u64::from(u16::from_be_bytes([x0, x1])), 4usize),
            127 => (u64::from_be_bytes([x0, x1, x2, x3, x4, x5, x6, x7]), 10),
            l => (u64::from(l), 2),
        };
        if len >> 63 != 0 {
            return Err(WsError::protocol(
                "64-bit payload length with the top bit set",
            ));
        }
        if !opcode.is_control() && len > self.max_payload {
            return Err(WsError::new(
                close_code::MESSAGE_TOO_BIG,
                format!(
                    "frame payload of {len} bytes exceeds the limit of {}",
                    self.max_payload
                ),
            ));
        }
        let mask = if b1 & 0x80 != 0 {
            match self.hdr.get(key_at..key_at.saturating_add(4)) {
                Some(&[m0, m1, m2, m3]) => Some([m0, m1, m2, m3]),
                _ => return Err(WsError::protocol("internal: truncated masking key")),
            }
        } else {
            None
        };
        if !opcode.is_control() && opcode != Opcode::Continuation {
            self.message = Some(opcode);
            self.utf8 = Utf8Stream::default();
        }
        self.frame = FrameInfo {
            fin,
            opcode,
            mask,
            remaining: len,
            pos: 0,
        };
        self.control.clear();
        self.hdr_len = 0;
        self.state = State::Payload;
        if len == 0 {
            self.finish_frame(sink)?;
        }
        Ok(())
    }

    /// The current frame's payload is complete.
    fn finish_frame(&mut self, sink: &mut impl Sink) -> Result<(), WsError> {
        self.state = State::Header;
        match self.frame.opcode {
            Opcode::Continuation | Opcode::Text | Opcode::Binary => {
                if self.frame.fin {
                    if self.message == Some(Opcode::Text) && !self.utf8.at_boundary() {
                        return Err(WsError::new(
                            close_code::INVALID_PAYLOAD,
                            "text message ends inside a UTF-8 sequence",
                        ));
                    }
                    self.message = None;
                    sink.message_end();
                }
            }
            Opcode::Ping => sink.control(WsEvent::Ping(std::mem::take(&mut self.control))),
            Opcode::Pong => sink.control(WsEvent::Pong(std::mem::take(&mut self.control))),
            Opcode::Close => {
                let ev = parse_close_payload(&self.control)?;
                self.control.clear();
                self.state = State::Closed;
                sink.control(ev);
            }
        }
        Ok(())
    }
}

/// Decodes a Close frame payload into an event, validating code and reason.
pub fn parse_close_payload(p: &[u8]) -> Result<WsEvent, WsError> {
    match p {
        [] => Ok(WsEvent::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(WsError::protocol("1-byte close payload")),
        [c0, c1, reason @ ..] => {
            let code = u16::from_be_bytes([*c0, *c1]);
            if !is_valid_close_code(code) {
                return Err(WsError::protocol(format!("invalid close code {code}")));
            }
            match std::str::from_utf8(reason) {
                Ok(r) => Ok(WsEvent::Close {
                    code: Some(code),
                    reason: r.to_owned(),
                }),
                Err(_) => Err(WsError::new(
                    close_code::INVALID_PAYLOAD,
                    "invalid UTF-8 in the close reason",
                )),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// The frames `(fin, opcode, payload)` encoded one after another, all with `mask`.
    fn frames(mask: Option<[u8; 4]>, frames: &[(bool, Opcode, &[u8])]) -> Vec<u8> {
        let mut w = Vec::new();
        for (fin, opcode, payload) in frames {
            encode_frame(*fin, *opcode, mask, payload, &mut w);
        }
        w
    }

    /// Encodes `frame_list` with `mask`, checks that a `side` decoder reads it as `events`, and
    /// gives the encoded bytes.
    fn assert_frames_decode(
        side: Side,
        mask: Option<[u8; 4]>,
        frame_list: &[(bool, Opcode, &[u8])],
        events: Vec<WsEvent>,
    ) -> Vec<u8> {
        let w = frames(mask, frame_list);
        assert_eq!(decode_all_events(side, &w).unwrap(), events);
        w
    }

    pub(crate) fn decode_all_events(side: Side, input: &[u8]) -> Result<Vec<WsEvent>, WsError> {
        let mut d = FrameDecoder::new(side, 1 << 20);
        let mut ev = Vec::new();
        d.decode(input, &mut ev)?;
        Ok(merge(ev))
    }

    /// Joins adjacent Data events.
    pub(crate) fn merge(ev: Vec<WsEvent>) -> Vec<WsEvent> {
        let mut out: Vec<WsEvent> = Vec::new();
        for e in ev {
            if let (WsEvent::Data(d), Some(WsEvent::Data(prev))) = (&e, out.last_mut()) {
                prev.extend_from_slice(d);
                continue;
            }
            out.push(e);
        }
        out
    }

    fn err_code(side: Side, input: &[u8]) -> u16 {
        let mut d = FrameDecoder::new(side, 1 << 20);
        let mut ev = Vec::new();
        let e = d.decode(input, &mut ev).unwrap_err();
        // Sticky, also for an empty call.
        assert_eq!(d.decode(&[], &mut ev).unwrap_err(), e);
        assert_eq!(d.decode(b"x", &mut ev).unwrap_err(), e);
        e.close_code
    }

    pub(crate) fn data_msg(b: &[u8]) -> Vec<WsEvent> {
        vec![WsEvent::Data(b.to_vec()), WsEvent::MessageEnd]
    }

    #[test]
    fn opcodes() {
        for b in 0..=255u8 {
            if let Some(op) = Opcode::from_u8(b) {
                assert_eq!(op.as_u8(), b);
            }
        }
        assert!(Opcode::Ping.is_control() && Opcode::Close.is_control());
        assert!(!Opcode::Binary.is_control() && !Opcode::Continuation.is_control());
        assert_eq!(Opcode::from_u8(3), None);
        assert_eq!(Opcode::from_u8(11), None);
    }

    /// Encodes one final frame, checks it is `wire`, and decodes `wire` on the side that
    /// receives it (a masked frame goes to the server) into `events`.
    fn assert_rfc_frame(
        opcode: Opcode,
        mask: Option<[u8; 4]>,
        payload: &[u8],
        wire: &[u8],
        events: Vec<WsEvent>,
    ) {
        let mut out = Vec::new();
        encode_frame(true, opcode, mask, payload, &mut out);
        assert_eq!(out, wire, "{opcode:?} mask {mask:?}");
        let receiver = if mask.is_some() {
            Side::Server
        } else {
            Side::Client
        };
        assert_eq!(
            decode_all_events(receiver, wire).unwrap(),
            events,
            "{opcode:?} mask {mask:?}"
        );
    }

    // RFC 6455 §5.7 examples.
    #[test]
    fn rfc_single_frame_unmasked_hello() {
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_rfc_frame(Opcode::Text, None, b"Hello", &wire, data_msg(b"Hello"));
        assert_eq!(err_code(Side::Server, &wire), 1002);
    }

    #[test]
    fn rfc_single_frame_masked_hello() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_rfc_frame(
            Opcode::Text,
            Some(MASK),
            b"Hello",
            &wire,
            data_msg(b"Hello"),
        );
        assert_eq!(err_code(Side::Client, &wire), 1002);
    }

    #[test]
    fn rfc_fragmented_unmasked() {
        let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
        let mut out = Vec::new();
        encode_frame(false, Opcode::Text, None, b"Hel", &mut out);
        encode_frame(true, Opcode::Continuation, None, b"lo", &mut out);
        assert_eq!(out, wire);
        let mut d = FrameDecoder::new(Side::Client, 100);
        let mut ev = Vec::new();
        d.decode(&wire, &mut ev).unwrap();
        assert_eq!(
            ev,
            vec![
                WsEvent::Data(b"Hel".to_vec()),
                WsEvent::Data(b"lo".to_vec()),
                WsEvent::MessageEnd
            ]
        );
        assert!(d.is_idle() && !d.in_message());
    }

    #[test]
    fn rfc_ping_unmasked_pong_masked() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let ping_events = vec![WsEvent::Ping(b"Hello".to_vec())];
        assert_rfc_frame(Opcode::Ping, None, b"Hello", &ping, ping_events);
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let pong_events = vec![WsEvent::Pong(b"Hello".to_vec())];
        assert_rfc_frame(Opcode::Pong, Some(MASK), b"Hello", &pong, pong_events);
    }

    #[test]
    fn rfc_256_bytes_and_64k_binary() {
        let p256 = vec![0xABu8; 256];
        let mut out = Vec::new();
        encode_frame(true, Opcode::Binary, None, &p256, &mut out);
        assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(out.len(), 4 + 256);
        assert_eq!(
            decode_all_events(Side::Client, &out).unwrap(),
            data_msg(&p256)
        );

        let p64k: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
        out.clear();
        encode_frame(true, Opcode::Binary, None, &p64k, &mut out);
        assert_eq!(
            out[..10],
            [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(
            decode_all_events(Side::Client, &out).unwrap(),
            data_msg(&p64k)
        );

        out.clear();
        encode_frame(true, Opcode::Binary, Some(MASK), &p64k, &mut out);
        assert_eq!(
            out[..14],
            [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 0x37, 0xfa, 0x21, 0x3d]
        );
        assert_eq!(
            decode_all_events(Side::Server, &out).unwrap(),
            data_msg(&p64k)
        );
    }

    #[test]
    fn header_length_forms_are_minimal() {
        for (len, hdr_len) in [
            (0u64, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
            (1 << 40, 10),
        ] {
            let mut h = Vec::new();
            encode_header(true, Opcode::Binary, None, len, &mut h);
            assert_eq!(h.len(), hdr_len, "len {len}");
            h.clear();
            encode_header(true, Opcode::Binary, Some(MASK), len, &mut h);
            assert_eq!(h.len(), hdr_len + 4, "len {len}");
            assert_eq!(h[h.len() - 4..], MASK);
        }
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        // "Hi" with a 16-bit and a 64-bit length field.
        let w16 = [0x82, 0x7E, 0x00, 0x02, b'H', b'i'];
        let w64 = [0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 2, b'H', b'i'];
        assert_eq!(
            decode_all_events(Side::Client, &w16).unwrap(),
            data_msg(b"Hi")
        );
        assert_eq!(
            decode_all_events(Side::Client, &w64).unwrap(),
            data_msg(b"Hi")
        );
    }

    #[test]
    fn mask_reference_and_phases() {
        let data: Vec<u8> = (0..100u8).collect();
        for off in 0..8 {
            for len in 0..data.len() {
                let mut a = data[..len].to_vec();
                apply_mask(&mut a, MASK, off);
                let b: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x ^ MASK[(i + off) % 4])
                    .collect();
                assert_eq!(a, b, "off {off} len {len}");
            }
        }
    }

    /// A ping between the fragments of a message: `decode` reports it where it stood;
    /// `decode_into` (input cut every 3 bytes) gives the data bytes of every message in one
    /// buffer and only the ping as an event.
    #[test]
    fn control_frames_between_fragments() {
        let w = assert_frames_decode(
            Side::Server,
            Some(MASK),
            &[
                (false, Opcode::Binary, b"hello "),
                (true, Opcode::Ping, b"p"),
                (true, Opcode::Continuation, b"world"),
                (true, Opcode::Binary, b"!"),
            ],
            vec![
                WsEvent::Data(b"hello ".to_vec()),
                WsEvent::Ping(b"p".to_vec()),
                WsEvent::Data(b"world".to_vec()),
                WsEvent::MessageEnd,
                WsEvent::Data(b"!".to_vec()),
                WsEvent::MessageEnd,
            ],
        );
        let mut d = FrameDecoder::new(Side::Server, 100);
        let (mut data, mut ev) = (Vec::new(), Vec::new());
        for c in w.chunks(3) {
            d.decode_into(c, &mut data, &mut ev).unwrap();
        }
        assert_eq!(data, b"hello world!");
        assert_eq!(ev, vec![WsEvent::Ping(b"p".to_vec())]);
        assert!(d.is_idle());
    }

    #[test]
    fn empty_frames() {
        assert_frames_decode(
            Side::Client,
            None,
            &[
                (true, Opcode::Binary, b""),
                (true, Opcode::Ping, b""),
                (true, Opcode::Close, b""),
            ],
            vec![
                WsEvent::MessageEnd,
                WsEvent::Ping(vec![]),
                WsEvent::Close {
                    code: None,
                    reason: String::new(),
                },
            ],
        );
    }

    #[test]
    fn close_frames() {
        let mut w = Vec::new();
        encode_close_frame(Some(MASK), close_code::GOING_AWAY, "bye ✓", &mut w);
        let mut d = FrameDecoder::new(Side::Server, 10);
        let mut ev = Vec::new();
        d.decode(&w, &mut ev).unwrap();
        assert_eq!(
            ev,
            vec![WsEvent::Close {
                code: Some(1001),
                reason: "bye ✓".into()
            }]
        );
        assert!(d.is_closed());
        d.decode(&[], &mut ev).unwrap();
        // Anything after the close is a protocol error.
        assert_eq!(d.decode(&[0x82], &mut ev).unwrap_err().close_code, 1002);
        // ... also within the same call.
        let mut w2 = w.clone();
        encode_frame(true, Opcode::Binary, Some(MASK), b"x", &mut w2);
        assert_eq!(err_code(Side::Server, &w2), 1002);
    }

    #[test]
    fn close_payload_truncates_on_char_boundary() {
        let p = close_payload(1000, "");
        assert_eq!(p, [0x03, 0xE8]);
        let long = "é".repeat(100); // 200 bytes
        let p = close_payload(1011, &long);
        assert!(p.len() <= 125);
        assert_eq!(p.len(), 2 + 122);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        let ascii = "x".repeat(200);
        assert_eq!(close_payload(1000, &ascii).len(), 125);
        let mut w = Vec::new();
        encode_close_frame(None, 1011, &long, &mut w);
        assert!(decode_all_events(Side::Client, &w).is_ok());
    }

    fn close_with(code: u16) -> Vec<u8> {
        let mut w = Vec::new();
        encode_frame(true, Opcode::Close, None, &code.to_be_bytes(), &mut w);
        w
    }

    #[test]
    fn close_code_validity() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert_eq!(
                decode_all_events(Side::Client, &close_with(code)).unwrap(),
                vec![WsEvent::Close {
                    code: Some(code),
                    reason: String::new()
                }],
                "{code}"
            );
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(err_code(Side::Client, &close_with(code)), 1002, "{code}");
        }
    }

    // Every error case, each with its close code.
    #[test]
    fn error_unmasked_frame_to_server() {
        assert_eq!(err_code(Side::Server, &[0x82, 0x00]), 1002);
    }

    #[test]
    fn error_masked_frame_to_client() {
        assert_eq!(err_code(Side::Client, &[0x82, 0x80, 1, 2, 3, 4]), 1002);
    }

    #[test]
    fn error_reserved_bits() {
        for rsv in [0x40u8, 0x20, 0x10] {
            assert_eq!(err_code(Side::Client, &[0x82 | rsv, 0x00]), 1002);
        }
    }

    #[test]
    fn error_reserved_opcodes() {
        for op in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
            assert_eq!(err_code(Side::Client, &[0x80 | op, 0x00]), 1002, "{op}");
        }
    }

    #[test]
    fn error_fragmented_control_frame() {
        assert_eq!(err_code(Side::Client, &[0x09, 0x00]), 1002);
        assert_eq!(err_code(Side::Client, &[0x08, 0x00]), 1002);
    }

    #[test]
    fn error_control_frame_over_125() {
        let mut w = vec![0x89, 126, 0, 126];
        w.extend_from_slice(&[0; 126]);
        assert_eq!(err_code(Side::Client, &w), 1002);
        // Detected from the second header byte alone.
        assert_eq!(err_code(Side::Client, &[0x8A, 0x7E]), 1002);
    }

    #[test]
    fn error_continuation_without_message() {
        assert_eq!(err_code(Side::Client, &[0x80, 0x01, b'x']), 1002);
        // Also after a finished message.
        assert_eq!(err_code(Side::Client, &[0x82, 0x00, 0x00, 0x00]), 1002);
    }

    #[test]
    fn error_new_message_while_fragmented() {
        assert_eq!(err_code(Side::Client, &[0x02, 0x00, 0x82, 0x00]), 1002);
        assert_eq!(err_code(Side::Client, &[0x01, 0x00, 0x81, 0x00]), 1002);
    }

    #[test]
    fn error_64bit_length_top_bit() {
        assert_eq!(
            err_code(Side::Client, &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            1002
        );
    }

    #[test]
    fn error_payload_over_limit_from_header_alone() {
        let mut d = FrameDecoder::new(Side::Client, 1000);
        let mut ev = Vec::new();
        // Header of a 1001-byte frame, no payload yet.
        let e = d.decode(&[0x82, 0x7E, 0x03, 0xE9], &mut ev).unwrap_err();
        assert_eq!(e.close_code, 1009);
        assert!(ev.is_empty());
        // 1000 is fine.
        let mut d = FrameDecoder::new(Side::Client, 1000);
        d.decode(&[0x82, 0x7E, 0x03, 0xE8], &mut ev).unwrap();
        // Huge 64-bit lengths too.
        let mut d = FrameDecoder::new(Side::Server, u64::from(u32::MAX));
        let e = d
            .decode(
                &[
                    0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4,
                ],
                &mut ev,
            )
            .unwrap_err();
        assert_eq!(e.close_code, 1009);
        // Control frames are bounded by 125, not by max_payload.
        let mut d = FrameDecoder::new(Side::Client, 0);
        let mut w = Vec::new();
        encode_frame(true, Opcode::Ping, None, &[7; 125], &mut w);
        d.decode(&w, &mut ev).unwrap();
    }

    #[test]
    fn error_close_reason_not_utf8() {
        let mut w = Vec::new();
        encode_frame(true, Opcode::Close, None, &[0x03, 0xE8, 0xFF, 0xFE], &mut w);
        assert_eq!(err_code(Side::Client, &w), 1007);
    }

    #[test]
    fn error_one_byte_close_payload() {
        assert_eq!(err_code(Side::Client, &[0x88, 0x01, 0x03]), 1002);
    }

    #[test]
    fn error_invalid_close_code() {
        assert_eq!(err_code(Side::Client, &close_with(1005)), 1002);
    }

    #[test]
    fn text_utf8_tracking() {
        // "€" = E2 82 AC split over two fragments and arbitrary chunks: fine.
        let w = frames(
            None,
            &[
                (false, Opcode::Text, &[b'a', 0xE2]),
                (true, Opcode::Continuation, &[0x82, 0xAC]),
            ],
        );
        for chunk in [1usize, 2, 3, 100] {
            let mut d = FrameDecoder::new(Side::Client, 100);
            let mut ev = Vec::new();
            for c in w.chunks(chunk) {
                d.decode(c, &mut ev).unwrap();
            }
        }
        // Invalid byte.
        let mut w = Vec::new();
        encode_frame(true, Opcode::Text, None, &[b'a', 0xFF], &mut w);
        assert_eq!(err_code(Side::Client, &w), 1007);
        // Truncated sequence at message end.
        let mut w = Vec::new();
        encode_frame(true, Opcode::Text, None, &[b'a', 0xE2, 0x82], &mut w);
        assert_eq!(err_code(Side::Client, &w), 1007);
        // Binary messages are not checked.
        let mut w = Vec::new();
        encode_frame(true, Opcode::Binary, None, &[0xFF, 0xE2], &mut w);
        assert!(decode_all_events(Side::Client, &w).is_ok());
    }

    #[test]
    fn is_idle_tracks_partial_headers() {
        let mut d = FrameDecoder::new(Side::Server, 100);
        let mut ev = Vec::new();
        assert!(d.is_idle());
        d.decode(&[0x82], &mut ev).unwrap();
        assert!(!d.is_idle());
        d.decode(&[0x82, 1, 2, 3], &mut ev).unwrap();
        assert!(!d.is_idle());
        d.decode(&[4, 9], &mut ev).unwrap();
        assert!(!d.is_idle());
        d.decode(&[10], &mut ev).unwrap();
        assert!(d.is_idle());
        assert_eq!(merge(ev), data_msg(&[9 ^ 1, 10 ^ 2]));
    }
}

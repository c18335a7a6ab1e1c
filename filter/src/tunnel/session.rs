//! One WebSocket session, sans-io, shared by both tunnel sides: the frames a side sends (binary
//! frames of at most `max_frame_bytes`, masked with fresh keys on the client side, unmasked on
//! the server side), the control frames waiting for a chance to be sent (pongs, pings, the one
//! close), and the decoder of what the peer sends (unmasking, fragmentation, ping/pong/close,
//! the `max_frame_bytes` bound with close 1009).
//!
//! It does no I/O: the roles hand it bytes and send what it gives back. Entropy comes through
//! [`EntropySource`] (the host's, in the roles; a counter in the tests). What to answer, and
//! when, stays with each role, since what a side can write and when differs (see `tunnel`).
//! The pure frame codec is `codec::websocket`.

use crate::codec::websocket::{
    close_payload, encode_base64, encode_frame, FrameDecoder, Opcode, Side,
};
use crate::tunnel::net_host::NetHost;
use crate::tunnel::MAX_CONTROL_QUEUE;

/// Where mask and handshake keys come from.
pub trait EntropySource {
    /// Fills `buf` with unpredictable bytes; false if there are none.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

impl<H: NetHost + ?Sized> EntropySource for H {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        self.random_bytes(buf).is_ok()
    }
}

/// The host had no entropy: the caller closes rather than send predictable masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoEntropy;

/// Random bytes drawn from the source in blocks (one host call per 64 masks).
struct Entropy {
    pool: [u8; 256],
    at: usize,
}

impl Entropy {
    fn new() -> Self {
        Entropy {
            pool: [0; 256],
            at: 256,
        }
    }

    fn take4<R: EntropySource + ?Sized>(&mut self, rng: &mut R) -> Result<[u8; 4], NoEntropy> {
        if self.at + 4 > self.pool.len() {
            if !rng.fill(&mut self.pool) {
                return Err(NoEntropy);
            }
            self.at = 0;
        }
        let b = self.pool.get(self.at..self.at + 4).ok_or(NoEntropy)?;
        let out = [b[0], b[1], b[2], b[3]];
        self.at += 4;
        Ok(out)
    }

    fn take16<R: EntropySource + ?Sized>(&mut self, rng: &mut R) -> Result<[u8; 16], NoEntropy> {
        let mut out = [0u8; 16];
        for chunk in out.chunks_mut(4) {
            chunk.copy_from_slice(&self.take4(rng)?);
        }
        Ok(out)
    }
}

/// One side of a WebSocket connection.
pub struct WsSession {
    side: Side,
    decoder: FrameDecoder,
    entropy: Entropy,
    /// Largest payload of a frame we send (at least 1).
    max_frame: usize,
    /// Control frames (pongs, pings, the close) waiting for a chance to be sent.
    control: Vec<u8>,
    close_sent: bool,
}

impl WsSession {
    /// `side` is the side we are: the client masks what it sends and expects unmasked frames.
    pub fn new(side: Side, max_frame_bytes: u32) -> Self {
        WsSession {
            side,
            decoder: FrameDecoder::new(side, u64::from(max_frame_bytes)),
            entropy: Entropy::new(),
            max_frame: (max_frame_bytes as usize).max(1),
            control: Vec::new(),
            close_sent: false,
        }
    }

    /// A fresh `Sec-WebSocket-Key` (client side).
    pub fn handshake_key<R: EntropySource + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<String, NoEntropy> {
        Ok(encode_base64(&self.entropy.take16(rng)?))
    }

    fn mask<R: EntropySource + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<Option<[u8; 4]>, NoEntropy> {
        match self.side {
            Side::Client => self.entropy.take4(rng).map(Some),
            Side::Server => Ok(None),
        }
    }

    /// Appends one frame (FIN set) to `out`.
    pub fn encode<R: EntropySource + ?Sized>(
        &mut self,
        opcode: Opcode,
        payload: &[u8],
        rng: &mut R,
        out: &mut Vec<u8>,
    ) -> Result<(), NoEntropy> {
        let mask = self.mask(rng)?;
        encode_frame(true, opcode, mask, payload, out);
        Ok(())
    }

    /// Wraps `data` as binary frames of at most `max_frame_bytes` each into `out`.
    pub fn wrap_binary<R: EntropySource + ?Sized>(
        &mut self,
        data: &[u8],
        rng: &mut R,
        out: &mut Vec<u8>,
    ) -> Result<(), NoEntropy> {
        for chunk in data.chunks(self.max_frame) {
            self.encode(Opcode::Binary, chunk, rng, out)?;
        }
        Ok(())
    }

    /// Queues a control frame; dropped once [`MAX_CONTROL_QUEUE`] bytes wait (a peer that
    /// floods pings past it gets no more answers).
    pub fn queue_control<R: EntropySource + ?Sized>(
        &mut self,
        opcode: Opcode,
        payload: &[u8],
        rng: &mut R,
    ) -> Result<(), NoEntropy> {
        if self.control.len() > MAX_CONTROL_QUEUE {
            return Ok(());
        }
        let mask = self.mask(rng)?;
        encode_frame(true, opcode, mask, payload, &mut self.control);
        Ok(())
    }

    /// Queues our close frame, once per connection.
    pub fn queue_close<R: EntropySource + ?Sized>(
        &mut self,
        code: u16,
        reason: &str,
        rng: &mut R,
    ) -> Result<(), NoEntropy> {
        if self.close_sent {
            return Ok(());
        }
        self.close_sent = true;
        self.queue_control(Opcode::Close, &close_payload(code, reason), rng)
    }

    /// No close frame will be sent (the connection ends without one, e.g. a refused upgrade).
    pub fn mark_close_sent(&mut self) {
        self.close_sent = true;
    }

    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The queued control frames, still queued.
    pub fn control(&self) -> &[u8] {
        &self.control
    }

    /// The queued control frames went out.
    pub fn clear_control(&mut self) {
        self.control.clear();
    }

    /// Moves the queued control frames to `out`.
    pub fn take_control(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.control);
    }

    /// The decoder of the peer's frames (bounded at `max_frame_bytes`): the roles use its
    /// `decode_into`, data payload bytes to one buffer and control frames as events.
    pub fn decoder(&mut self) -> &mut FrameDecoder {
        &mut self.decoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::websocket::{close_code, FrameDecoder};

    /// A counter for an entropy source, or none at all.
    struct Counter(Option<u8>);

    impl EntropySource for Counter {
        fn fill(&mut self, buf: &mut [u8]) -> bool {
            let Some(n) = self.0.as_mut() else {
                return false;
            };
            for b in buf.iter_mut() {
                *b = *n;
                *n = n.wrapping_add(1);
            }
            true
        }
    }

    #[test]
    fn server_wrap_splits_at_the_frame_limit_unmasked() {
        let mut s = WsSession::new(Side::Server, 1000);
        let mut out = Vec::new();
        assert_eq!(
            s.wrap_binary(&[7u8; 2500], &mut Counter(None), &mut out),
            Ok(())
        );
        // three unmasked frames: 2+2 (16-bit length) + 1000, twice, and 2+2+500
        assert_eq!(out.len(), 4 + 1000 + 4 + 1000 + 4 + 500);
        assert_eq!(&out[..4], &[0x82, 126, 0x03, 0xE8]);
        assert_eq!(&out[2008..2012], &[0x82, 126, 0x01, 0xF4]);
    }

    #[test]
    fn client_frames_are_masked_with_fresh_keys_and_decode_back() {
        let mut s = WsSession::new(Side::Client, 4);
        let mut out = Vec::new();
        let mut rng = Counter(Some(0));
        assert_eq!(s.wrap_binary(b"abcdefgh", &mut rng, &mut out), Ok(()));
        // Two masked frames of 4 bytes: 2 header + 4 key + 4 payload each, keys 0..4 and 4..8.
        assert_eq!(out.len(), 20);
        assert_eq!(&out[..6], &[0x82, 0x84, 0, 1, 2, 3]);
        assert_eq!(&out[10..16], &[0x82, 0x84, 4, 5, 6, 7]);
        let mut peer = FrameDecoder::new(Side::Server, 4);
        let (mut data, mut events) = (Vec::new(), Vec::new());
        assert_eq!(peer.decode_into(&out, &mut data, &mut events), Ok(()));
        assert_eq!(data, b"abcdefgh");
        assert!(events.is_empty());
    }

    #[test]
    fn client_without_entropy_sends_nothing_masked() {
        let mut s = WsSession::new(Side::Client, 16);
        let mut out = Vec::new();
        assert_eq!(
            s.wrap_binary(b"x", &mut Counter(None), &mut out),
            Err(NoEntropy)
        );
        assert_eq!(s.handshake_key(&mut Counter(None)), Err(NoEntropy));
        assert_eq!(
            s.queue_control(Opcode::Ping, b"p", &mut Counter(None)),
            Err(NoEntropy)
        );
        assert!(out.is_empty());
        assert!(s.control().is_empty());
    }

    #[test]
    fn close_is_queued_once() {
        let mut s = WsSession::new(Side::Server, 16);
        let mut rng = Counter(None);
        assert_eq!(s.queue_close(close_code::NORMAL, "bye", &mut rng), Ok(()));
        assert_eq!(
            s.queue_close(close_code::GOING_AWAY, "again", &mut rng),
            Ok(())
        );
        assert!(s.close_sent());
        assert_eq!(s.control(), &[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']);
        let mut out = vec![1];
        s.take_control(&mut out);
        assert_eq!(out.len(), 8);
        assert!(s.control().is_empty());
    }

    #[test]
    fn the_control_queue_is_bounded() {
        let mut s = WsSession::new(Side::Server, 16);
        let mut rng = Counter(None);
        let payload = [0u8; 125];
        let mut queued = 0;
        for _ in 0..2000 {
            assert_eq!(s.queue_control(Opcode::Pong, &payload, &mut rng), Ok(()));
            queued += 1;
            if s.control().len() > MAX_CONTROL_QUEUE {
                break;
            }
        }
        let full = s.control().len();
        assert_eq!(full, queued * 127);
        assert_eq!(s.queue_control(Opcode::Pong, &payload, &mut rng), Ok(()));
        assert_eq!(s.control().len(), full);
    }

    #[test]
    fn decoder_bounds_frames_at_max_frame_bytes() {
        let mut s = WsSession::new(Side::Client, 4);
        let (mut data, mut events) = (Vec::new(), Vec::new());
        let err = s
            .decoder()
            .decode_into(&[0x82, 5, 1, 2, 3, 4, 5], &mut data, &mut events)
            .unwrap_err();
        assert_eq!(err.close_code, close_code::MESSAGE_TOO_BIG);
        assert!(data.is_empty());
    }
}

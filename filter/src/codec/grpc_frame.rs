//! gRPC length-prefixed message framing (PROTOCOL-HTTP2.md "Length-Prefixed-Message").
//!
//! ```text
//! +--------+--------+--------+--------+--------+=================+
//! | flags  |      length (u32, big-endian)     | payload (length)|
//! +--------+--------+--------+--------+--------+=================+
//! ```
//!
//! `flags` bit 0 (`0x01`) marks a compressed payload. gRPC-web (PROTOCOL-WEB.md) adds the MSB
//! (`0x80`): that frame carries the trailers as an HTTP/1 header block and must be the last
//! frame of the body. The other bits are reserved; a frame that sets them is rejected rather
//! than guessed at, since a peer that sets them speaks a protocol we do not understand.
//!
//! Frame boundaries are unrelated to transport chunk boundaries, so both readers here are
//! incremental state machines:
//!
//! - [`FrameScanner`] only tracks boundaries (it never copies or even reads payload bytes), for
//!   pass-through paths that forward bytes unchanged but must know where messages end and where
//!   the trailer frame starts.
//! - [`Deframer`] reassembles whole messages for paths that re-frame them. Its partial-frame
//!   buffer never exceeds one maximum-size frame, because the declared length is checked as
//!   soon as the 5-byte header is complete, before any payload byte is stored.
//!
//! The compressed trailer flag combination `0x81` that PROTOCOL-WEB.md mentions is rejected
//! with [`FrameError::ReservedFlags`]: no known peer sends it, and [`Frame::Trailers`] has no
//! way to carry a compression flag, so accepting it would hand compressed bytes to a text
//! header parser.

use std::collections::VecDeque;
use std::fmt;

/// Size of the length prefix in front of every gRPC message.
pub const FRAME_HEADER_LEN: usize = 5;
/// Flag bit: the payload is compressed with the call's `grpc-encoding`.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit (gRPC-web only): the frame carries the trailers.
pub const FLAG_TRAILERS: u8 = 0x80;

/// Bits no gRPC or gRPC-web version defines.
const RESERVED_MASK: u8 = !(FLAG_COMPRESSED | FLAG_TRAILERS);

/// The 5-byte prefix of a gRPC frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub flags: u8,
    pub len: u32,
}

impl FrameHeader {
    /// Decodes a header. Total: every 5-byte value is a header (validity is checked separately).
    pub fn parse(b: [u8; 5]) -> FrameHeader {
        let [flags, l0, l1, l2, l3] = b;
        FrameHeader {
            flags,
            len: u32::from_be_bytes([l0, l1, l2, l3]),
        }
    }

    pub fn encode(&self) -> [u8; 5] {
        let [l0, l1, l2, l3] = self.len.to_be_bytes();
        [self.flags, l0, l1, l2, l3]
    }

    pub fn is_trailers(&self) -> bool {
        self.flags & FLAG_TRAILERS != 0
    }

    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
}

/// Appends one frame (header + payload) to `out`.
///
/// Payloads larger than `u32::MAX` cannot be expressed on the wire; callers bound message sizes
/// far below that, so the length is saturated rather than made fallible (a saturated header
/// would then be rejected by any limit-checking reader, never silently mis-framed).
pub fn encode_frame(flags: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(FRAME_HEADER_LEN.saturating_add(payload.len()));
    out.extend_from_slice(&FrameHeader { flags, len }.encode());
    out.extend_from_slice(payload);
}

/// Why a framed stream was rejected. `Display` is suitable as a `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A header declared a frame longer than the configured limit. Detected from the header
    /// alone, so no payload byte was buffered. Also used for an oversized trailer frame in
    /// [`Deframer`] (then `limit` is the trailer limit).
    MessageTooLarge { len: u32, limit: u32 },
    /// The stream ended inside a frame; `missing` bytes (header and/or payload) never arrived.
    Truncated { missing: usize },
    /// Bytes followed a complete trailer frame, which must be the last frame of a body.
    DataAfterTrailers,
    /// The flag byte set bits outside `0x01`/`0x80` (or was `0x81`, see the module docs).
    ReservedFlags(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::MessageTooLarge { len, limit } => {
                write!(
                    f,
                    "gRPC message of {len} bytes exceeds the limit of {limit}"
                )
            }
            FrameError::Truncated { missing } => write!(
                f,
                "stream ended inside a gRPC frame ({missing} bytes missing)"
            ),
            FrameError::DataAfterTrailers => f.write_str("data after the gRPC-web trailer frame"),
            FrameError::ReservedFlags(flags) => {
                write!(f, "gRPC frame with unsupported flags 0x{flags:02x}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Validates a flag byte the moment it is seen. The flag byte alone decides whether the frame
/// is data or trailers, so checking it first makes every reader reject at the same byte
/// offset whatever the chunking.
fn check_flags(flags: u8) -> Result<(), FrameError> {
    if flags & RESERVED_MASK != 0 || flags == FLAG_TRAILERS | FLAG_COMPRESSED {
        Err(FrameError::ReservedFlags(flags))
    } else {
        Ok(())
    }
}

fn usize_from(n: u32) -> usize {
    // usize is at least 32 bits on every target this crate builds for (wasm32 and 64-bit hosts).
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Accumulates the 5 header bytes across chunks.
type HeaderBuf = super::header_buf::HeaderBuf<FRAME_HEADER_LEN>;

#[derive(Debug, Clone)]
enum ScanState {
    /// Between frames or inside a data frame's header.
    Header(HeaderBuf),
    /// Inside a data frame's payload; this many bytes remain.
    Payload { remaining: u32 },
    /// A trailer frame has begun; all further bytes belong to it.
    Trailers,
    /// A framing error occurred; the scanner refuses further input.
    Failed(FrameError),
}

/// Why [`FrameScanner::scan_sparse`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparseScanError<E> {
    /// The framing is invalid (as [`FrameScanner::scan`] reports it).
    Frame(FrameError),
    /// The caller's `peek` failed.
    Peek(E),
    /// `peek` returned fewer (or more) bytes than asked for.
    ShortPeek {
        offset: usize,
        wanted: usize,
        got: usize,
    },
}

/// Body chunks up to this size are read whole by the roles; larger ones are scanned through
/// their frame headers only (`FrameScanner::scan_sparse`). Measured in `make bench`
/// (docs/BENCHMARKS.md).
pub const WHOLE_CHUNK_BYTES: usize = 16 * 1024;

/// Zero-copy boundary tracker over a byte stream split at arbitrary points. It never stores
/// payload bytes: the payload of a data frame is skipped by arithmetic on its length.
///
/// Errors are sticky: after `scan` fails, every later `scan` and `finish` returns the same error.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    max_message_bytes: u32,
    state: ScanState,
    messages: u64,
}

/// What one [`FrameScanner::scan`] call saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Offset within the chunk where a trailers frame (flags & 0x80) begins, if its FIRST byte
    /// is in this chunk. From then on every byte (incl. later chunks) belongs to the trailer
    /// frame; the scanner stops framing.
    pub trailers_start: Option<usize>,
    /// Number of data frames whose last byte was in this chunk.
    pub messages_completed: u32,
}

impl FrameScanner {
    pub fn new(max_message_bytes: u32) -> Self {
        FrameScanner {
            max_message_bytes,
            state: ScanState::Header(HeaderBuf::default()),
            messages: 0,
        }
    }

    /// Advances over `chunk`. The length limit applies to data frames only (the trailer frame
    /// is not framed by the scanner; whoever consumes it applies its own limit).
    pub fn scan(&mut self, chunk: &[u8]) -> Result<ScanOutcome, FrameError> {
        let mut outcome = ScanOutcome::default();
        let mut pos = 0usize;
        loop {
            let rest = chunk.get(pos..).unwrap_or(&[]);
            match &mut self.state {
                ScanState::Failed(e) => return Err(e.clone()),
                ScanState::Trailers => return Ok(outcome),
                ScanState::Payload { remaining } => {
                    if rest.is_empty() {
                        return Ok(outcome);
                    }
                    let skip = usize_from(*remaining).min(rest.len());
                    pos = pos.saturating_add(skip);
                    // skip <= remaining, so this cannot underflow; saturate anyway.
                    *remaining = remaining.saturating_sub(u32::try_from(skip).unwrap_or(u32::MAX));
                    if *remaining == 0 {
                        self.complete_message(&mut outcome);
                    }
                }
                ScanState::Header(hb) => {
                    let Some(&first) = rest.first() else {
                        return Ok(outcome);
                    };
                    if hb.is_empty() {
                        // The flag byte alone classifies the frame: check it before anything else.
                        if let Err(e) = check_flags(first) {
                            self.state = ScanState::Failed(e.clone());
                            return Err(e);
                        }
                        if first & FLAG_TRAILERS != 0 {
                            outcome.trailers_start = Some(pos);
                            self.state = ScanState::Trailers;
                            return Ok(outcome);
                        }
                    }
                    let took = hb.fill(rest);
                    pos = pos.saturating_add(took);
                    if !hb.is_full() {
                        return Ok(outcome);
                    }
                    let header = FrameHeader::parse(hb.bytes());
                    if header.len > self.max_message_bytes {
                        let e = FrameError::MessageTooLarge {
                            len: header.len,
                            limit: self.max_message_bytes,
                        };
                        self.state = ScanState::Failed(e.clone());
                        return Err(e);
                    }
                    if header.len == 0 {
                        self.state = ScanState::Header(HeaderBuf::default());
                        self.complete_message(&mut outcome);
                    } else {
                        self.state = ScanState::Payload {
                            remaining: header.len,
                        };
                    }
                }
            }
        }
    }

    /// Like [`scan`](Self::scan) over a chunk of `len` bytes that the caller does not copy in:
    /// the scanner asks `peek(offset, n)` for the `n` bytes at `offset` in the chunk only where
    /// it needs them (frame headers, at most 5 bytes each) and skips payloads by arithmetic.
    /// `peek` must return exactly `n` bytes or an error; a shorter answer is reported as
    /// [`SparseScanError::ShortPeek`], never skipped over. Same outcome as `scan` on the same
    /// bytes, whatever the chunking.
    pub fn scan_sparse<E>(
        &mut self,
        len: usize,
        mut peek: impl FnMut(usize, usize) -> Result<Vec<u8>, E>,
    ) -> Result<ScanOutcome, SparseScanError<E>> {
        // Sticky even for an empty chunk, as `scan` is (the loop below is not entered then).
        if let ScanState::Failed(e) = &self.state {
            return Err(SparseScanError::Frame(e.clone()));
        }
        let mut outcome = ScanOutcome::default();
        let mut pos = 0usize;
        while pos < len {
            let avail = len.saturating_sub(pos);
            let need = match &mut self.state {
                ScanState::Failed(e) => return Err(SparseScanError::Frame(e.clone())),
                ScanState::Trailers => return Ok(outcome),
                ScanState::Payload { remaining } => {
                    let skip = usize_from(*remaining).min(avail);
                    pos = pos.saturating_add(skip);
                    *remaining = remaining.saturating_sub(u32::try_from(skip).unwrap_or(u32::MAX));
                    if *remaining == 0 {
                        self.complete_message(&mut outcome);
                    }
                    continue;
                }
                ScanState::Header(hb) => hb.missing().min(avail),
            };
            let bytes = peek(pos, need).map_err(SparseScanError::Peek)?;
            if bytes.len() != need {
                return Err(SparseScanError::ShortPeek {
                    offset: pos,
                    wanted: need,
                    got: bytes.len(),
                });
            }
            let o = self.scan(&bytes).map_err(SparseScanError::Frame)?;
            if let Some(at) = o.trailers_start {
                outcome.trailers_start = Some(pos.saturating_add(at));
            }
            outcome.messages_completed = outcome
                .messages_completed
                .saturating_add(o.messages_completed);
            pos = pos.saturating_add(need);
        }
        Ok(outcome)
    }

    fn complete_message(&mut self, outcome: &mut ScanOutcome) {
        self.state = ScanState::Header(HeaderBuf::default());
        outcome.messages_completed = outcome.messages_completed.saturating_add(1);
        self.messages = self.messages.saturating_add(1);
    }

    /// True iff not inside a data frame (header or payload), not in trailers, and not failed.
    pub fn at_boundary(&self) -> bool {
        matches!(&self.state, ScanState::Header(hb) if hb.is_empty())
    }

    pub fn in_trailers(&self) -> bool {
        matches!(self.state, ScanState::Trailers)
    }

    /// Call at end of stream: `Err(Truncated)` if the stream stopped inside a data frame.
    /// Ok at a frame boundary or once the trailer frame has started (its completeness is the
    /// trailer reader's business). A previous scan error is returned again.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.state {
            ScanState::Failed(e) => Err(e.clone()),
            ScanState::Trailers => Ok(()),
            ScanState::Header(hb) if hb.is_empty() => Ok(()),
            ScanState::Header(hb) => Err(FrameError::Truncated {
                missing: hb.missing(),
            }),
            ScanState::Payload { remaining } => Err(FrameError::Truncated {
                missing: usize_from(*remaining),
            }),
        }
    }

    /// Total completed data frames so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }
}

/// A reassembled frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message {
        compressed: bool,
        payload: Vec<u8>,
    },
    /// Raw header block of the trailer frame (bytes after its 5-byte prefix), not parsed.
    Trailers(Vec<u8>),
}

#[derive(Debug)]
enum DeframeState {
    Header(HeaderBuf),
    Body {
        header: FrameHeader,
        want: usize,
        buf: Vec<u8>,
    },
    /// A complete trailer frame was read; any further byte is an error.
    Done,
}

/// Buffering deframer: yields whole messages.
///
/// `push` parses eagerly: complete frames are queued for [`Deframer::next_frame`], and only the
/// one incomplete frame at the end is held in a partial buffer, which is bounded by
/// `max(max_message_bytes, max_trailer_bytes) + 5` because declared lengths are checked before
/// payload bytes are stored. Queued complete frames are the caller's data and are released by
/// `next_frame`.
///
/// Errors are sticky. Frames completed before the offending byte are still returned by
/// `next_frame`; once they are drained, `next_frame` returns the error. So the observable
/// sequence (frames, then error) is the same however the input was chunked.
#[derive(Debug)]
pub struct Deframer {
    max_message_bytes: u32,
    max_trailer_bytes: u32,
    state: DeframeState,
    ready: VecDeque<Frame>,
    /// Wire bytes of the frames in `ready`.
    ready_bytes: usize,
    error: Option<FrameError>,
}

impl Deframer {
    pub fn new(max_message_bytes: u32, max_trailer_bytes: u32) -> Self {
        Deframer {
            max_message_bytes,
            max_trailer_bytes,
            state: DeframeState::Header(HeaderBuf::default()),
            ready: VecDeque::new(),
            ready_bytes: 0,
            error: None,
        }
    }

    /// Feeds bytes. Rejects as soon as a header declares a too-large frame, a flag byte is
    /// invalid, or a byte follows the trailer frame.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.push_inner(data) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn push_inner(&mut self, data: &[u8]) -> Result<(), FrameError> {
        let mut rest = data;
        while !rest.is_empty() {
            match &mut self.state {
                DeframeState::Done => return Err(FrameError::DataAfterTrailers),
                DeframeState::Header(hb) => {
                    if hb.is_empty() {
                        if let Some(&first) = rest.first() {
                            check_flags(first)?;
                        }
                    }
                    let took = hb.fill(rest);
                    rest = rest.get(took..).unwrap_or(&[]);
                    if !hb.is_full() {
                        continue;
                    }
                    let header = FrameHeader::parse(hb.bytes());
                    let limit = if header.is_trailers() {
                        self.max_trailer_bytes
                    } else {
                        self.max_message_bytes
                    };
                    if header.len > limit {
                        return Err(FrameError::MessageTooLarge {
                            len: header.len,
                            limit,
                        });
                    }
                    let want = usize_from(header.len);
                    self.state = DeframeState::Body {
                        header,
                        want,
                        // Reserve only what has arrived; the rest grows as it arrives, so a
                        // header alone cannot make us allocate up to the limit.
                        buf: Vec::with_capacity(want.min(rest.len())),
                    };
                    self.complete_if_ready();
                }
                DeframeState::Body { want, buf, .. } => {
                    let need = want.saturating_sub(buf.len());
                    let take = need.min(rest.len());
                    let (head, tail) = rest.split_at_checked(take).unwrap_or((rest, &[]));
                    buf.extend_from_slice(head);
                    rest = tail;
                    self.complete_if_ready();
                }
            }
        }
        Ok(())
    }

    /// Moves a fully received body to the ready queue.
    fn complete_if_ready(&mut self) {
        let DeframeState::Body { header, want, buf } = &mut self.state else {
            return;
        };
        if buf.len() < *want {
            return;
        }
        let header = *header;
        let payload = std::mem::take(buf);
        self.ready_bytes = self
            .ready_bytes
            .saturating_add(FRAME_HEADER_LEN)
            .saturating_add(payload.len());
        if header.is_trailers() {
            self.ready.push_back(Frame::Trailers(payload));
            self.state = DeframeState::Done;
        } else {
            self.ready.push_back(Frame::Message {
                compressed: header.is_compressed(),
                payload,
            });
            self.state = DeframeState::Header(HeaderBuf::default());
        }
    }

    /// Next complete frame, `Ok(None)` if more input is needed, or the sticky error once every
    /// frame completed before it has been returned.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.ready.pop_front() {
            let wire = match &frame {
                Frame::Message { payload, .. } | Frame::Trailers(payload) => payload.len(),
            };
            self.ready_bytes = self
                .ready_bytes
                .saturating_sub(wire.saturating_add(FRAME_HEADER_LEN));
            return Ok(Some(frame));
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// True when no partial frame is held (between frames or after the trailer frame). Frames
    /// waiting in the queue do not count: they are complete.
    pub fn is_idle(&self) -> bool {
        match &self.state {
            DeframeState::Header(hb) => hb.is_empty(),
            DeframeState::Body { .. } => false,
            DeframeState::Done => true,
        }
    }

    /// Bytes pushed but not yet returned by `next_frame` (queued frames plus the partial one),
    /// counted as wire bytes including 5-byte prefixes.
    pub fn buffered(&self) -> usize {
        let partial = match &self.state {
            DeframeState::Header(hb) => hb.have(),
            DeframeState::Body { buf, .. } => FRAME_HEADER_LEN.saturating_add(buf.len()),
            DeframeState::Done => 0,
        };
        self.ready_bytes.saturating_add(partial)
    }

    /// Call at end of stream: `Err(Truncated)` if a partial frame is held, or the sticky error.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match &self.state {
            DeframeState::Header(hb) if hb.is_empty() => Ok(()),
            DeframeState::Header(hb) => Err(FrameError::Truncated {
                missing: hb.missing(),
            }),
            DeframeState::Body { want, buf, .. } => Err(FrameError::Truncated {
                missing: want.saturating_sub(buf.len()),
            }),
            DeframeState::Done => Ok(()),
        }
    }

    /// True once the complete trailer frame has been received.
    pub fn trailers_received(&self) -> bool {
        matches!(self.state, DeframeState::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(flags, payload, &mut v);
        v
    }

    fn drain(d: &mut Deframer) -> Vec<Frame> {
        let mut v = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            v.push(f);
        }
        v
    }

    #[test]
    fn header_round_trip_and_byte_order() {
        let h = FrameHeader::parse([0x01, 0x00, 0x00, 0x01, 0x02]);
        assert_eq!(h, FrameHeader { flags: 1, len: 258 });
        assert!(h.is_compressed());
        assert!(!h.is_trailers());
        assert_eq!(h.encode(), [0x01, 0, 0, 1, 2]);
        let t = FrameHeader::parse([0x80, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(t.len, u32::MAX);
        assert!(t.is_trailers());
        assert!(!t.is_compressed());
    }

    #[test]
    fn encode_frame_appends() {
        let mut out = vec![9];
        encode_frame(0, b"hi", &mut out);
        encode_frame(FLAG_TRAILERS, b"", &mut out);
        assert_eq!(out, [9, 0, 0, 0, 0, 2, b'h', b'i', 0x80, 0, 0, 0, 0]);
    }

    #[test]
    fn display_is_a_usable_grpc_message() {
        let e = FrameError::MessageTooLarge {
            len: 5_000_000,
            limit: 4_194_304,
        };
        assert_eq!(
            e.to_string(),
            "gRPC message of 5000000 bytes exceeds the limit of 4194304"
        );
        assert!(FrameError::ReservedFlags(0x02).to_string().contains("0x02"));
        assert!(FrameError::Truncated { missing: 3 }
            .to_string()
            .contains('3'));
    }

    #[test]
    fn scanner_counts_messages_across_splits() {
        let mut s = FrameScanner::new(100);
        let mut body = frame(0, b"abc");
        body.extend(frame(1, b""));
        body.extend(frame(0, b"defgh"));
        // Split inside the first header, inside a payload, and inside the third header.
        let o1 = s.scan(&body[..2]).unwrap();
        assert_eq!(o1.messages_completed, 0);
        assert!(!s.at_boundary());
        let o2 = s.scan(&body[2..9]).unwrap(); // rest of header, "abc", 1 byte of header #2
        assert_eq!(o2.messages_completed, 1);
        assert!(!s.at_boundary());
        let o3 = s.scan(&body[9..16]).unwrap(); // rest of empty frame, 3 bytes of header #3
        assert_eq!(o3.messages_completed, 1);
        assert_eq!(s.finish(), Err(FrameError::Truncated { missing: 2 }));
        let o4 = s.scan(&body[16..]).unwrap();
        assert_eq!(o4.messages_completed, 1);
        assert!(s.at_boundary());
        assert_eq!(s.messages(), 3);
        assert_eq!(s.finish(), Ok(()));
    }

    #[test]
    fn scanner_empty_frame_at_chunk_end_is_complete() {
        let mut s = FrameScanner::new(10);
        let o = s.scan(&[0, 0, 0, 0, 0]).unwrap();
        assert_eq!(o.messages_completed, 1);
        assert!(s.at_boundary());
        assert_eq!(s.finish(), Ok(()));
        // Split header: the message completes with the chunk holding its last header byte.
        assert_eq!(s.scan(&[1, 0, 0]).unwrap().messages_completed, 0);
        assert_eq!(s.scan(&[0, 0]).unwrap().messages_completed, 1);
        assert_eq!(s.messages(), 2);
        assert!(s.at_boundary());
    }

    #[test]
    fn scanner_reports_trailer_start_offset() {
        let mut s = FrameScanner::new(100);
        let mut body = frame(0, b"xy");
        body.extend(frame(FLAG_TRAILERS, b"grpc-status:0\r\n"));
        let o = s.scan(&body).unwrap();
        assert_eq!(
            o,
            ScanOutcome {
                trailers_start: Some(7),
                messages_completed: 1
            }
        );
        assert!(s.in_trailers());
        assert!(!s.at_boundary());
        // Later bytes (even ones that look like a bad header) belong to the trailer frame.
        assert_eq!(s.scan(&[0x7f, 0xff]).unwrap(), ScanOutcome::default());
        assert_eq!(s.finish(), Ok(()));
    }

    #[test]
    fn scanner_trailer_start_in_next_chunk_is_offset_zero() {
        let mut s = FrameScanner::new(100);
        let body = frame(0, b"xy");
        assert_eq!(s.scan(&body).unwrap().trailers_start, None);
        assert_eq!(s.scan(&[0x80, 0, 0]).unwrap().trailers_start, Some(0));
        assert_eq!(s.scan(&[0, 0]).unwrap().trailers_start, None);
    }

    #[test]
    fn scanner_rejects_oversized_from_header_alone() {
        let mut s = FrameScanner::new(4_194_304);
        // Only the header: no payload needs to arrive for the rejection.
        let e = s.scan(&[0, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(
            e,
            FrameError::MessageTooLarge {
                len: u32::MAX,
                limit: 4_194_304
            }
        );
        // Sticky.
        assert_eq!(s.scan(&[0, 0, 0, 0, 0]), Err(e.clone()));
        assert_eq!(s.finish(), Err(e));
        assert!(!s.at_boundary());
    }

    #[test]
    fn scanner_limit_is_inclusive_and_ignores_trailers() {
        let mut s = FrameScanner::new(3);
        assert!(s.scan(&frame(0, b"abc")).is_ok());
        let mut t = FrameScanner::new(3);
        assert!(t.scan(&[0x80, 0xff, 0xff, 0xff, 0xff]).is_ok());
        let mut u = FrameScanner::new(3);
        assert!(u.scan(&[0, 0, 0, 0, 4]).is_err());
    }

    #[test]
    fn scanner_rejects_reserved_flags_at_first_byte() {
        for flags in [0x02u8, 0x04, 0x40, 0x7f, 0x81, 0xff] {
            let mut s = FrameScanner::new(10);
            assert_eq!(s.scan(&[flags]), Err(FrameError::ReservedFlags(flags)));
        }
        let mut s = FrameScanner::new(10);
        assert!(s.scan(&[0x01, 0, 0, 0, 0]).is_ok());
    }

    #[test]
    fn scanner_skips_large_payload_in_pieces() {
        let mut s = FrameScanner::new(u32::MAX);
        s.scan(&[0, 0, 0x10, 0, 0]).unwrap(); // 1 MiB
        let zeros = vec![0u8; 1 << 18];
        for _ in 0..3 {
            assert_eq!(s.scan(&zeros).unwrap().messages_completed, 0);
        }
        assert_eq!(s.finish(), Err(FrameError::Truncated { missing: 1 << 18 }));
        assert_eq!(s.scan(&zeros).unwrap().messages_completed, 1);
        assert!(s.at_boundary());
    }

    #[test]
    fn deframer_yields_messages_and_trailers() {
        let mut d = Deframer::new(100, 100);
        let mut body = frame(0, b"hello");
        body.extend(frame(1, b"z"));
        body.extend(frame(0x80, b"grpc-status:0\r\ngrpc-message:\r\n"));
        d.push(&body[..3]).unwrap();
        assert!(!d.is_idle());
        assert_eq!(d.buffered(), 3);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&body[3..]).unwrap();
        assert_eq!(d.buffered(), body.len());
        let frames = drain(&mut d);
        assert_eq!(
            frames,
            vec![
                Frame::Message {
                    compressed: false,
                    payload: b"hello".to_vec()
                },
                Frame::Message {
                    compressed: true,
                    payload: b"z".to_vec()
                },
                Frame::Trailers(b"grpc-status:0\r\ngrpc-message:\r\n".to_vec()),
            ]
        );
        assert_eq!(d.buffered(), 0);
        assert!(d.is_idle());
        assert!(d.trailers_received());
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn deframer_rejects_data_after_trailers() {
        let mut d = Deframer::new(100, 100);
        let mut body = frame(0, b"a");
        body.extend(frame(0x80, b""));
        body.push(0);
        assert_eq!(d.push(&body), Err(FrameError::DataAfterTrailers));
        // Frames before the error are still delivered, then the error.
        assert!(matches!(d.next_frame(), Ok(Some(Frame::Message { .. }))));
        assert_eq!(d.next_frame(), Ok(Some(Frame::Trailers(vec![]))));
        assert_eq!(d.next_frame(), Err(FrameError::DataAfterTrailers));
        assert_eq!(d.push(b""), Err(FrameError::DataAfterTrailers));
    }

    #[test]
    fn deframer_rejects_oversized_before_buffering() {
        let mut d = Deframer::new(1024, 64);
        assert_eq!(
            d.push(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
            Err(FrameError::MessageTooLarge {
                len: u32::MAX,
                limit: 1024
            })
        );
        assert!(d.buffered() <= FRAME_HEADER_LEN);
        let mut d = Deframer::new(1024, 64);
        assert_eq!(
            d.push(&[0x80, 0, 0, 0, 65]),
            Err(FrameError::MessageTooLarge { len: 65, limit: 64 })
        );
        let mut d = Deframer::new(1024, 64);
        assert_eq!(d.push(&[0x80, 0, 0, 0, 64]), Ok(()));
    }

    #[test]
    fn deframer_does_not_preallocate_declared_length() {
        // A header alone must not make us reserve the declared size (a 4 GiB claim is free to
        // send); capacity follows the bytes that actually arrived.
        let mut d = Deframer::new(u32::MAX, 0);
        d.push(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2]).unwrap();
        let DeframeState::Body { buf, .. } = &d.state else {
            panic!("expected a partial body");
        };
        assert!(buf.capacity() < 1024, "capacity {}", buf.capacity());
    }

    #[test]
    fn deframer_partial_buffer_is_bounded() {
        let mut d = Deframer::new(16, 16);
        let payload = [7u8; 16];
        let body = frame(0, &payload);
        for b in &body[..body.len() - 1] {
            d.push(std::slice::from_ref(b)).unwrap();
            assert!(d.buffered() <= 16 + FRAME_HEADER_LEN);
        }
        assert_eq!(d.finish(), Err(FrameError::Truncated { missing: 1 }));
        d.push(&body[body.len() - 1..]).unwrap();
        assert_eq!(drain(&mut d).len(), 1);
    }

    #[test]
    fn deframer_empty_message_and_reserved_flags() {
        let mut d = Deframer::new(10, 10);
        d.push(&[0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            d.next_frame(),
            Ok(Some(Frame::Message {
                compressed: false,
                payload: vec![]
            }))
        );
        assert_eq!(d.push(&[0x81]), Err(FrameError::ReservedFlags(0x81)));
        assert_eq!(d.next_frame(), Err(FrameError::ReservedFlags(0x81)));
    }

    #[test]
    fn deframer_finish_reports_missing_header_bytes() {
        let mut d = Deframer::new(10, 10);
        d.push(&[0, 0]).unwrap();
        assert_eq!(d.finish(), Err(FrameError::Truncated { missing: 3 }));
    }

    /// `scan_sparse` reads only frame headers and gives exactly what `scan` gives on the same
    /// bytes, for every chunking, including errors and the trailer offset.
    #[test]
    fn scan_sparse_matches_scan() {
        use proptest::prelude::*;
        let strategy = (
            proptest::collection::vec(
                (
                    prop_oneof![Just(0u8), Just(1), Just(0x80), Just(0x40)],
                    0usize..40,
                ),
                0..6,
            ),
            proptest::collection::vec(1usize..30, 1..12),
            1u32..64,
        );
        proptest!(ProptestConfig::with_cases(500), |((frames, cuts, limit) in strategy)| {
            let mut body = Vec::new();
            for (flags, len) in &frames {
                encode_frame(*flags, &vec![0xab; *len], &mut body);
            }
            let mut a = FrameScanner::new(limit);
            let mut b = FrameScanner::new(limit);
            let mut pos = 0;
            let mut peeked = 0usize;
            for cut in cuts.iter().cycle() {
                if pos >= body.len() {
                    break;
                }
                let end = (pos + cut).min(body.len());
                let chunk = &body[pos..end];
                let ra = a.scan(chunk);
                let rb = b.scan_sparse(chunk.len(), |at, n| -> Result<Vec<u8>, ()> {
                    peeked += n;
                    Ok(chunk[at..at + n].to_vec())
                });
                match (ra, rb) {
                    (Ok(x), Ok(y)) => prop_assert_eq!(x, y),
                    (Err(x), Err(SparseScanError::Frame(y))) => prop_assert_eq!(x, y),
                    (x, y) => prop_assert!(false, "scan {:?} vs scan_sparse {:?}", x, y),
                }
                prop_assert_eq!(a.at_boundary(), b.at_boundary());
                prop_assert_eq!(a.messages(), b.messages());
                pos = end;
            }
            prop_assert_eq!(a.finish(), b.finish());
            // Headers only: at most 5 bytes per frame were read.
            prop_assert!(peeked <= 5 * frames.len());
        });
    }

    /// Found by the `scan_sparse` fuzz target: an empty chunk after a framing error answered
    /// Ok where `scan` repeats the error.
    #[test]
    fn scan_sparse_error_is_sticky_on_an_empty_chunk() {
        let mut s = FrameScanner::new(100);
        let e = SparseScanError::Frame(FrameError::ReservedFlags(0x02));
        assert_eq!(
            s.scan_sparse(1, |_, _| Ok::<_, ()>(vec![0x02])),
            Err(e.clone())
        );
        assert_eq!(s.scan_sparse(0, |_, _| Ok::<_, ()>(vec![])), Err(e));
        assert_eq!(s.scan(&[]), Err(FrameError::ReservedFlags(0x02)));
    }

    #[test]
    fn scan_sparse_reports_a_short_peek() {
        let body = frame(0, b"hello");
        let mut s = FrameScanner::new(100);
        let r = s.scan_sparse(body.len(), |_, _| -> Result<Vec<u8>, ()> { Ok(vec![0, 0]) });
        assert_eq!(
            r,
            Err(SparseScanError::ShortPeek {
                offset: 0,
                wanted: 5,
                got: 2
            })
        );
        let r = s.scan_sparse(body.len(), |_, _| Err::<Vec<u8>, _>("host"));
        assert_eq!(r, Err(SparseScanError::Peek("host")));
    }
}

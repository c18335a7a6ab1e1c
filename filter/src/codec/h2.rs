//! Just enough HTTP/2 framing for the tunnel server to speak first.
//!
//! A network filter can write toward the client only when the backend sends bytes, and a
//! standard WebSocket client (or a TLS-inspecting proxy) sends nothing after its upgrade request
//! until it has the `101`. So the tunnel server opens the HTTP/2 conversation itself: it sends the
//! backend a client preface and an empty SETTINGS frame; the backend's answer is the chance to
//! send the `101`. To keep the connection exact, the client's own 24-byte preface is removed
//! (the backend already had one: [`PrefaceStripper`]) and the one SETTINGS ACK that answers our
//! injected SETTINGS is removed from the backend's bytes ([`BackendFrameFilter`]). An empty
//! SETTINGS changes no setting, so both peers keep exactly the settings they negotiated.

use super::header_buf::HeaderBuf;

/// The HTTP/2 client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, flags 0, stream 0.
pub const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
/// Bytes of a frame header (RFC 9113 4.1).
pub(super) const FRAME_HEADER_LEN: usize = 9;
const TYPE_SETTINGS: u8 = 4;
const FLAG_ACK: u8 = 1;

/// One frame header, as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHead {
    /// Payload bytes.
    pub(super) len: usize,
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) stream: u32,
}

impl FrameHead {
    pub(super) fn parse(h: [u8; FRAME_HEADER_LEN]) -> FrameHead {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = h;
        FrameHead {
            len: (usize::from(l0) << 16) | (usize::from(l1) << 8) | usize::from(l2),
            kind,
            flags,
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        }
    }
}

/// Removes the client's connection preface from the start of a byte stream.
#[derive(Debug, Default)]
pub struct PrefaceStripper {
    matched: usize,
    done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotHttp2;

impl PrefaceStripper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends to `out` what follows the preface. Errs if the stream does not start with it.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), NotHttp2> {
        if self.done {
            out.extend_from_slice(input);
            return Ok(());
        }
        let want = PREFACE.get(self.matched..).unwrap_or(&[]);
        let n = want.len().min(input.len());
        if input.get(..n) != want.get(..n) {
            return Err(NotHttp2);
        }
        self.matched = self.matched.saturating_add(n);
        if self.matched == PREFACE.len() {
            self.done = true;
            out.extend_from_slice(input.get(n..).unwrap_or(&[]));
        }
        Ok(())
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Opaque data of the PINGs the tunnel server sends to make the backend answer (see
/// [`BackendFrameFilter`]); their ACKs are removed before they reach the client.
pub const NUDGE_OPAQUE: [u8; 8] = *b"grpc-brg";
const TYPE_PING: u8 = 6;

/// A PING frame (not an ACK) with the given opaque data.
pub fn ping_frame(opaque: [u8; 8]) -> [u8; 17] {
    let mut f = [0u8; 17];
    f[2] = 8;
    f[3] = TYPE_PING;
    f[9..].copy_from_slice(&opaque);
    f
}

/// What [`FrameWalker::walk`] passes over.
#[derive(Debug)]
pub(super) enum Walked<'a> {
    /// A frame header, complete.
    Head(FrameHead),
    /// Payload bytes of the current frame (a frame's payload may come in several pieces).
    Payload(&'a [u8]),
}

/// Tracks frame boundaries in one direction of an HTTP/2 connection (after the preface), so
/// bytes of our own can be inserted between frames.
#[derive(Debug, Default)]
pub struct FrameWalker {
    header: HeaderBuf<FRAME_HEADER_LEN>,
    skip: usize,
}

impl FrameWalker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, input: &[u8]) {
        self.walk(input, |_| {});
    }

    /// [`FrameWalker::feed`] that shows `seen` each frame header as it completes and each
    /// piece of payload it skips, in stream order.
    pub(super) fn walk(&mut self, mut input: &[u8], mut seen: impl FnMut(Walked<'_>)) {
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                seen(Walked::Payload(input.get(..n).unwrap_or(&[])));
                self.skip = self.skip.saturating_sub(n);
                input = input.get(n..).unwrap_or(&[]);
                continue;
            }
            let n = self.header.fill(input);
            input = input.get(n..).unwrap_or(&[]);
            if let Some(h) = self.header.take_full() {
                let head = FrameHead::parse(h);
                self.skip = head.len;
                seen(Walked::Head(head));
            }
        }
    }

    /// True between frames.
    pub fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.skip == 0
    }
}

/// Filters the backend's HTTP/2 frames on their way to the client: removes the first SETTINGS
/// ACK (it answers the SETTINGS we injected, which the client never sent) and the ACKs of our
/// nudge PINGs. Everything else passes unchanged.
#[derive(Debug)]
pub struct BackendFrameFilter {
    header: Vec<u8>,
    /// Payload bytes of the current frame still to pass.
    skip: usize,
    /// A PING ACK being collected to compare its opaque data.
    ping: Option<Vec<u8>>,
    settings_ack_pending: bool,
    nudges_outstanding: u32,
}

impl Default for BackendFrameFilter {
    fn default() -> Self {
        BackendFrameFilter {
            header: Vec::new(),
            skip: 0,
            ping: None,
            settings_ack_pending: true,
            nudges_outstanding: 0,
        }
    }
}

impl BackendFrameFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// We sent a nudge PING: its ACK will be removed.
    pub fn expect_nudge_ack(&mut self) {
        self.nudges_outstanding = self.nudges_outstanding.saturating_add(1);
    }

    pub fn nudges_outstanding(&self) -> u32 {
        self.nudges_outstanding
    }

    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if let Some(p) = self.ping.as_mut() {
                let n = (FRAME_HEADER_LEN + 8)
                    .saturating_sub(p.len())
                    .min(input.len());
                p.extend_from_slice(input.get(..n).unwrap_or(&[]));
                input = input.get(n..).unwrap_or(&[]);
                if p.len() == FRAME_HEADER_LEN + 8 {
                    let frame = self.ping.take().unwrap_or_default();
                    let ours = frame.get(FRAME_HEADER_LEN..) == Some(&NUDGE_OPAQUE[..]);
                    if ours && self.nudges_outstanding > 0 {
                        self.nudges_outstanding = self.nudges_outstanding.saturating_sub(1);
                    } else {
                        out.extend_from_slice(&frame);
                    }
                }
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                out.extend_from_slice(input.get(..n).unwrap_or(&[]));
                self.skip = self.skip.saturating_sub(n);
                input = input.get(n..).unwrap_or(&[]);
                continue;
            }
            let need = FRAME_HEADER_LEN.saturating_sub(self.header.len());
            let n = need.min(input.len());
            self.header.extend_from_slice(input.get(..n).unwrap_or(&[]));
            input = input.get(n..).unwrap_or(&[]);
            if self.header.len() < FRAME_HEADER_LEN {
                return;
            }
            let h = std::mem::take(&mut self.header);
            let Ok(bytes) = <[u8; FRAME_HEADER_LEN]>::try_from(h.as_slice()) else {
                return;
            };
            let FrameHead {
                len,
                kind: ty,
                flags,
                ..
            } = FrameHead::parse(bytes);
            if ty == TYPE_SETTINGS && flags & FLAG_ACK != 0 && len == 0 && self.settings_ack_pending
            {
                self.settings_ack_pending = false;
                continue;
            }
            if ty == TYPE_PING && flags & FLAG_ACK != 0 && len == 8 && self.nudges_outstanding > 0 {
                self.ping = Some(h);
                continue;
            }
            out.extend_from_slice(&h);
            self.skip = len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_is_stripped_across_chunks() {
        let mut s = PrefaceStripper::new();
        let mut stream = PREFACE.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        for b in stream.chunks(5) {
            s.feed(b, &mut out).unwrap();
        }
        assert_eq!(out, EMPTY_SETTINGS);
        assert!(s.is_done());
    }

    #[test]
    fn a_stream_that_is_not_http2_is_refused() {
        let mut s = PrefaceStripper::new();
        assert_eq!(
            s.feed(b"GET / HTTP/1.1\r\n", &mut Vec::new()),
            Err(NotHttp2)
        );
    }

    /// Feeds `stream` through `d` in chunks of `chunk` bytes; what it let through, and the
    /// filter itself for its counters.
    fn filter_in_chunks(
        mut d: BackendFrameFilter,
        stream: &[u8],
        chunk: usize,
    ) -> (Vec<u8>, BackendFrameFilter) {
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            d.feed(c, &mut out);
        }
        (out, d)
    }

    #[test]
    fn only_the_first_settings_ack_is_dropped() {
        let settings = [0u8, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        let ack = [0u8, 0, 0, 4, 1, 0, 0, 0, 0];
        let ping = [0u8, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut stream = Vec::new();
        stream.extend_from_slice(&settings);
        stream.extend_from_slice(&ping);
        stream.extend_from_slice(&ack);
        stream.extend_from_slice(&ack);
        let mut expected = Vec::new();
        expected.extend_from_slice(&settings);
        expected.extend_from_slice(&ping);
        expected.extend_from_slice(&ack);
        for chunk in 1..stream.len() {
            let (out, _) = filter_in_chunks(BackendFrameFilter::new(), &stream, chunk);
            assert_eq!(out, expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn a_ping_payload_that_looks_like_an_ack_is_not_dropped() {
        // a PING whose payload happens to contain the ACK bytes
        let ping = [0u8, 0, 8, 6, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0];
        let mut d = BackendFrameFilter::new();
        let mut out = Vec::new();
        d.feed(&ping, &mut out);
        assert_eq!(out, ping);
    }

    #[test]
    fn nudge_ping_acks_are_removed_and_others_kept() {
        let mut our_ack = ping_frame(NUDGE_OPAQUE);
        our_ack[4] = 1; // ACK flag
        let mut their_ack = ping_frame(*b"client!!");
        their_ack[4] = 1;
        let data = [0u8, 0, 2, 0, 0, 0, 0, 0, 1, 0xaa, 0xbb];
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]); // settings ack (dropped)
        stream.extend_from_slice(&their_ack);
        stream.extend_from_slice(&our_ack);
        stream.extend_from_slice(&data);
        stream.extend_from_slice(&our_ack); // not expected any more: passes
        let mut expected = Vec::new();
        expected.extend_from_slice(&their_ack);
        expected.extend_from_slice(&data);
        expected.extend_from_slice(&our_ack);
        for chunk in 1..stream.len() {
            let mut d = BackendFrameFilter::new();
            d.expect_nudge_ack();
            let (out, d) = filter_in_chunks(d, &stream, chunk);
            assert_eq!(out, expected, "chunk size {chunk}");
            assert_eq!(d.nudges_outstanding(), 0);
        }
    }

    #[test]
    fn walker_tracks_boundaries() {
        let mut w = FrameWalker::new();
        assert!(w.at_boundary());
        let f = ping_frame(NUDGE_OPAQUE);
        w.feed(&f[..4]);
        assert!(!w.at_boundary());
        w.feed(&f[4..12]);
        assert!(!w.at_boundary());
        w.feed(&f[12..]);
        assert!(w.at_boundary());
    }
}

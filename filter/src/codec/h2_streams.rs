//! Which calls of a tunnelled HTTP/2 connection are still waiting for their end, so that a
//! broken tunnel can end each of them with a gRPC status instead of a broken connection.
//!
//! When the tunnel breaks (the backend, the server Envoy or a hop goes away), the gRPC client's
//! own HTTP/2 connection would simply close under its calls, and clients report that
//! inconsistently (tonic: UNKNOWN, grpcio: UNAVAILABLE). A direct gRPC connection to a backend
//! that went away is UNAVAILABLE by the gRPC status spec, so the tunnel client ends every open
//! call with a trailers frame `grpc-status: 14` before the connection closes. [`StreamLedger`]
//! reads the frame headers in both directions (never the payloads, except the last-stream-id of
//! a GOAWAY) to know which streams are open, whether their response headers went out, and
//! whether the server-to-client direction sits between frames where frames of our own fit.

use std::collections::BTreeMap;

use super::h2::{FrameHead, FrameWalker, Walked, PREFACE};
use super::status::percent_encode;

const TYPE_DATA: u8 = 0;
const TYPE_HEADERS: u8 = 1;
const TYPE_RST_STREAM: u8 = 3;
const TYPE_GOAWAY: u8 = 7;
const TYPE_CONTINUATION: u8 = 9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
/// grpc-message is cut to this many bytes (before percent-encoding) so the frame stays far
/// below the smallest SETTINGS_MAX_FRAME_SIZE (16,384).
const MAX_MESSAGE_BYTES: usize = 512;

/// Streams tracked at most; a client with more open streams than this loses the clean ending
/// (the connection just closes, as without the ledger). Bounds the ledger's memory.
pub const MAX_TRACKED_STREAMS: usize = 4096;

/// Reads frame headers out of one direction, skipping payloads (but collecting the first four
/// payload bytes of a GOAWAY: its last stream id).
#[derive(Debug, Default)]
struct HeadReader {
    walker: FrameWalker,
    goaway: Option<([u8; 4], usize)>,
    /// Inside a header block (HEADERS without END_HEADERS, then CONTINUATIONs).
    in_block: bool,
}

#[derive(Debug)]
enum Event {
    Frame(FrameHead),
    GoAway(u32),
}

impl HeadReader {
    fn feed(&mut self, input: &[u8], events: &mut Vec<Event>) {
        let (goaway, in_block) = (&mut self.goaway, &mut self.in_block);
        self.walker.walk(input, |walked| match walked {
            Walked::Payload(payload) => {
                if let Some((id, have)) = goaway.as_mut() {
                    for &b in payload {
                        if let Some(slot) = id.get_mut(*have) {
                            *slot = b;
                            *have = have.saturating_add(1);
                        }
                    }
                    if *have == 4 {
                        events.push(Event::GoAway(u32::from_be_bytes(*id) & 0x7fff_ffff));
                        *goaway = None;
                    }
                }
            }
            Walked::Head(head) => {
                match head.kind {
                    TYPE_HEADERS => *in_block = head.flags & FLAG_END_HEADERS == 0,
                    TYPE_CONTINUATION => *in_block = head.flags & FLAG_END_HEADERS == 0,
                    _ => {}
                }
                *goaway = (head.kind == TYPE_GOAWAY && head.len >= 4).then_some(([0; 4], 0));
                events.push(Event::Frame(head));
            }
        });
    }

    /// Between frames and outside a header block: frames of our own may go here.
    fn can_insert(&self) -> bool {
        self.walker.at_boundary() && !self.in_block
    }
}

/// The open streams of one client HTTP/2 connection, seen from between client and server.
#[derive(Debug, Default)]
pub struct StreamLedger {
    preface_left: usize,
    client: HeadReader,
    server: HeadReader,
    /// Open client streams: stream id -> response headers already sent by the server.
    open: BTreeMap<u32, bool>,
    highest: u32,
    /// More streams than [`MAX_TRACKED_STREAMS`] were open at once: the ledger gave up.
    overflowed: bool,
    events: Vec<Event>,
}

impl StreamLedger {
    pub fn new() -> Self {
        StreamLedger {
            preface_left: PREFACE.len(),
            ..Default::default()
        }
    }

    /// Bytes from the gRPC client (its connection preface first).
    pub fn client_bytes(&mut self, mut input: &[u8]) {
        if self.preface_left > 0 {
            let n = self.preface_left.min(input.len());
            self.preface_left = self.preface_left.saturating_sub(n);
            input = input.get(n..).unwrap_or(&[]);
        }
        let mut events = std::mem::take(&mut self.events);
        self.client.feed(input, &mut events);
        for ev in events.drain(..) {
            let Event::Frame(f) = ev else { continue };
            match f.kind {
                TYPE_HEADERS if f.stream > self.highest && f.stream & 1 == 1 => {
                    self.highest = f.stream;
                    if self.open.len() >= MAX_TRACKED_STREAMS {
                        self.overflowed = true;
                    } else {
                        self.open.insert(f.stream, false);
                    }
                }
                TYPE_RST_STREAM => {
                    self.open.remove(&f.stream);
                }
                _ => {}
            }
        }
        self.events = events;
    }

    /// Bytes from the server (the backend's HTTP/2, unwrapped), on their way to the client.
    pub fn server_bytes(&mut self, input: &[u8]) {
        let mut events = std::mem::take(&mut self.events);
        self.server.feed(input, &mut events);
        for ev in events.drain(..) {
            match ev {
                Event::Frame(f) => match f.kind {
                    TYPE_HEADERS | TYPE_DATA if f.flags & FLAG_END_STREAM != 0 => {
                        self.open.remove(&f.stream);
                    }
                    TYPE_HEADERS => {
                        if let Some(started) = self.open.get_mut(&f.stream) {
                            *started = true;
                        }
                    }
                    TYPE_RST_STREAM => {
                        self.open.remove(&f.stream);
                    }
                    _ => {}
                },
                // Streams above the server's last stream id were refused: the client fails
                // them itself.
                Event::GoAway(last) => {
                    let _ = self.open.split_off(&last.saturating_add(1));
                }
            }
        }
        self.events = events;
    }

    /// Number of streams waiting for their end.
    pub fn open_streams(&self) -> usize {
        self.open.len()
    }

    /// The frames that end every open stream with `grpc-status: 14` and `message`, followed by
    /// a GOAWAY so the client opens no new stream on this connection; `None` when they cannot
    /// be inserted exactly (in the middle of a server frame or header block, or the ledger
    /// overflowed) or nothing is open.
    pub fn unavailable_frames(&self, message: &str) -> Option<Vec<u8>> {
        if self.overflowed || !self.server.can_insert() || self.preface_left > 0 {
            return None;
        }
        if self.open.is_empty() {
            return None;
        }
        let mut msg = message;
        if msg.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !msg.is_char_boundary(end) {
                end = end.saturating_sub(1);
            }
            msg = msg.get(..end).unwrap_or("");
        }
        let msg = percent_encode(msg);
        let mut out = Vec::new();
        for (&stream, &started) in &self.open {
            let mut block = Vec::new();
            if !started {
                // Trailers-Only: `:status: 200` is entry 8 of the HPACK static table.
                block.push(0x88);
                literal(&mut block, b"content-type", b"application/grpc");
            }
            literal(&mut block, b"grpc-status", b"14");
            literal(&mut block, b"grpc-message", msg.as_bytes());
            frame(
                &mut out,
                TYPE_HEADERS,
                FLAG_END_STREAM | FLAG_END_HEADERS,
                stream,
                &block,
            );
        }
        let mut goaway = self.highest.to_be_bytes().to_vec();
        goaway.extend_from_slice(&0u32.to_be_bytes()); // NO_ERROR
        frame(&mut out, TYPE_GOAWAY, 0, 0, &goaway);
        Some(out)
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len().min(0x00ff_ffff) as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2): touches no
/// dynamic table, so it is exact whatever the connection's HPACK state.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    string(out, name);
    string(out, value);
}

/// A string literal without Huffman coding: a 7-bit-prefix length (RFC 7541 5.1), then bytes.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n = n.saturating_sub(127);
        while n >= 128 {
            out.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        frame(&mut v, kind, flags, stream, payload);
        v
    }

    /// Feeds the bytes one at a time and in one piece: the ledger must agree.
    fn both_ways(client: &[u8], server: &[u8]) -> [StreamLedger; 2] {
        let mut a = StreamLedger::new();
        a.client_bytes(client);
        a.server_bytes(server);
        let mut b = StreamLedger::new();
        for c in client.chunks(1) {
            b.client_bytes(c);
        }
        for c in server.chunks(1) {
            b.server_bytes(c);
        }
        [a, b]
    }

    fn client_opening(streams: &[u32]) -> Vec<u8> {
        let mut c = PREFACE.to_vec();
        c.extend(f(4, 0, 0, &[]));
        for &s in streams {
            c.extend(f(TYPE_HEADERS, FLAG_END_HEADERS, s, &[0x83, 0x86]));
            c.extend(f(TYPE_DATA, FLAG_END_STREAM, s, &[0, 0, 0, 0, 1, 7]));
        }
        c
    }

    /// Decodes our own HEADERS blocks (only the encodings we emit).
    fn decode_block(mut b: &[u8]) -> Vec<(String, String)> {
        let mut out = vec![];
        while let Some((&first, rest)) = b.split_first() {
            b = rest;
            if first == 0x88 {
                out.push((":status".into(), "200".into()));
                continue;
            }
            assert_eq!(first, 0);
            let mut strs = vec![];
            for _ in 0..2 {
                let (&l, rest) = b.split_first().unwrap();
                assert!(l < 127);
                let (s, rest) = rest.split_at(l as usize);
                strs.push(String::from_utf8(s.to_vec()).unwrap());
                b = rest;
            }
            out.push((strs[0].clone(), strs[1].clone()));
        }
        out
    }

    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut v = vec![];
        while !b.is_empty() {
            let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
            let s = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            v.push((b[3], b[4], s, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        v
    }

    #[test]
    fn open_calls_get_unavailable_with_the_message() {
        let client = client_opening(&[1, 3, 5]);
        // Stream 1 answered in full; 3 has response headers; 5 nothing yet.
        let mut server = f(4, 0, 0, &[]);
        server.extend(f(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x88]));
        server.extend(f(TYPE_DATA, 0, 1, &[0, 0, 0, 0, 0]));
        server.extend(f(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &[0x88],
        ));
        server.extend(f(TYPE_HEADERS, FLAG_END_HEADERS, 3, &[0x88]));
        for l in both_ways(&client, &server) {
            assert_eq!(l.open_streams(), 2);
            let out = l
                .unavailable_frames("tunnel closed: backend closed")
                .unwrap();
            let fr = frames(&out);
            assert_eq!(fr.len(), 3);
            assert_eq!((fr[0].0, fr[0].1, fr[0].2), (TYPE_HEADERS, 0x5, 3));
            assert_eq!(
                decode_block(&fr[0].3),
                vec![
                    ("grpc-status".into(), "14".into()),
                    (
                        "grpc-message".into(),
                        "tunnel closed: backend closed".into()
                    )
                ]
            );
            assert_eq!((fr[1].0, fr[1].1, fr[1].2), (TYPE_HEADERS, 0x5, 5));
            assert_eq!(
                decode_block(&fr[1].3),
                vec![
                    (":status".into(), "200".into()),
                    ("content-type".into(), "application/grpc".into()),
                    ("grpc-status".into(), "14".into()),
                    (
                        "grpc-message".into(),
                        "tunnel closed: backend closed".into()
                    )
                ]
            );
            assert_eq!((fr[2].0, fr[2].2), (TYPE_GOAWAY, 0));
            assert_eq!(fr[2].3, vec![0, 0, 0, 5, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn resets_and_goaway_close_streams() {
        let mut client = client_opening(&[1, 3, 5, 7]);
        client.extend(f(TYPE_RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        let mut server = f(TYPE_RST_STREAM, 0, 3, &[0, 0, 0, 2]);
        server.extend(f(TYPE_GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
        for l in both_ways(&client, &server) {
            // 1 reset by the client, 3 by the server, 7 refused by the GOAWAY: only 5 is left.
            assert_eq!(l.open_streams(), 1);
            let fr = frames(&l.unavailable_frames("x").unwrap());
            assert_eq!(fr[0].2, 5);
        }
    }

    #[test]
    fn nothing_is_inserted_inside_a_frame_or_header_block() {
        let client = client_opening(&[1]);
        let data = f(TYPE_DATA, 0, 1, &[0, 0, 0, 0, 3, 1, 2, 3]);
        for cut in 1..data.len() {
            let [l, _] = both_ways(&client, &data[..cut]);
            assert!(l.unavailable_frames("x").is_none(), "cut {cut}");
        }
        let [l, _] = both_ways(&client, &data);
        assert!(l.unavailable_frames("x").is_some());
        // HEADERS without END_HEADERS: not until the CONTINUATION that ends the block.
        let mut server = f(TYPE_HEADERS, 0, 1, &[0x88]);
        let [l, _] = both_ways(&client, &server);
        assert!(l.unavailable_frames("x").is_none());
        server.extend(f(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &[]));
        let [l, _] = both_ways(&client, &server);
        let fr = frames(&l.unavailable_frames("x").unwrap());
        assert_eq!(decode_block(&fr[0].3)[0].0, "grpc-status");
    }

    #[test]
    fn no_frames_when_nothing_is_open_or_before_the_preface() {
        let [l, _] = both_ways(&client_opening(&[]), &[]);
        assert!(l.unavailable_frames("x").is_none());
        let mut l = StreamLedger::new();
        l.client_bytes(&PREFACE[..10]);
        assert!(l.unavailable_frames("x").is_none());
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary_and_encoded() {
        let [l, _] = both_ways(&client_opening(&[1]), &[]);
        let msg = "é".repeat(600);
        let fr = frames(&l.unavailable_frames(&msg).unwrap());
        assert!(fr[0].3.len() < 16_384);
        // Long strings use the multi-byte length prefix: check it round-trips.
        let mut s = Vec::new();
        string(&mut s, &[b'a'; 300]);
        // 300 - 127 = 173 = 0b1_0101101: low seven bits with the continuation bit, then 1.
        assert_eq!(&s[..3], &[127, 0x80 | 45, 1]);
        assert_eq!(s.len(), 3 + 300);
    }

    #[test]
    fn tracking_is_bounded() {
        let mut l = StreamLedger::new();
        let streams: Vec<u32> = (0..MAX_TRACKED_STREAMS as u32 + 1)
            .map(|i| 2 * i + 1)
            .collect();
        l.client_bytes(&client_opening(&streams));
        assert_eq!(l.open_streams(), MAX_TRACKED_STREAMS);
        assert!(l.unavailable_frames("x").is_none());
    }
}

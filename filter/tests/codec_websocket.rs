//! Property and interop tests for the WebSocket codec (`codec::websocket`) and its SHA-1.
//!
//! - Round trips: random messages, fragmentations, control frames and masks, encoded by us and
//!   decoded by us, fed in random chunks; `decode` and `decode_into` agree.
//! - Chunking independence: every input (valid or not) gives the same events and the same
//!   error whether it is fed whole or one byte at a time.
//! - `apply_mask` in pieces at arbitrary offsets equals the byte-wise definition.
//! - No panics on arbitrary bytes (both decoder sides, both handshake parsers).
//! - Handshake round trips, and interop with tungstenite (an independent implementation): frames
//!   in both directions and both masking directions, and both handshakes.
//! - SHA-1 against the `sha1` crate.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Instant;

use grpc_bridge::codec::sha1::{sha1 as our_sha1, Sha1};
use grpc_bridge::codec::websocket::{
    accept_key, apply_mask, close_payload, encode_client_handshake, encode_close_frame,
    encode_frame, encode_handshake_rejection, encode_header, encode_server_handshake,
    key_from_nonce, parse_client_handshake, parse_server_handshake, ClientHandshake, FrameDecoder,
    HandshakeError, Opcode, Side, WsError, WsEvent, GUID,
};
mod common;

use common::split;
use proptest::prelude::*;
use proptest::sample::Index;
use tungstenite::protocol::frame::coding::{Data as TData, OpCode as TOpCode};
use tungstenite::protocol::frame::{Frame as TFrame, FrameHeader as TFrameHeader};
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketConfig};
use tungstenite::{Bytes, Message};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Joins adjacent Data events (how Data bytes are grouped is not part of the contract).
fn merge(ev: Vec<WsEvent>) -> Vec<WsEvent> {
    let mut out: Vec<WsEvent> = Vec::new();
    for e in ev {
        if let WsEvent::Data(d) = &e {
            assert!(!d.is_empty(), "empty Data event");
            if let Some(WsEvent::Data(prev)) = out.last_mut() {
                prev.extend_from_slice(d);
                continue;
            }
        }
        out.push(e);
    }
    out
}

/// Feeds chunks until the first error; returns the merged events and the error.
fn decode_chunks(side: Side, max: u64, chunks: &[&[u8]]) -> (Vec<WsEvent>, Option<WsError>) {
    let mut d = FrameDecoder::new(side, max);
    let mut ev = Vec::new();
    for c in chunks {
        if let Err(e) = d.decode(c, &mut ev) {
            // Sticky.
            assert_eq!(d.decode(b"\x82\x00", &mut Vec::new()), Err(e.clone()));
            return (merge(ev), Some(e));
        }
    }
    (merge(ev), None)
}

#[derive(Debug, Clone)]
enum Item {
    /// A data message: text?, payload, fragment cut points.
    Msg(bool, Vec<u8>, Vec<Index>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => (
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(any::<Index>(), 0..4)
        )
            .prop_map(|(text, p, cuts)| {
                if text {
                    // Text payloads must be UTF-8; make one from the bytes.
                    let s: String = p.iter().map(|&b| char::from_u32(u32::from(b) * 37 + 32).unwrap_or('x')).collect();
                    Item::Msg(true, s.into_bytes(), cuts)
                } else {
                    Item::Msg(false, p, cuts)
                }
            }),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Item::Ping),
        1 => prop::collection::vec(any::<u8>(), 0..=125).prop_map(Item::Pong),
    ]
}

/// Up to 8 messages and control frames, and a masking key to send them with.
fn items_and_mask() -> impl Strategy<Value = (Vec<Item>, [u8; 4])> {
    (prop::collection::vec(item(), 0..8), any::<[u8; 4]>())
}

/// Encodes the items with our encoder; returns the wire bytes and the events a decoder must
/// report (merged form). Fragments of a message are cut at the given points, and control
/// frames from `interleave` are put between fragments.
fn encode_items(
    items: &[Item],
    mask: Option<[u8; 4]>,
    masks_vary: bool,
) -> (Vec<u8>, Vec<WsEvent>) {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    let mut n = 0u8;
    let mut next_mask = || {
        n = n.wrapping_add(1);
        mask.map(|m| {
            if masks_vary {
                [m[0] ^ n, m[1], m[2].wrapping_add(n), m[3]]
            } else {
                m
            }
        })
    };
    for it in items {
        match it {
            Item::Msg(text, payload, cuts) => {
                let frags = split(payload, cuts);
                for (i, f) in frags.iter().enumerate() {
                    let op = if i > 0 {
                        Opcode::Continuation
                    } else if *text {
                        Opcode::Text
                    } else {
                        Opcode::Binary
                    };
                    encode_frame(i + 1 == frags.len(), op, next_mask(), f, &mut wire);
                    // A ping between fragments (control frames may interleave).
                    if i + 1 < frags.len() && f.len() % 3 == 0 {
                        encode_frame(true, Opcode::Ping, next_mask(), b"between", &mut wire);
                    }
                }
                // Expected events: the fragments' bytes with a Ping where one was sent; in a
                // Text message only whole code points are delivered before each Ping.
                let mut merged = Vec::new();
                let (mut emitted, mut end) = (0usize, 0usize);
                for (i, f) in frags.iter().enumerate() {
                    end += f.len();
                    if i + 1 < frags.len() && f.len() % 3 == 0 {
                        let upto = if *text {
                            match std::str::from_utf8(&payload[..end]) {
                                Ok(_) => end,
                                Err(e) => e.valid_up_to(),
                            }
                        } else {
                            end
                        };
                        if upto > emitted {
                            merged.push(WsEvent::Data(payload[emitted..upto].to_vec()));
                        }
                        emitted = upto;
                        merged.push(WsEvent::Ping(b"between".to_vec()));
                    }
                }
                if payload.len() > emitted {
                    merged.push(WsEvent::Data(payload[emitted..].to_vec()));
                }
                want.extend(merged);
                want.push(WsEvent::MessageEnd);
            }
            Item::Ping(p) => {
                encode_frame(true, Opcode::Ping, next_mask(), p, &mut wire);
                want.push(WsEvent::Ping(p.clone()));
            }
            Item::Pong(p) => {
                encode_frame(true, Opcode::Pong, next_mask(), p, &mut wire);
                want.push(WsEvent::Pong(p.clone()));
            }
        }
    }
    (wire, merge(want))
}

/// In-memory stream for tungstenite: reads from `input` (WouldBlock when empty), writes to
/// `output`. Clones share the buffers.
#[derive(Clone, Default)]
struct Mem {
    input: Rc<RefCell<VecDeque<u8>>>,
    output: Rc<RefCell<Vec<u8>>>,
}

impl Mem {
    fn push(&self, b: &[u8]) {
        self.input.borrow_mut().extend(b.iter().copied());
    }
    fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut *self.output.borrow_mut())
    }
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut inp = self.input.borrow_mut();
        if inp.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(inp.len());
        for (dst, src) in buf.iter_mut().zip(inp.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// Reads every message tungstenite can produce from what is buffered.
fn tung_read_all(ws: &mut WebSocket<Mem>) -> Vec<Message> {
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(m) => out.push(m),
            Err(e) if would_block(&e) => return out,
            Err(tungstenite::Error::ConnectionClosed) => return out,
            Err(e) => panic!("tungstenite read failed: {e}"),
        }
    }
}

fn tung_config() -> Option<WebSocketConfig> {
    Some(
        WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20)),
    )
}

/// The events our decoder should report for messages tungstenite read or wrote.
fn messages_to_events(msgs: &[Message]) -> Vec<WsEvent> {
    let mut want = Vec::new();
    for m in msgs {
        match m {
            Message::Binary(b) => {
                if !b.is_empty() {
                    want.push(WsEvent::Data(b.to_vec()));
                }
                want.push(WsEvent::MessageEnd);
            }
            Message::Text(t) => {
                if !t.is_empty() {
                    want.push(WsEvent::Data(t.as_bytes().to_vec()));
                }
                want.push(WsEvent::MessageEnd);
            }
            Message::Ping(p) => want.push(WsEvent::Ping(p.to_vec())),
            Message::Pong(p) => want.push(WsEvent::Pong(p.to_vec())),
            Message::Close(c) => want.push(WsEvent::Close {
                code: c.as_ref().map(|c| u16::from(c.code)),
                reason: c.as_ref().map(|c| c.reason.to_string()).unwrap_or_default(),
            }),
            Message::Frame(_) => unreachable!(),
        }
    }
    merge(want)
}

// ---------------------------------------------------------------------------------------------
// Our encoder -> our decoder

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_random_messages(
        (items, mask) in items_and_mask(),
        masks_vary in any::<bool>(),
        to_server in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let (side, mask) = if to_server { (Side::Server, Some(mask)) } else { (Side::Client, None) };
        let (wire, want) = encode_items(&items, mask, masks_vary);
        let chunks = split(&wire, &cuts);
        let (got, err) = decode_chunks(side, 1 << 20, &chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&got, &want);

        // decode_into: all data bytes contiguous, control events only.
        let mut d = FrameDecoder::new(side, 1 << 20);
        let (mut data, mut ctl) = (Vec::new(), Vec::new());
        for c in &chunks {
            d.decode_into(c, &mut data, &mut ctl).unwrap();
        }
        prop_assert!(d.is_idle() && !d.in_message());
        let want_data: Vec<u8> = want.iter().flat_map(|e| match e {
            WsEvent::Data(d) => d.clone(),
            _ => Vec::new(),
        }).collect();
        let want_ctl: Vec<WsEvent> = want.iter().filter(|e| matches!(e, WsEvent::Ping(_) | WsEvent::Pong(_) | WsEvent::Close { .. })).cloned().collect();
        prop_assert_eq!(data, want_data);
        prop_assert_eq!(ctl, want_ctl);

        // The wrong side rejects any non-empty stream with 1002.
        if !wire.is_empty() {
            let other = if to_server { Side::Client } else { Side::Server };
            let (_, err) = decode_chunks(other, 1 << 20, &[&wire]);
            prop_assert_eq!(err.map(|e| e.close_code), Some(1002));
        }
    }

    #[test]
    fn round_trip_with_close(
        items in prop::collection::vec(item(), 0..4),
        mask in any::<[u8; 4]>(),
        code in prop_oneof![Just(1000u16), Just(1001), Just(1011), 3000u16..5000],
        reason in ".{0,80}",
    ) {
        let (mut wire, mut want) = encode_items(&items, Some(mask), false);
        encode_close_frame(Some(mask), code, &reason, &mut wire);
        let p = close_payload(code, &reason);
        want.push(WsEvent::Close { code: Some(code), reason: String::from_utf8(p[2..].to_vec()).unwrap() });
        let (got, err) = decode_chunks(Side::Server, 1 << 20, &[&wire]);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&got, &want);
        // One more byte is an error, with the events before it unchanged.
        wire.push(0x82);
        let (got, err) = decode_chunks(Side::Server, 1 << 20, &one_byte_chunks(&wire));
        prop_assert_eq!(err.map(|e| e.close_code), Some(1002));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn chunking_independence_valid_streams(
        items in prop::collection::vec(item(), 0..6),
        mask in any::<[u8; 4]>(),
        to_server in any::<bool>(),
    ) {
        let (side, mask) = if to_server { (Side::Server, Some(mask)) } else { (Side::Client, None) };
        let (wire, _) = encode_items(&items, mask, true);
        let whole = decode_chunks(side, 1 << 20, &[&wire]);
        let bytes = decode_chunks(side, 1 << 20, &one_byte_chunks(&wire));
        prop_assert_eq!(whole, bytes);
    }

    /// Any input, valid or not: same events (modulo Data grouping) and the same error, fed
    /// whole, one byte at a time, or in random chunks.
    #[test]
    fn chunking_independence_arbitrary_bytes(
        prefix_items in prop::collection::vec(item(), 0..3),
        junk in prop::collection::vec(any::<u8>(), 0..200),
        mask in any::<[u8; 4]>(),
        to_server in any::<bool>(),
        max in prop_oneof![Just(0u64), 0u64..400, Just(u64::MAX)],
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let (side, mask) = if to_server { (Side::Server, Some(mask)) } else { (Side::Client, None) };
        let (mut wire, _) = encode_items(&prefix_items, mask, false);
        wire.extend_from_slice(&junk);
        let whole = decode_chunks(side, max, &[&wire]);
        prop_assert_eq!(&whole, &decode_chunks(side, max, &one_byte_chunks(&wire)));
        prop_assert_eq!(&whole, &decode_chunks(side, max, &split(&wire, &cuts)));
    }

    #[test]
    fn decode_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        max in any::<u64>(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        for side in [Side::Client, Side::Server] {
            let mut d = FrameDecoder::new(side, max);
            let (mut data, mut ev) = (Vec::new(), Vec::new());
            for c in split(&bytes, &cuts) {
                let _ = d.decode_into(c, &mut data, &mut ev);
                let _ = d.is_idle();
            }
            let mut d = FrameDecoder::new(side, max);
            let mut ev = Vec::new();
            for c in split(&bytes, &cuts) {
                if let Err(e) = d.decode(c, &mut ev) {
                    prop_assert!(matches!(e.close_code, 1002 | 1007 | 1009), "{e}");
                }
            }
        }
    }

    /// Frames whose headers are random but well-formed-ish: exercise every length form and
    /// the limit check with both sides.
    #[test]
    fn decode_random_headers(
        b0 in any::<u8>(),
        len in prop_oneof![0u64..130, 120u64..70000, Just(u64::MAX), any::<u64>()],
        mask in proptest::option::of(any::<[u8; 4]>()),
        max in prop_oneof![0u64..70000, Just(u64::MAX)],
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let op = Opcode::from_u8(b0 & 0x0F).unwrap_or(Opcode::Binary);
        let mut wire = Vec::new();
        encode_header(b0 & 0x80 != 0, op, mask, len, &mut wire);
        wire[0] = b0;
        wire.extend_from_slice(&body);
        for side in [Side::Client, Side::Server] {
            let whole = decode_chunks(side, max, &[&wire]);
            prop_assert_eq!(&whole, &decode_chunks(side, max, &one_byte_chunks(&wire)));
            if let (Some(e), Some(op)) = (&whole.1, Opcode::from_u8(b0 & 0x0F)) {
                let mask_ok = mask.is_some() == (side == Side::Server);
                if mask_ok && b0 & 0x70 == 0 && !op.is_control() && op != Opcode::Continuation
                    && len >> 63 == 0 && len > max {
                    prop_assert_eq!(e.close_code, 1009);
                }
            }
        }
    }

    #[test]
    fn apply_mask_matches_bytewise_reference_in_pieces(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        mask in any::<[u8; 4]>(),
        start in 0usize..16,
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let reference: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[(i + start) % 4]).collect();
        let mut got = Vec::new();
        let mut off = start;
        for piece in split(&data, &cuts) {
            let mut p = piece.to_vec();
            apply_mask(&mut p, mask, off);
            off += p.len();
            got.extend(p);
        }
        prop_assert_eq!(&got, &reference);
        // Involution.
        let mut back = got.clone();
        apply_mask(&mut back, mask, start);
        prop_assert_eq!(back, data);
    }

    #[test]
    fn encode_header_forms(len in prop_oneof![0u64..200, 65000u64..70000, 0u64..(1u64 << 63)], masked in any::<bool>()) {
        let mask = masked.then_some([1, 2, 3, 4]);
        let mut h = Vec::new();
        encode_header(true, Opcode::Binary, mask, len, &mut h);
        let want_len = 2 + if len <= 125 { 0 } else if len <= 65535 { 2 } else { 8 } + if masked { 4 } else { 0 };
        prop_assert_eq!(h.len(), want_len);
        // tungstenite reads the same header.
        let mut cur = io::Cursor::new(&h);
        let (hdr, plen) = TFrameHeader::parse(&mut cur).unwrap().unwrap();
        prop_assert_eq!(plen, len);
        prop_assert_eq!(hdr.mask, mask);
        prop_assert!(hdr.is_final);
        prop_assert_eq!(cur.position() as usize, h.len());
    }

    #[test]
    fn close_payload_fits_and_is_a_prefix(code in any::<u16>(), reason in "\\PC{0,100}") {
        let p = close_payload(code, &reason);
        prop_assert!(p.len() <= 125);
        prop_assert_eq!(u16::from_be_bytes([p[0], p[1]]), code);
        let r = std::str::from_utf8(&p[2..]).unwrap();
        prop_assert!(reason.starts_with(r));
        if reason.len() <= 123 {
            prop_assert_eq!(r, reason.as_str());
        } else {
            // Only cut when needed, and by less than one char.
            prop_assert!(r.len() > 123 - 4);
        }
    }
}

fn one_byte_chunks(data: &[u8]) -> Vec<&[u8]> {
    data.chunks(1).collect()
}

// ---------------------------------------------------------------------------------------------
// Handshake

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn client_handshake_round_trip(
        host in "[a-z0-9.-]{1,30}(:[0-9]{1,5})?",
        path in "/[A-Za-z0-9/._~%?=&-]{0,40}",
        nonce in any::<[u8; 16]>(),
        protocol in proptest::option::of(token()),
        extra in prop::collection::vec((token(), "[ -~]{0,30}"), 0..5),
        trailing in prop::collection::vec(any::<u8>(), 0..20),
        cuts in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let key = key_from_nonce(nonce);
        let h = ClientHandshake { host: host.clone(), path: path.clone(), key: key.clone(), protocol: protocol.clone(), extra_headers: extra.clone() };
        let mut buf = encode_client_handshake(&h);
        let head_len = buf.len();
        buf.extend_from_slice(&trailing);
        // Every proper prefix of the head is "need more".
        for c in split(&buf[..head_len], &cuts) {
            let n = c.as_ptr() as usize - buf.as_ptr() as usize;
            if n == head_len { continue; }
            prop_assert_eq!(parse_client_handshake(&buf[..n], 8192), Ok(None));
        }
        let (req, used) = parse_client_handshake(&buf, 8192).unwrap().unwrap();
        prop_assert_eq!(used, head_len);
        prop_assert_eq!(&req.method, "GET");
        prop_assert_eq!(&req.path, &path);
        prop_assert_eq!(&req.key, &key);
        prop_assert_eq!(req.header("host"), Some(host.as_str()));
        prop_assert_eq!(req.protocols, protocol.into_iter().collect::<Vec<_>>());
        let managed = ["host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
            "sec-websocket-protocol", "sec-websocket-extensions", "content-length", "transfer-encoding"];
        let sent: Vec<(String, String)> = extra.iter()
            .filter(|(n, _)| !managed.contains(&n.to_ascii_lowercase().as_str()))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim_matches([' ', '\t']).to_string()))
            .collect();
        let got: Vec<(String, String)> = req.headers.iter()
            .filter(|(n, _)| !managed.contains(&n.as_str()))
            .cloned()
            .collect();
        prop_assert_eq!(got, sent);
        // The limit: exactly the head's size is enough, one less is not.
        prop_assert!(parse_client_handshake(&buf, head_len).unwrap().is_some());
        prop_assert_eq!(parse_client_handshake(&buf, head_len - 1), Err(HandshakeError::TooLarge));
    }

    #[test]
    fn server_handshake_round_trip(
        nonce in any::<[u8; 16]>(),
        protocol in proptest::option::of(token()),
        trailing in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        let key = key_from_nonce(nonce);
        let accept = accept_key(&key);
        let mut buf = encode_server_handshake(&accept, protocol.as_deref());
        let head_len = buf.len();
        buf.extend_from_slice(&trailing);
        for n in 0..head_len {
            prop_assert_eq!(parse_server_handshake(&buf[..n], 4096, &accept, protocol.as_deref()), Ok(None));
        }
        prop_assert_eq!(parse_server_handshake(&buf, 4096, &accept, protocol.as_deref()), Ok(Some(head_len)));
        let other = accept_key(&key_from_nonce([nonce[0] ^ 1; 16]));
        if other != accept {
            prop_assert_eq!(parse_server_handshake(&buf, 4096, &other, protocol.as_deref()), Err(HandshakeError::BadAccept));
        }
        // Agrees with tungstenite's accept computation.
        prop_assert_eq!(accept, tungstenite::handshake::derive_accept_key(key.as_bytes()));
    }

    #[test]
    fn handshake_parsers_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        max in 0usize..500,
    ) {
        let _ = parse_client_handshake(&bytes, max);
        let _ = parse_server_handshake(&bytes, max, "x", None);
        let _ = parse_server_handshake(&bytes, max, "x", Some("p"));
        if let Ok(Some((_, n))) = parse_client_handshake(&bytes, max) { prop_assert!(n <= bytes.len() && n <= max); }
        if let Ok(Some(n)) = parse_server_handshake(&bytes, max, "x", None) { prop_assert!(n <= bytes.len() && n <= max); }
    }

    /// Mutated valid heads: no panic, and an accepted head still ends where the bytes say.
    #[test]
    fn handshake_parsers_on_mutated_heads(
        nonce in any::<[u8; 16]>(),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let key = key_from_nonce(nonce);
        let h = ClientHandshake { host: "h".into(), path: "/".into(), key: key.clone(), protocol: Some("p".into()), extra_headers: vec![] };
        let mut req = encode_client_handshake(&h);
        let mut resp = encode_server_handshake(&accept_key(&key), Some("p"));
        for (i, b) in &flips {
            let n = req.len();
            req[i.index(n)] = *b;
            let n = resp.len();
            resp[i.index(n)] = *b;
        }
        if let Ok(Some((_, n))) = parse_client_handshake(&req, 8192) {
            prop_assert!(req[..n].ends_with(b"\r\n\r\n"));
        }
        if let Ok(Some(n)) = parse_server_handshake(&resp, 8192, &accept_key(&key), Some("p")) {
            prop_assert!(resp[..n].ends_with(b"\r\n\r\n"));
        }
    }
}

#[test]
fn extra_headers_cannot_inject() {
    let h = ClientHandshake {
        host: "a\r\nX-Evil: 1".into(),
        path: "/a b\r\nX-Evil: 2".into(),
        key: key_from_nonce([7; 16]),
        protocol: Some("p\r\nX-Evil: 3".into()),
        extra_headers: vec![
            ("X-Ok".into(), "fine".into()),
            ("X-Evil\r\nX-Evil".into(), "4".into()),
            ("X-Evil".into(), "5\r\nX-Evil: 6".into()),
            ("X-Evil".into(), "7\n".into()),
            ("X-Evil".into(), "8\0".into()),
            ("Upgrade".into(), "h2c".into()),
        ],
    };
    let buf = encode_client_handshake(&h);
    let (req, _) = parse_client_handshake(&buf, 8192).unwrap().unwrap();
    assert!(req.headers.iter().all(|(n, _)| n != "x-evil"), "{req:?}");
    assert_eq!(req.header("x-ok"), Some("fine"));
    assert_eq!(req.header("upgrade"), Some("websocket"));
    assert_eq!(req.path, "/a%20b%0D%0AX-Evil:%202");
}

// ---------------------------------------------------------------------------------------------
// Interop with tungstenite

/// Our masked client frames -> tungstenite server; its replies (pong, close echo) -> our client
/// decoder.
#[test]
fn interop_ours_client_to_tungstenite_server() {
    let mem = Mem::default();
    let mut ws = WebSocket::from_raw_socket(mem.clone(), Role::Server, tung_config());
    let mut wire = Vec::new();
    let m = Some([0xde, 0xad, 0xbe, 0xef]);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 31) as u8).collect();
    encode_frame(true, Opcode::Binary, m, b"hello", &mut wire);
    encode_frame(false, Opcode::Binary, m, &big[..70_000], &mut wire);
    encode_frame(true, Opcode::Ping, m, b"ping!", &mut wire);
    encode_frame(
        false,
        Opcode::Continuation,
        m,
        &big[70_000..70_300],
        &mut wire,
    );
    encode_frame(true, Opcode::Continuation, m, &big[70_300..], &mut wire);
    encode_frame(false, Opcode::Text, m, "grüß ".as_bytes(), &mut wire);
    encode_frame(true, Opcode::Continuation, m, "dich".as_bytes(), &mut wire);
    encode_frame(true, Opcode::Binary, m, b"", &mut wire);
    encode_close_frame(m, 1000, "done", &mut wire);
    // Feed in odd-sized pieces.
    let mut msgs = Vec::new();
    for c in wire.chunks(777) {
        mem.push(c);
        msgs.extend(tung_read_all(&mut ws));
    }
    assert_eq!(
        msgs.len(),
        6,
        "{:?}",
        msgs.iter().map(|m| m.len()).collect::<Vec<_>>()
    );
    assert_eq!(msgs[0], Message::Binary(Bytes::from_static(b"hello")));
    assert_eq!(msgs[1], Message::Ping(Bytes::from_static(b"ping!")));
    assert_eq!(msgs[2], Message::Binary(Bytes::from(big.clone())));
    assert_eq!(msgs[3], Message::text("grüß dich"));
    assert_eq!(msgs[4], Message::Binary(Bytes::new()));
    match &msgs[5] {
        Message::Close(Some(c)) => {
            assert_eq!(u16::from(c.code), 1000);
            assert_eq!(c.reason.as_str(), "done");
        }
        other => panic!("{other:?}"),
    }
    let _ = ws.flush();
    let replies = mem.take_output();
    let (ev, error) = decode_chunks(Side::Client, 1 << 20, &[&replies]);
    assert_eq!(error, None);
    assert_eq!(
        ev,
        vec![
            WsEvent::Pong(b"ping!".to_vec()),
            WsEvent::Close {
                code: Some(1000),
                reason: "done".into()
            }
        ]
    );
}

/// tungstenite client (masks) -> our server decoder; our unmasked server frames -> tungstenite
/// client.
#[test]
fn interop_tungstenite_client_with_our_server() {
    let mem = Mem::default();
    let mut ws = WebSocket::from_raw_socket(mem.clone(), Role::Client, tung_config());
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    ws.send(Message::text("hi ✓")).unwrap();
    ws.send(Message::Ping(Bytes::from_static(b"p"))).unwrap();
    ws.send(Message::Frame(TFrame::message(
        Bytes::from_static(b"frag1-"),
        TOpCode::Data(TData::Binary),
        false,
    )))
    .unwrap();
    ws.send(Message::Frame(TFrame::message(
        Bytes::from_static(b"frag2"),
        TOpCode::Data(TData::Continue),
        true,
    )))
    .unwrap();
    let wire = mem.take_output();
    let (got, err) = decode_chunks(Side::Server, 1 << 20, &one_byte_chunks(&wire));
    assert_eq!(err, None);
    assert_eq!(
        got,
        vec![
            WsEvent::Data(big.clone()),
            WsEvent::MessageEnd,
            WsEvent::Data("hi ✓".as_bytes().to_vec()),
            WsEvent::MessageEnd,
            WsEvent::Ping(b"p".to_vec()),
            WsEvent::Data(b"frag1-frag2".to_vec()),
            WsEvent::MessageEnd,
        ]
    );
    // tungstenite masks client frames: our client-side decoder refuses them.
    assert_eq!(
        decode_chunks(Side::Client, 1 << 20, &[&wire])
            .1
            .map(|e| e.close_code),
        Some(1002)
    );

    // Our server -> tungstenite client.
    let mut back = Vec::new();
    encode_frame(true, Opcode::Binary, None, &big, &mut back);
    encode_frame(true, Opcode::Pong, None, b"p", &mut back);
    encode_frame(false, Opcode::Binary, None, b"ab", &mut back);
    encode_frame(true, Opcode::Ping, None, b"q", &mut back);
    encode_frame(true, Opcode::Continuation, None, b"cd", &mut back);
    encode_close_frame(None, 1001, "away", &mut back);
    mem.push(&back);
    let msgs = tung_read_all(&mut ws);
    assert_eq!(
        msgs,
        vec![
            Message::Binary(Bytes::from(big)),
            Message::Pong(Bytes::from_static(b"p")),
            Message::Ping(Bytes::from_static(b"q")),
            Message::Binary(Bytes::from_static(b"abcd")),
            Message::Close(Some(CloseFrame {
                code: 1001.into(),
                reason: "away".into()
            })),
        ]
    );
    // Our masked frame sent to a tungstenite client is refused there too.
    let mem2 = Mem::default();
    let mut ws2 = WebSocket::from_raw_socket(mem2.clone(), Role::Client, None);
    let mut bad = Vec::new();
    encode_frame(true, Opcode::Binary, Some([1, 2, 3, 4]), b"x", &mut bad);
    mem2.push(&bad);
    assert!(ws2.read().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random message sequences, both directions, against tungstenite.
    #[test]
    fn interop_random_messages(
        (items, mask) in items_and_mask(),
        chunk in 1usize..500,
    ) {
        // Ours (client, masked) -> tungstenite server.
        let (wire, want) = encode_items(&items, Some(mask), true);
        let mem = Mem::default();
        let mut ws = WebSocket::from_raw_socket(mem.clone(), Role::Server, tung_config());
        let mut msgs = Vec::new();
        for c in wire.chunks(chunk) {
            mem.push(c);
            msgs.extend(tung_read_all(&mut ws));
        }
        // tungstenite reports a fragmented message once, after its control frames: compare
        // messages and controls separately.
        let got = messages_to_events(&msgs);
        let data = |ev: &[WsEvent]| -> Vec<WsEvent> { merge(ev.iter().filter(|e| matches!(e, WsEvent::Data(_) | WsEvent::MessageEnd)).cloned().collect()) };
        let ctl = |ev: &[WsEvent]| -> Vec<WsEvent> { ev.iter().filter(|e| !matches!(e, WsEvent::Data(_) | WsEvent::MessageEnd)).cloned().collect() };
        prop_assert_eq!(data(&got), data(&want));
        prop_assert_eq!(ctl(&got), ctl(&want));

        // tungstenite server (unmasked) -> ours (client side).
        let mem = Mem::default();
        let mut ws = WebSocket::from_raw_socket(mem.clone(), Role::Server, tung_config());
        let mut sent = Vec::new();
        for it in &items {
            let m = match it {
                Item::Msg(true, p, _) => Message::text(String::from_utf8(p.clone()).unwrap()),
                Item::Msg(false, p, _) => Message::binary(p.clone()),
                Item::Ping(p) => Message::Ping(Bytes::from(p.clone())),
                Item::Pong(p) => Message::Pong(Bytes::from(p.clone())),
            };
            ws.write(m.clone()).unwrap();
            sent.push(m);
        }
        ws.flush().unwrap();
        let out = mem.take_output();
        let (got, err) = decode_chunks(Side::Client, 1 << 20, &out.chunks(chunk).collect::<Vec<_>>());
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, messages_to_events(&sent));
    }
}

#[test]
fn interop_handshake_tungstenite_client_our_server() {
    let mem = Mem::default();
    let req = tungstenite::http::Request::builder()
        .uri("ws://example.com:8080/tunnel?x=1")
        .header("Host", "example.com:8080")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .header("Sec-WebSocket-Protocol", "grpc-tunnel")
        .body(())
        .unwrap();
    let mid = match tungstenite::client::client(req, mem.clone()) {
        Err(tungstenite::HandshakeError::Interrupted(mid)) => mid,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("handshake cannot finish without an answer"),
    };
    let request_bytes = mem.take_output();
    let (req, used) = parse_client_handshake(&request_bytes, 8192)
        .unwrap()
        .unwrap();
    assert_eq!(used, request_bytes.len());
    assert_eq!(req.path, "/tunnel?x=1");
    assert_eq!(req.protocols, vec!["grpc-tunnel".to_string()]);
    assert_eq!(req.header("host"), Some("example.com:8080"));
    let mut answer = encode_server_handshake(&accept_key(&req.key), Some("grpc-tunnel"));
    // Pipelined server frame right behind the 101.
    encode_frame(true, Opcode::Binary, None, b"settings", &mut answer);
    mem.push(&answer);
    let (mut ws, resp) = mid.handshake().unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(
        ws.read().unwrap(),
        Message::Binary(Bytes::from_static(b"settings"))
    );

    // tungstenite rejects a wrong accept value from us.
    let mem = Mem::default();
    let mid = match tungstenite::client::client("ws://example.com/", mem.clone()) {
        Err(tungstenite::HandshakeError::Interrupted(mid)) => mid,
        _ => panic!(),
    };
    let _ = mem.take_output();
    mem.push(&encode_server_handshake(
        &accept_key("AAAAAAAAAAAAAAAAAAAAAA=="),
        None,
    ));
    assert!(mid.handshake().is_err());
}

#[test]
#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn interop_handshake_our_client_tungstenite_server() {
    let mem = Mem::default();
    let key = key_from_nonce(*b"0123456789abcdef");
    let h = ClientHandshake {
        host: "server.example:443".into(),
        path: "/ws".into(),
        key: key.clone(),
        protocol: Some("grpc-tunnel".into()),
        extra_headers: vec![("User-Agent".into(), "grpc-bridge".into())],
    };
    // tungstenite's server refuses bytes pipelined behind the request ("Junk after client
    // request"), unlike nginx and our server side; send the first frame after the handshake.
    mem.push(&encode_client_handshake(&h));
    let cb = |req: &tungstenite::handshake::server::Request,
              mut resp: tungstenite::handshake::server::Response| {
        assert_eq!(req.uri().path(), "/ws");
        assert_eq!(req.headers()["user-agent"], "grpc-bridge");
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "grpc-tunnel".parse().unwrap());
        Ok(resp)
    };
    let mut ws = match tungstenite::accept_hdr(mem.clone(), cb) {
        Ok(ws) => ws,
        Err(e) => panic!("{e}"),
    };
    let answer = mem.take_output();
    let used = parse_server_handshake(&answer, 4096, &accept_key(&key), Some("grpc-tunnel"))
        .unwrap()
        .unwrap();
    assert_eq!(used, answer.len());
    let mut wire = Vec::new();
    encode_frame(
        true,
        Opcode::Binary,
        Some([9, 8, 7, 6]),
        b"PRI * HTTP/2.0",
        &mut wire,
    );
    mem.push(&wire);
    assert_eq!(
        ws.read().unwrap(),
        Message::Binary(Bytes::from_static(b"PRI * HTTP/2.0"))
    );
    // Without the protocol echo we fail with BadProtocol.
    assert_eq!(
        parse_server_handshake(&answer, 4096, &accept_key(&key), None),
        Err(HandshakeError::BadProtocol)
    );
}

#[test]
fn rejection_is_readable_by_tungstenite_client() {
    let mem = Mem::default();
    let mid = match tungstenite::client::client("ws://example.com/", mem.clone()) {
        Err(tungstenite::HandshakeError::Interrupted(mid)) => mid,
        _ => panic!(),
    };
    mem.push(&encode_handshake_rejection(400, "unsupported version"));
    match mid.handshake() {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status(), 400);
            assert_eq!(resp.headers()["sec-websocket-version"], "13");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted a 400"),
    }
}

// ---------------------------------------------------------------------------------------------
// SHA-1

proptest! {
    #[test]
    fn sha1_matches_reference_crate(data in prop::collection::vec(any::<u8>(), 0..600), cut in any::<Index>()) {
        use sha1::Digest;
        let want: [u8; 20] = sha1::Sha1::digest(&data).into();
        prop_assert_eq!(our_sha1(&data), want);
        let c = cut.index(data.len() + 1);
        let mut h = Sha1::new();
        h.update(&data[..c]);
        h.update(&data[c..]);
        prop_assert_eq!(h.finish(), want);
    }
}

#[test]
fn accept_key_rfc_example() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(GUID.len(), 36);
}

// ---------------------------------------------------------------------------------------------
// Speed (printed, not asserted): run with `cargo test --release -- --nocapture apply_mask_speed`

#[test]
fn apply_mask_speed() {
    let size = if cfg!(debug_assertions) {
        1 << 20
    } else {
        16 << 20
    };
    let rounds = if cfg!(debug_assertions) { 4 } else { 64 };
    let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let orig = buf.clone();
    let t = Instant::now();
    for r in 0..rounds {
        apply_mask(&mut buf[r % 3..], [1, 2, 3, 4], r);
    }
    let dt = t.elapsed().as_secs_f64();
    let gbps = (size as f64 * rounds as f64) / dt / 1e9;
    eprintln!("apply_mask: {gbps:.2} GB/s ({} MiB x {rounds})", size >> 20);

    // Whole-path numbers: encode (mask while copying) and decode_into (unmask while copying),
    // into reused (already faulted-in) buffers; the second of two passes is timed.
    let payload = &orig[..1 << 16];
    let frames = if cfg!(debug_assertions) { 16 } else { 1024 };
    let mut wire = Vec::with_capacity((payload.len() + 14) * frames);
    let mut data = Vec::with_capacity(wire.capacity());
    let mut ev = Vec::new();
    let (mut enc, mut dec) = (0.0, 0.0);
    for _ in 0..2 {
        wire.clear();
        let t = Instant::now();
        for _ in 0..frames {
            encode_frame(true, Opcode::Binary, Some([5, 6, 7, 8]), payload, &mut wire);
        }
        enc = (payload.len() * frames) as f64 / t.elapsed().as_secs_f64() / 1e9;
        data.clear();
        let mut d = FrameDecoder::new(Side::Server, 1 << 20);
        let t = Instant::now();
        for c in wire.chunks(16 << 10) {
            d.decode_into(c, &mut data, &mut ev).unwrap();
        }
        dec = data.len() as f64 / t.elapsed().as_secs_f64() / 1e9;
    }
    assert_eq!(&data[..payload.len()], payload);
    eprintln!("encode_frame masked: {enc:.2} GB/s; decode_into masked: {dec:.2} GB/s");
}

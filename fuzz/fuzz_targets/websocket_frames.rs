//! WebSocket framing (RFC 6455): `FrameDecoder` for both sides, `decode` and `decode_into`,
//! one-shot and chunked; plus a generator that builds valid streams with the crate's encoder
//! and checks they decode to what was encoded.
//!
//! Input: `flags: u8` (bit 0: decoder side, 0 = Client (reads unmasked server frames),
//! 1 = Server (reads masked client frames)), `max_payload: u16` (`limit_u32`), `plan_a: u16`,
//! `plan_b: u16`, `mask: [u8; 4]`, then bytes that are (1) decoded as raw frames and (2) read as
//! a recipe for a valid stream (see `generate`).
//!
//! Invariants: no panic; `decode` gives the same events (adjacent Data merged) and the same
//! error however the input is cut; `decode_into` agrees with `decode` (data bytes and control
//! events); Data events are never empty; control payloads are at most 125 bytes; Close codes
//! are valid; nothing follows a Close; errors are sticky and carry close code 1002, 1007 or
//! 1009; masking is an involution that can be
//! applied in pieces; a generated valid stream decodes (chunked) to exactly what was encoded.
#![no_main]

use fuzz_common::{chunks, chunks_at_most, hex, limit_u32, Input};
use grpc_bridge::codec::websocket::{
    apply_mask, close_payload, encode_frame, is_valid_close_code, FrameDecoder, Opcode, Side,
    WsError, WsEvent, MAX_CONTROL_PAYLOAD,
};
use libfuzzer_sys::fuzz_target;

fn merge(ev: &[WsEvent]) -> Vec<WsEvent> {
    let mut out: Vec<WsEvent> = Vec::new();
    for e in ev {
        if let (WsEvent::Data(d), Some(WsEvent::Data(prev))) = (e, out.last_mut()) {
            prev.extend_from_slice(d);
            continue;
        }
        out.push(e.clone());
    }
    out
}

/// The data payload bytes of `ev`, one after the other (what `decode_into` gives as data).
fn data_of(ev: &[WsEvent]) -> Vec<u8> {
    ev.iter()
        .filter_map(|e| match e {
            WsEvent::Data(d) => Some(d.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

fn decode(side: Side, max: u64, pieces: &[&[u8]]) -> (Vec<WsEvent>, Result<(), WsError>) {
    let mut d = FrameDecoder::new(side, max);
    let mut events = Vec::new();
    for piece in pieces {
        if let Err(e) = d.decode(piece, &mut events) {
            assert_eq!(d.error(), Some(&e));
            let n = events.len();
            assert_eq!(
                d.decode(b"\x82\x00", &mut events),
                Err(e.clone()),
                "not sticky"
            );
            assert_eq!(d.decode(&[], &mut events), Err(e.clone()), "not sticky");
            assert_eq!(events.len(), n, "events after an error");
            return (events, Err(e));
        }
        // Closed exactly when a Close event came out.
        let closed = events.iter().any(|e| matches!(e, WsEvent::Close { .. }));
        assert_eq!(d.is_closed(), closed);
        let _ = (d.is_idle(), d.in_message());
    }
    (events, Ok(()))
}

fn decode_into(
    side: Side,
    max: u64,
    pieces: &[&[u8]],
) -> (Vec<u8>, Vec<WsEvent>, Result<(), WsError>) {
    let mut d = FrameDecoder::new(side, max);
    let mut data = Vec::new();
    let mut events = Vec::new();
    for piece in pieces {
        if let Err(e) = d.decode_into(piece, &mut data, &mut events) {
            return (data, events, Err(e));
        }
    }
    (data, events, Ok(()))
}

fn check_events(events: &[WsEvent], input_len: usize) {
    let mut data_bytes = 0usize;
    for (i, e) in events.iter().enumerate() {
        match e {
            WsEvent::Data(d) => {
                assert!(!d.is_empty(), "empty Data event");
                data_bytes += d.len();
            }
            WsEvent::MessageEnd => {}
            WsEvent::Ping(p) | WsEvent::Pong(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
            WsEvent::Close { code, reason } => {
                match code {
                    Some(c) => assert!(is_valid_close_code(*c), "close code {c}"),
                    None => assert!(reason.is_empty()),
                }
                assert!(reason.len() <= MAX_CONTROL_PAYLOAD - 2);
                assert_eq!(i + 1, events.len(), "events after Close");
            }
        }
    }
    assert!(data_bytes <= input_len);
}

fn push_data(expect: &mut Vec<WsEvent>, bytes: &[u8]) {
    if !bytes.is_empty() {
        if let Some(WsEvent::Data(prev)) = expect.last_mut() {
            prev.extend_from_slice(bytes);
        } else {
            expect.push(WsEvent::Data(bytes.to_vec()));
        }
    }
}

/// Builds a valid frame stream from `recipe`; returns the stream and the events it must decode
/// to (adjacent Data merged).
fn generate(recipe: &[u8], side: Side, mask_seed: [u8; 4]) -> (Vec<u8>, Vec<WsEvent>) {
    let mut r = Input::new(recipe);
    let mut out = Vec::new();
    let mut expect = Vec::new();
    let mut big_done = false;
    let mut n_mask = 0u8;
    let mut mask = || {
        n_mask = n_mask.wrapping_add(1);
        match side {
            Side::Server => Some(mask_seed.map(|b| b.wrapping_mul(n_mask).wrapping_add(n_mask))),
            Side::Client => None,
        }
    };
    while !r.is_empty() {
        let kind = r.u8();
        let len_byte = r.u8();
        let mut payload = match len_byte {
            // Extended lengths, once per stream: both ends of the 16-bit form's range (126 and
            // 65535), one in between, and the smallest 64-bit length.
            250..=253 if !big_done => {
                big_done = true;
                let n = [126usize, 300, 65_535, 65_536][usize::from(len_byte - 250)];
                let seed = r.bytes(8).to_vec();
                (0..n)
                    .map(|i| seed.get(i % seed.len().max(1)).copied().unwrap_or(0) ^ (i as u8))
                    .collect()
            }
            n => r.bytes(usize::from(n % 200)).to_vec(),
        };
        match kind % 6 {
            0 => {
                encode_frame(true, Opcode::Binary, mask(), &payload, &mut out);
                push_data(&mut expect, &payload);
                expect.push(WsEvent::MessageEnd);
            }
            1 => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                encode_frame(true, Opcode::Text, mask(), text.as_bytes(), &mut out);
                push_data(&mut expect, text.as_bytes());
                expect.push(WsEvent::MessageEnd);
            }
            2 => {
                // A fragmented message (text if bit 3), cut at recipe-chosen byte positions
                // (so a code point may straddle fragments), a Ping between fragments if bit 4.
                let text = kind & 8 != 0;
                if text {
                    payload = String::from_utf8_lossy(&payload).into_owned().into_bytes();
                }
                let cuts = [r.u8(), r.u8()].map(|c| usize::from(c) % (payload.len() + 1));
                let (a, b) = (cuts[0].min(cuts[1]), cuts[0].max(cuts[1]));
                let parts = [&payload[..a], &payload[a..b], &payload[b..]];
                // Text data is delivered in whole code points: what a Ping interrupts is
                // the message so far up to its last char boundary.
                let mut sent = 0usize;
                let mut delivered = 0usize;
                for (i, part) in parts.iter().enumerate() {
                    let op = match (i, text) {
                        (0, true) => Opcode::Text,
                        (0, false) => Opcode::Binary,
                        _ => Opcode::Continuation,
                    };
                    encode_frame(i == 2, op, mask(), part, &mut out);
                    sent += part.len();
                    let mut upto = sent;
                    if text {
                        while std::str::from_utf8(&payload[..upto]).is_err() {
                            upto -= 1;
                        }
                    }
                    push_data(&mut expect, &payload[delivered..upto]);
                    delivered = upto;
                    if i < 2 && kind & 16 != 0 {
                        let ping = &part[..part.len().min(MAX_CONTROL_PAYLOAD)];
                        encode_frame(true, Opcode::Ping, mask(), ping, &mut out);
                        expect.push(WsEvent::Ping(ping.to_vec()));
                    }
                }
                assert_eq!(delivered, payload.len());
                expect.push(WsEvent::MessageEnd);
            }
            3 | 4 => {
                payload.truncate(MAX_CONTROL_PAYLOAD);
                let op = if kind % 6 == 3 {
                    Opcode::Ping
                } else {
                    Opcode::Pong
                };
                encode_frame(true, op, mask(), &payload, &mut out);
                expect.push(if op == Opcode::Ping {
                    WsEvent::Ping(payload)
                } else {
                    WsEvent::Pong(payload)
                });
            }
            _ => {
                let codes = [
                    1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1014, 3000, 4999,
                ];
                let code = codes[usize::from(len_byte) % codes.len()];
                if kind & 64 != 0 {
                    encode_frame(true, Opcode::Close, mask(), &[], &mut out);
                    expect.push(WsEvent::Close {
                        code: None,
                        reason: String::new(),
                    });
                } else {
                    let reason = String::from_utf8_lossy(&payload).into_owned();
                    let p = close_payload(code, &reason);
                    assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                    encode_frame(true, Opcode::Close, mask(), &p, &mut out);
                    expect.push(WsEvent::Close {
                        code: Some(code),
                        reason: String::from_utf8(p[2..].to_vec())
                            .expect("close_payload cut a char"),
                    });
                }
                break;
            }
        }
    }
    (out, expect)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let side = if flags & 1 == 0 {
        Side::Client
    } else {
        Side::Server
    };
    let max = u64::from(limit_u32(input.u16()));
    let plan_a = input.u16();
    let plan_b = input.u16();
    let m = input.bytes(4);
    let mask_seed = [0, 1, 2, 3].map(|i| m.get(i).copied().unwrap_or(0));
    let bytes = input.rest();

    // Masking: an involution, and the same applied whole or in pieces at running offsets.
    let mut whole = bytes.to_vec();
    apply_mask(&mut whole, mask_seed, usize::from(flags >> 1));
    let mut pieces = bytes.to_vec();
    let mut at = 0usize;
    for c in chunks(bytes, plan_b) {
        let n = c.len();
        apply_mask(
            &mut pieces[at..at + n],
            mask_seed,
            usize::from(flags >> 1) + at,
        );
        at += n;
    }
    assert_eq!(whole, pieces, "piecewise masking differs");
    apply_mask(&mut whole, mask_seed, usize::from(flags >> 1));
    assert_eq!(whole, bytes, "masking is not an involution");

    // 1. Raw bytes as frames.
    let (ev_whole, end_whole) = decode(side, max, &[bytes]);
    let (ev_cut, end_cut) = decode(side, max, &chunks(bytes, plan_a));
    check_events(&ev_whole, bytes.len());
    check_events(&ev_cut, bytes.len());
    assert_eq!(
        end_cut,
        end_whole,
        "end differs with chunking, input {}",
        hex(bytes)
    );
    assert_eq!(
        merge(&ev_cut),
        merge(&ev_whole),
        "events differ with chunking"
    );
    let (data_into, ctl_into, end_into) = decode_into(side, max, &chunks(bytes, plan_b));
    assert_eq!(end_into, end_whole, "decode_into end differs");
    assert_eq!(data_into, data_of(&ev_whole), "decode_into data differs");
    let ctl_events: Vec<WsEvent> = ev_whole
        .iter()
        .filter(|e| !matches!(e, WsEvent::Data(_) | WsEvent::MessageEnd))
        .cloned()
        .collect();
    assert_eq!(ctl_into, ctl_events, "decode_into control events differ");
    if let Err(e) = &end_whole {
        assert!(
            matches!(e.close_code, 1002 | 1007 | 1009),
            "close code {}",
            e.close_code
        );
    }

    // 2. A valid stream built from the same bytes.
    let (stream, expect) = generate(bytes, side, mask_seed);
    let (ev, end) = decode(side, u64::MAX >> 1, &chunks_at_most(&stream, plan_a, 64));
    assert_eq!(end, Ok(()), "valid stream refused: {}", hex(&stream));
    assert_eq!(merge(&ev), expect, "valid stream decoded differently");
    let (data_into, _, end_into) =
        decode_into(side, u64::MAX >> 1, &chunks_at_most(&stream, plan_b, 64));
    assert_eq!(end_into, Ok(()));
    assert_eq!(data_into, data_of(&expect));
});

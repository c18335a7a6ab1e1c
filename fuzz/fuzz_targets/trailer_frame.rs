//! gRPC-web trailer frames: `parse_trailer_block`, `TrailerFrameReader` (one-shot and chunked)
//! and `encode_trailer_frame`.
//!
//! Input: `limit: u16` (`limit_u32`), `plan_a: u16`, `plan_b: u16`, then bytes used three ways:
//! as a trailer block, as a whole trailer frame (header included), and split on 0xFF into
//! (name, value) pairs for the encoder.
//!
//! Invariants: no panic; every parsed name is a non-empty lowercase RFC 9110 token (so no ':'
//! and no pseudo-header) and no value holds CR, LF or NUL or starts/ends with SP/HTAB; the
//! reader gives the same answer however the frame is cut, and that answer follows from the
//! frame's header and `parse_trailer_block`; parsed fields re-encode and parse back to
//! themselves; whatever the encoder accepts parses back to the lowercased names and trimmed
//! values, and it refuses exactly what is invalid or over the limit.
#![no_main]

use fuzz_common::{chunks, hex, limit_u32, Input};
use grpc_bridge::codec::grpc_web::{
    encode_trailer_frame, parse_trailer_block, TrailerError, TrailerFrameReader,
};
use libfuzzer_sys::fuzz_target;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_fields(fields: &[(String, String)], context: &[u8]) {
    for (name, value) in fields {
        assert!(!name.is_empty(), "empty name from {}", hex(context));
        assert!(
            name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase()),
            "bad name {name:?} from {}",
            hex(context)
        );
        assert!(
            !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "bad value {value:?} from {}",
            hex(context)
        );
        assert_eq!(value.trim_matches([' ', '\t']), value, "untrimmed value");
    }
}

/// Feeds `frame` to a reader in `pieces`; the first error ends the feed (and must be sticky).
fn read(pieces: &[&[u8]], limit: usize) -> Result<Vec<(String, String)>, TrailerError> {
    let mut r = TrailerFrameReader::new(limit);
    for piece in pieces {
        if let Err(e) = r.push(piece) {
            assert_eq!(r.push(&[]), Err(e.clone()), "error not sticky");
            assert_eq!(r.push(b"\x80"), Err(e.clone()), "error not sticky");
            assert!(!r.is_complete());
            assert_eq!(r.finish(), Err(e.clone()));
            return Err(e);
        }
    }
    r.finish()
}

/// What a reader must answer for the complete byte sequence `frame`.
fn expected(frame: &[u8], limit: usize) -> Result<Vec<(String, String)>, TrailerError> {
    let Some(&first) = frame.first() else {
        return Err(TrailerError::Truncated);
    };
    if first & 0x80 == 0 {
        return Err(TrailerError::NotTrailers);
    }
    if first != 0x80 {
        return Err(TrailerError::Malformed(format!(
            "unsupported trailer frame flags 0x{first:02x}"
        )));
    }
    if frame.len() < 5 {
        return Err(TrailerError::Truncated);
    }
    let want = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    if want > limit {
        return Err(TrailerError::TooLarge { len: want, limit });
    }
    let block = &frame[5..];
    if block.len() > want {
        return Err(TrailerError::Malformed("data after trailer frame".into()));
    }
    if block.len() < want {
        return Err(TrailerError::Truncated);
    }
    parse_trailer_block(block, limit)
}

/// Encodes parsed fields and checks they come back unchanged (through the block parser and a
/// chunked reader).
fn round_trip(fields: &[(String, String)], plan: u16) {
    let mut out = vec![0xAA];
    encode_trailer_frame(fields, usize::MAX, &mut out).expect("parsed fields must re-encode");
    let frame = &out[1..];
    assert_eq!(frame[0], 0x80);
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    assert_eq!(len, frame.len() - 5);
    assert_eq!(parse_trailer_block(&frame[5..], len).as_deref(), Ok(fields));
    assert_eq!(read(&chunks(frame, plan), len).as_deref(), Ok(fields));
    if len > 0 {
        assert_eq!(
            read(&[frame], len - 1),
            Err(TrailerError::TooLarge {
                len,
                limit: len - 1
            })
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let limit = limit_u32(input.u16()) as usize;
    let plan_a = input.u16();
    let plan_b = input.u16();
    let bytes = input.rest();

    // 1. The bytes as a block.
    let parsed = parse_trailer_block(bytes, limit);
    if bytes.len() > limit {
        assert_eq!(
            parsed,
            Err(TrailerError::TooLarge {
                len: bytes.len(),
                limit
            })
        );
    }
    // The limit only refuses; it never changes a successful parse.
    let unlimited = parse_trailer_block(bytes, usize::MAX);
    if parsed.is_ok() {
        assert_eq!(parsed, unlimited);
    }
    if let Ok(fields) = &unlimited {
        check_fields(fields, bytes);
        round_trip(fields, plan_a);
    }

    // 2. The bytes as a whole frame, read one-shot and in chunks.
    let expect = expected(bytes, limit);
    if let Ok(fields) = &expect {
        check_fields(fields, bytes);
    }
    assert_eq!(
        read(&[bytes], limit),
        expect,
        "one-shot, frame {}",
        hex(bytes)
    );
    assert_eq!(
        read(&chunks(bytes, plan_a), limit),
        expect,
        "chunked, frame {}",
        hex(bytes)
    );
    let mut r = TrailerFrameReader::new(limit);
    if r.push(bytes).is_ok() {
        assert_eq!(
            r.is_complete(),
            !matches!(expect, Err(TrailerError::Truncated)),
            "is_complete"
        );
    }

    // 3. The bytes as pairs for the encoder: "name\xffvalue\xffname\xffvalue...".
    let parts: Vec<String> = bytes
        .split(|&b| b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let pairs: Vec<(String, String)> = parts
        .chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect();
    let mut out = vec![1, 2, 3];
    let r = encode_trailer_frame(&pairs, limit, &mut out);
    let valid = pairs.iter().all(|(n, v)| {
        !n.is_empty()
            && n.bytes().all(is_tchar)
            && !v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
    });
    let size: usize = pairs.iter().map(|(n, v)| n.len() + v.len() + 3).sum();
    match r {
        Ok(()) => {
            assert!(valid && size <= limit, "encoder accepted {pairs:?}");
            assert_eq!(&out[..3], &[1, 2, 3]);
            assert_eq!(out.len(), 3 + 5 + size);
            let want: Vec<(String, String)> = pairs
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_ascii_lowercase(),
                        v.trim_matches([' ', '\t']).to_owned(),
                    )
                })
                .collect();
            assert_eq!(read(&chunks(&out[3..], plan_b), size), Ok(want));
        }
        Err(e) => {
            assert_eq!(out, [1, 2, 3], "encoder wrote on error");
            match e {
                TrailerError::TooLarge { .. } => assert!(valid && size > limit),
                TrailerError::BadName(_) | TrailerError::BadValue(_) => assert!(!valid),
                other => panic!("unexpected encoder error {other:?}"),
            }
        }
    }
});

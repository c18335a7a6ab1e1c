//! Streaming base64 of `application/grpc-web-text`: `Base64Decoder` / `Base64Encoder`.
//!
//! Input: `plan_a: u16`, `plan_b: u16`, then bytes that are decoded (as base64 text) and also
//! encoded (as raw data).
//!
//! Invariants: no panic; the chunked decoder gives exactly what one-shot `decode_all` gives
//! (output, and error with its offset), and on error the output before the failing group is
//! the same however the input was cut; error offsets point at the offending byte; whatever
//! decodes re-encodes to text that decodes to the same bytes; the chunked encoder equals
//! `encode_padded`, and arbitrary bytes round-trip through encoder and chunked decoder.
#![no_main]

use fuzz_common::{chunks, hex, Input};
use grpc_bridge::codec::text::{
    decode_all, encode_padded, Base64Decoder, Base64Encoder, TextError,
};
use libfuzzer_sys::fuzz_target;

fn decode_chunked(pieces: &[&[u8]]) -> (Vec<u8>, Result<(), TextError>) {
    let mut d = Base64Decoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(e) = d.decode(piece, &mut out) {
            let before = out.len();
            assert_eq!(
                d.decode(b"AAAA", &mut out),
                Err(e.clone()),
                "error not sticky"
            );
            assert_eq!(out.len(), before, "output after an error");
            assert_eq!(d.finish(), Err(e.clone()));
            return (out, Err(e));
        }
    }
    let end = d.finish();
    assert_eq!(end.is_ok(), d.at_group_boundary());
    (out, end)
}

fn encode_chunked(pieces: &[&[u8]]) -> Vec<u8> {
    let mut e = Base64Encoder::new();
    let mut out = Vec::new();
    let mut fed = 0usize;
    for piece in pieces {
        e.encode(piece, &mut out);
        fed += piece.len();
        assert!(e.pending() < 3);
        assert_eq!(e.pending(), fed % 3);
        assert_eq!(out.len(), fed / 3 * 4, "encoder emitted a partial group");
    }
    e.flush(&mut out);
    assert_eq!(e.pending(), 0);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let plan_a = input.u16();
    let plan_b = input.u16();
    let bytes = input.rest();

    // Decoding: one-shot against chunked.
    let (whole_out, whole_end) = decode_chunked(&[bytes]);
    let (cut_out, cut_end) = decode_chunked(&chunks(bytes, plan_a));
    assert_eq!(
        cut_end,
        whole_end,
        "chunked vs one-shot end, text {}",
        hex(bytes)
    );
    assert_eq!(
        cut_out,
        whole_out,
        "chunked vs one-shot output, text {}",
        hex(bytes)
    );
    match &whole_end {
        Ok(()) => assert_eq!(decode_all(bytes).as_ref(), Ok(&whole_out)),
        Err(e) => {
            assert_eq!(decode_all(bytes).as_ref(), Err(e));
            match e {
                TextError::InvalidByte { offset, byte } => {
                    assert_eq!(bytes.get(*offset as usize), Some(byte), "offset of {e:?}");
                    assert!(!byte.is_ascii_alphanumeric() && !b"+/=".contains(byte));
                }
                TextError::BadPadding { offset } => assert!((*offset as usize) < bytes.len()),
                TextError::Truncated => assert!(!bytes.len().is_multiple_of(4)),
            }
            // Output stops at a group boundary before the failing byte: 3 bytes per group,
            // fewer only for padded groups.
            assert!(whole_out.len() <= bytes.len() / 4 * 3);
        }
    }

    // Whatever decoded re-encodes to canonical text that decodes to the same bytes.
    if whole_end.is_ok() {
        let mut text = Vec::new();
        encode_padded(&whole_out, &mut text);
        assert_eq!(text.len(), whole_out.len().div_ceil(3) * 4);
        assert_eq!(decode_all(&text), Ok(whole_out.clone()));
        assert!(whole_out.len() <= bytes.len() / 4 * 3);
        // A stream without padding is canonical: it re-encodes to itself.
        if !bytes.contains(&b'=') {
            assert_eq!(text, bytes);
        }
    }

    // Encoding arbitrary bytes: chunked == one-shot, and it decodes back (chunked).
    let mut one_shot = Vec::new();
    encode_padded(bytes, &mut one_shot);
    assert_eq!(encode_chunked(&chunks(bytes, plan_b)), one_shot);
    let (back, end) = decode_chunked(&chunks(&one_shot, plan_a));
    assert_eq!(end, Ok(()));
    assert_eq!(back, bytes);
});

//! `grpc-message` percent-encoding and `grpc-status` parsing (codec::status).
//!
//! Input: the whole input is the `grpc-message` / `grpc-status` value under test.
//!
//! Invariants: no panic; `percent_decode` of anything yields a string and is the identity on
//! UTF-8 without '%'; `percent_encode` emits only printable ASCII with '%' used only as `%XX`
//! (uppercase hex), and decoding it gives the original string back; `parse_grpc_status`
//! accepts exactly non-empty all-digit values that fit a `u32`, and the status helpers are
//! total on what it returns.
#![no_main]

use grpc_bridge::codec::status::{
    code_name, grpc_to_http, http_to_grpc, parse_grpc_status, percent_decode, percent_encode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Decoding arbitrary bytes never fails.
    let decoded = percent_decode(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if !s.contains('%') {
            assert_eq!(decoded, s);
        }
    }

    // Encoding any string (lossy view of the input, and the decoded string) round-trips.
    let lossy = String::from_utf8_lossy(data).into_owned();
    for s in [&lossy, &decoded] {
        let enc = percent_encode(s);
        let b = enc.as_bytes();
        assert!(
            b.iter().all(|c| (0x20..=0x7E).contains(c)),
            "non-printable in {enc:?}"
        );
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                assert!(i + 2 < b.len(), "short escape in {enc:?}");
                let hex = &b[i + 1..i + 3];
                assert!(
                    hex.iter()
                        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
                    "{enc:?}"
                );
                i += 3;
            } else {
                i += 1;
            }
        }
        assert_eq!(&percent_decode(b), s, "round trip of {s:?}");
        // Printable ASCII without '%' is left alone.
        if s.bytes().all(|c| (0x20..=0x7E).contains(&c) && c != b'%') {
            assert_eq!(&enc, s);
        }
    }

    // grpc-status: exactly 1*DIGIT that fits u32.
    let parsed = parse_grpc_status(data);
    let expect = if !data.is_empty() && data.iter().all(u8::is_ascii_digit) {
        std::str::from_utf8(data)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
    } else {
        None
    };
    assert_eq!(parsed, expect, "grpc-status {data:?}");
    if let Some(code) = parsed {
        let _ = code_name(code);
        let http = grpc_to_http(code);
        assert!((200..600).contains(&http));
        let _ = http_to_grpc(http);
    }
    if let [a, b, ..] = data {
        let _ = http_to_grpc(u16::from_le_bytes([*a, *b]));
    }
});

//! The server role's bound on what Envoy's `grpc_http1_bridge` holds for a plain HTTP/1.1 gRPC
//! client: `PlainHold::for_request`, then the response driven as the filter drives it (headers
//! with or without end of stream, body chunks with the clock, the end of the body, trailers,
//! flush ticks), checked against a reference model.
//!
//! Input: `max_bytes: u16` (see `limit_u32`), `max_ms: u8` (0: no bound), `content_type: u8`
//! (one of a list, or the next field's bytes), `protocol: u8` (one of a list, missing, or the
//! next field's bytes), `headers: u8` (bit 0: the response headers end the stream), then
//! operations, 3 bytes each: kind (body, last body chunk, trailers, tick), and a `u16` (chunk
//! size, or milliseconds to advance the clock; bit 15 of a tick's steps the clock back).
//!
//! Invariants: no panic; a hold exists exactly for a gRPC (not gRPC-web) content type over
//! `HTTP/1.0`/`HTTP/1.1` with some bound set; `start` asks for ticks iff a time bound is set and
//! the call is not over; every check's verdict equals the model's: `RESOURCE_EXHAUSTED` on the
//! first chunk that takes the total past `max_bytes`, else `DEADLINE_EXCEEDED` once `max_ms` have
//! passed since the response started (never for the call's own end); at most one verdict per
//! call and nothing after the end; the message names the field and its bound; while the call
//! goes on, the counted bytes never exceed `max_bytes`; `bytes()` is the total counted.
#![no_main]

use fuzz_common::{limit_u32, Input};
use grpc_bridge::codec::status::code;
use grpc_bridge::http::http1_status::PlainHold;
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 10] = [
    "application/grpc",
    "application/grpc+proto",
    "Application/GRPC+json; charset=utf-8",
    "application/grpc-web",
    "application/grpc-web-text+proto",
    "application/grpc+",
    "text/plain",
    "",
    " application/grpc\t;x=1",
    "application/grpcx",
];
const PROTOCOLS: [&[u8]; 7] = [
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2",
    b"HTTP/3",
    b"http/1.1",
    b"",
    b"HTTP/1.1 ",
];

/// Reference for the content types that are plain gRPC.
fn is_grpc(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim_matches([' ', '\t']);
    if !essence.is_ascii() {
        return false;
    }
    let lower = essence.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("application/grpc") else {
        return false;
    };
    match rest.strip_prefix('+') {
        None => rest.is_empty(),
        Some(sub) => {
            !sub.is_empty()
                && sub
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_bytes = limit_u32(input.u16());
    let max_ms = u32::from(input.u8());
    let ct_sel = input.u8();
    let proto_sel = input.u8();
    let headers = input.u8();
    let ct_owned;
    let ct: &str = match CONTENT_TYPES.get(usize::from(ct_sel)) {
        Some(c) => c,
        None => {
            let n = usize::from(ct_sel & 0x1F);
            ct_owned = String::from_utf8_lossy(input.bytes(n)).into_owned();
            &ct_owned
        }
    };
    let protocol: Option<&[u8]> = match usize::from(proto_sel) {
        i if i < PROTOCOLS.len() => Some(PROTOCOLS[i]),
        0x80..=0xFF => None,
        _ => Some(input.bytes(usize::from(proto_sel & 0x0F))),
    };

    let hold = PlainHold::for_request(ct, protocol, max_bytes, max_ms);
    let want_hold = (max_bytes != 0 || max_ms != 0)
        && is_grpc(ct)
        && matches!(protocol, Some(b"HTTP/1.1") | Some(b"HTTP/1.0"));
    assert_eq!(
        hold.is_some(),
        want_hold,
        "hold for {ct:?} over {protocol:?}"
    );
    let Some(mut hold) = hold else { return };

    // The model.
    let mut now_ns: u64 = 1_000_000_000_000;
    let mut total: u64 = 0;
    let mut done = false;
    let mut verdicts = 0;

    if headers & 1 != 0 {
        hold.finish();
        done = true;
    }
    let started_ns = now_ns;
    assert_eq!(
        hold.start(now_ns),
        max_ms > 0 && !done,
        "start asks for ticks"
    );
    assert_eq!(hold.is_done(), done);

    while !input.is_empty() {
        let kind = input.u8() % 4;
        let arg = input.u16();
        let (new_bytes, now, ends) = match kind {
            0 => {
                now_ns += u64::from(arg & 0xFF) * 100_000;
                (u64::from(arg >> 4), Some(now_ns), false)
            }
            1 => (u64::from(arg), None, true),
            2 => (0, None, true),
            _ => {
                let step = u64::from(arg & 0x7FFF) * 1_000_000 / 16;
                if arg & 0x8000 != 0 {
                    now_ns = now_ns.saturating_sub(step);
                } else {
                    now_ns += step;
                }
                (0, Some(now_ns), false)
            }
        };
        let got = hold.check(new_bytes, now);
        let want = if done {
            None
        } else {
            total = total.saturating_add(new_bytes);
            let elapsed_ms = now.map_or(0, |n| n.saturating_sub(started_ns) / 1_000_000);
            if max_bytes > 0 && total > u64::from(max_bytes) {
                Some(code::RESOURCE_EXHAUSTED)
            } else if max_ms > 0 && now.is_some() && elapsed_ms >= u64::from(max_ms) {
                Some(code::DEADLINE_EXCEEDED)
            } else {
                None
            }
        };
        assert_eq!(
            got.as_ref().map(|v| v.0),
            want,
            "verdict (op {kind}, arg {arg})"
        );
        if let Some((c, message)) = &got {
            verdicts += 1;
            done = true;
            let needle = if *c == code::RESOURCE_EXHAUSTED {
                format!("http1_hold_bytes ({max_bytes})")
            } else {
                format!("http1_hold_ms ({max_ms} ms)")
            };
            assert!(message.contains(&needle), "{message}");
        } else if ends {
            // The filter finishes the call when its end passes the check.
            hold.finish();
            done = true;
        }
        assert!(verdicts <= 1, "two verdicts for one call");
        assert_eq!(hold.is_done(), done);
        assert_eq!(hold.bytes(), total, "bytes counted");
        if !done && max_bytes > 0 {
            assert!(hold.bytes() <= u64::from(max_bytes), "held past the bound");
        }
        if done {
            // Nothing after the end, whatever comes.
            assert!(hold.check(u64::MAX, Some(u64::MAX)).is_none());
            assert_eq!(hold.bytes(), total);
        }
    }
});

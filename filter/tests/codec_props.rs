//! Property tests for the codec core: round trips, chunking independence (a transport may split
//! a body anywhere, so every incremental parser must give the same answer for every split,
//! including one byte at a time), agreement between FrameScanner and Deframer, security
//! invariants of parsed output, and no panics on arbitrary input.

use grpc_bridge::codec::grpc_frame::{
    encode_frame, Deframer, Frame, FrameError, FrameHeader, FrameScanner, FLAG_COMPRESSED,
    FLAG_TRAILERS, FRAME_HEADER_LEN,
};
use grpc_bridge::codec::grpc_web::{
    encode_trailer_frame, grpc_content_type, grpc_web_content_type, parse_grpc_content_type,
    parse_grpc_web_content_type, parse_trailer_block, Encoding, TrailerError, TrailerFrameReader,
};
use grpc_bridge::codec::status::{parse_grpc_status, percent_decode, percent_encode};
use grpc_bridge::codec::text::{
    decode_all, encode_padded, Base64Decoder, Base64Encoder, TextError,
};
mod common;

use common::split;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Helpers

fn one_byte_chunks(data: &[u8]) -> Vec<&[u8]> {
    data.chunks(1).collect()
}

fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..12)
}

#[derive(Debug, Clone)]
enum Piece {
    Msg(bool, Vec<u8>),
    Trailers(Vec<u8>),
    Raw(Vec<u8>),
}

/// Payloads biased towards the empty message, whose frame is header-only (an easy edge to miss).
fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::vec(any::<u8>(), 0..max),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => (any::<bool>(), payload(64))
            .prop_map(|(c, p)| Piece::Msg(c, p)),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Piece::Trailers),
        1 => prop::collection::vec(any::<u8>(), 0..8).prop_map(Piece::Raw),
    ]
}

fn render(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Msg(c, payload) => {
                encode_frame(if *c { FLAG_COMPRESSED } else { 0 }, payload, &mut out)
            }
            Piece::Trailers(block) => encode_frame(FLAG_TRAILERS, block, &mut out),
            Piece::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
    out
}

/// A framed-looking stream: mostly valid frames, sometimes trailers and garbage; or pure noise.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(piece(), 0..8).prop_map(|p| render(&p)),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[derive(Debug, PartialEq)]
struct ScanSummary {
    messages: u64,
    trailers_start: Option<usize>,
    error: Option<FrameError>,
    finish: Result<(), FrameError>,
    at_boundary: bool,
    in_trailers: bool,
}

fn run_scanner(max: u32, chunks: &[&[u8]]) -> ScanSummary {
    let mut s = FrameScanner::new(max);
    let mut base = 0usize;
    let mut trailers_start = None;
    let mut error = None;
    let mut per_chunk_total = 0u64;
    for c in chunks {
        match s.scan(c) {
            Ok(o) => {
                per_chunk_total += u64::from(o.messages_completed);
                if let Some(off) = o.trailers_start {
                    assert!(off < c.len(), "trailer offset inside the chunk");
                    assert!(trailers_start.is_none(), "trailers start reported twice");
                    trailers_start = Some(base + off);
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        base += c.len();
    }
    if error.is_none() {
        assert_eq!(
            per_chunk_total,
            s.messages(),
            "per-chunk counts add up to the total"
        );
    }
    ScanSummary {
        messages: s.messages(),
        trailers_start,
        error,
        finish: s.finish(),
        at_boundary: s.at_boundary(),
        in_trailers: s.in_trailers(),
    }
}

#[derive(Debug, PartialEq)]
struct DeframeSummary {
    frames: Vec<Frame>,
    error: Option<FrameError>,
    finish: Result<(), FrameError>,
    idle: bool,
}

fn run_deframer(max_msg: u32, max_trailer: u32, chunks: &[&[u8]]) -> DeframeSummary {
    let mut d = Deframer::new(max_msg, max_trailer);
    let limit = max_msg.max(max_trailer) as usize + FRAME_HEADER_LEN;
    let mut frames = Vec::new();
    let mut error = None;
    'outer: for c in chunks {
        if let Err(e) = d.push(c) {
            error = Some(e);
        }
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(
                        Some(&e),
                        error.as_ref(),
                        "next_frame error is the push error"
                    );
                    break 'outer;
                }
            }
        }
        // Everything complete has been drained: only the partial frame is held.
        assert!(
            d.buffered() <= limit,
            "partial buffer bounded: {} > {limit}",
            d.buffered()
        );
    }
    DeframeSummary {
        frames,
        error,
        finish: d.finish(),
        idle: d.is_idle(),
    }
}

#[derive(Debug, PartialEq)]
struct ReaderSummary {
    error: Option<TrailerError>,
    complete: bool,
    result: Result<Vec<(String, String)>, TrailerError>,
}

fn run_reader(limit: usize, chunks: &[&[u8]]) -> ReaderSummary {
    let mut r = TrailerFrameReader::new(limit);
    let mut error = None;
    for c in chunks {
        if let Err(e) = r.push(c) {
            error = Some(e);
            break;
        }
    }
    let complete = r.is_complete();
    ReaderSummary {
        error,
        complete,
        result: r.finish(),
    }
}

fn run_b64(chunks: &[&[u8]]) -> (Vec<u8>, Option<TextError>, Result<(), TextError>) {
    let mut d = Base64Decoder::new();
    let mut out = Vec::new();
    let mut error = None;
    for c in chunks {
        if let Err(e) = d.decode(c, &mut out) {
            error = Some(e);
            break;
        }
    }
    (out, error, d.finish())
}

/// Naive bit-at-a-time reference encoder, to catch bugs a symmetric round trip would hide.
fn reference_b64(input: &[u8]) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bits: Vec<u8> = input
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out: Vec<u8> = bits
        .chunks(6)
        .map(|c| {
            let v = c
                .iter()
                .chain(std::iter::repeat(&0))
                .take(6)
                .fold(0usize, |a, b| a * 2 + *b as usize);
            A[v]
        })
        .collect();
    out.resize(out.len().div_ceil(4) * 4, b'=');
    out
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trailer_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,16}"
}

/// Values as HTTP/2 allows them: no leading/trailing whitespace (the parser trims it), any
/// other char except CR, LF and NUL (including non-ASCII).
fn trailer_value() -> impl Strategy<Value = String> {
    "([^\r\n\u{0} \t]([^\r\n\u{0}]{0,20}[^\r\n\u{0} \t])?)?"
}

// ---------------------------------------------------------------------------------------------
// Round trips

proptest! {
    #[test]
    fn frames_round_trip_through_deframer(
        msgs in prop::collection::vec((any::<bool>(), payload(100)), 0..10),
        trailers in prop::option::of(payload(50)),
        cuts in cuts(),
    ) {
        let mut wire = Vec::new();
        for (c, p) in &msgs {
            encode_frame(if *c { FLAG_COMPRESSED } else { 0 }, p, &mut wire);
        }
        if let Some(t) = &trailers {
            encode_frame(FLAG_TRAILERS, t, &mut wire);
        }
        let mut expected: Vec<Frame> = msgs
            .iter()
            .map(|(c, p)| Frame::Message { compressed: *c, payload: p.clone() })
            .collect();
        if let Some(t) = &trailers {
            expected.push(Frame::Trailers(t.clone()));
        }
        let got = run_deframer(100, 50, &split(&wire, &cuts));
        prop_assert_eq!(got.frames, expected);
        prop_assert_eq!(got.error, None);
        prop_assert_eq!(got.finish, Ok(()));
        prop_assert!(got.idle);

        let scan = run_scanner(100, &split(&wire, &cuts));
        prop_assert_eq!(scan.messages, msgs.len() as u64);
        prop_assert_eq!(scan.error, None);
        prop_assert_eq!(scan.in_trailers, trailers.is_some());
        let data_len: usize = msgs.iter().map(|(_, p)| p.len() + FRAME_HEADER_LEN).sum();
        prop_assert_eq!(scan.trailers_start, trailers.as_ref().map(|_| data_len));
    }

    #[test]
    fn frame_header_round_trip(flags in any::<u8>(), len in any::<u32>()) {
        let h = FrameHeader { flags, len };
        prop_assert_eq!(FrameHeader::parse(h.encode()), h);
        prop_assert_eq!(h.encode()[1..].to_vec(), len.to_be_bytes().to_vec());
    }

    #[test]
    fn trailers_round_trip(
        fields in prop::collection::vec((trailer_name(), trailer_value()), 0..8),
        cuts in cuts(),
    ) {
        let mut frame = Vec::new();
        encode_trailer_frame(&fields, 4096, &mut frame).unwrap();
        let expected: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        prop_assert_eq!(frame[0], FLAG_TRAILERS);
        let declared = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        prop_assert_eq!(declared, frame.len() - FRAME_HEADER_LEN);
        prop_assert_eq!(&parse_trailer_block(&frame[FRAME_HEADER_LEN..], 4096).unwrap(), &expected);
        let r = run_reader(4096, &split(&frame, &cuts));
        prop_assert_eq!(r.result, Ok(expected));
        prop_assert!(r.complete);
        // The Deframer hands the same block back.
        let d = run_deframer(0, 4096, &[&frame]);
        prop_assert_eq!(d.frames, vec![Frame::Trailers(frame[FRAME_HEADER_LEN..].to_vec())]);
    }

    #[test]
    fn base64_chunked_round_trip(
        input in prop::collection::vec(any::<u8>(), 0..300),
        enc_cuts in prop::collection::vec((any::<Index>(), any::<bool>()), 0..12),
        dec_cuts in cuts(),
    ) {
        // Encode in arbitrary pieces, flushing (padding) at random points.
        let mut points: Vec<(usize, bool)> =
            enc_cuts.iter().map(|(i, f)| (i.index(input.len() + 1), *f)).collect();
        points.sort_unstable();
        let mut enc = Base64Encoder::new();
        let mut wire = Vec::new();
        let mut start = 0;
        for (p, flush) in points {
            enc.encode(&input[start..p], &mut wire);
            start = p;
            if flush {
                enc.flush(&mut wire);
                prop_assert_eq!(enc.pending(), 0);
            }
            prop_assert!(enc.pending() < 3);
            prop_assert_eq!(wire.len() % 4, 0, "only whole groups are emitted");
        }
        enc.encode(&input[start..], &mut wire);
        enc.flush(&mut wire);

        let (out, err, fin) = run_b64(&split(&wire, &dec_cuts));
        prop_assert_eq!(err, None);
        prop_assert_eq!(fin, Ok(()));
        prop_assert_eq!(&out, &input);
        prop_assert_eq!(decode_all(&wire).unwrap(), input);
    }

    #[test]
    fn base64_matches_reference_encoder(input in prop::collection::vec(any::<u8>(), 0..100)) {
        let mut out = Vec::new();
        encode_padded(&input, &mut out);
        prop_assert_eq!(&out, &reference_b64(&input));
    }

    #[test]
    fn base64_padding_between_pieces(pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..8)) {
        // Each flush padded separately, as PROTOCOL-WEB.md allows.
        let mut wire = Vec::new();
        for p in &pieces {
            encode_padded(p, &mut wire);
        }
        prop_assert_eq!(decode_all(&wire).unwrap(), pieces.concat());
    }

    #[test]
    fn percent_round_trip(s in any::<String>()) {
        let enc = percent_encode(&s);
        // Output matches the spec grammar: %x20-24 / %x26-7E / "%" 2HEXDIGIT (uppercase).
        let b = enc.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                prop_assert!(i + 2 < b.len(), "complete escape");
                prop_assert!(b[i + 1].is_ascii_digit() || (b'A'..=b'F').contains(&b[i + 1]));
                prop_assert!(b[i + 2].is_ascii_digit() || (b'A'..=b'F').contains(&b[i + 2]));
                i += 3;
            } else {
                prop_assert!((0x20..=0x7e).contains(&b[i]));
                i += 1;
            }
        }
        prop_assert_eq!(percent_decode(enc.as_bytes()), s);
    }

    #[test]
    fn content_type_round_trip(text in any::<bool>(), sub in "[a-z0-9]{0,10}", upper in any::<bool>()) {
        let suffix = if sub.is_empty() { String::new() } else { format!("+{sub}") };
        let enc = if text { Encoding::Text } else { Encoding::Binary };
        let mut ct = grpc_web_content_type(enc, &suffix);
        if upper {
            ct = ct.to_ascii_uppercase() + "; charset=utf-8";
        }
        prop_assert_eq!(parse_grpc_web_content_type(&ct), Some((enc, suffix.clone())));
        prop_assert_eq!(parse_grpc_content_type(&ct), None);
        let g = grpc_content_type(&suffix);
        prop_assert_eq!(parse_grpc_content_type(&g), Some(suffix));
        prop_assert_eq!(parse_grpc_web_content_type(&g), None);
    }

    #[test]
    fn grpc_status_round_trip(n in any::<u32>()) {
        prop_assert_eq!(parse_grpc_status(n.to_string().as_bytes()), Some(n));
    }
}

// ---------------------------------------------------------------------------------------------
// Chunking independence

proptest! {
    #[test]
    fn scanner_is_chunking_independent(data in stream_bytes(), cuts in cuts(), max in 0u32..80) {
        let whole = run_scanner(max, &[&data]);
        prop_assert_eq!(&run_scanner(max, &split(&data, &cuts)), &whole);
        prop_assert_eq!(&run_scanner(max, &one_byte_chunks(&data)), &whole);
    }

    #[test]
    fn deframer_is_chunking_independent(data in stream_bytes(), cuts in cuts(), max in 0u32..80, tmax in 0u32..60) {
        let whole = run_deframer(max, tmax, &[&data]);
        prop_assert_eq!(&run_deframer(max, tmax, &split(&data, &cuts)), &whole);
        prop_assert_eq!(&run_deframer(max, tmax, &one_byte_chunks(&data)), &whole);
    }

    #[test]
    fn trailer_reader_is_chunking_independent(
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            (prop::collection::vec(any::<u8>(), 0..60), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(b, extra)| {
                let mut v = Vec::new();
                encode_frame(FLAG_TRAILERS, &b, &mut v);
                v.extend(extra);
                v
            }),
        ],
        cuts in cuts(),
        limit in 0usize..70,
    ) {
        let whole = run_reader(limit, &[&data]);
        prop_assert_eq!(&run_reader(limit, &split(&data, &cuts)), &whole);
        prop_assert_eq!(&run_reader(limit, &one_byte_chunks(&data)), &whole);
    }

    #[test]
    fn base64_decoder_is_chunking_independent(
        data in prop_oneof![
            // Mostly-valid text: padded pieces with an occasional foreign byte spliced in.
            (prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..6),
             prop::option::of((any::<Index>(), any::<u8>()))).prop_map(|(pieces, bad)| {
                let mut w = Vec::new();
                for p in &pieces { encode_padded(p, &mut w); }
                if let Some((i, b)) = bad { let at = i.index(w.len() + 1); w.insert(at, b); }
                w
            }),
            prop::collection::vec(prop::sample::select(b"AZaz09+/=!\r".to_vec()), 0..60),
            prop::collection::vec(any::<u8>(), 0..60),
        ],
        cuts in cuts(),
    ) {
        let whole = run_b64(&[&data]);
        prop_assert_eq!(&run_b64(&split(&data, &cuts)), &whole);
        prop_assert_eq!(&run_b64(&one_byte_chunks(&data)), &whole);
        // Output on error is exactly the groups before the bad one.
        if let Some(TextError::InvalidByte { offset, .. } | TextError::BadPadding { offset }) = whole.1 {
            let group_start = (offset as usize) / 4 * 4;
            prop_assert!(whole.0.len() <= group_start / 4 * 3);
            prop_assert_eq!(decode_all(&data[..group_start]).ok(), Some(whole.0.clone()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scanner / Deframer agreement

proptest! {
    #[test]
    fn scanner_and_deframer_agree(data in stream_bytes(), cuts in cuts(), max in 0u32..80) {
        let chunks = split(&data, &cuts);
        let s = run_scanner(max, &chunks);
        // Trailer limit high enough that only data-frame rules differ between the two.
        let d = run_deframer(max, u32::MAX, &chunks);
        let d_msgs = d.frames.iter().filter(|f| matches!(f, Frame::Message { .. })).count() as u64;
        prop_assert_eq!(d_msgs, s.messages, "message counts agree");
        match &s.error {
            // Data-frame violations are detected identically (same frames before them).
            Some(e) => prop_assert_eq!(d.error.as_ref(), Some(e)),
            None => prop_assert!(matches!(d.error, None | Some(FrameError::DataAfterTrailers))),
        }
        let d_trailer_start = d.frames.iter().position(|f| matches!(f, Frame::Trailers(_))).map(|i| {
            d.frames[..i]
                .iter()
                .map(|f| match f {
                    Frame::Message { payload, .. } | Frame::Trailers(payload) => payload.len() + FRAME_HEADER_LEN,
                })
                .sum::<usize>()
        });
        if d_trailer_start.is_some() {
            prop_assert_eq!(s.trailers_start, d_trailer_start, "trailer start offsets agree");
        }
        if s.trailers_start.is_none() {
            prop_assert_eq!(d_trailer_start, None);
            prop_assert_eq!(&s.finish, &d.finish, "without trailers, end-of-stream verdicts agree");
        }
        prop_assert_eq!(s.at_boundary, s.error.is_none() && d.idle && d_trailer_start.is_none() && s.trailers_start.is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Security invariants and no panics on arbitrary input

proptest! {
    #[test]
    fn parsed_trailers_are_safe_to_reemit(block in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..120),
        prop::collection::vec(prop::sample::select(b"aZ:- \t\r\n\0%:".to_vec()), 0..60),
    ]) {
        if let Ok(fields) = parse_trailer_block(&block, 1024) {
            for (n, v) in fields {
                prop_assert!(!n.is_empty());
                prop_assert!(n.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase()), "{:?}", n);
                prop_assert!(!v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{:?}", v);
                prop_assert!(!v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t']));
            }
        }
    }

    #[test]
    fn encode_trailer_frame_never_emits_injection(
        fields in prop::collection::vec((any::<String>(), any::<String>()), 0..4),
    ) {
        let mut out = Vec::new();
        if encode_trailer_frame(&fields, 1 << 16, &mut out).is_ok() {
            // Each field produced exactly one line: no CR/LF/NUL smuggled through.
            let block = &out[FRAME_HEADER_LEN..];
            let lines = block.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
            prop_assert_eq!(lines, fields.len());
            prop_assert!(!block.contains(&0));
            prop_assert_eq!(block.iter().filter(|b| **b == b'\r').count(), fields.len());
        } else {
            prop_assert!(out.is_empty(), "out untouched on error");
        }
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..256), limit in any::<u32>()) {
        let mut s = FrameScanner::new(limit);
        let _ = s.scan(&data);
        let _ = s.finish();
        let mut d = Deframer::new(limit, limit);
        let _ = d.push(&data);
        while let Ok(Some(_)) = d.next_frame() {}
        let _ = d.finish();
        let _ = d.buffered();
        let _ = parse_trailer_block(&data, limit as usize);
        let mut r = TrailerFrameReader::new(limit as usize);
        let _ = r.push(&data);
        let _ = r.finish();
        let _ = decode_all(&data);
        let mut bd = Base64Decoder::new();
        let mut out = Vec::new();
        let _ = bd.decode(&data, &mut out);
        let _ = percent_decode(&data);
        let _ = parse_grpc_status(&data);
        if let Ok(h) = <[u8; 5]>::try_from(data.get(..5).unwrap_or(&[0; 5])) {
            let _ = FrameHeader::parse(h);
        }
        let text = String::from_utf8_lossy(&data);
        let _ = parse_grpc_web_content_type(&text);
        let _ = parse_grpc_content_type(&text);
        let _ = percent_encode(&text);
    }

    #[test]
    fn no_panic_on_arbitrary_strings(s in any::<String>()) {
        let a = parse_grpc_web_content_type(&s);
        let b = parse_grpc_content_type(&s);
        prop_assert!(a.is_none() || b.is_none(), "a content type is never both");
    }
}

// Deterministic edge cases that generators hit rarely.

#[test]
fn max_length_headers_are_rejected_without_buffering() {
    let hdr = [0u8, 0xff, 0xff, 0xff, 0xff];
    let mut d = Deframer::new(4 << 20, 8 << 10);
    assert_eq!(
        d.push(&hdr),
        Err(FrameError::MessageTooLarge {
            len: u32::MAX,
            limit: 4 << 20
        })
    );
    assert!(d.buffered() <= FRAME_HEADER_LEN);
    let mut d = Deframer::new(u32::MAX, 8 << 10);
    // Accepted by the limit, but the deframer reserves nothing up front for it.
    d.push(&hdr).unwrap();
    d.push(&[1, 2, 3]).unwrap();
    assert_eq!(d.buffered(), 8);
    assert_eq!(
        d.finish(),
        Err(FrameError::Truncated {
            missing: u32::MAX as usize - 3
        })
    );
    let mut r = TrailerFrameReader::new(8 << 10);
    assert_eq!(
        r.push(&[0x80, 0xff, 0xff, 0xff, 0xff]),
        Err(TrailerError::TooLarge {
            len: u32::MAX as usize,
            limit: 8 << 10
        })
    );
}

//! The tunnel server's bit of HTTP/2 framing (codec::h2): `PrefaceStripper`, `FrameWalker` and
//! `BackendFrameFilter` on arbitrary streams cut into input-driven chunks, against a model.
//!
//! Input: `flags: u8` (bit 0: put the real client preface in front of the stream given to the
//! stripper), `plan: u16`, `nudges: u32` (2 bits per chunk: how many nudge PINGs are announced
//! with `expect_nudge_ack` before that chunk; the pattern repeats every 16 chunks), then the
//! stream.
//!
//! Invariants: no panic; the stripper refuses exactly the streams that do not start with the
//! preface (at the chunk holding the first wrong byte) and otherwise passes on everything after
//! it unchanged; the walker is at a boundary exactly at frame starts; the filter's output is
//! the input with exactly the dropped frames removed (the first empty SETTINGS ACK, and PING
//! ACKs carrying our opaque data while nudges are outstanding), byte for byte and in order,
//! held back only inside a frame header or a PING ACK being checked; `nudges_outstanding`
//! counts announced minus removed.
#![no_main]

use fuzz_common::{chunk_offsets, chunks, hex, Input};
use grpc_bridge::codec::h2::{
    BackendFrameFilter, FrameWalker, PrefaceStripper, NUDGE_OPAQUE, PREFACE,
};
use libfuzzer_sys::fuzz_target;

const HDR: usize = 9;

fn frame_len(h: &[u8]) -> usize {
    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2])
}

/// Frame start offsets of `s` (including the start of a trailing partial frame).
fn boundaries(s: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut pos = 0;
    while pos + HDR <= s.len() {
        pos += HDR + frame_len(&s[pos..]);
        out.push(pos);
    }
    out
}

/// Expected filter output for `s`, given `calls[i]` = offset at which the i-th nudge was
/// announced (sorted). Returns (output, nudges consumed).
fn filter_model(s: &[u8], calls: &[usize]) -> (Vec<u8>, usize) {
    // Announced before byte `b` is processed.
    let announced = |b: usize| calls.iter().filter(|&&x| x <= b).count();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut settings_pending = true;
    let mut consumed = 0usize;
    while pos + HDR <= s.len() {
        let h = &s[pos..pos + HDR];
        let len = frame_len(h);
        let (ty, flags) = (h[3], h[4]);
        let decided_at = pos + HDR - 1;
        if ty == 4 && flags & 1 != 0 && len == 0 && settings_pending {
            settings_pending = false;
            pos += HDR;
            continue;
        }
        if ty == 6 && flags & 1 != 0 && len == 8 && announced(decided_at) > consumed {
            if pos + HDR + 8 > s.len() {
                break; // PING ACK still being collected: nothing passed yet
            }
            let ours = s[pos + HDR..pos + HDR + 8] == NUDGE_OPAQUE;
            if ours && announced(pos + HDR + 7) > consumed {
                consumed += 1;
            } else {
                out.extend_from_slice(&s[pos..pos + HDR + 8]);
            }
            pos += HDR + 8;
            continue;
        }
        let end = (pos + HDR + len).min(s.len());
        out.extend_from_slice(&s[pos..end]);
        pos += HDR + len;
    }
    (out, consumed)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let plan = input.u16();
    let nudges = input.u32();
    let stream = input.rest();
    let per_chunk = |i: usize| ((nudges >> ((i % 16) * 2)) & 3) as usize;

    // PrefaceStripper.
    let mut with_preface = Vec::new();
    if flags & 1 != 0 {
        with_preface.extend_from_slice(PREFACE);
    }
    with_preface.extend_from_slice(stream);
    let s = &with_preface[..];
    let n = s.len().min(PREFACE.len());
    let first_bad = (0..n).find(|&i| s[i] != PREFACE[i]);
    let mut st = PrefaceStripper::new();
    let mut out = Vec::new();
    let cut = chunks(s, plan);
    let mut refused_at = None;
    for (c, at) in cut.iter().zip(chunk_offsets(&cut)) {
        if st.feed(c, &mut out).is_err() {
            refused_at = Some((at, at + c.len()));
            break;
        }
    }
    match first_bad {
        Some(b) => {
            let (from, to) = refused_at.expect("stripper accepted a stream without the preface");
            assert!(
                from <= b && b < to,
                "refused at chunk {from}..{to}, first bad byte {b}"
            );
            assert!(out.is_empty());
            assert!(!st.is_done());
        }
        None => {
            assert_eq!(refused_at, None, "stripper refused {}", hex(s));
            assert_eq!(st.is_done(), s.len() >= PREFACE.len());
            assert_eq!(out, s.get(PREFACE.len()..).unwrap_or(&[]));
            if flags & 1 != 0 {
                assert_eq!(out, stream);
            }
        }
    }

    // FrameWalker: at a boundary exactly at frame starts.
    let starts = boundaries(stream);
    let cut = chunks(stream, plan);
    let mut w = FrameWalker::new();
    assert!(w.at_boundary());
    let mut at = 0;
    for c in &cut {
        w.feed(c);
        at += c.len();
        assert_eq!(
            w.at_boundary(),
            starts.contains(&at),
            "walker at {at}, {}",
            hex(stream)
        );
    }

    // BackendFrameFilter with nudges announced between chunks.
    let mut f = BackendFrameFilter::new();
    let mut out = Vec::new();
    let mut calls = Vec::new();
    for (i, (c, at)) in cut.iter().zip(chunk_offsets(&cut)).enumerate() {
        for _ in 0..per_chunk(i) {
            f.expect_nudge_ack();
            calls.push(at);
        }
        let before = out.len();
        f.feed(c, &mut out);
        assert!(
            out.len() - before <= c.len() + 17,
            "filter emitted more than it held"
        );
    }
    for _ in 0..per_chunk(cut.len()) {
        f.expect_nudge_ack();
        calls.push(stream.len());
    }
    let (want, consumed) = filter_model(stream, &calls);
    assert_eq!(
        out,
        want,
        "filter output, stream {}, nudges at {calls:?}",
        hex(stream)
    );
    assert_eq!(f.nudges_outstanding() as usize, calls.len() - consumed);
});

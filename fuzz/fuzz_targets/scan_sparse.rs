//! `FrameScanner::scan_sparse` (what the agent and server roles run on every body chunk: the
//! scanner asks the host for frame headers only and skips payloads by arithmetic), checked chunk
//! by chunk against a byte-offset reference model of gRPC framing and against `scan` on the
//! same chunks, with peeks that fail or answer short where the input says so.
//!
//! Input: `max_message: u16` (see `limit_u32`), `plan: u16`, `fault: u16` (bit 15: inject a
//! fault; bits 0-11: at which peek call; bits 12-13: `Err`, one byte short, one byte long, empty
//! answer), then the body.
//!
//! Invariants: no panic; per chunk, the outcome (messages completed, trailer-frame offset) or the
//! error equals both the reference model's and `scan`'s on the same chunk; after each chunk
//! `messages()`, `at_boundary()`, `in_trailers()` agree with `scan`'s scanner and the model;
//! `finish()` equals the model's end (truncation with the missing count); every peek asks for
//! 1 to 5 bytes inside the chunk, only at frame-header offsets of the model, and no header byte
//! twice; a failed or wrong-sized peek is reported as `Peek` / `ShortPeek` with the peek's offset
//! and sizes, with exactly the messages before that offset counted; errors are sticky.
#![no_main]

use fuzz_common::{chunk_offsets, chunks, limit_u32, Input};
use grpc_bridge::codec::grpc_frame::{
    FrameError, FrameScanner, ScanOutcome, SparseScanError, FRAME_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

/// The reference: what happens at each byte offset of the whole body.
struct Model {
    /// Offsets of the last byte of each completed data frame (the 5th header byte for an empty
    /// message), ascending.
    message_ends: Vec<usize>,
    /// Offsets that are frame-header bytes (the up to 5 bytes at each frame start).
    header_bytes: Vec<bool>,
    /// The trailer frame's first byte.
    trailers: Option<usize>,
    /// A framing error and the offset of the byte that reveals it.
    error: Option<(usize, FrameError)>,
    /// `finish()` at the end of the body.
    finish: Result<(), FrameError>,
}

fn model(body: &[u8], max_message: u32) -> Model {
    let mut m = Model {
        message_ends: Vec::new(),
        header_bytes: vec![false; body.len()],
        trailers: None,
        error: None,
        finish: Ok(()),
    };
    let mut pos = 0usize;
    while pos < body.len() {
        let flags = body[pos];
        let have = (body.len() - pos).min(FRAME_HEADER_LEN);
        // The scanner may read all five before looking at the flags (a sparse peek asks for the
        // whole header at once), so they count as header bytes even for a bad or trailer frame.
        for b in &mut m.header_bytes[pos..pos + have] {
            *b = true;
        }
        if flags & 0x7E != 0 || flags == 0x81 {
            m.error = Some((pos, FrameError::ReservedFlags(flags)));
            m.finish = Err(FrameError::ReservedFlags(flags));
            return m;
        }
        if flags & 0x80 != 0 {
            m.trailers = Some(pos);
            return m;
        }
        if have < FRAME_HEADER_LEN {
            m.finish = Err(FrameError::Truncated {
                missing: FRAME_HEADER_LEN - have,
            });
            return m;
        }
        let len = u32::from_be_bytes([body[pos + 1], body[pos + 2], body[pos + 3], body[pos + 4]]);
        if len > max_message {
            let e = FrameError::MessageTooLarge {
                len,
                limit: max_message,
            };
            m.error = Some((pos + 4, e.clone()));
            m.finish = Err(e);
            return m;
        }
        let payload_start = pos + FRAME_HEADER_LEN;
        let end = payload_start as u64 + u64::from(len);
        if end > body.len() as u64 {
            m.finish = Err(FrameError::Truncated {
                missing: (end - body.len() as u64) as usize,
            });
            return m;
        }
        let end = end as usize;
        m.message_ends.push(end - 1);
        pos = end;
    }
    m
}

impl Model {
    fn messages_before(&self, offset: usize) -> u64 {
        self.message_ends.iter().filter(|&&e| e < offset).count() as u64
    }

    /// What `scan` of `[start, end)` must give, after everything before `start` was scanned.
    fn chunk(&self, start: usize, end: usize) -> Result<ScanOutcome, FrameError> {
        if let Some((at, e)) = &self.error {
            if *at < end {
                return Err(e.clone());
            }
        }
        let stop = self.trailers.map_or(end, |t| t.clamp(start, end));
        let completed = self
            .message_ends
            .iter()
            .filter(|&&e| e >= start && e < stop)
            .count();
        Ok(ScanOutcome {
            trailers_start: self
                .trailers
                .filter(|t| (start..end).contains(t))
                .map(|t| t - start),
            messages_completed: completed as u32,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Err,
    Short,
    Long,
    Empty,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_message = limit_u32(input.u16());
    let plan = input.u16();
    let fault_spec = input.u16();
    let body = input.rest();
    let fault = (fault_spec & 0x8000 != 0).then(|| {
        let kind = match (fault_spec >> 12) & 3 {
            0 => Fault::Err,
            1 => Fault::Short,
            2 => Fault::Long,
            _ => Fault::Empty,
        };
        (usize::from(fault_spec & 0x0FFF), kind)
    });

    let m = model(body, max_message);
    let mut sparse = FrameScanner::new(max_message);
    let mut plain = FrameScanner::new(max_message);
    let mut peeked = vec![false; body.len()];
    let mut peek_calls = 0usize;
    let pieces = chunks(body, plan);
    let offsets = chunk_offsets(&pieces);
    for (chunk, &start) in pieces.iter().zip(&offsets) {
        let end = start + chunk.len();
        let mut fired: Option<(usize, usize, Fault)> = None;
        let got = sparse.scan_sparse(chunk.len(), |at, n| -> Result<Vec<u8>, u32> {
            assert!(
                n >= 1 && n <= FRAME_HEADER_LEN,
                "peek of {n} bytes (chunk {start}..{end})"
            );
            assert!(
                at + n <= chunk.len(),
                "peek {at}+{n} past a chunk of {}",
                chunk.len()
            );
            for off in start + at..start + at + n {
                assert!(m.header_bytes[off], "peek of payload byte {off}");
                assert!(!peeked[off], "header byte {off} peeked twice");
                peeked[off] = true;
            }
            let call = peek_calls;
            peek_calls += 1;
            let bytes = &chunk[at..at + n];
            match fault {
                Some((k, kind)) if k == call => {
                    fired = Some((at, n, kind));
                    match kind {
                        Fault::Err => Err(0xdead),
                        Fault::Short => Ok(bytes[..n - 1].to_vec()),
                        Fault::Long => Ok([bytes, &[0]].concat()),
                        Fault::Empty => Ok(Vec::new()),
                    }
                }
                _ => Ok(bytes.to_vec()),
            }
        });
        if let Some((at, n, kind)) = fired {
            match (kind, &got) {
                (Fault::Err, Err(SparseScanError::Peek(0xdead))) => {}
                (
                    Fault::Short | Fault::Long | Fault::Empty,
                    Err(SparseScanError::ShortPeek {
                        offset,
                        wanted,
                        got,
                    }),
                ) => {
                    assert_eq!((*offset, *wanted), (at, n), "short peek position");
                    let want_got = match kind {
                        Fault::Short => n - 1,
                        Fault::Long => n + 1,
                        _ => 0,
                    };
                    assert_eq!(*got, want_got);
                }
                _ => panic!("fault {kind:?} at {at}+{n}: got {got:?}"),
            }
            // Everything before the failed peek was scanned, nothing after.
            assert_eq!(sparse.messages(), m.messages_before(start + at));
            return;
        }
        let want = m.chunk(start, end);
        let got = got.map_err(|e| match e {
            SparseScanError::Frame(e) => e,
            other => panic!("unexpected {other:?} without a fault"),
        });
        assert_eq!(got, want, "scan_sparse vs model, chunk {start}..{end}");
        assert_eq!(
            plain.scan(chunk),
            want,
            "scan vs model, chunk {start}..{end}"
        );
        assert_eq!(sparse.messages(), plain.messages());
        assert_eq!(sparse.at_boundary(), plain.at_boundary());
        assert_eq!(sparse.in_trailers(), plain.in_trailers());
        let upto = m.error.as_ref().map_or(end, |(at, _)| end.min(at + 1));
        let upto = m.trailers.map_or(upto, |t| upto.min(t));
        assert_eq!(sparse.messages(), m.messages_before(upto));
        assert_eq!(sparse.in_trailers(), m.trailers.is_some_and(|t| t < end));
    }
    assert_eq!(sparse.finish(), m.finish, "finish");
    assert_eq!(plain.finish(), m.finish);
    // Sticky: another chunk changes nothing once failed or in the trailer frame.
    if m.error.is_some() || m.trailers.is_some() {
        let again = sparse.scan_sparse(3, |_, n| Ok::<_, ()>(vec![0; n]));
        match (&m.error, again) {
            (Some((_, e)), Err(SparseScanError::Frame(g))) => assert_eq!(&g, e),
            (None, Ok(o)) => assert_eq!(o, ScanOutcome::default()),
            (_, g) => panic!("after the end: {g:?}"),
        }
    }
});

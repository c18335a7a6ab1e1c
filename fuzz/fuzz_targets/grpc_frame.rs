//! gRPC length-prefixed framing: `FrameScanner` and `Deframer` on one byte stream, one-shot and
//! cut into input-driven chunks, checked against an independent model of the format.
//!
//! Input: `max_message: u16` (see `limit_u32`), `max_trailer: u16`, `plan_a: u16`,
//! `plan_b: u16`, then the body.
//!
//! Invariants: no panic; the scanner and the deframer agree with the model (and so with each
//! other) on the messages, their payloads, the trailer frame's offset and the error, however
//! the body is cut; errors are sticky; after draining, `Deframer::buffered()` (the partial
//! frame) never exceeds `max_message + 5` (`max_trailer + 5` once inside the trailer frame).
#![no_main]

use fuzz_common::{chunk_offsets, chunks, hex, limit_u32, Input};
use grpc_bridge::codec::grpc_frame::{
    encode_frame, Deframer, Frame, FrameError, FrameScanner, FRAME_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

/// How the body ends according to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Clean end at a frame boundary, no trailer frame.
    Clean,
    /// A trailer frame starts at this offset (the scanner stops framing there).
    Trailer(usize),
    /// A data-frame error detected at a frame start (reserved flags, too large).
    Error(FrameError),
    /// The body stops inside a data frame.
    Truncated(usize),
}

struct Model {
    messages: Vec<Frame>,
    end: End,
    /// The deframer's trailer block (if the trailer frame is complete) and how its stream ends
    /// (including the trailer frame's own errors).
    deframer_end: (Option<Vec<u8>>, Result<(), FrameError>),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn model(body: &[u8], max_message: u32, max_trailer: u32) -> Model {
    let mut messages = Vec::new();
    let mut pos = 0usize;
    let end = loop {
        let rest = &body[pos..];
        let Some(&flags) = rest.first() else {
            break End::Clean;
        };
        if flags & !0x81 != 0 || flags == 0x81 {
            break End::Error(FrameError::ReservedFlags(flags));
        }
        if flags & 0x80 != 0 {
            break End::Trailer(pos);
        }
        if rest.len() < FRAME_HEADER_LEN {
            break End::Truncated(FRAME_HEADER_LEN - rest.len());
        }
        let len = be32(&rest[1..5]);
        if len > max_message {
            break End::Error(FrameError::MessageTooLarge {
                len,
                limit: max_message,
            });
        }
        let len = len as usize;
        if rest.len() - FRAME_HEADER_LEN < len {
            break End::Truncated(len - (rest.len() - FRAME_HEADER_LEN));
        }
        messages.push(Frame::Message {
            compressed: flags & 1 != 0,
            payload: rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec(),
        });
        pos += FRAME_HEADER_LEN + len;
    };
    let deframer_end = match &end {
        End::Clean => (None, Ok(())),
        End::Error(e) => (None, Err(e.clone())),
        End::Truncated(missing) => (None, Err(FrameError::Truncated { missing: *missing })),
        End::Trailer(t) => {
            let rest = &body[*t..];
            if rest.len() < FRAME_HEADER_LEN {
                (
                    None,
                    Err(FrameError::Truncated {
                        missing: FRAME_HEADER_LEN - rest.len(),
                    }),
                )
            } else {
                let len = be32(&rest[1..5]);
                let avail = rest.len() - FRAME_HEADER_LEN;
                if len > max_trailer {
                    (
                        None,
                        Err(FrameError::MessageTooLarge {
                            len,
                            limit: max_trailer,
                        }),
                    )
                } else if avail < len as usize {
                    (
                        None,
                        Err(FrameError::Truncated {
                            missing: len as usize - avail,
                        }),
                    )
                } else {
                    // The trailer frame is complete; anything after it is an error, reported
                    // after the frame.
                    let block = rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len as usize].to_vec();
                    let after = if avail > len as usize {
                        Err(FrameError::DataAfterTrailers)
                    } else {
                        Ok(())
                    };
                    (Some(block), after)
                }
            }
        }
    };
    Model {
        messages,
        end,
        deframer_end,
    }
}

/// Runs a scanner over the chunks; returns (messages, trailer offset, end).
fn scan(pieces: &[&[u8]], max_message: u32) -> (u64, Option<usize>, Result<(), FrameError>) {
    let mut s = FrameScanner::new(max_message);
    let offsets = chunk_offsets(pieces);
    let mut trailer = None;
    let mut err = None;
    let mut counted = 0u64;
    for (piece, at) in pieces.iter().zip(offsets) {
        match s.scan(piece) {
            Ok(o) => {
                counted += u64::from(o.messages_completed);
                if let Some(t) = o.trailers_start {
                    assert!(t < piece.len(), "trailer offset {t} outside its chunk");
                    assert!(trailer.is_none(), "trailer frame reported twice");
                    trailer = Some(at + t);
                    assert!(s.in_trailers());
                }
                assert_eq!(counted, s.messages());
            }
            Err(e) => {
                // Sticky: scan and finish keep answering the same error.
                assert_eq!(s.scan(&[]), Err(e.clone()));
                assert_eq!(s.scan(b"\0\0\0\0\0"), Err(e.clone()));
                assert_eq!(s.finish(), Err(e.clone()));
                assert!(!s.at_boundary());
                err = Some(e);
                break;
            }
        }
    }
    let end = match err {
        Some(e) => Err(e),
        None => s.finish(),
    };
    (s.messages(), trailer, end)
}

/// Runs a deframer over the chunks. With `drain`, frames are taken after every push and the
/// partial-frame bound is checked. Returns the frames and how the stream ended.
fn deframe(
    pieces: &[&[u8]],
    max_message: u32,
    max_trailer: u32,
    drain: bool,
    trailer_at: Option<usize>,
) -> (Vec<Frame>, Result<(), FrameError>) {
    let mut d = Deframer::new(max_message, max_trailer);
    let mut frames = Vec::new();
    let mut pushed = 0usize;
    let mut failed = None;
    for piece in pieces {
        let r = d.push(piece);
        pushed += piece.len();
        assert!(d.buffered() <= pushed, "buffered more than was pushed");
        if drain {
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => {
                        assert_eq!(Err(e.clone()), r, "next_frame error differs from push's");
                        break;
                    }
                }
            }
            // Only the partial frame is held now.
            let in_trailer = trailer_at.is_some_and(|t| pushed > t);
            let limit = if in_trailer { max_trailer } else { max_message };
            assert!(
                d.buffered() as u64 <= u64::from(limit) + FRAME_HEADER_LEN as u64,
                "partial frame of {} bytes over the limit {limit} + 5",
                d.buffered()
            );
        }
        if let Err(e) = r {
            assert_eq!(d.push(b"x"), Err(e.clone()), "error not sticky");
            assert_eq!(d.finish(), Err(e.clone()));
            failed = Some(e);
            break;
        }
    }
    // Drain what is left; the sticky error comes after the frames that preceded it.
    let end = loop {
        match d.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break d.finish(),
            Err(e) => {
                assert_eq!(Some(&e), failed.as_ref());
                break Err(e);
            }
        }
    };
    if failed.is_none() && end.is_ok() {
        assert_eq!(d.buffered(), 0);
        assert!(d.is_idle());
    }
    (frames, end)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_message = limit_u32(input.u16());
    let max_trailer = limit_u32(input.u16());
    let plan_a = input.u16();
    let plan_b = input.u16();
    let body = input.rest();

    let m = model(body, max_message, max_trailer);
    let whole = [body];
    let cut_a = chunks(body, plan_a);
    let cut_b = chunks(body, plan_b);

    // Scanner: one-shot and chunked agree with the model.
    let expect_trailer = match m.end {
        End::Trailer(t) => Some(t),
        _ => None,
    };
    let expect_scan_end = match &m.end {
        End::Clean | End::Trailer(_) => Ok(()),
        End::Error(e) => Err(e.clone()),
        End::Truncated(missing) => Err(FrameError::Truncated { missing: *missing }),
    };
    for pieces in [&whole[..], &cut_a[..]] {
        let (n, trailer, end) = scan(pieces, max_message);
        assert_eq!(
            n,
            m.messages.len() as u64,
            "scanner message count, body {}",
            hex(body)
        );
        assert_eq!(trailer, expect_trailer, "scanner trailer offset");
        assert_eq!(end, expect_scan_end, "scanner end");
    }

    // Deframer: one-shot, chunked with draining, chunked without draining.
    let mut expect_frames = m.messages.clone();
    let (trailer_block, expect_end) = m.deframer_end.clone();
    if let Some(block) = trailer_block {
        expect_frames.push(Frame::Trailers(block));
    }
    for (pieces, drain) in [(&whole[..], true), (&cut_a[..], true), (&cut_b[..], false)] {
        let (frames, end) = deframe(pieces, max_message, max_trailer, drain, expect_trailer);
        assert_eq!(end, expect_end, "deframer end, body {}", hex(body));
        assert_eq!(frames, expect_frames, "deframer frames");
    }

    // Re-encoding the frames gives back the bytes they came from.
    let mut re = Vec::new();
    for f in &expect_frames {
        match f {
            Frame::Message {
                compressed,
                payload,
            } => encode_frame(u8::from(*compressed), payload, &mut re),
            Frame::Trailers(block) => encode_frame(0x80, block, &mut re),
        }
    }
    assert_eq!(&body[..re.len()], &re[..]);
});

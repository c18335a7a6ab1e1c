//! Codec workloads shared by the native runner and the wasm bench guest (`wasm-guest/`), so that
//! both run exactly the same code on exactly the same bytes. Each takes its input and returns a
//! value that depends on the whole result (so nothing is optimized away).
//!
//! Included with `#[path]` by `tests/examples/wasm_codec.rs` (native) and
//! `filter/benches/wasm-guest/src/lib.rs` (wasm32-wasip1).

use grpc_bridge::codec::grpc_frame::{Deframer, FrameScanner};
use grpc_bridge::codec::grpc_web::TrailerFrameReader;
use grpc_bridge::codec::text::{Base64Decoder, Base64Encoder};
use grpc_bridge::codec::websocket::{self, FrameDecoder, Opcode, Side};

pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const CHUNK: usize = 16 * 1024;

/// Workload names, indexed by the id the guest's `bench_run` takes.
pub const NAMES: &[&str] = &[
    "grpc_deframe (scanner, 1 KiB msgs, 16 KiB chunks)",
    "grpc_deframe (buffering deframer, 1 KiB msgs)",
    "trailer_frame parse",
    "base64 encode",
    "base64 decode",
    "ws encode masked",
    "ws decode masked (16 KiB reads)",
    "ws apply_mask in place",
];

pub fn run(id: u32, input: &mut [u8]) -> u64 {
    match id {
        0 => {
            let mut s = FrameScanner::new(u32::MAX);
            for c in input.chunks(CHUNK) {
                let _ = s.scan(c);
            }
            s.messages()
        }
        1 => {
            let mut d = Deframer::new(u32::MAX, 1 << 20);
            let mut n = 0u64;
            for c in input.chunks(CHUNK) {
                let _ = d.push(c);
                while let Ok(Some(f)) = d.next_frame() {
                    n += match f {
                        grpc_bridge::codec::grpc_frame::Frame::Message { payload, .. } => {
                            payload.len() as u64
                        }
                        grpc_bridge::codec::grpc_frame::Frame::Trailers(t) => t.len() as u64,
                    };
                }
            }
            n
        }
        2 => {
            // Concatenated trailer frames: parse each.
            let mut n = 0u64;
            let mut rest: &[u8] = input;
            while rest.len() >= 5 {
                let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
                let end = (5 + len).min(rest.len());
                let mut r = TrailerFrameReader::new(16 * 1024);
                let _ = r.push(&rest[..end]);
                if let Ok(t) = r.finish() {
                    n += t.len() as u64;
                }
                rest = &rest[end..];
            }
            n
        }
        3 => {
            let mut e = Base64Encoder::new();
            let mut out = Vec::with_capacity(input.len() / 3 * 4 + 8);
            e.encode(input, &mut out);
            e.flush(&mut out);
            out.len() as u64 + out.last().copied().unwrap_or(0) as u64
        }
        4 => {
            let mut d = Base64Decoder::new();
            let mut out = Vec::with_capacity(input.len() / 4 * 3 + 8);
            let _ = d.decode(input, &mut out);
            out.len() as u64 + out.last().copied().unwrap_or(0) as u64
        }
        5 => {
            let mut out = Vec::with_capacity(input.len() + 16);
            websocket::encode_frame(true, Opcode::Binary, Some(KEY), input, &mut out);
            out.len() as u64 + out.last().copied().unwrap_or(0) as u64
        }
        6 => {
            let mut d = FrameDecoder::new(Side::Server, 1 << 30);
            let mut out = Vec::with_capacity(input.len());
            let mut ev = Vec::new();
            for c in input.chunks(CHUNK) {
                let _ = d.decode_into(c, &mut out, &mut ev);
            }
            out.len() as u64 + out.last().copied().unwrap_or(0) as u64
        }
        7 => {
            websocket::apply_mask(input, KEY, 1);
            input.last().copied().unwrap_or(0) as u64
        }
        _ => 0,
    }
}

/// `total` bytes of gRPC frames with `msg`-byte payloads.
pub fn grpc_body(total: usize, msg: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..msg).map(|i| (i * 31 + 7) as u8).collect();
    let mut out = Vec::with_capacity(total + 5);
    while out.len() + msg + 5 <= total {
        grpc_bridge::codec::grpc_frame::encode_frame(0, &payload, &mut out);
    }
    out
}

/// A typical trailer block: status, message, a request id and a server timing.
pub fn trailers() -> Vec<(String, String)> {
    vec![
        ("grpc-status".into(), "0".into()),
        ("grpc-message".into(), "".into()),
        (
            "x-request-id".into(),
            "5f0c6d2e-8a7b-4c1d-9e3f-2a1b0c9d8e7f".into(),
        ),
        (
            "server-timing".into(),
            "backend;dur=12.5, db;dur=3.1".into(),
        ),
    ]
}

/// The input of workload `id`, about `size` bytes.
pub fn input(id: u32, size: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    match id {
        // 1 KiB messages: a header every 1029 bytes.
        0 | 1 => grpc_body(size, 1024.min(size)),
        2 => {
            let mut one = Vec::new();
            let _ = grpc_bridge::codec::grpc_web::encode_trailer_frame(
                &trailers(),
                16 * 1024,
                &mut one,
            );
            let mut out = Vec::with_capacity(size + one.len());
            while out.len() + one.len() <= size.max(one.len()) {
                out.extend_from_slice(&one);
            }
            out
        }
        4 => {
            let mut out = Vec::new();
            let mut e = Base64Encoder::new();
            e.encode(&data[..size / 4 * 3], &mut out);
            e.flush(&mut out);
            out
        }
        6 => {
            let mut out = Vec::new();
            // Frames of 64 KiB, as the tunnel client sends its reads.
            for c in data.chunks(64 * 1024) {
                websocket::encode_frame(true, Opcode::Binary, Some(KEY), c, &mut out);
            }
            out
        }
        _ => data,
    }
}

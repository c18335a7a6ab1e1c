//! Native throughput of every codec (`cargo bench -p grpc-bridge --bench codec`), in bytes/s.
//!
//! The same workloads run inside the built `.wasm` through the host harness in
//! `tests/benches/wasm_codec.rs`, which reports the wasm/native ratio (docs/BENCHMARKS.md).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use grpc_bridge::codec::grpc_frame::{Deframer, FrameScanner};
use grpc_bridge::codec::grpc_web::{encode_trailer_frame, TrailerFrameReader};
use grpc_bridge::codec::text::{Base64Decoder, Base64Encoder};
use grpc_bridge::codec::websocket::{self, FrameDecoder, Opcode, Side};

// The inputs the wasm workloads run on too; this bench uses only some of the module.
#[allow(dead_code)]
mod workloads;

const MIB: usize = 1 << 20;

fn deframing(c: &mut Criterion) {
    let mut g = c.benchmark_group("grpc_deframe");
    for msg in [1024usize, 64 * 1024] {
        let body = workloads::grpc_body(4 * MIB, msg);
        g.throughput(Throughput::Bytes(body.len() as u64));
        // What the filter does: the zero-copy scanner, fed in 16 KiB chunks (HTTP/2 DATA size).
        g.bench_with_input(
            BenchmarkId::new("scanner_16k_chunks", msg),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut s = FrameScanner::new(u32::MAX);
                    for chunk in body.chunks(16 * 1024) {
                        black_box(s.scan(chunk).ok());
                    }
                    black_box(s.messages())
                })
            },
        );
        // The buffering deframer (whole messages out).
        g.bench_with_input(
            BenchmarkId::new("deframer_16k_chunks", msg),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut d = Deframer::new(u32::MAX, 16 * 1024);
                    let mut n = 0usize;
                    for chunk in body.chunks(16 * 1024) {
                        let _ = d.push(chunk);
                        while let Ok(Some(f)) = d.next_frame() {
                            black_box(f);
                            n += 1;
                        }
                    }
                    n
                })
            },
        );
    }
    g.finish();
}

fn trailer_frame(c: &mut Criterion) {
    let t = workloads::trailers();
    let mut frame = Vec::new();
    encode_trailer_frame(&t, 16 * 1024, &mut frame).ok();
    let mut g = c.benchmark_group("trailer_frame");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(128);
            encode_trailer_frame(black_box(&t), 16 * 1024, &mut out).ok();
            out
        })
    });
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut r = TrailerFrameReader::new(16 * 1024);
            r.push(black_box(&frame)).ok();
            r.finish().ok()
        })
    });
    g.finish();
}

fn base64_text(c: &mut Criterion) {
    let data: Vec<u8> = (0..MIB).map(|i| (i * 13 + 1) as u8).collect();
    let mut encoded = Vec::new();
    Base64Encoder::new().encode(&data, &mut encoded);
    let mut g = c.benchmark_group("base64_text");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("encode_1MiB", |b| {
        b.iter(|| {
            let mut e = Base64Encoder::new();
            let mut out = Vec::with_capacity(data.len() * 4 / 3 + 4);
            e.encode(black_box(&data), &mut out);
            e.flush(&mut out);
            out
        })
    });
    g.bench_function("decode_1MiB", |b| {
        b.iter(|| {
            let mut d = Base64Decoder::new();
            let mut out = Vec::with_capacity(data.len() + 4);
            d.decode(black_box(&encoded), &mut out).ok();
            out
        })
    });
    g.finish();
}

fn ws(c: &mut Criterion) {
    let data: Vec<u8> = (0..MIB).map(|i| (i * 7 + 3) as u8).collect();
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut masked_frame = Vec::new();
    websocket::encode_frame(true, Opcode::Binary, Some(key), &data, &mut masked_frame);
    let mut plain_frame = Vec::new();
    websocket::encode_frame(true, Opcode::Binary, None, &data, &mut plain_frame);
    let mut g = c.benchmark_group("websocket");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("apply_mask_1MiB", |b| {
        let mut buf = data.clone();
        b.iter(|| websocket::apply_mask(black_box(&mut buf), key, 1))
    });
    for (name, mask) in [
        ("encode_masked_1MiB", Some(key)),
        ("encode_unmasked_1MiB", None),
    ] {
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(MIB + 16);
            b.iter(|| {
                out.clear();
                websocket::encode_frame(true, Opcode::Binary, mask, black_box(&data), &mut out);
            })
        });
    }
    // The server side reads masked client frames (tunnel server), the client side unmasked
    // ones, in 16 KiB reads.
    for (name, side, frame) in [
        ("decode_masked_1MiB", Side::Server, &masked_frame),
        ("decode_unmasked_1MiB", Side::Client, &plain_frame),
    ] {
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(MIB + 16);
            b.iter(|| {
                out.clear();
                let mut d = FrameDecoder::new(side, 2 * MIB as u64);
                let mut ev = Vec::new();
                for chunk in frame.chunks(16 * 1024) {
                    d.decode_into(chunk, &mut out, &mut ev).ok();
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(20);
    targets = deframing, trailer_frame, base64_text, ws
}
criterion_main!(benches);

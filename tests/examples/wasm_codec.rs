//! Codec throughput inside the `.wasm` vs native: the workloads of `filter/benches/workloads.rs`
//! run natively and, compiled into `filter/benches/wasm-guest` with the filter's own release
//! settings, in wasmtime (the engine of the host harness, default Cranelift settings). Same
//! code, same bytes, same process; prints GB/s for both and the wasm/native time ratio.
//!
//!   cargo run --profile loadgen -p grpc-bridge-tests --example wasm_codec [-- --size BYTES --secs S]
//!
//! (`make bench` runs it.) Timings are printed, never asserted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use host_harness::{build_wasm_guest, GuestRustflags};
use wasmtime::{Engine, Linker, Module, Store};

#[allow(dead_code)]
#[path = "../../filter/benches/workloads.rs"]
mod workloads;

/// Builds the guest; `simd`: with `-C target-feature=+simd128` (its own target dir).
fn guest_wasm(simd: bool) -> Result<PathBuf, String> {
    let manifest =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../filter/benches/wasm-guest/Cargo.toml");
    let (target_subdir, rustflags) = if simd {
        ("bench-guest-simd", "-Ctarget-feature=+simd128")
    } else {
        ("bench-guest", "")
    };
    let dir = build_wasm_guest(&manifest, target_subdir, GuestRustflags::Exactly(rustflags))?;
    Ok(dir.join("codec_bench_guest.wasm"))
}

/// Best (minimum) time per call over repeated calls for about `secs`.
fn time_it(secs: f64, mut f: impl FnMut() -> u64) -> (Duration, u64) {
    let mut best = Duration::MAX;
    let mut sink = 0u64;
    let t0 = Instant::now();
    let mut n = 0;
    while n < 3 || t0.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        sink = sink.wrapping_add(f());
        best = best.min(t.elapsed());
        n += 1;
    }
    (best, sink)
}

/// Best time per call of every workload in the guest at `path`.
fn time_guest(path: &PathBuf, inputs: &[Vec<u8>], secs: f64) -> Result<Vec<Duration>, String> {
    let engine = Engine::new(&wasmtime::Config::new()).map_err(|e| e.to_string())?;
    let module = Module::from_file(&engine, path).map_err(|e| e.to_string())?;
    let mut linker: Linker<()> = Linker::new(&engine);
    // The guest links the filter crate, whose proxy-wasm and WASI imports the workloads never
    // call.
    linker
        .define_unknown_imports_as_traps(&module)
        .map_err(|e| e.to_string())?;
    let mut store = Store::new(&engine, ());
    let inst = linker
        .instantiate(&mut store, &module)
        .map_err(|e| e.to_string())?;
    let alloc = inst
        .get_typed_func::<u32, u32>(&mut store, "bench_alloc")
        .map_err(|e| e.to_string())?;
    let bench = inst
        .get_typed_func::<(u32, u32, u32), u64>(&mut store, "bench_run")
        .map_err(|e| e.to_string())?;
    let memory = inst
        .get_memory(&mut store, "memory")
        .ok_or("no memory export")?;
    let mut out = vec![];
    for (id, input) in inputs.iter().enumerate() {
        let n = input.len() as u32;
        let ptr = alloc.call(&mut store, n).map_err(|e| e.to_string())?;
        memory
            .write(&mut store, ptr as usize, input)
            .map_err(|e| e.to_string())?;
        let mut err = None;
        let (t, _) = time_it(secs, || match bench.call(&mut store, (id as u32, ptr, n)) {
            Ok(v) => v,
            Err(e) => {
                err = Some(e.to_string());
                0
            }
        });
        if let Some(e) = err {
            return Err(format!("{}: {e}", workloads::NAMES[id]));
        }
        out.push(t.max(Duration::from_nanos(1)));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let mut size = 4usize << 20;
    let mut secs = 1.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--size", Some(v)) => size = v.parse().unwrap_or(size),
            ("--secs", Some(v)) => secs = v.parse().unwrap_or(secs),
            _ => {
                eprintln!("usage: wasm_codec [--size BYTES] [--secs S]");
                return ExitCode::from(2);
            }
        }
    }
    let run = || -> Result<String, String> {
        let plain = guest_wasm(false)?;
        let simd = guest_wasm(true)?;
        let inputs: Vec<Vec<u8>> = (0..workloads::NAMES.len() as u32)
            .map(|id| workloads::input(id, size))
            .collect();
        // Inputs are read-only except for in-place masking, which may run on its own output
        // again (masking is an involution: the same work every call). So each input is written
        // once and nothing but the workload is timed.
        let native: Vec<Duration> = inputs
            .iter()
            .enumerate()
            .map(|(id, input)| {
                let mut buf = input.clone();
                time_it(secs, || workloads::run(id as u32, &mut buf))
                    .0
                    .max(Duration::from_nanos(1))
            })
            .collect();
        let wasm = time_guest(&plain, &inputs, secs)?;
        let wasm_simd = time_guest(&simd, &inputs, secs)?;
        let size_of = |p: &PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut out = format!(
            "codec throughput, native vs wasm (wasmtime 48, Cranelift defaults; guest opt-level s + LTO like the filter, {} bytes, {} bytes with simd128; native opt-level 3); input ~{} KiB, best of repeated calls over {secs} s each\n\n",
            size_of(&plain),
            size_of(&simd),
            size / 1024
        );
        out += "| workload | native GB/s | wasm GB/s | wasm/native time | wasm+simd128 GB/s | wasm+simd128/native time |\n|---|---:|---:|---:|---:|---:|\n";
        for (id, name) in workloads::NAMES.iter().enumerate() {
            let n = inputs[id].len() as f64;
            let gbs = |t: Duration| n / t.as_secs_f64() / 1e9;
            out += &format!(
                "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                gbs(native[id]),
                gbs(wasm[id]),
                wasm[id].as_secs_f64() / native[id].as_secs_f64(),
                gbs(wasm_simd[id]),
                wasm_simd[id].as_secs_f64() / native[id].as_secs_f64(),
            );
        }
        Ok(out)
    };
    match run() {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wasm_codec: {e}");
            ExitCode::FAILURE
        }
    }
}

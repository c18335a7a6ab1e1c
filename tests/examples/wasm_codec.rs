//! Codec throughput inside the `.wasm` vs native: the workloads of `filter/benches/workloads.rs`
//! run natively and, compiled into `filter/benches/wasm-guest` with the filter's own release
//! settings, in wasmtime (the engine of the host harness, default Cranelift settings). Same
//! code, same bytes, same process; prints GB/s for both and the wasm/native time ratio.
//!
//!   cargo run --profile loadgen -p grpc-bridge-tests --example wasm_codec [-- --size BYTES --secs S]
//!
//! (`make bench` runs it.) Timings are printed, never asserted.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Linker, Module, Store};

#[allow(dead_code)]
#[path = "../../filter/benches/workloads.rs"]
mod workloads;

fn guest_wasm() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("filter/benches/wasm-guest/Cargo.toml");
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("bench-guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building filter/benches/wasm-guest failed".into());
    }
    Ok(target_dir.join("wasm32-wasip1/release/codec_bench_guest.wasm"))
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
    let path = match guest_wasm() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let run = || -> Result<String, String> {
        let engine = Engine::new(&wasmtime::Config::new()).map_err(|e| e.to_string())?;
        let module = Module::from_file(&engine, &path).map_err(|e| e.to_string())?;
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
        let mut out = format!(
            "codec throughput, native vs wasm (wasmtime 48, Cranelift defaults; guest {} bytes, opt-level s + LTO like the filter; native opt-level 3); input ~{} KiB, best of repeated calls over {secs} s\n\n",
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            size / 1024
        );
        out += "| workload | native GB/s | wasm GB/s | wasm time / native time |\n|---|---:|---:|---:|\n";
        for (id, name) in workloads::NAMES.iter().enumerate() {
            let id = id as u32;
            let input = workloads::input(id, size);
            let n = input.len();
            // Native: a fresh copy per call for in-place work (the wasm side re-copies too).
            let mut buf = input.clone();
            let (tn, rn) = time_it(secs, || {
                buf.copy_from_slice(&input);
                workloads::run(id, &mut buf)
            });
            // The copy is timed on both sides: measure it alone and subtract.
            let (tc, _) = time_it(secs / 4.0, || {
                buf.copy_from_slice(&input);
                buf[0] as u64
            });
            let ptr = alloc
                .call(&mut store, n as u32)
                .map_err(|e| e.to_string())?;
            let (tw, rw) = {
                let mut err = None;
                let r = time_it(secs, || {
                    if memory.write(&mut store, ptr as usize, &input).is_err() {
                        err = Some("memory write".to_string());
                        return 0;
                    }
                    match bench.call(&mut store, (id, ptr, n as u32)) {
                        Ok(v) => v,
                        Err(e) => {
                            err = Some(e.to_string());
                            0
                        }
                    }
                });
                if let Some(e) = err {
                    return Err(format!("{name}: {e}"));
                }
                r
            };
            let _ = (rn, rw);
            let tn = tn.saturating_sub(tc).max(Duration::from_nanos(1));
            let tw = tw.saturating_sub(tc).max(Duration::from_nanos(1));
            let gbs = |t: Duration| n as f64 / t.as_secs_f64() / 1e9;
            out += &format!(
                "| {name} | {:.2} | {:.2} | {:.2} |\n",
                gbs(tn),
                gbs(tw),
                tw.as_secs_f64() / tn.as_secs_f64()
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

//! Fuzz smoke for the whole filter: replays the committed corpus of the libFuzzer
//! target `fuzz/filter` and a fixed number of fresh pseudo-random inputs through
//! `host_harness::fuzzing::run`, which checks the invariants listed in its module docs (no
//! trap, bounded guest memory, every converted stream ends with a status, no truncated OK,
//! nothing reaches the backend before a valid tunnel handshake).
//!
//! `FILTER_FUZZ_INPUTS=N` changes the number of random inputs (default 2000);
//! `FILTER_FUZZ_SEED=S` the seed (default: fixed, so CI runs are reproducible).

mod common;

use std::path::PathBuf;

use host_harness::fuzzing::{self, InputGen};

fn corpus_dirs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/filter");
    ["corpus/filter", "artifacts-found/filter"]
        .iter()
        .map(|d| root.join(d))
        .collect()
}

#[test]
fn committed_corpus_and_random_inputs_keep_every_invariant() {
    let wasm = std::fs::read(common::grpc_bridge_wasm()).unwrap();
    let mut failures = Vec::new();
    let mut replayed = 0usize;
    for dir in corpus_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let input = std::fs::read(&file).unwrap();
            replayed += 1;
            if let Err(e) = fuzzing::run(&wasm, &input) {
                failures.push(format!("{}: {e}", file.display()));
            }
        }
    }
    for (name, input) in fuzzing::seeds() {
        match fuzzing::run(&wasm, &input) {
            Ok(o) => assert!(!o.refused && o.ops > 0, "seed {name} does nothing: {o:?}"),
            Err(e) => failures.push(format!("seed {name}: {e}")),
        }
    }
    assert!(
        replayed >= 8,
        "the committed corpus is missing ({replayed} inputs)"
    );

    let n: usize = std::env::var("FILTER_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FILTER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6772_7063_6272_6467);
    let mut gen = InputGen::new(seed);
    // FILTER_FUZZ_ONLY=i runs only random input #i (to debug one failure).
    let only: Option<usize> = std::env::var("FILTER_FUZZ_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut roles = [0usize; 4];
    let mut checked = 0usize;
    for i in 0..n {
        let input = gen.input(1500);
        if only.is_some_and(|o| o != i) {
            continue;
        }
        match fuzzing::run(&wasm, &input) {
            Ok(o) => {
                roles[o.role as usize] += 1;
                checked += o.status_checked as usize;
            }
            Err(e) => failures.push(format!("random input #{i} (seed {seed}): {}", shorten(&e))),
        }
    }
    println!(
        "replayed {replayed} corpus inputs; {n} random inputs: per role {roles:?}, {checked} converted streams status-checked"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The generator must reach every role and produce checked streams, or the smoke is hollow.
    if only.is_none() {
        assert!(roles.iter().all(|r| *r > n / 8), "{roles:?}");
        assert!(
            checked > n / 20,
            "only {checked} streams were status-checked"
        );
    }
}

/// Writes the seed programs into the committed corpus:
/// `cargo test -p host-harness --test filter_fuzz -- --ignored write_seed_corpus`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = &corpus_dirs()[0];
    std::fs::create_dir_all(dir).unwrap();
    for (name, input) in fuzzing::seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), input).unwrap();
    }
}

/// Failure messages quote frames; keep them readable.
fn shorten(s: &str) -> String {
    if s.len() <= 1200 {
        return s.to_string();
    }
    let mut cut = 1200;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... ({} bytes)", &s[..cut], s.len())
}

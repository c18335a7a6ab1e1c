#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target and runs each for a few seconds, starting from
# the committed seed corpus. Fails on any crash, panic (a broken invariant), timeout or OOM.
#
#   fuzz/smoke.sh            # 8 s per target (about a minute and a half in all, build included)
#   FUZZ_SECONDS=5 fuzz/smoke.sh   # what `make test` runs
#   fuzz/smoke.sh 60         # 60 s per target
#   FUZZ_TARGETS="grpc_frame h2_tunnel" fuzz/smoke.sh 30
#   FUZZ_SANITIZER=address fuzz/smoke.sh   # with ASan (slower; the codecs are safe Rust)
#
# Needs only the stable toolchain and a C++ compiler (libFuzzer is built by libfuzzer-sys): the
# build uses cargo-fuzz's flags directly; cargo-fuzz itself (`cargo install cargo-fuzz`) is
# needed only with a sanitizer. RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags.
# New inputs go to fuzz/corpus-new/<target>/ (git-ignored, reused by later runs), crashes to
# fuzz/artifacts/<target>/. Inputs kept under fuzz/artifacts-found/<target>/ are replayed first.
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-8}}"
sanitizer="${FUZZ_SANITIZER:-none}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

all_targets="grpc_frame trailer_frame base64_text percent websocket_frames websocket_handshake h2_tunnel config scan_sparse auth http1_hold"
targets="${FUZZ_TARGETS:-$all_targets}"

export RUSTC_BOOTSTRAP=1
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="target/$triple/release"

start=$(date +%s)
echo "smoke: building fuzz targets (sanitizer: $sanitizer)"
if [ "$sanitizer" = none ]; then
    # What `cargo fuzz build -s none` does (cargo-fuzz 0.13: coverage instrumentation for
    # libFuzzer, --cfg fuzzing, debug assertions and overflow checks, release profile, explicit
    # host target), without needing cargo-fuzz installed: a clean CI machine saves installing it.
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
        cargo build --release --target "$triple" --bins
else
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "smoke: cargo-fuzz not found; installing it (cargo install cargo-fuzz)" >&2
        cargo install --locked cargo-fuzz >&2
    fi
    cargo fuzz build -s "$sanitizer"
fi
built=$(date +%s)

failed=()
summary=()
for t in $targets; do
    mkdir -p "corpus-new/$t" "artifacts/$t" "corpus/$t"
    # Known findings first: they must not crash any more.
    if [ -d "artifacts-found/$t" ] && [ -n "$(ls -A "artifacts-found/$t" 2>/dev/null)" ]; then
        if ! "$bin_dir/$t" -runs=0 "artifacts-found/$t" >"artifacts/$t/replay.log" 2>&1; then
            echo "smoke: $t: a kept input in artifacts-found/$t still fails (artifacts/$t/replay.log)"
            failed+=("$t(replay)")
        fi
    fi
    log="artifacts/$t/smoke.log"
    if "$bin_dir/$t" "corpus-new/$t" "corpus/$t" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        summary+=("$(printf '%-20s %10s runs %8s exec/s' "$t" "${runs:-?}" "${rate:-?}")")
    else
        echo "smoke: $t FAILED; log: fuzz/$log"
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -20 || true
        failed+=("$t")
    fi
done

end=$(date +%s)
echo "smoke: ${seconds}s per target; build $((built - start))s, total $((end - start))s"
for line in "${summary[@]}"; do echo "  $line"; done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "smoke: FAILED: ${failed[*]}"
    exit 1
fi
echo "smoke: OK"

#!/usr/bin/env bash
# Whole-filter fuzz campaign: builds the `filter` target and runs it on one core until it has
# executed RUNS inputs or SECONDS_MAX have passed.
#
#   make build && fuzz/filter/run.sh                        # 10^7 runs, at most 2 h
#   RUNS=100000 fuzz/filter/run.sh                          # a short run
#   GRPC_BRIDGE_WASM=/path/to/grpc_bridge.wasm fuzz/filter/run.sh
#
# Built without cargo-fuzz: the global flags are cargo-fuzz's minus the coverage passes, which
# Cargo.toml adds per package (profile rustflags) to the host harness and this target only. With
# wasmtime and cranelift instrumented too, libFuzzer scanned and compared their counters on
# every input: 2.6x slower (1,087 -> 2,851 exec/s, same corpus, same machine).
# Corpus: corpus/filter (committed seeds) plus corpus-new/filter (kept, git-ignored); crashes in
# artifacts/filter/; the log in artifacts/filter/campaign.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
triple="$(rustc -vV | sed -n 's/^host: //p')"
RUSTC_BOOTSTRAP=1 RUSTFLAGS="--cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target "$triple" --bins >&2
mkdir -p corpus-new/filter artifacts/filter
log=artifacts/filter/campaign.log
status=0
nice -n 10 "target/$triple/release/filter" corpus-new/filter corpus/filter \
    -runs="${RUNS:-10000000}" -max_total_time="${SECONDS_MAX:-7200}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix=artifacts/filter/ >"$log" 2>&1 || status=$?
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$log" || true
[ "$status" = 0 ] || echo "CRASH or error (exit $status): see $log" >&2
exit "$status"

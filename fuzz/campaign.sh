#!/usr/bin/env bash
# Long fuzz campaign: runs each target (one at a time, one core) until it has executed RUNS inputs
# or SECONDS have passed, whichever comes first, and prints a Markdown table row per target with
# the executions achieved, exec/s and final corpus size.
#
#   fuzz/campaign.sh                          # 10^7 runs per target, at most 1 h each
#   RUNS=100000000 SECONDS_MAX=14400 fuzz/campaign.sh grpc_frame h2_tunnel
#
# Corpus: starts from fuzz/corpus/<target> plus fuzz/corpus-new/<target> (kept between runs,
# git-ignored); logs in fuzz/artifacts/<target>/campaign.log; crashes in fuzz/artifacts/<target>/.
set -euo pipefail

runs="${RUNS:-10000000}"
seconds="${SECONDS_MAX:-3600}"
sanitizer="${FUZZ_SANITIZER:-none}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
targets="${*:-grpc_frame trailer_frame base64_text percent websocket_frames websocket_handshake h2_tunnel config scan_sparse auth http1_hold}"

export RUSTC_BOOTSTRAP=1
cargo fuzz build -s "$sanitizer" >&2
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"

echo "| target | executions | time (s) | exec/s | corpus | result |"
echo "|---|---:|---:|---:|---:|---|"
status=0
for t in $targets; do
    mkdir -p "corpus-new/$t" "artifacts/$t"
    log="artifacts/$t/campaign.log"
    t0=$(date +%s)
    result=ok
    # nice: other work shares the machine. No -jobs/-workers: one process on one core.
    if ! nice -n 10 "$bin_dir/$t" "corpus-new/$t" "corpus/$t" \
        -runs="$runs" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        result="CRASH (see $log)"
        status=1
    fi
    t1=$(date +%s)
    n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corp=$(ls "corpus-new/$t" | wc -l)
    echo "| $t | ${n:-?} | $((t1 - t0)) | ${rate:-?} | $corp | $result |"
done
exit $status

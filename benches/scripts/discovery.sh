#!/usr/bin/env bash
# Discovery benchmark (#9): the old full-window scan and incremental discovery side by side at
# 1,000, 10,000 and 100,000 Live Response actions a day. Prints list calls, bytes and duration
# per poll and the exporter's peak RSS as a Markdown table (docs/benchmarks.md).
# BENCH_RATES=1000,10000 and BENCH_POLLS=5 change the runs.
#
# --fleet: the fleet benchmark (#20) instead: 0, 400, 2,000 and 10,000 actions in flight under
# the real quota, before and after #20: list calls per poll and per hour, 429s, and the
# final-to-result-link latency p50/p99. BENCH_FLEET=0,400, BENCH_HOURS=1 (default 0.5) and BENCH_SCALE=60 (default 10)
# change the runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ "${1:-}" == "--fleet" ]]; then
    shift
    exec cargo bench --bench fleet "$@"
fi
exec cargo bench --bench discovery "$@"

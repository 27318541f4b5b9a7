#!/usr/bin/env bash
# Quota benchmark: ~5,000 finished results drained under the quota governor against the
# simulator with scaled windows (BENCH_SCALE=600: a minute lasts 100 ms, an hour 6 s).
# Prints results per link call, 429s, achieved fraction of the quota, latency and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench --bench quota "$@"

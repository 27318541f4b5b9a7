#!/usr/bin/env bash
# Discovery benchmark (#9): the old full-window scan and incremental discovery side by side at
# 1,000, 10,000 and 100,000 Live Response actions a day. Prints list calls, bytes and duration
# per poll and the exporter's peak RSS as a Markdown table (the README's "Discovery benchmark").
# BENCH_RATES=1000,10000 and BENCH_POLLS=5 change the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench discovery "$@"

#!/usr/bin/env bash
# Scale benchmark: the real exporter binary against the multi-tenant simulator with N tenants
# (BENCH_TENANTS, default 1,100,500,2000), each with its own credentials, 10 actions and quota,
# 60 s polls with every clock scaled by BENCH_SCALE (default 10). Prints RSS (before the first
# poll, draining, steady, peak), CPU per poll, time to drain, /metrics render time and series.
# BENCH_EXPORTER=/path/to/binary measures another build of the exporter.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench --bench scale "$@"

#!/usr/bin/env bash
# Transcript memory benchmark (#24 item 10): the exporter binary against the simulator, whose
# first BENCH_HUGE (default 3) result downloads answer a valid transcript of exactly
# max_transcript_bytes (the cap; BENCH_CAPS, default 16 MiB and 64 MiB, in bytes). For each cap
# it runs twice from a fresh state: a control run (the scenario's own small transcripts) and the
# run at the cap, and prints the exporter's peak RSS (VmHWM) of each once every result is
# counted, the difference, and the difference over the cap: how many copies of one transcript
# were alive at once (results are fetched one at a time per tenant; one tenant here).
# BENCH_EXPORTER=/path/to/binary measures another build (default: target/release, else debug).
set -euo pipefail
cd "$(dirname "$0")/../.."
CAPS=${BENCH_CAPS:-16777216,67108864}
HUGE=${BENCH_HUGE:-3}
# shellcheck source=benches/scripts/exporter-binary.sh
. benches/scripts/exporter-binary.sh
# Free loopback ports, chosen afresh for each run (other benchmarks and tests share the machine).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DIR=$(mktemp -d)
cleanup() {
  [[ -n "${EXP_PID:-}" ]] && kill "$EXP_PID" 2>/dev/null || true
  [[ -n "${SIM_PID:-}" ]] && kill "$SIM_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# One run: cap, number of downloads answered at the cap (0: control). Prints the peak RSS in KiB
# and how many transcripts at the cap were counted (a huge answer to a GetFile is a file).
run() {
  local cap=$1 huge=$2
  SIM_PORT=$(free_port) PORT=$(free_port)
  rm -f "$DIR/state.redb"
  "$EXE" simulate --web.listen-address "127.0.0.1:$SIM_PORT" --sim.machines 4 --sim.actions 8 \
    --sim.huge-transcripts "$huge" --sim.huge-transcript-bytes "$cap" >"$DIR/sim.log" 2>&1 &
  SIM_PID=$!
  cat >"$DIR/config.yml" <<EOF
poll_interval: 2s
max_transcript_bytes: $cap
state_path: $DIR/state.redb
tenants:
  - name: sim
    tenant_id: 00000000-0000-4000-8000-000000005e70
    client_id: 11111111-1111-4111-8111-111111111111
    client_secret: sim-client-secret
    api_url: http://127.0.0.1:$SIM_PORT
    login_url: http://127.0.0.1:$SIM_PORT
EOF
  sleep 1
  "$EXE" --config.file "$DIR/config.yml" --web.listen-address "127.0.0.1:$PORT" >"$DIR/exporter.log" 2>&1 &
  EXP_PID=$!
  local out=0
  python3 - "$EXP_PID" "$PORT" "$cap" "$huge" <<'PY' || out=$?
import re, sys, time, urllib.request
pid, port, cap, huge = (int(a) for a in sys.argv[1:])
def value(body, name):
    return sum(float(m.group(1)) for m in re.finditer(
        rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", body, re.M))
deadline = time.time() + 120
last = "no scrape"
while True:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
        last = {n: value(body, n) for n in ("mde_liveresponse_transcript_bytes_total",
                "mde_liveresponse_file_bytes_total", "mde_liveresponse_pending_results",
                "mde_exporter_poll_success")}
        # A huge answer to a GetFile download is sized as a file, not held as a transcript.
        done = value(body, "mde_liveresponse_transcript_bytes_total") + value(
            body, "mde_liveresponse_file_bytes_total") >= huge * cap
        idle = value(body, "mde_liveresponse_pending_results") == 0
        if done and idle and value(body, "mde_exporter_poll_success") == 1:
            break
    except Exception as e:
        last = repr(e)
    if time.time() > deadline:
        sys.exit(f"timed out waiting for the transcripts to be counted (last: {last})")
    time.sleep(0.5)
with open(f"/proc/{pid}/status") as f:
    hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
print(hwm, int(value(body, "mde_liveresponse_transcript_bytes_total") // cap))
PY
  kill "$EXP_PID" "$SIM_PID" 2>/dev/null || true
  wait "$EXP_PID" "$SIM_PID" 2>/dev/null || true
  EXP_PID= SIM_PID=
  if ((out != 0)); then
    tail -n 5 "$DIR/sim.log" "$DIR/exporter.log" >&2
    return "$out"
  fi
}

echo "exporter: $EXE; $HUGE transcripts at the cap, one tenant"
printf '%-8s %12s %17s %13s %10s %10s\n' cap_MiB transcripts control_peak_MiB cap_peak_MiB added_MiB added/cap
IFS=, read -ra caps <<<"$CAPS"
for cap in "${caps[@]}"; do
  read -r control _ < <(run "$cap" 0)
  read -r peak n < <(run "$cap" "$HUGE")
  awk -v c="$cap" -v n="$n" -v a="$control" -v b="$peak" 'BEGIN {
    printf "%-8.0f %12d %17.1f %13.1f %10.1f %10.2f\n", c/1048576, n, a/1024, b/1024, (b-a)/1024, (b-a)*1024/c }'
done

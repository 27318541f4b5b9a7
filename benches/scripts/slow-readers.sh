#!/usr/bin/env bash
# Slow-readers benchmark (#24 item 1): the exporter binary against the multi-tenant simulator,
# with BENCH_TENANTS tenants (default 150, a /metrics body of a few MB), then BENCH_READERS
# clients (default 500) that send `GET /metrics` and never read the answer. Prints the body
# size, the exporter's RSS before, its peak while the readers stall, after the send timeout
# (30 s) has dropped them, and the responses counted as timed out.
# BENCH_EXPORTER=/path/to/binary measures another build (default: target/release, else debug).
set -euo pipefail
cd "$(dirname "$0")/../.."
TENANTS=${BENCH_TENANTS:-150}
READERS=${BENCH_READERS:-500}
# shellcheck source=benches/scripts/exporter-binary.sh
. benches/scripts/exporter-binary.sh
DIR=$(mktemp -d)
SIM_PORT=${BENCH_SIM_PORT:-19818}
PORT=${BENCH_PORT:-19817}
cleanup() {
  [[ -n "${EXP_PID:-}" ]] && kill "$EXP_PID" 2>/dev/null || true
  [[ -n "${SIM_PID:-}" ]] && kill "$SIM_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

"$EXE" simulate --web.listen-address "127.0.0.1:$SIM_PORT" --sim.tenants "$TENANTS" \
  --sim.machines 10 --sim.actions 20 >"$DIR/sim.log" 2>&1 &
SIM_PID=$!
{
  echo "poll_interval: 5s"
  echo "state_path: $DIR/state.redb"
  echo "tenants:"
  for ((i = 0; i < TENANTS; i++)); do
    if ((i == 0)); then
      tid=00000000-0000-4000-8000-000000005e70 cid=11111111-1111-4111-8111-111111111111 sec=sim-client-secret
    else
      h=$(printf '%08x' "$i")
      tid=$h-0000-4000-8000-000000005e70 cid=$h-1111-4111-8111-111111111111 sec=sim-client-secret-$i
    fi
    printf '  - name: customer-%04d\n    tenant_id: %s\n    client_id: %s\n    client_secret: %s\n    api_url: http://127.0.0.1:%s\n    login_url: http://127.0.0.1:%s\n' \
      "$i" "$tid" "$cid" "$sec" "$SIM_PORT" "$SIM_PORT"
  done
} >"$DIR/config.yml"
sleep 1
"$EXE" --config.file "$DIR/config.yml" --web.listen-address "127.0.0.1:$PORT" >"$DIR/exporter.log" 2>&1 &
EXP_PID=$!

python3 - "$EXP_PID" "$PORT" "$READERS" <<'PY'
import socket, sys, time, urllib.request
pid, port, readers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
url = f"http://127.0.0.1:{port}/metrics"

def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

def scrape():
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()

deadline = time.time() + 120
body = b""
while time.time() < deadline:
    try:
        body = scrape()
        if b"mde_liveresponse_last_poll_success" in body and len(body) > 0:
            time.sleep(15)  # let the first polls of every tenant land
            body = scrape()
            break
    except Exception:
        pass
    time.sleep(1)
before = rss_mb()
socks = []
for _ in range(readers):
    s = socket.socket()
    # A small receive window, and never reading: the server's writes stall at once.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
peak, t0 = before, time.time()
while time.time() - t0 < 45:
    peak = max(peak, rss_mb())
    time.sleep(0.25)
after = rss_mb()
t = time.time()
ok = len(scrape())
scrape_s = time.time() - t
timed_out = next((l.split()[-1] for l in scrape().decode().splitlines()
                  if l.startswith("mde_exporter_http_responses_timed_out_total")), "?")
for s in socks:
    s.close()
print(f"body {len(body)/1e6:.2f} MB, {readers} stalled readers: RSS before {before:.0f} MB, "
      f"peak {peak:.0f} MB, after the send timeout {after:.0f} MB; a scrape then "
      f"{ok/1e6:.2f} MB in {scrape_s:.2f} s; responses timed out: {timed_out}")
PY

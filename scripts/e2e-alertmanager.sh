#!/usr/bin/env bash
# End-to-end test of the alerting path (issue #22): exporter -> Prometheus -> Alertmanager ->
# the receiver of the failing machines' device group, with the transcript link.
#
# Starts, all on 127.0.0.1:
#   - the exporter in demo mode (built-in MDE API simulator with failing scripts and machines in
#     three device groups), time scaled x60, as scripts/e2e-prometheus.sh does;
#   - Prometheus (3, .tools/bin, else Debian's 2.42) scraping it every second, evaluating the committed rules every
#     second with every `for:` set to 0s (as e2e-prometheus.sh) and the mixin's
#     exporterExternalURL replaced by this exporter's URL, sending alerts to:
#   - Alertmanager (0.35, .tools/bin, else Debian's `prometheus-alertmanager`) with deploy/alertmanager/alertmanager.yml as committed
#     (route tree, inhibitions, templates) except that every receiver is a webhook to:
#   - a local webhook receiver (scripts/e2e_alertmanager.py receive), one path per receiver;
#     group_wait/group_interval are cut to 1s/2s.
# Then scripts/e2e_alertmanager.py check: a failing script's alert reaches the receiver of its
# device group's route with its labels and transcript_url, whose machine is in that group and
# failing; the inhibitions suppress what they should (alerts posted to the Alertmanager API).
#
# The final step GETs transcript_url from the exporter's /transcripts page and asserts the
# failing exit code (on by default; E2E_FETCH_TRANSCRIPT=0 turns it off).
#
# Env: MDE_EXPORTER_BIN (default target/debug/mde-liveresponse-exporter, built when missing or
# with E2E_BUILD=1), PROMETHEUS (default .tools/bin/prometheus when built, else prometheus),
# ALERTMANAGER (default .tools/bin/alertmanager when built, else prometheus-alertmanager), E2E_DEADLINE (seconds, default 90), E2E_FETCH_TRANSCRIPT (1/0, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

fetch=${E2E_FETCH_TRANSCRIPT:-1}
for arg in "$@"; do
    case "$arg" in
        --fetch-transcript) fetch=1 ;;
        *) echo "usage: $0 [--fetch-transcript]" >&2; exit 2 ;;
    esac
done

bin=${MDE_EXPORTER_BIN:-target/debug/mde-liveresponse-exporter}
# The pinned builds of scripts/tools.sh (Prometheus 3, Alertmanager 0.35, their promtool and
# amtool) when they are built, else Debian's packages.
[ -d .tools/bin ] && PATH=$PWD/.tools/bin:$PATH
default_prometheus=prometheus
[ -x .tools/bin/prometheus ] && default_prometheus=.tools/bin/prometheus
default_alertmanager=prometheus-alertmanager
[ -x .tools/bin/alertmanager ] && default_alertmanager=.tools/bin/alertmanager
prometheus=${PROMETHEUS:-$default_prometheus}
alertmanager=${ALERTMANAGER:-$default_alertmanager}
deadline=${E2E_DEADLINE:-90}

for tool in "$prometheus" "$alertmanager" promtool amtool; do
    command -v "$tool" >/dev/null || { echo "e2e-alertmanager: $tool not found (apt-get install prometheus prometheus-alertmanager)" >&2; exit 1; }
done
if [ ! -x "$bin" ] || [ "${E2E_BUILD:-0}" = 1 ]; then
    echo "== cargo build --bin mde-liveresponse-exporter"
    cargo build --quiet --bin mde-liveresponse-exporter
fi
echo "== $("$bin" --version) / $("$prometheus" --version 2>&1 | head -1) / $("$alertmanager" --version 2>&1 | head -1)"

venv=target/ci-tools/venv
if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    echo "== installing PyYAML into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pyyaml
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ]; then
        for log in exporter prometheus alertmanager receiver; do
            echo "---- $log log (last 20 lines)"; tail -n 20 "$tmp/$log.log" 2>/dev/null || true
        done
        echo "---- notifications received (receiver, alert, labels)"
        python3 -c '
import json, sys
for line in open(sys.argv[1]):
    n = json.loads(line)
    for a in n["body"].get("alerts", []):
        print(n["path"], json.dumps(a["labels"], sort_keys=True))
' "$tmp/notifications.jsonl" 2>/dev/null | sort | uniq | tail -n 30 || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
exporter_port=$(free_port)
prom_port=$(free_port)
am_port=$(free_port)
exporter_url="http://127.0.0.1:$exporter_port"

echo "== webhook receiver"
python3 scripts/e2e_alertmanager.py receive "$tmp/receiver.port" "$tmp/notifications.jsonl" >"$tmp/receiver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$tmp/receiver.port" ] && break; sleep 0.2; done
[ -s "$tmp/receiver.port" ] || { echo "e2e-alertmanager: the webhook receiver did not start" >&2; exit 1; }
receiver_url="http://127.0.0.1:$(cat "$tmp/receiver.port")"
echo "on $receiver_url"

echo "== exporter (demo) on $exporter_url"
"$bin" --demo --demo.time-scale=60 --demo.seed=42 \
    --web.listen-address="127.0.0.1:$exporter_port" --state.path="$tmp/state.redb" \
    --log.level=warn --log.format=json >"$tmp/exporter.log" 2>&1 &
pids+=($!)

# The committed rules, with every `for:` shortened and the transcript links pointing at this
# exporter (the mixin's default exporterExternalURL is http://localhost:9717).
sed -E -e 's/^([[:space:]]+for:)[[:space:]].*$/\1 0s/' -e "s#http://localhost:9717#$exporter_url#g" \
    rules/mde-liveresponse.rules.yml >"$tmp/rules.yml"
grep -q "$exporter_url/transcripts" "$tmp/rules.yml" || { echo "e2e-alertmanager: no transcript_url to rewrite in the rules" >&2; exit 1; }
promtool check rules "$tmp/rules.yml" >/dev/null
cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $tmp/rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$am_port']
scrape_configs:
  - job_name: mde-liveresponse-exporter
    static_configs:
      - targets: ['127.0.0.1:$exporter_port']
YAML

"$venv/bin/python" scripts/e2e_alertmanager.py config deploy/alertmanager/alertmanager.yml "$tmp/alertmanager.yml" \
    "$receiver_url" deploy/alertmanager/templates
amtool check-config "$tmp/alertmanager.yml" >/dev/null

echo "== alertmanager on 127.0.0.1:$am_port (clustering off)"
"$alertmanager" --config.file="$tmp/alertmanager.yml" --storage.path="$tmp/am" \
    --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= --log.level=warn >"$tmp/alertmanager.log" 2>&1 &
pids+=($!)

echo "== prometheus on 127.0.0.1:$prom_port"
"$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

wait_ready() { # name url
    for _ in $(seq 1 30); do
        if python3 -c "import urllib.request; urllib.request.urlopen('$2', timeout=1)" 2>/dev/null; then return 0; fi
        sleep 1
    done
    echo "e2e-alertmanager: $1 not ready after 30 s" >&2
    return 1
}
wait_ready alertmanager "http://127.0.0.1:$am_port/-/ready"
wait_ready prometheus "http://127.0.0.1:$prom_port/-/ready"

echo "== checks (deadline ${deadline}s)"
start=$(date +%s)
flags=()
[ "$fetch" = 1 ] && flags+=(--fetch-transcript)
python3 scripts/e2e_alertmanager.py check "http://127.0.0.1:$prom_port" "http://127.0.0.1:$am_port" \
    "$tmp/notifications.jsonl" "$exporter_url" "$deadline" "${flags[@]}"
echo "e2e-alertmanager: OK in $(( $(date +%s) - start ))s"

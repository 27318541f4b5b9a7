#!/usr/bin/env bash
# End-to-end proof of the dashboards and alerts against a real Prometheus server.
#
# Starts the exporter in demo mode (built-in MDE API simulator: failing scripts, script errors,
# malformed transcripts; --demo.noisy-neighbour and many actions so the quota runs out and the
# API answers 429) with time scaled x60 (a quota minute lasts one second), and a real Prometheus
# scraping it every second with rules/mde-liveresponse.rules.yml loaded: Prometheus 3
# (.tools/bin/prometheus, built by scripts/tools.sh), or Debian's `prometheus` (2.42) when that
# build is missing, which the output says. Then
# scripts/e2e_prometheus.py evaluates every dashboard panel query and template variable through
# the HTTP API (each must be valid and return data) and waits for the script-failure and quota
# alerts to fire.
#
# Exemplars end to end: Prometheus runs with --enable-feature=exemplar-storage, so it asks for
# OpenMetrics (its default Accept header prefers it) and keeps the exemplars; the exporter sends
# its spans over OTLP/HTTP to a real Jaeger v2 (.tools/bin/jaeger, built by scripts/tools.sh;
# its OTLP receiver and query API on loopback, in-memory storage). The checks then require
# /api/v1/query_exemplars to return trace ids for mde_liveresponse_script_failures_total, each
# one found through Jaeger's query API (/api/traces/<id>, what Grafana's Jaeger datasource
# calls when you click an exemplar) as a trace with a failed `parse`, and exemplars for every
# dashboard query that asks for them. When Jaeger is not built the spans go to
# scripts/e2e_otlp_receiver.py instead (decoded with the opentelemetry-proto package, installed
# into target/ci-tools/venv), which the output says.
#
# Native histograms (#23): with Prometheus 3 a second job, mde-liveresponse-exporter-native,
# scrapes the same exporter preferring the protobuf format (scrape_protocols: PrometheusProto
# first) with scrape_native_histograms and always_scrape_classic_histograms, keeping only the
# two latency histograms (so nothing else is counted twice); the checks require both the native
# series and the classic `_bucket` series of each. Prometheus 2 (Debian's 2.42) has neither
# setting: that part is skipped, which the output says.
#
# Alert `for:` durations (5-30 minutes) cannot elapse in a two-minute test, and the simulator's
# time scale does not apply to Prometheus's clock, so Prometheus loads a copy of the rules with
# every `for:` set to 0s. Expressions, labels and annotations are the committed ones; the `for:`
# durations themselves are covered by `promtool test rules` (scripts/check-rules.sh).
#
# OTLP metrics push (#23 item 3): with Prometheus 3 a second Prometheus runs with
# --web.enable-otlp-receiver and scrapes nothing; the exporter pushes its metrics to it
# (OTEL_METRICS_EXPORTER=otlp, every second) as well as serving /metrics, and
# scripts/e2e_otlp_push.py checks that every /metrics name comes back under Prometheus's
# default OTLP translation and that mde_liveresponse_script_runs_total, selected by the job and
# instance labels the receiver sets, equals a value /metrics showed. A second Prometheus, not
# the scraping one: pushed copies of the scraped series would be counted twice by the rules
# (count by (tenant, script) ...). Skipped, saying so, with a Prometheus without the receiver
# (Debian's 2.42).
#
# Everything listens on 127.0.0.1 only; all processes are stopped on exit.
# Env: MDE_EXPORTER_BIN (default target/debug/mde-liveresponse-exporter, built with cargo when
# missing or with E2E_BUILD=1), PROMETHEUS (default .tools/bin/prometheus, else prometheus on
# PATH), JAEGER (default .tools/bin/jaeger; `none`: the Python receiver), E2E_DEADLINE
# (seconds, default 100).
set -euo pipefail
cd "$(dirname "$0")/.."

OPENTELEMETRY_PROTO_VERSION=1.45.2

bin=${MDE_EXPORTER_BIN:-target/debug/mde-liveresponse-exporter}
if [ -n "${PROMETHEUS:-}" ]; then
    prometheus=$PROMETHEUS
elif [ -x .tools/bin/prometheus ]; then
    prometheus=.tools/bin/prometheus
else
    prometheus=prometheus
    echo "e2e: WARNING: .tools/bin/prometheus (Prometheus 3) is not built (scripts/tools.sh prometheus" \
        "failed or was not run): falling back to $(command -v prometheus || echo 'prometheus on PATH')" >&2
fi
jaeger=${JAEGER:-}
if [ -z "$jaeger" ] && [ -x .tools/bin/jaeger ]; then
    jaeger=.tools/bin/jaeger
elif [ -z "$jaeger" ]; then
    echo "e2e: WARNING: .tools/bin/jaeger (Jaeger v2) is not built (scripts/tools.sh jaeger failed or" \
        "was not run): spans go to scripts/e2e_otlp_receiver.py instead" >&2
fi
[ "$jaeger" = none ] && jaeger=
deadline=${E2E_DEADLINE:-100}
required_alerts=MdeLiveResponseScriptFailed,MdeLiveResponseScriptErrors,MdeLiveResponseScriptErrorBudgetBurn,MdeLiveResponseResultFetchFailing,MdeApiQuotaNearlyExhausted,MdeApiThrottled,MdeLiveResponseResultsWaitingForQuota
forbidden_alerts=MdeExporterDown,MdeExporterAuthFailing,MdeExporterConfigReloadFailed

command -v "$prometheus" >/dev/null || { echo "e2e: $prometheus not found (scripts/tools.sh prometheus, or apt-get install prometheus)" >&2; exit 1; }
if [ ! -x "$bin" ] || [ "${E2E_BUILD:-0}" = 1 ]; then
    echo "== cargo build --bin mde-liveresponse-exporter"
    cargo build --quiet --bin mde-liveresponse-exporter
fi
"$bin" --help | grep -q -- '--demo.noisy-neighbour' || { echo "e2e: $bin has no --demo.noisy-neighbour" >&2; exit 1; }
echo "== $("$bin" --version) / $("$prometheus" --version 2>&1 | head -1)"

venv=target/ci-tools/venv
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))' 2>/dev/null)" != "$OPENTELEMETRY_PROTO_VERSION" ]; then
    echo "== installing opentelemetry-proto $OPENTELEMETRY_PROTO_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "opentelemetry-proto==$OPENTELEMETRY_PROTO_VERSION"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
    local rc=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ]; then
        echo "---- exporter log (last 20 lines)"; tail -n 20 "$tmp/exporter.log" 2>/dev/null || true
        echo "---- prometheus log (last 20 lines)"; tail -n 20 "$tmp/prometheus.log" 2>/dev/null || true
        echo "---- OTLP-receiving prometheus log (last 20 lines)"; tail -n 20 "$tmp/prometheus-otlp.log" 2>/dev/null || true
        echo "---- OTLP receiver / Jaeger log (last 20 lines)"; tail -n 20 "$tmp/otlp.log" 2>/dev/null || true
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

if [ -n "$jaeger" ]; then
    otlp_port=$(free_port)
    jaeger_query_port=$(free_port)
    jaeger_grpc_port=$(free_port)
    echo "== Jaeger v2 ($jaeger): OTLP/HTTP on 127.0.0.1:$otlp_port, query API on 127.0.0.1:$jaeger_query_port"
    # The all-in-one shape (cmd/jaeger/config.yaml of v1.75.0) cut down to what the test uses:
    # OTLP/HTTP in, memory storage, the query API; everything on loopback, no own telemetry.
    cat >"$tmp/jaeger.yml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:$jaeger_query_port
    grpc:
      endpoint: 127.0.0.1:$jaeger_grpc_port
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$otlp_port
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
    "$jaeger" --config="$tmp/jaeger.yml" >"$tmp/otlp.log" 2>&1 &
    pids+=($!)
    up=0
    for _ in $(seq 1 60); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$jaeger_query_port/api/services', timeout=1)" 2>/dev/null; then
            up=1; break
        fi
        sleep 0.5
    done
    [ "$up" = 1 ] || { echo "e2e: Jaeger's query API did not come up" >&2; exit 1; }
    traces_args=(--jaeger "http://127.0.0.1:$jaeger_query_port")
    traces_to=Jaeger
else
    echo "== OTLP/HTTP receiver"
    "$venv/bin/python" scripts/e2e_otlp_receiver.py "$tmp/otlp.port" "$tmp/spans.jsonl" >"$tmp/otlp.log" 2>&1 &
    pids+=($!)
    # Up to 30 s: importing protobuf takes seconds on a busy 2-core machine.
    for _ in $(seq 1 150); do [ -s "$tmp/otlp.port" ] && break; sleep 0.2; done
    [ -s "$tmp/otlp.port" ] || { echo "e2e: the OTLP receiver did not start within 30 s" >&2; exit 1; }
    otlp_port=$(cat "$tmp/otlp.port")
    echo "on 127.0.0.1:$otlp_port"
    traces_args=(--spans "$tmp/spans.jsonl")
    traces_to="the OTLP receiver"
fi

# ---- OTLP metrics push (#23 item 3): the receiving Prometheus and the exporter's variables.
otlp_push_env=()
otlp_push_job=mde-liveresponse-exporter-e2e
otlp_push_instance=e2e-push
# (The help is read whole first: grep -q stopping early would fail the pipe under pipefail.
# Prometheus 3 lists the flag as --[no-]web.enable-otlp-receiver.)
prometheus_help=$("$prometheus" --help 2>&1 || true)
if grep -q 'web.enable-otlp-receiver' <<<"$prometheus_help"; then
    otlp_prom_port=$(free_port)
    printf 'global: {}\n' >"$tmp/prometheus-otlp.yml"
    echo "== prometheus OTLP receiver on 127.0.0.1:$otlp_prom_port (metrics pushed by the exporter)"
    "$prometheus" --config.file="$tmp/prometheus-otlp.yml" --storage.tsdb.path="$tmp/data-otlp" \
        --web.enable-otlp-receiver --web.listen-address="127.0.0.1:$otlp_prom_port" \
        --log.level=warn >"$tmp/prometheus-otlp.log" 2>&1 &
    pids+=($!)
    otlp_push_env=(OTEL_METRICS_EXPORTER=otlp
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=http://127.0.0.1:$otlp_prom_port/api/v1/otlp/v1/metrics"
        OTEL_METRIC_EXPORT_INTERVAL=1000 "OTEL_RESOURCE_ATTRIBUTES=service.instance.id=$otlp_push_instance")
else
    echo "e2e: SKIP OTLP metrics push: $prometheus has no --web.enable-otlp-receiver (Prometheus 3 has it;" \
        "Debian's 2.42 does not)" >&2
fi

echo "== exporter (demo) on 127.0.0.1:$exporter_port, spans to $traces_to"
# A short batch delay so spans arrive within a second of the exemplars that name them. The log
# level is warn on purpose: spans have their own filter, so quiet logs keep the traces and the
# exemplars (#12). The receiver takes traces only: no log records are sent.
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_port" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
OTEL_SERVICE_NAME=mde-liveresponse-exporter-e2e OTEL_BSP_SCHEDULE_DELAY=200 OTEL_LOGS_EXPORTER=none \
env "${otlp_push_env[@]}" "$bin" --demo --demo.time-scale=60 --demo.noisy-neighbour --demo.actions=2000 --demo.seed=42 \
    --web.listen-address="127.0.0.1:$exporter_port" --state.path="$tmp/state.redb" \
    --log.level=warn --log.format=json >"$tmp/exporter.log" 2>&1 &
pids+=($!)

# Rules with every `for:` shortened (see the header).
sed -E 's/^([[:space:]]+for:)[[:space:]].*$/\1 0s/' rules/mde-liveresponse.rules.yml >"$tmp/rules.yml"
promtool check rules "$tmp/rules.yml" >/dev/null
native_job=
native_args=()
prom_major=$("$prometheus" --version 2>&1 | sed -nE '1s/.*version ([0-9]+)\..*/\1/p')
if [ "${prom_major:-0}" -ge 3 ]; then
    native_job=mde-liveresponse-exporter-native
    native_args=(--native-job "$native_job")
else
    echo "e2e: Prometheus ${prom_major:-?}.x has no scrape_native_histograms/scrape_protocols: the native" \
        "histogram check (#23) is skipped; it runs with Prometheus 3 (scripts/tools.sh prometheus)" >&2
fi
cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $tmp/rules.yml
scrape_configs:
  - job_name: mde-liveresponse-exporter
    static_configs:
      - targets: ['127.0.0.1:$exporter_port']
EOF
if [ -n "$native_job" ]; then
    cat >>"$tmp/prometheus.yml" <<EOF
  - job_name: $native_job
    scrape_protocols: [PrometheusProto, OpenMetricsText1.0.0, PrometheusText0.0.4]
    scrape_native_histograms: true
    always_scrape_classic_histograms: true
    static_configs:
      - targets: ['127.0.0.1:$exporter_port']
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'mde_(api_request|exporter_poll)_duration_seconds(_.*)?'
        action: keep
EOF
fi

echo "== prometheus on 127.0.0.1:$prom_port (exemplar storage on)"
"$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --enable-feature=exemplar-storage \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

ready=0
for _ in $(seq 1 30); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$prom_port/-/ready', timeout=1)" 2>/dev/null; then
        ready=1; break
    fi
    sleep 1
done
[ "$ready" = 1 ] || { echo "e2e: prometheus not ready after 30 s" >&2; exit 1; }

echo "== checks (deadline ${deadline}s)"
# --exporter: the dashboards' transcript links followed for the rows Prometheus gives (#35).
python3 scripts/e2e_prometheus.py "${traces_args[@]}" "${native_args[@]}" --exporter "http://127.0.0.1:$exporter_port" \
    "http://127.0.0.1:$prom_port" "$deadline" \
    "$required_alerts" "$forbidden_alerts" dashboards/*.json

# ---- OTLP metrics push (#23 item 3): the names and values read back.
if [ "${#otlp_push_env[@]}" -gt 0 ]; then
    echo "== OTLP metrics push checks"
    python3 scripts/e2e_otlp_push.py "http://127.0.0.1:$otlp_prom_port" "http://127.0.0.1:$exporter_port" \
        "$otlp_push_job" "$otlp_push_instance" 30
fi
echo "e2e-prometheus: OK"

#!/usr/bin/env python3
"""OTLP metrics push checks for scripts/e2e-prometheus.sh (#23 item 3), against a Prometheus 3
that receives the exporter's pushed metrics on its OTLP receiver (--web.enable-otlp-receiver)
and scrapes nothing.

1. the names come back: every metric name /metrics shows (histograms as _bucket, _sum and
   _count; but for TEXT_ONLY) is a series name of the pushed job and instance in Prometheus, translated by its
   default OTLP translation (UnderscoreEscapingWithSuffixes);
2. the values come back: mde_liveresponse_script_runs_total read back (selected by the job and
   instance labels the OTLP receiver sets from service.name and service.instance.id) is, series
   by series, a value /metrics showed: /metrics is read every quarter second while the check
   runs, and a push lands between two reads, so each pushed value must be one of the values
   read (one transcript more or less between two reads is what the demo does at most).

Stops at the deadline with what is missing. Standard library only.

Usage: e2e_otlp_push.py PROM_URL EXPORTER_URL JOB INSTANCE DEADLINE_SECONDS
"""
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

RUNS = "mde_liveresponse_script_runs_total"
# Labels the OTLP receiver adds to every pushed series.
RECEIVER_LABELS = {"__name__", "job", "instance", "otel_scope_name", "otel_scope_version",
                   "otel_scope_schema_url"}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def get_json(base, path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}


def scrape(exporter):
    """(names with samples, {labels of RUNS: value}) from the Prometheus text /metrics."""
    with urllib.request.urlopen(exporter + "/metrics", timeout=10) as r:
        text = r.read().decode()
    types, names, runs = {}, set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        names.add(m.group(1))
        if m.group(1) == RUNS:
            labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
            runs[labels] = float(m.group(3))
    return names, runs


def pushed_names(base, job, instance):
    r = get_json(base, "/api/v1/label/__name__/values",
                 **{"match[]": f'{{job="{job}",instance="{instance}"}}'})
    return set(r.get("data") or []) if r.get("status") == "success" else set()


def pushed_runs(base, job, instance):
    r = get_json(base, "/api/v1/query", query=f'{RUNS}{{job="{job}",instance="{instance}"}}')
    out = {}
    if r.get("status") != "success":
        return out
    for s in r["data"]["result"]:
        labels = tuple(sorted((k, v) for k, v in s["metric"].items() if k not in RECEIVER_LABELS))
        out[labels] = float(s["value"][1])
    return out


# Names only the Prometheus text format has: the push, built from the OpenMetrics body, leaves
# out the not-run gauge's old name, which clashes there with the counter's family name; its
# series come back as mde_liveresponse_script_not_run_current (#24 item 10).
TEXT_ONLY = {"mde_liveresponse_script_not_run"}


def main() -> int:
    base, exporter, job, instance, deadline_s = sys.argv[1:]
    deadline = time.monotonic() + float(deadline_s)
    seen = {}  # labels of RUNS → every value /metrics showed
    missing_names, mismatched, runs_back = None, None, {}
    while True:
        names, runs = scrape(exporter)
        for labels, v in runs.items():
            seen.setdefault(labels, set()).add(v)
        if missing_names is None or missing_names:
            missing_names = names - TEXT_ONLY - pushed_names(base, job, instance)
        runs_back = pushed_runs(base, job, instance)
        mismatched = {labels: v for labels, v in runs_back.items() if v not in seen.get(labels, ())}
        if (not missing_names and runs_back and not mismatched
                and any(v > 0 for v in runs_back.values())):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    failures = []
    if missing_names:
        failures.append(f"names on /metrics that never came back over OTLP: {', '.join(sorted(missing_names))}")
    if not runs_back:
        failures.append(f'no {RUNS}{{job="{job}",instance="{instance}"}} in the OTLP Prometheus')
    for labels, v in sorted(mismatched.items()):
        failures.append(f"{RUNS}{dict(labels)} = {v} pushed; /metrics showed {sorted(seen.get(labels, ()))}")
    if runs_back and not any(v > 0 for v in runs_back.values()):
        failures.append(f"{RUNS} pushed, all 0")
    print(f"e2e: OTLP push: {len(runs_back)} {RUNS} series read back by job/instance "
          f"({job}/{instance}), {len(runs_back) - len(mismatched or {})} equal to a value /metrics showed; "
          f"every /metrics name came back: {'yes' if not missing_names else 'no'}")
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

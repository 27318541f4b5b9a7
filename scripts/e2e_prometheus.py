#!/usr/bin/env python3
"""Checks for scripts/e2e-prometheus.sh, against a running Prometheus that scrapes the exporter.

1. waits until Prometheus has scraped the exporter (up == 1) and has enough samples for rates;
2. every rule group evaluates without error (/api/v1/rules health);
3. every query of every dashboard panel (variables substituted: $job → the job,
   $tenant/$script/$rbac_group/$tag → .*, $family → a family of the demo, $__rate_interval → 1m, $__range → 5m) is valid and returns data (/api/v1/query), and every
   label_values() template variable has values;
4. the required alerts reach the firing state (/api/v1/alerts, sampled every second: the short
   quota window makes some of them come and go), their annotations render, and the forbidden
   ones never fire;
5. with --jaeger (the query API of a Jaeger v2 that received the exporter's spans over OTLP) or
   --spans (the JSON lines of scripts/e2e_otlp_receiver.py, when Jaeger is not built):
   exemplars end to end. /api/v1/query_exemplars returns trace ids for
   mde_liveresponse_script_failures_total, and every one of them is the trace id of spans the
   exporter sent, a trace holding a `parse` span with a non-zero exit_code (the failing
   transcript), found in Jaeger by that id (/api/traces/<id>, the API Grafana's Jaeger
   datasource uses); and every dashboard query that asks for exemplars (`exemplar: true`) gets
   some.
6. with --native-job JOB (Prometheus 3, a second job scraping the exporter in protobuf with
   scrape_native_histograms and always_scrape_classic_histograms): the API and poll latency
   histograms are stored both ways for that job: the native series (histogram_count() of it
   has a value) and the classic `_bucket` series.
7. with --exporter URL (the exporter Prometheus scrapes): the dashboards' links to evidence
   (#35). For every table whose machine cell links to the exporter's /transcripts page, the
   rows its query gives in Prometheus are followed (${exporter_url} → URL, each
   ${__data.fields.X} → the row's label X, percent-encoded as Grafana does): each answers 200
   with the transcript of that row's tenant, machine and script. A not-run row may have no
   transcript at all: there, the exporter's 404 naming that machine is accepted, once at least
   one link of every other table answered 200.

Stops at the deadline with a list of what is missing. Standard library only.

Usage: e2e_prometheus.py [--jaeger JAEGER_QUERY_URL | --spans SPANS.jsonl] [--native-job JOB] [--exporter URL]
       PROM_URL DEADLINE_SECONDS REQUIRED_ALERTS FORBIDDEN_ALERTS
       DASHBOARD.json...   (alerts comma-separated)
"""
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# The job variable's "All" is the alternation of the jobs found: here the e2e's one job.
# $family: one script_metrics family the demo's rules give (#21).
SUBST = {"$job": "mde-liveresponse-exporter", "$tenant": ".*", "$script": ".*", "$rbac_group": ".*",
         "$tag": ".*", "$family": "mde_script_bitlocker_protection_on",
         "$__rate_interval": "1m", "$__range": "5m"}


def get(base, path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 400/422 carry the PromQL error as JSON
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}


def substitute(expr):
    for k, v in SUBST.items():
        expr = expr.replace(k, v)
    # A dashboard variable this script does not know would stay literal and match nothing:
    # say so instead of reporting a panel without data.
    left = re.findall(r"\$\w+", expr)
    if left:
        raise SystemExit(f"e2e: no substitution for {', '.join(sorted(set(left)))} in: {expr}")
    return expr


class Spans:
    """The spans received so far, read incrementally from the receiver's JSON lines."""

    def __init__(self, path):
        self.path, self.offset = path, 0
        self.traces = set()         # every trace id received
        self.failed_parse = set()   # trace ids with a `parse` span whose exit_code is not 0
        self.count = 0
        self.source = "received over OTLP"

    def update(self, _exemplar_ids=()):
        with open(self.path) as f:
            f.seek(self.offset)
            chunk = f.read()
        # Only whole lines: the receiver may be writing the last one.
        done = chunk[:chunk.rfind("\n") + 1]
        self.offset += len(done.encode())
        for line in done.splitlines():
            s = json.loads(line)
            self.count += 1
            self.traces.add(s["trace_id"])
            if s["name"] == "parse" and s["attributes"].get("exit_code", 0) != 0:
                self.failed_parse.add(s["trace_id"])


class JaegerTraces:
    """Traces looked up by id in Jaeger's query API, the way Grafana follows an exemplar."""

    def __init__(self, base):
        self.base = base
        self.traces = set()         # exemplar trace ids Jaeger has
        self.failed_parse = set()   # of those, the ones with a `parse` span whose exit_code is not 0
        self.count = 0              # spans in the traces found
        self.source = f"found in Jaeger ({base}/api/traces/<id>)"

    def update(self, exemplar_ids=()):
        for t in sorted(set(exemplar_ids) - self.failed_parse):
            r = get(self.base, f"/api/traces/{t}")
            for trace in r.get("data") or []:
                # Jaeger drops leading zeros of a trace id: compare the numbers.
                if int(trace.get("traceID", "0"), 16) != int(t, 16):
                    continue
                if t not in self.traces:
                    self.traces.add(t)
                    self.count += len(trace.get("spans", []))
                for span in trace.get("spans", []):
                    tags = {x.get("key"): x.get("value") for x in span.get("tags", [])}
                    if span.get("operationName") == "parse" and str(tags.get("exit_code", 0)) != "0":
                        self.failed_parse.add(t)


def exemplar_trace_ids(base, query):
    """Trace ids of the exemplars Prometheus stored for the series of `query` (last hour)."""
    now = time.time()
    r = get(base, "/api/v1/query_exemplars", query=query, start=f"{now - 3600:.3f}", end=f"{now:.3f}")
    if r.get("status") != "success":
        return None, f"{r.get('errorType')}: {r.get('error')}"
    ids = {e.get("labels", {}).get("trace_id") for s in r.get("data") or [] for e in s.get("exemplars", [])}
    return ids, None


def dashboard_queries(paths):
    """[(where, expr)] for every panel target, and [(where, metric, label)] for label_values vars."""
    queries, variables = [], []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for path in paths:
        with open(path) as f:
            d = json.load(f)
        for p in panels(d.get("panels", [])):
            for t in p.get("targets", []):
                queries.append((f"{d['uid']} / {p['title']} / {t['refId']}", substitute(t["expr"]),
                                bool(t.get("exemplar"))))
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            if m:
                variables.append((f"{d['uid']} / ${v['name']}", substitute(m.group(1)), m.group(2)))
    return queries, variables


FAILURES = "mde_liveresponse_script_failures_total"
# The histograms that are native histograms too in a protobuf scrape (#23).
NATIVE = ("mde_api_request_duration_seconds", "mde_exporter_poll_duration_seconds")


def query_pending(base, pending, hard_errors, with_type):
    """Run each query of `pending` (what -> expr) once: one that returned data, or an error
    (into `hard_errors`, with Prometheus' errorType when `with_type`), leaves `pending`."""
    for what, expr in list(pending.items()):
        r = get(base, "/api/v1/query", query=expr)
        if r.get("status") != "success":
            kind = f"{r.get('errorType')}: " if with_type else ""
            hard_errors.append(f"{what}: query error {kind}{r.get('error')}\n    {expr}")
            del pending[what]
        elif r["data"]["result"]:
            del pending[what]


def native_checks(job):
    """{what: PromQL} that must return a sample for `job`: each family native and classic."""
    checks = {}
    for f in NATIVE:
        checks[f"{f} native"] = f'histogram_count({f}{{job="{job}"}}) > 0'
        checks[f"{f} classic"] = f'count({f}_bucket{{job="{job}"}}) > 0'
    return checks


# How many rows of each linked table are followed (the demo's tables have dozens).
LINK_ROWS = 5
LINK_FIELD = re.compile(r"\$\{__data\.fields\.(\w+)(?::(\w+))?\}")


def linked_tables(paths):
    """[(where, expr, url template)] for every table panel whose cells link to /transcripts."""
    out = []
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        stack = list(d.get("panels", []))
        while stack:
            p = stack.pop(0)
            stack.extend(p.get("panels", []))
            links = [link["url"] for o in p.get("fieldConfig", {}).get("overrides", [])
                     for prop in o.get("properties", []) if prop.get("id") == "links"
                     for link in prop.get("value", []) if "/transcripts?" in link.get("url", "")]
            if p.get("type") == "table" and links:
                out.append((f"{d['uid']} / {p['title']}", substitute(p["targets"][0]["expr"]), links[0]))
    return out


def follow_links(base, exporter, tables):
    """Follow each linked table's links for the rows Prometheus gives: [failures], [summary]."""
    failures, summary = [], []
    for where, expr, template in tables:
        r = get(base, "/api/v1/query", query=expr)
        rows = [s["metric"] for s in r.get("data", {}).get("result", [])][:LINK_ROWS]
        if not rows:
            failures.append(f"{where}: no rows to follow the transcript links of")
            continue
        ok = missing = 0
        for row in rows:
            def field(m):
                v = row.get(m.group(1), "")
                return urllib.parse.quote(v, safe="") if m.group(2) == "percentencode" else v
            url = LINK_FIELD.sub(field, template.replace("${exporter_url}", exporter))
            req = urllib.request.Request(url, headers={"Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, body = resp.status, resp.read().decode()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read().decode()
            if status == 200:
                shown = json.loads(body)
                got = (shown.get("tenant"), shown.get("machine"), shown.get("script"))
                if got != (row.get("tenant"), row.get("machine"), row.get("script")):
                    failures.append(f"{where}: {url} shows {got}, the row is {row}")
                else:
                    ok += 1
            elif status == 404 and "did not run" in where and body.startswith("no transcript of") \
                    and f'on "{row.get("machine")}"' in body:
                missing += 1  # a machine whose attempts never produced a transcript
            else:
                failures.append(f"{where}: {url} answered {status}: {body[:200]}")
        if "did not run" not in where and not ok:
            failures.append(f"{where}: no link answered 200")
        summary.append(f"{where}: {ok}/{len(rows)} links 200 with the row's transcript"
                       + (f", {missing} without any transcript (404)" if missing else ""))
    return failures, summary


def main() -> int:
    args = sys.argv[1:]
    spans = None
    native_job = None
    exporter = None
    while args[:1] in (["--spans"], ["--jaeger"], ["--native-job"], ["--exporter"]):
        if args[0] == "--spans":
            spans = Spans(args[1])
        elif args[0] == "--jaeger":
            spans = JaegerTraces(args[1])
        elif args[0] == "--exporter":
            exporter = args[1].rstrip("/")
        else:
            native_job = args[1]
        args = args[2:]
    base, deadline_s, required, forbidden, *dashboards = args
    required = {a for a in required.split(",") if a}
    forbidden = {a for a in forbidden.split(",") if a}
    deadline = time.monotonic() + float(deadline_s)
    queries, variables = dashboard_queries(dashboards)
    exemplar_queries = {w: e for w, e, ex in queries if ex}
    queries = [(w, e) for w, e, _ in queries]
    print(f"e2e: {len(queries)} panel queries ({len(exemplar_queries)} asking for exemplars) and {len(variables)} "
          f"variables from {len(dashboards)} dashboards; alerts required to fire: {', '.join(sorted(required))}")

    # 1. scraped, with a few samples so that rate(...[1m]) has two points.
    first_up = None
    while True:
        r = get(base, "/api/v1/query", query='up{job="mde-liveresponse-exporter"} == 1')
        if r.get("status") == "success" and r["data"]["result"]:
            first_up = first_up or time.monotonic()
            if time.monotonic() - first_up >= 5:
                break
        if time.monotonic() > deadline:
            print("FAIL: Prometheus never scraped the exporter successfully (up == 1)")
            return 1
        time.sleep(1)
    print("e2e: exporter scraped (up == 1)")

    seen_firing, seen_forbidden = set(), set()
    pending_queries = dict(queries)  # where → expr, until it returned data once
    pending_vars = {w: (m, lbl) for w, m, lbl in variables}
    pending_exemplars = dict(exemplar_queries) if spans else {}
    pending_native = native_checks(native_job) if native_job else {}
    failure_ids, unmatched = set(), set()
    rule_errors = {}
    hard_errors = []
    while True:
        # 2. rule health (any error is final)
        r = get(base, "/api/v1/rules")
        for g in r.get("data", {}).get("groups", []):
            for rule in g.get("rules", []):
                if rule.get("health") == "err":
                    rule_errors[rule.get("name")] = rule.get("lastError")
        # 3. dashboard queries
        query_pending(base, pending_queries, hard_errors, with_type=True)
        for where, (match, label) in list(pending_vars.items()):
            r = get(base, f"/api/v1/label/{label}/values", **{"match[]": match})
            if r.get("status") != "success":
                hard_errors.append(f"{where}: label_values error {r.get('error')}")
                del pending_vars[where]
            elif r["data"]:
                del pending_vars[where]
        # 4. alerts
        r = get(base, "/api/v1/alerts")
        for a in r.get("data", {}).get("alerts", []):
            if a.get("state") == "firing":
                name = a["labels"]["alertname"]
                if name not in seen_firing:
                    print(f"e2e: {name} firing {json.dumps({k: v for k, v in a['labels'].items() if k != 'alertname'})}")
                seen_firing.add(name)
                for key, text in a.get("annotations", {}).items():
                    if "error expanding template" in text or "<no value>" in text:
                        hard_errors.append(f"alert {name}: annotation {key} did not render: {text}")
                if name in forbidden:
                    seen_forbidden.add(name)
        # 5. exemplars
        for where, expr in list(pending_exemplars.items()):
            ids, err = exemplar_trace_ids(base, expr)
            if err:
                hard_errors.append(f"{where}: query_exemplars error {err}\n    {expr}")
                del pending_exemplars[where]
            elif ids:
                del pending_exemplars[where]
        if spans:
            ids, err = exemplar_trace_ids(base, FAILURES)
            if err:
                hard_errors.append(f"query_exemplars {FAILURES}: {err}")
            elif ids:
                if None in ids or "" in ids:
                    hard_errors.append(f"{FAILURES}: an exemplar without a trace_id label")
                failure_ids |= ids - {None, ""}
            spans.update(failure_ids)
            # A span batch may arrive a moment after the scrape that saw its exemplar: wait for it.
            unmatched = {t for t in failure_ids if t not in spans.failed_parse}
        # 6. native histograms beside the classic ones
        query_pending(base, pending_native, hard_errors, with_type=False)
        exemplars_done = not spans or (failure_ids and not unmatched and not pending_exemplars)
        done = (not pending_queries and not pending_vars and required <= seen_firing and exemplars_done
                and not pending_native)
        if done or hard_errors or rule_errors or seen_forbidden or time.monotonic() > deadline:
            break
        time.sleep(1)

    failures = list(hard_errors)
    failures += [f"rule {n}: evaluation error: {e}" for n, e in rule_errors.items()]
    failures += [f"{w}: no data\n    {e}" for w, e in pending_queries.items()]
    failures += [f"{w}: label_values() returned nothing" for w in pending_vars]
    if not hard_errors and not rule_errors:  # otherwise the loop stopped early
        failures += [f"alert {a} never reached firing" for a in sorted(required - seen_firing)]
    failures += [f"alert {a} fired but must not in the demo" for a in sorted(seen_forbidden)]
    if spans:
        if not failure_ids:
            failures.append(f"query_exemplars {FAILURES}: no exemplar with a trace_id (OpenMetrics scraped? "
                            "exemplar storage on?)")
        for t in sorted(unmatched):
            why = "a trace without a failed parse span" if t in spans.traces else f"no span of this trace {spans.source}"
            failures.append(f"{FAILURES} exemplar trace_id {t}: {why}")
        failures += [f"{w}: asks for exemplars, got none\n    {e}" for w, e in pending_exemplars.items()]
        print(f"e2e: {spans.count} spans in {len(spans.traces)} traces {spans.source}; {FAILURES} exemplars "
              f"name {len(failure_ids)} traces, {len(failure_ids) - len(unmatched)} of them with a "
              f"failed parse span; {len(exemplar_queries) - len(pending_exemplars)}/{len(exemplar_queries)} "
              "exemplar queries returned exemplars")
    if native_job:
        failures += [f"{w} for job {native_job}: no data (protobuf scraped? scrape_native_histograms?)\n    {e}"
                     for w, e in pending_native.items()]
        print(f"e2e: native histograms (job {native_job}): "
              f"{len(NATIVE) * 2 - len(pending_native)}/{len(NATIVE) * 2} checks (native and classic "
              f"series of {', '.join(NATIVE)}) returned data")
    if exporter and not failures:
        # 7. the dashboards' links to the evidence, for the rows Prometheus has now.
        link_failures, summary = follow_links(base, exporter, linked_tables(dashboards))
        for line in summary:
            print(f"e2e: links: {line}")
        failures += link_failures
    ok_queries = len(queries) - sum(1 for f in failures if ": no data" in f or "query error" in f)
    print(f"e2e: {ok_queries}/{len(queries)} panel queries returned data; "
          f"{len(variables) - len(pending_vars)}/{len(variables)} variables have values; "
          f"alerts seen firing: {', '.join(sorted(seen_firing)) or 'none'}")
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

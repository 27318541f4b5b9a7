#!/usr/bin/env python3
"""Structural checks of the Grafana dashboards that a JSON-schema type check does not make.

- uids are unique, stable and prefixed `mde-lr-`; titles unique; tags set;
- a `datasource` variable of type datasource (query prometheus); `job` and `tenant` query
  variables on every dashboard, a `script` one where queries use $script; variables query
  through ${datasource}; "All" of `job` is the jobs found, never '.*' (up{job=~".*"} would count
  every target of the Prometheus);
- every panel and every query uses the datasource variable: no hard-coded datasource uid;
- panel ids unique, gridPos inside the 24-column grid and panels do not overlap;
- every query has an expr and a unique refId; rate()/increase()/*_over_time() ranges are
  $__rate_interval or $__range (never a hard-coded window); every exporter metric (and `up`) is
  filtered by job=~"$job", and those carrying a tenant label by tenant=~"$tenant";
- range queries over the metrics that carry trace-id exemplars ask for them (`exemplar: true`),
  and instant queries do not (Grafana draws exemplars on time series only).

Usage: check_dashboards.py FILE.json...
"""
import json
import re
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
NO_TENANT_LABEL = ("up", "mde_exporter_build_info", "mde_exporter_config_last_reload_successful")
# Series that carry a trace_id exemplar in OpenMetrics (src/record/events.rs, src/api/mod.rs,
# src/poll/collector/); of a histogram only the buckets do, not _sum and _count.
EXEMPLAR_METRICS = re.compile(r"\bmde_(liveresponse_script_(runs|failures|errors)_total|"
                              r"liveresponse_result_fetch_failures_total|api_requests_total|"
                              r"(api_request|exporter_poll)_duration_seconds_bucket)\b")


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def check(path, d, seen_uids, seen_titles):
    errs = []
    e = errs.append
    uid = d.get("uid", "")
    if not re.fullmatch(r"mde-lr-[a-z0-9-]+", uid) or len(uid) > 40:
        e(f"uid {uid!r} must match mde-lr-[a-z0-9-]+ and be at most 40 characters")
    if uid in seen_uids:
        e(f"uid {uid!r} used by {seen_uids[uid]} too")
    seen_uids[uid] = path
    if d.get("title") in seen_titles:
        e(f"title {d.get('title')!r} used twice")
    seen_titles.add(d.get("title"))
    if d.get("id") is not None:
        e("dashboard id must be null/absent (Grafana assigns it)")
    if "mde-liveresponse-exporter" not in d.get("tags", []):
        e("tag mde-liveresponse-exporter missing (dashboard links use it)")
    if not isinstance(d.get("schemaVersion"), int):
        e("schemaVersion missing")

    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        e("needs a variable 'datasource' of type datasource with query prometheus")
    text = json.dumps(d)
    wanted = ["job", "tenant"] + (["script"] if "$script" in text else [])
    for name in wanted:
        v = variables.get(name)
        if not v or v.get("type") != "query":
            e(f"needs a query variable {name!r}")
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not q or not q.startswith("label_values("):
            e(f"variable {name!r} should be a label_values() query")
        if v.get("datasource") != DS:
            e(f"variable {name!r} must query datasource ${{datasource}}")
        if name == "job":
            if not v.get("includeAll") or v.get("allValue") not in (None, ""):
                e("variable 'job' needs includeAll and no allValue (All = the jobs found)")
        elif not v.get("includeAll") or v.get("allValue") != ".*":
            e(f"variable {name!r} needs includeAll with allValue '.*'")

    # Any uid that is not the datasource variable or Grafana's built-in annotation source.
    for m in re.finditer(r'"uid": "([^"]*)"', text):
        if m.group(1) not in ("${datasource}", "-- Grafana --", uid):
            e(f"hard-coded uid {m.group(1)!r}")

    ids, boxes = set(), []
    for p in walk_panels(d.get("panels", [])):
        title = p.get("title", "?")
        where = f"panel {p.get('id')} {title!r}"
        if p.get("id") in ids:
            e(f"{where}: duplicate id")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24 or g["w"] <= 0 or g["h"] <= 0:
            e(f"{where}: bad gridPos {g}")
        else:
            for (ob, ot) in boxes:
                if g["x"] < ob["x"] + ob["w"] and ob["x"] < g["x"] + g["w"] and \
                        g["y"] < ob["y"] + ob["h"] and ob["y"] < g["y"] + g["h"]:
                    e(f"{where}: overlaps panel {ot!r}")
            boxes.append((g, title))
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DS:
            e(f"{where}: datasource must be {DS}")
        targets = p.get("targets", [])
        if not targets:
            e(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            e(f"{where}: refIds missing or not unique: {refs}")
        for t in targets:
            expr = t.get("expr", "")
            if t.get("datasource") != DS:
                e(f"{where} {t.get('refId')}: datasource must be {DS}")
            if not expr.strip():
                e(f"{where} {t.get('refId')}: empty expr")
            for m in re.finditer(r"\[([^\]]+)\]", expr):
                if m.group(1) not in ("$__rate_interval", "$__range"):
                    e(f"{where}: range [{m.group(1)}] should be $__rate_interval or $__range")
            for m in re.finditer(r"\b([a-z_:][a-z0-9_:]*)\s*(\{[^}]*\})?", expr):
                metric, sel = m.group(1), m.group(2) or ""
                if (metric.startswith("mde_") or metric == "up") and 'job=~"$job"' not in sel:
                    e(f"{where}: {metric} not filtered by job=~\"$job\"")
                if metric.startswith("mde_") and metric not in NO_TENANT_LABEL and '$tenant' not in sel:
                    e(f"{where}: {metric} not filtered by tenant=~\"$tenant\"")
            if t.get("instant") and t.get("exemplar"):
                e(f"{where} {t.get('refId')}: an instant query cannot show exemplars")
            if not t.get("instant") and EXEMPLAR_METRICS.search(expr) and t.get("exemplar") is not True:
                e(f"{where} {t.get('refId')}: range query over a metric with exemplars: set exemplar: true")
    return errs


def main() -> int:
    seen_uids, seen_titles, failed = {}, set(), False
    for path in sys.argv[1:]:
        with open(path) as f:
            d = json.load(f)
        errs = check(path, d, seen_uids, seen_titles)
        n_panels = sum(1 for p in walk_panels(d.get("panels", [])) if p.get("type") != "row")
        n_queries = sum(len(p.get("targets", [])) for p in walk_panels(d.get("panels", [])))
        for err in errs:
            print(f"FAIL {path}: {err}")
        print(f"{path}: uid {d.get('uid')}, {n_panels} panels, {n_queries} queries: {'FAILED' if errs else 'ok'}")
        failed |= bool(errs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

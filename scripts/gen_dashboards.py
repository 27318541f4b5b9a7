#!/usr/bin/env python3
"""Generate the Grafana dashboards in dashboards/ (the JSON files are committed).

Writing the dashboards as code keeps the three of them consistent (datasource variable, tenant
and script variables, links, units) and reviewable; the JSON is what users import or provision.
scripts/check-dashboards.sh regenerates them and fails when the committed JSON differs.

Usage: gen_dashboards.py [OUT_DIR]   (default: dashboards/ next to this script's parent)
Only the standard library is used.
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
T = 'tenant=~"$tenant"'
TS = 'tenant=~"$tenant",script=~"$script"'
TAGS = ["mde", "mde-liveresponse-exporter"]


# --- building blocks -------------------------------------------------------------------------

def target(expr, legend="__auto", ref="A", instant=False, fmt=None):
    t = {"datasource": DS, "editorMode": "code", "expr": expr, "legendFormat": legend, "range": not instant,
         "instant": instant, "refId": ref}
    if fmt:
        t["format"] = fmt
    return t


def thresholds(*steps):
    """steps: (value or None, color) pairs, the first value None (= -Infinity)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = ((None, "green"),)


def field_defaults(unit="short", steps=GREEN, decimals=None, min_=None, max_=None, custom=None):
    d = {"unit": unit, "thresholds": thresholds(*steps)}
    if decimals is not None:
        d["decimals"] = decimals
    if min_ is not None:
        d["min"] = min_
    if max_ is not None:
        d["max"] = max_
    if custom is not None:
        d["custom"] = custom
    return d


def timeseries(title, desc, targets, unit="short", stack=False, steps=GREEN, min_=0, max_=None):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
              "spanNulls": False, "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": field_defaults(unit, steps, min_=min_, max_=max_, custom=custom),
                            "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title, desc, targets, unit="short", steps=GREEN, decimals=None, color_mode="value"):
    return {"type": "stat", "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": field_defaults(unit, steps, decimals), "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": color_mode, "graphMode": "none", "justifyMode": "auto",
                        "orientation": "auto", "textMode": "auto"}}


def bargauge(title, desc, targets, unit="percentunit", steps=GREEN, max_=1):
    return {"type": "bargauge", "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": field_defaults(unit, steps, min_=0, max_=max_), "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}}


def table(title, desc, targets, exclude=(), rename=None, unit_overrides=None, sort_by=None):
    """Instant queries in table format, merged on their common labels."""
    overrides = []
    for field, unit in (unit_overrides or {}).items():
        overrides.append({"matcher": {"id": "byName", "options": field},
                          "properties": [{"id": "unit", "value": unit}]})
    organize = {"excludeByName": {k: True for k in ("Time", "__name__", "job", "instance", *exclude)},
                "renameByName": rename or {}, "indexByName": {}}
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by[0], "desc": sort_by[1]}]
    return {"type": "table", "title": title, "description": desc, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": field_defaults("short", GREEN, custom={"align": "auto", "filterable": True}),
                            "overrides": overrides},
            "options": options,
            "transformations": [{"id": "merge", "options": {}}, {"id": "organize", "options": organize}]}


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(items):
    """items: list of (panel, width, height); rows take the full width. Assigns ids and gridPos."""
    x = y = line_h = 0
    out = []
    for i, (p, w, h) in enumerate(items, start=1):
        if p["type"] == "row":
            w, h = 24, 1
        if x + w > 24 or p["type"] == "row":
            if x:
                y += line_h
            x, line_h = 0, 0
        p = dict(p, id=i, gridPos={"h": h, "w": w, "x": x, "y": y})
        out.append(p)
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + 1, 0
    return out


def variables(with_script):
    v = [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
          "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
          "regex": "", "skipUrlSync": False}]

    def q(name, label, expr):
        return {"name": name, "label": label, "type": "query", "datasource": DS,
                "query": {"query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery",
                                              "qryType": 1},
                "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [],
                "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1}

    v.append(q("tenant", "Tenant", "label_values(mde_exporter_poll_success, tenant)"))
    if with_script:
        v.append(q("script", "Script", 'label_values(mde_liveresponse_script_runs_total{tenant=~"$tenant"}, script)'))
    return v


def dashboard(uid, title, desc, panels, with_script=False):
    return {
        "uid": uid, "title": title, "description": desc, "tags": TAGS, "editable": True,
        "graphTooltip": 1, "timezone": "browser", "schemaVersion": 39, "version": 1, "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "MDE Live Response", "type": "dashboards", "tags": ["mde-liveresponse-exporter"],
                   "asDropdown": False, "includeVars": True, "keepTime": True, "icon": "external link",
                   "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": variables(with_script)},
        "panels": layout(panels),
    }


# --- the dashboards --------------------------------------------------------------------------

def overview():
    runs = f"mde_liveresponse_script_runs_total{{{TS}}}"
    fails = f"mde_liveresponse_script_failures_total{{{TS}}}"
    errs = f"mde_liveresponse_script_errors_total{{{TS}}}"
    exit_code = f"mde_liveresponse_script_exit_code{{{TS}}}"
    red_if_any = ((None, "green"), (1, "red"))
    panels = [
        (row("Script results"), 24, 1),
        (stat("Transcripts retrieved", "RunScript transcripts retrieved in the dashboard's time range.",
              [target(f"sum(increase({runs}[$__range])) or vector(0)", "runs", instant=True)], decimals=0), 6, 4),
        (stat("Failed runs", "Transcripts with a non-zero exit code in the time range.",
              [target(f"sum(increase({fails}[$__range])) or vector(0)", "failures", instant=True)],
              steps=red_if_any, decimals=0), 6, 4),
        (stat("Failure ratio", "Failed transcripts / retrieved transcripts over the time range.",
              [target(f"sum(increase({fails}[$__range])) / sum(increase({runs}[$__range]))", "ratio",
                      instant=True)],
              unit="percentunit", steps=((None, "green"), (0.05, "orange"), (0.2, "red")), decimals=1), 6, 4),
        (stat("Machines whose last run failed", "Machines (and scripts) whose latest retrieved run exited non-zero.",
              [target(f"count({exit_code} != 0) or vector(0)", "machines", instant=True)],
              steps=red_if_any, decimals=0), 6, 4),
        (timeseries("Runs by script", "Transcripts retrieved per second, by script.",
                    [target(f"sum by (script) (rate({runs}[$__rate_interval]))", "{{script}}")], unit="ops"), 8, 8),
        (timeseries("Failures by script", "Transcripts with a non-zero exit code per second, by script.",
                    [target(f"sum by (script) (rate({fails}[$__rate_interval]))", "{{script}}")], unit="ops"), 8, 8),
        (timeseries("Errors by script", "Transcripts whose script wrote to its error stream, per second, by script.",
                    [target(f"sum by (script) (rate({errs}[$__rate_interval]))", "{{script}}")], unit="ops"), 8, 8),
        (timeseries("Failure ratio by script", "Failed / retrieved transcripts, by script (empty while none "
                    "is retrieved).",
                    [target(f"sum by (script) (rate({fails}[$__rate_interval])) / "
                            f"sum by (script) (rate({runs}[$__rate_interval]))", "{{script}}")],
                    unit="percentunit", max_=1), 12, 8),
        (timeseries("Live Response commands and actions",
                    "Commands by type and commandStatus, and final machine actions by status, per second.",
                    [target(f"sum by (command, status) (rate(mde_liveresponse_commands_total{{{T}}}[$__rate_interval]))",
                            "{{command}} {{status}}", "A"),
                     target(f"sum by (status) (rate(mde_liveresponse_actions_total{{{T}}}[$__rate_interval]))",
                            "action {{status}}", "B")], unit="ops"), 12, 8),
        (row("Machines"), 24, 1),
        (table("Machines whose last run failed",
               "Latest retrieved run per machine and script where the exit code is not 0.",
               [target(f"{exit_code} != 0", "", "A", instant=True, fmt="table"),
                target(f"1000 * (mde_liveresponse_script_last_run_timestamp_seconds{{{TS}}} "
                       f"and on (tenant, machine, script) ({exit_code} != 0))", "", "B", instant=True, fmt="table")],
               rename={"Value #A": "exit code", "Value #B": "last run"},
               unit_overrides={"last run": "dateTimeAsIso"}, sort_by=("last run", True)), 24, 8),
        (table("Last exit code per machine", "Latest retrieved run of every machine and script.",
               [target(exit_code, "", "A", instant=True, fmt="table"),
                target(f"mde_liveresponse_script_errors_present{{{TS}}}", "", "B", instant=True, fmt="table"),
                target(f"1000 * mde_liveresponse_script_last_run_timestamp_seconds{{{TS}}}", "", "C", instant=True,
                       fmt="table")],
               rename={"Value #A": "exit code", "Value #B": "errors", "Value #C": "last run"},
               unit_overrides={"last run": "dateTimeAsIso"}, sort_by=("last run", True)), 24, 10),
    ]
    return dashboard("mde-lr-overview", "MDE Live Response / Overview",
                     "Live Response script results: runs, failures and errors by script, the machines whose last "
                     "run failed, last exit codes.", panels, with_script=True)


def quota():
    used = f'mde_api_quota_used{{{T}}}'
    limit = f'mde_api_quota_limit{{{T}}}'

    def left(window):
        sel = f'{T},window="{window}"'
        return f"min by (tenant, endpoint) (mde_api_quota_remaining{{{sel}}} / (mde_api_quota_limit{{{sel}}} > 0))"

    low = ((None, "red"), (0.1, "orange"), (0.25, "green"))
    panels = [
        (row("Quota windows"), 24, 1),
        (bargauge("Quota left, 1 minute window", "Share of the 100 calls/min budget the exporter may still "
                  "spend, per endpoint (endpoint=\"all\" for a shared budget); lowered after 429s.",
                  [target(left("1m"), "{{tenant}} {{endpoint}}", instant=True)], steps=low), 12, 6),
        (bargauge("Quota left, 1 hour window", "Share of the 1500 calls/h budget the exporter may still spend, "
                  "per endpoint.",
                  [target(left("1h"), "{{tenant}} {{endpoint}}", instant=True)], steps=low), 12, 6),
        (timeseries("Calls used per window", "Calls counted in each quota window, with its limit.",
                    [target(f"sum by (tenant, endpoint, window) ({used})", "{{tenant}} {{endpoint}} {{window}}", "A"),
                     target(f"max by (window) ({limit})", "limit {{window}}", "B")]), 12, 8),
        (timeseries("Calls left per window", "Calls the exporter may still make in each window.",
                    [target(f"sum by (tenant, endpoint, window) (mde_api_quota_remaining{{{T}}})",
                            "{{tenant}} {{endpoint}} {{window}}")]), 12, 8),
        (row("Throttling and backlog"), 24, 1),
        (timeseries("Throttled responses (429)", "429 Too Many Requests answers per second, by endpoint.",
                    [target(f"sum by (tenant, endpoint) (rate(mde_api_throttled_total{{{T}}}[$__rate_interval]))",
                            "{{tenant}} {{endpoint}}")], unit="ops"), 8, 8),
        (timeseries("Retry-After", "The last Retry-After the API sent, by endpoint.",
                    [target(f"max by (tenant, endpoint) (mde_api_retry_after_seconds{{{T}}})",
                            "{{tenant}} {{endpoint}}")], unit="s"), 8, 8),
        (timeseries("Backlog waiting for quota", "Finished command results waiting to be retrieved.",
                    [target(f"sum by (tenant) (mde_liveresponse_pending_results{{{T}}})", "{{tenant}}")],
                    steps=((None, "green"), (100, "orange"))), 8, 8),
        (row("Requests"), 24, 1),
        (timeseries("API requests by endpoint and code", "Requests per second; code=\"error\" is a transport "
                    "failure.",
                    [target(f"sum by (endpoint, code) (rate(mde_api_requests_total{{{T}}}[$__rate_interval]))",
                            "{{endpoint}} {{code}}")], unit="reqps", stack=True), 12, 8),
        (timeseries("API request latency", "p50 and p95 request duration by endpoint.",
                    [target("histogram_quantile(0.95, sum by (le, endpoint) (rate("
                            f"mde_api_request_duration_seconds_bucket{{{T}}}[$__rate_interval])))",
                            "p95 {{endpoint}}", "A"),
                     target("histogram_quantile(0.5, sum by (le, endpoint) (rate("
                            f"mde_api_request_duration_seconds_bucket{{{T}}}[$__rate_interval])))",
                            "p50 {{endpoint}}", "B")], unit="s"), 12, 8),
    ]
    return dashboard("mde-lr-api-quota", "MDE Live Response / API quota",
                     "MDE API quota (100 calls/min and 1500 calls/h per endpoint): used and left per window, "
                     "throttling, Retry-After, backlog waiting for quota, request latency.", panels)


def health():
    up = 'up{job="mde-liveresponse-exporter"}'
    ok_bad = ((None, "red"), (1, "green"))
    panels = [
        (row("Exporter"), 24, 1),
        (stat("Exporters up", "Scrape targets of job mde-liveresponse-exporter that answer.",
              [target(f"sum({up})", "up", instant=True)], steps=ok_bad, decimals=0), 6, 4),
        (stat("Config reload", "1 if the last configuration reload succeeded.",
              [target("min(mde_exporter_config_last_reload_successful)", "reload", instant=True)], steps=ok_bad,
              decimals=0), 6, 4),
        (stat("Token acquisition", "Per tenant: 1 if the last OAuth2 token request succeeded.",
              [target(f"mde_exporter_token_success{{{T}}}", "{{tenant}}", instant=True)], steps=ok_bad,
              decimals=0), 6, 4),
        (table("Build", "Version, revision and rustc of each exporter.",
               [target("mde_exporter_build_info", "", instant=True, fmt="table")],
               exclude=("Value",)), 6, 4),
        (row("Polls"), 24, 1),
        (timeseries("Poll success", "1 if the last poll of the tenant succeeded.",
                    [target(f"mde_exporter_poll_success{{{T}}}", "{{tenant}}")], max_=1), 8, 8),
        (timeseries("Time since last successful poll", "Age of the latest successful poll per tenant.",
                    [target(f"time() - mde_exporter_last_poll_success_timestamp_seconds{{{T}}}", "{{tenant}}")],
                    unit="s", steps=((None, "green"), (900, "red"))), 8, 8),
        (timeseries("Poll duration", "p95 and average poll duration per tenant.",
                    [target("histogram_quantile(0.95, sum by (le, tenant) (rate("
                            f"mde_exporter_poll_duration_seconds_bucket{{{T}}}[$__rate_interval])))",
                            "p95 {{tenant}}", "A"),
                     target(f"sum by (tenant) (rate(mde_exporter_poll_duration_seconds_sum{{{T}}}[$__rate_interval]))"
                            f" / sum by (tenant) (rate(mde_exporter_poll_duration_seconds_count{{{T}}}"
                            "[$__rate_interval]))", "avg {{tenant}}", "B")], unit="s"), 8, 8),
        (row("Results and API"), 24, 1),
        (timeseries("Result fetch failures by reason", "Command results given up, per second, by reason.",
                    [target(f"sum by (tenant, reason) (rate(mde_liveresponse_result_fetch_failures_total{{{T}}}"
                            "[$__rate_interval]))", "{{tenant}} {{reason}}")], unit="ops", stack=True), 12, 8),
        (timeseries("API responses by code", "MDE API and token endpoint answers per second, by HTTP code "
                    "(\"error\" = transport failure).",
                    [target(f"sum by (code) (rate(mde_api_requests_total{{{T}}}[$__rate_interval]))", "{{code}}")],
                    unit="reqps", stack=True), 12, 8),
    ]
    return dashboard("mde-lr-exporter-health", "MDE Live Response / Exporter health",
                     "Exporter self-health: up, poll success and age, poll duration, token acquisition, config "
                     "reload, result fetch failures by reason.", panels)


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "dashboards")
    os.makedirs(out, exist_ok=True)
    for name, d in (("mde-lr-overview", overview()), ("mde-lr-api-quota", quota()),
                    ("mde-lr-exporter-health", health())):
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(d, f, indent=2, sort_keys=False)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

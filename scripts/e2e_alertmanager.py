#!/usr/bin/env python3
"""The webhook receiver, the Alertmanager config and the checks of scripts/e2e-alertmanager.sh.

  e2e_alertmanager.py receive PORT_FILE LOG.jsonl
      A webhook receiver on 127.0.0.1 (a free port, written to PORT_FILE): every POST is
      appended to LOG.jsonl as {"path": "/<receiver>", "body": <the Alertmanager payload>}.

  e2e_alertmanager.py config IN.yml OUT.yml WEBHOOK_BASE TEMPLATES_DIR
      The committed example (deploy/alertmanager/alertmanager.yml) with every receiver replaced
      by a webhook to WEBHOOK_BASE/<receiver name>, the templates path made absolute and the
      group timings shortened to seconds. The route tree and the inhibitions stay as committed.

  e2e_alertmanager.py check PROM_URL AM_URL LOG.jsonl EXPORTER_URL DEADLINE [--fetch-transcript]
      1. every failed-script, script-errors and not-run notification of tenant `demo` reaches
         the receiver of its device group's route (Finance Workstations -> demo-finance-it,
         SQL Servers -> demo-dba, Engineering Workstations -> demo-engineering-it, none ->
         demo-soc), grouped by its rbac_group, with severity, summary, description, runbook_url
         and a transcript_url EXPORTER_URL/transcripts?tenant=demo&machine=..&script=<its script>;
      2. for MdeLiveResponseScriptFailed in two device groups: the machine its transcript_url
         names is in that group (mde_machine_info in Prometheus) and its last run of the script
         failed (mde_liveresponse_script_exit_code != 0);
      3. inhibitions, through the Alertmanager API (alerts posted to /api/v2/alerts for a tenant
         of their own): MdeExporterAuthFailing suppresses that tenant's MdeLiveResponseScriptFailed,
         not another tenant's; MdeApiThrottled suppresses MdeLiveResponseResultsWaitingForQuota;
      4. with --fetch-transcript: GET transcript_url (Accept: application/json) answers 200
         with the alert's tenant, machine and script and the failing exit code Prometheus has.
         Off by default until the exporter serves /transcripts (issue #22 item 1).

Standard library only, except `config` (PyYAML, from target/ci-tools/venv).
"""
import datetime
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

# The device-group routes of tenant demo in the example, for a warning (the default severity
# of MdeLiveResponseScriptFailed). The demo's machines are in these three groups.
GROUP_RECEIVER = {
    "Finance Workstations": "demo-finance-it",
    "SQL Servers": "demo-dba",
    "Engineering Workstations": "demo-engineering-it",
}


def receive(port_file, log_path):
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {"unparsed": body.decode(errors="replace")}
            with lock, open(log_path, "a") as f:
                f.write(json.dumps({"path": self.path, "body": payload}) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, fmt, *args):
            sys.stderr.write("receiver: " + fmt % args + "\n")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    open(log_path, "a").close()
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    srv.serve_forever()


def config(src, dst, webhook_base, templates_dir):
    import yaml

    with open(src) as f:
        cfg = yaml.safe_load(f)
    for r in cfg["receivers"]:
        name = r["name"]
        for key in [k for k in r if k.endswith("_configs")]:
            del r[key]
        r["webhook_configs"] = [{"url": f"{webhook_base}/{name}", "send_resolved": False}]
    cfg["templates"] = [os.path.join(os.path.abspath(templates_dir), "*.tmpl")]
    cfg["route"].update(group_wait="1s", group_interval="2s", repeat_interval="1h")
    with open(dst, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)


def http_json(url, data=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.load(r)


def prom_query(prom, q):
    _, r = http_json(prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q}))
    return r["data"]["result"] if r.get("status") == "success" else []


def notifications(log_path):
    with open(log_path) as f:
        lines = f.read().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def promql_str(s):
    return json.dumps(s)  # a PromQL double-quoted string accepts JSON's escapes


SCRIPT_ALERTS = ("MdeLiveResponseScriptFailed", "MdeLiveResponseScriptErrors", "MdeLiveResponseScriptNotRun")
GROUPS_WANTED = 2  # device groups with a checked MdeLiveResponseScriptFailed notification


def check_one(exporter_url, receiver, body, a):
    """The problems of one script alert's notification; [] when it is right."""
    labels, ann = a.get("labels", {}), a.get("annotations", {})
    group = labels.get("rbac_group", "")
    want = GROUP_RECEIVER.get(group, "demo-soc")
    if receiver != want:
        return [f"routed to {receiver}, want {want}"]
    if body.get("groupLabels", {}).get("rbac_group", "") != group:
        return [f"notification grouped by {body.get('groupLabels')}"]
    url = ann.get("transcript_url", "")
    parsed = urllib.parse.urlsplit(url)
    qs = dict(urllib.parse.parse_qsl(parsed.query))
    base = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
    if base != exporter_url + "/transcripts" or qs.get("tenant") != "demo" \
            or qs.get("script") != labels.get("script") or not qs.get("machine"):
        return [f"transcript_url {url!r} is not {exporter_url}/transcripts?tenant=demo&machine=..&script=<its script>"]
    problems = [f"annotation {k} missing" for k in ("summary", "description", "runbook_url") if not ann.get(k)]
    if labels.get("severity") != "warning":
        problems.append(f"severity {labels.get('severity')}")
    return problems


def check_routed(prom, log_path, exporter_url, deadline):
    """Steps 1-3: every script alert notification of tenant demo is routed by its device group
    and links a transcript; GROUPS_WANTED groups have a MdeLiveResponseScriptFailed whose linked
    machine is in the group and failing. Returns (a passing alert, its exit code) or (None, None)."""
    seen, problems, passed = set(), [], {}
    while time.monotonic() < deadline:
        for n in notifications(log_path):
            receiver = n["path"].lstrip("/")
            for a in n["body"].get("alerts", []):
                labels = a.get("labels", {})
                if labels.get("alertname") not in SCRIPT_ALERTS or labels.get("tenant") != "demo":
                    continue
                group = labels.get("rbac_group", "")
                key = (receiver, labels["alertname"], group, labels.get("script"))
                if key in seen:
                    continue
                seen.add(key)
                where = f"{labels['alertname']} {labels.get('script')} in {group or '(no device group)'} at /{receiver}"
                found = check_one(exporter_url, receiver, n["body"], a)
                problems += [f"{where}: {p}" for p in found]
                if found or labels["alertname"] != "MdeLiveResponseScriptFailed" or group not in GROUP_RECEIVER \
                        or group in passed:
                    continue
                # The linked machine: in the alert's device group, and its last run failed.
                machine = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(a["annotations"]["transcript_url"]).query))["machine"]
                sel = f'tenant="demo",machine={promql_str(machine)}'
                info = prom_query(prom, f"mde_machine_info{{{sel}}}")
                in_group = info[0]["metric"].get("rbac_group", "") if info else ""
                code = prom_query(prom, f"mde_liveresponse_script_exit_code{{{sel},script={promql_str(labels['script'])}}}")
                if in_group != group:
                    problems.append(f"{where}: transcript_url names {machine}, in device group {in_group!r}")
                elif not code or float(code[0]["value"][1]) == 0:
                    problems.append(f"{where}: {machine} has no failing last run of {labels['script']}")
                else:
                    passed[group] = (a, receiver, float(code[0]["value"][1]))
                    print(f"e2e: {where}: routed to its device group's receiver; transcript_url "
                          f"{a['annotations']['transcript_url']} (exit code {code[0]['value'][1]} in Prometheus)")
        if problems or len(passed) >= GROUPS_WANTED:
            break
        time.sleep(1)
    for p in problems:
        print(f"FAIL: {p}")
    if problems:
        return None, None
    if len(passed) < GROUPS_WANTED:
        got = sorted({f"{r}: {n} {g} / {s}" for r, n, g, s in seen}) or ["nothing"]
        print(f"FAIL: MdeLiveResponseScriptFailed notifications checked for {len(passed)} device group(s) of tenant "
              f"demo before the deadline, want {GROUPS_WANTED}; received: {', '.join(got)}")
        return None, None
    print(f"e2e: {len(seen)} script alert notifications of tenant demo, each at its device group's receiver "
          f"with a transcript_url")
    a, _, code = next(iter(passed.values()))
    return a, code


def post_alerts(am, alerts):
    now = datetime.datetime.now(datetime.timezone.utc)
    body = [{"labels": labels, "annotations": {"summary": "e2e"},
             "startsAt": now.isoformat(), "endsAt": (now + datetime.timedelta(minutes=10)).isoformat()}
            for labels in alerts]
    req = urllib.request.Request(am + "/api/v2/alerts", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def check_inhibitions(am, deadline):
    """Step 4: each case is (the alert, its expected state, inhibiting alert name or None)."""
    sf = {"alertname": "MdeLiveResponseScriptFailed", "severity": "warning", "script": "triage.ps1",
          "rbac_group": "Finance Workstations"}
    post_alerts(am, [
        {"alertname": "MdeExporterAuthFailing", "severity": "critical", "tenant": "e2e-inhibited"},
        dict(sf, tenant="e2e-inhibited"),
        dict(sf, tenant="e2e-other"),
        {"alertname": "MdeApiThrottled", "severity": "critical", "tenant": "e2e-inhibited", "endpoint": "list_machine_actions"},
        {"alertname": "MdeLiveResponseResultsWaitingForQuota", "severity": "warning", "tenant": "e2e-inhibited"},
    ])
    want = {
        ("MdeLiveResponseScriptFailed", "e2e-inhibited"): "suppressed",
        ("MdeLiveResponseScriptFailed", "e2e-other"): "active",
        ("MdeLiveResponseResultsWaitingForQuota", "e2e-inhibited"): "suppressed",
        ("MdeExporterAuthFailing", "e2e-inhibited"): "active",
    }
    got = {}
    while time.monotonic() < deadline:
        _, alerts = http_json(am + "/api/v2/alerts?" + urllib.parse.urlencode({"filter": 'tenant=~"e2e-.*"'}))
        got = {(a["labels"]["alertname"], a["labels"]["tenant"]): a["status"]["state"] for a in alerts}
        if all(got.get(k) == v for k, v in want.items()):
            break
        time.sleep(0.5)
    ok = True
    for k, v in want.items():
        if got.get(k) != v:
            print(f"FAIL: inhibition: {k[0]} of tenant {k[1]} is {got.get(k)}, want {v}")
            ok = False
    if ok:
        print("e2e: inhibitions: MdeExporterAuthFailing suppresses the script alert of its tenant only; "
              "MdeApiThrottled suppresses MdeLiveResponseResultsWaitingForQuota")
    return ok


def fetch_transcript(alert, want_code):
    """Step 5: the link answers the failing exit code."""
    url = alert["annotations"]["transcript_url"]
    labels = alert["labels"]
    machine = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["machine"]
    try:
        status, t = http_json(url, headers={"Accept": "application/json"})
    except (urllib.error.URLError, ValueError) as e:
        print(f"FAIL: GET {url}: {e}")
        return False
    problems = [f"{k} is {t.get(k)!r}, want {v!r}" for k, v in
                (("tenant", labels["tenant"]), ("machine", machine), ("script", labels["script"])) if t.get(k) != v]
    if t.get("exit_code") in (None, 0) or float(t["exit_code"]) != want_code:
        problems.append(f"exit_code is {t.get('exit_code')!r}, want {want_code:g} (Prometheus)")
    for p in problems:
        print(f"FAIL: GET {url}: {p}")
    if not problems:
        print(f"e2e: GET {url} -> {status}, exit_code {t['exit_code']}")
    return not problems


def check(prom, am, log_path, exporter_url, deadline_s, fetch):
    deadline = time.monotonic() + float(deadline_s)
    alert, code = check_routed(prom, log_path, exporter_url.rstrip("/"), deadline)
    ok = alert is not None
    ok = check_inhibitions(am, deadline + 15) and ok
    if fetch and alert is not None:
        ok = fetch_transcript(alert, code) and ok
    elif not fetch:
        print("e2e: transcript fetch off (E2E_FETCH_TRANSCRIPT=1 or --fetch-transcript turns it on)")
    return 0 if ok else 1


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "receive":
        receive(*args)
        return 0
    if cmd == "config":
        config(*args)
        return 0
    if cmd == "check":
        fetch = "--fetch-transcript" in args
        args = [a for a in args if a != "--fetch-transcript"]
        return check(*args, fetch=fetch)
    raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Validate the Alertmanager example offline (issue #22):
#   amtool check-config            deploy/alertmanager/alertmanager.yml and its templates
#   amtool config routes test      each case below reaches exactly the receiver it names
#   amtool template render         the notification templates on a sample alert: the transcript,
#                                  runbook and dashboard links come first, label values escaped
# Needs amtool (Debian's prometheus-alertmanager package; scripts/test.sh installs it). The
# example is sent real alerts by scripts/e2e-alertmanager.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned amtool 0.35 of scripts/tools.sh when it is built, else Debian's.
[ -x .tools/bin/amtool ] && PATH=$PWD/.tools/bin:$PATH
command -v amtool >/dev/null || { echo "check-alertmanager: amtool not found (apt-get install prometheus-alertmanager)" >&2; exit 1; }
config=deploy/alertmanager/alertmanager.yml
templates='deploy/alertmanager/templates/*.tmpl'

echo "== $(amtool --version 2>&1 | head -1)"
echo "== amtool check-config $config"
amtool check-config "$config"

echo "== amtool config routes test"
failed=0
# expected receiver | labels of the alert
while IFS='|' read -r want labels; do
    [ -z "$want" ] && continue
    # shellcheck disable=SC2086 # the labels are words on purpose (eval keeps the single-quoted words whole; the double quotes inside reach amtool, which 0.35 asks for: its UTF-8 matcher parser refuses an unquoted value with a space)
    got=$(eval "amtool config routes test --config.file=$config $labels" 2>/dev/null) || true
    if [ "$got" = "$want" ]; then
        echo "ok   $want <- $labels"
    else
        echo "FAIL $labels: got receiver(s) '$got', want '$want'"
        failed=1
    fi
done <<'CASES'
demo-finance-it|alertname=MdeLiveResponseScriptFailed severity=warning tenant=demo 'rbac_group="Finance Workstations"' script=triage.ps1
demo-finance-it|alertname=MdeLiveResponseScriptErrors severity=warning tenant=demo 'rbac_group="Finance Workstations"' script=triage.ps1
demo-dba|alertname=MdeLiveResponseScriptNotRun severity=warning tenant=demo 'rbac_group="SQL Servers"' script=get-av-status.ps1
demo-dba-pager|alertname=MdeLiveResponseScriptFailed severity=critical tenant=demo 'rbac_group="SQL Servers"' script=triage.ps1
demo-engineering-it|alertname=MdeLiveResponseScriptFailed severity=warning tenant=demo 'rbac_group="Engineering Workstations"' script=triage.ps1
demo-soc|alertname=MdeLiveResponseScriptFailed severity=warning tenant=demo script=triage.ps1
demo-soc|alertname=MdeLiveResponseScriptFailed severity=warning tenant=demo 'rbac_group="Unassigned"' script=triage.ps1
demo-soc|alertname=MdeLiveResponseScriptErrorBudgetBurn severity=critical tenant=demo script=triage.ps1 long=1h short=5m
demo-soc|alertname=MdeApiThrottled severity=critical tenant=demo endpoint=list_machine_actions
contoso-finance-it|alertname=MdeLiveResponseScriptFailed severity=warning tenant=contoso 'rbac_group="Finance Paris"' script=triage.ps1
contoso-soc|alertname=MdeLiveResponseScriptFailed severity=warning tenant=contoso 'rbac_group="SQL Servers"' script=triage.ps1
contoso-soc|alertname=MdeExporterAuthFailing severity=critical tenant=contoso
mde-exporter-ops|alertname=MdeExporterDown severity=critical job=mde-liveresponse-exporter instance=exporter:9717
mde-exporter-ops|alertname=MdeExporterConfigReloadFailed severity=warning instance=exporter:9717
mde-exporter-ops|alertname=MdeLiveResponseScriptFailed severity=warning tenant=unknown-tenant 'rbac_group="Finance Workstations"' script=triage.ps1
CASES

echo "== amtool template render $templates"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/data.json" <<'JSON'
{"receiver": "demo-finance-it", "status": "firing", "externalURL": "http://alertmanager.example:9093",
 "groupLabels": {"alertname": "MdeLiveResponseScriptFailed", "tenant": "demo", "rbac_group": "Finance Workstations", "script": "Collect & Zip.ps1"},
 "commonLabels": {}, "commonAnnotations": {},
 "alerts": [{"status": "firing", "fingerprint": "0", "generatorURL": "http://prometheus.example:9090/graph",
   "startsAt": "2026-12-02T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
   "labels": {"alertname": "MdeLiveResponseScriptFailed", "severity": "warning", "tenant": "demo", "rbac_group": "Finance Workstations", "script": "Collect & Zip.ps1"},
   "annotations": {"summary": "Live Response script Collect & Zip.ps1 failed on 2 machine(s) in tenant demo",
     "description": "The last run of Collect & Zip.ps1 exited with a non-zero code <on purpose>.",
     "runbook_url": "https://runbooks.example/#mdeliveresponsescriptfailed",
     "transcript_url": "http://exporter.example:9717/transcripts?tenant=demo&machine=ws-fin-1.demo.local&script=Collect+%26+Zip.ps1",
     "top_signature": "Get-Item : Cannot find path <str> because it does not exist. [PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand] (ObjectNotFound, ItemNotFoundException) (2 machine(s))",
     "signature_url": "http://exporter.example:9717/signatures?tenant=demo&script=Collect+%26+Zip.ps1&signature=3f2a9c01b7de"}}]}
JSON
render() {
    amtool template render --template.glob="$templates" --template.data="$tmp/data.json" \
        --template.type="$1" --template.text="{{ template \"$2\" . }}"
}
render text mde.title >"$tmp/title"
render text mde.text >"$tmp/text"
render html mde.html >"$tmp/html"
render text mde.first_link >"$tmp/first_link"
expect() { # file, description, grep -E pattern
    if grep -qE -- "$3" "$1"; then echo "ok   $2"; else echo "FAIL $2: no /$3/ in"; sed 's/^/    /' "$1"; failed=1; fi
}
expect "$tmp/title" "title names the alert, tenant, device group and script" \
    '^\[FIRING:1\] MdeLiveResponseScriptFailed demo / Finance Workstations / Collect & Zip\.ps1$'
# The text body starts with why (the top failure signature, #36) and the page of its machines,
# then the links, in this order.
head -n 2 "$tmp/text" >"$tmp/why"
expect "$tmp/why" "text: line 1 is the top failure signature" \
    '^Why: Get-Item : Cannot find path <str> because it does not exist\. \[PathNotFound,.*\(2 machine\(s\)\)$'
expect "$tmp/why" "text: line 2 is the page of the machines failing that way" \
    '^Machines failing that way: http://exporter\.example:9717/signatures\?tenant=demo&script=Collect\+%26\+Zip\.ps1&signature=3f2a9c01b7de$'
sed -n 3,5p "$tmp/text" >"$tmp/links"
expect "$tmp/links" "text: line 3 is the transcript link" \
    '^Transcript: http://exporter\.example:9717/transcripts\?tenant=demo&machine=ws-fin-1\.demo\.local&script=Collect\+%26\+Zip\.ps1$'
expect "$tmp/links" "text: line 4 is the runbook link" '^Runbook: https://runbooks\.example/#mdeliveresponsescriptfailed$'
expect "$tmp/links" "text: line 5 is the dashboard link, tenant, script and device group URL-escaped" \
    '^Dashboard: http://localhost:3000/d/mde-lr-overview\?orgId=1&var-tenant=demo&var-script=Collect\+%26\+Zip\.ps1&var-rbac_group=Finance\+Workstations$'
expect "$tmp/text" "text: summary and labels after the links" 'rbac_group="Finance Workstations"'
expect "$tmp/first_link" "first_link (Slack title link) is the transcript" '^http://exporter\.example:9717/transcripts\?'
expect "$tmp/html" "html: the transcript link comes before the runbook and dashboard links" \
    '<p><a href="http://exporter\.example:9717/transcripts\?tenant=demo&amp;machine=ws-fin-1\.demo\.local&amp;script=Collect[^"]*">Transcript</a> · <a href="https://runbooks\.example/#mdeliveresponsescriptfailed">Runbook</a> · <a href="http://localhost:3000/d/mde-lr-overview\?[^"]*">Dashboard</a></p>'
grep -A1 '^<div style="margin-bottom' "$tmp/html" | tail -n 1 >"$tmp/html_first"
expect "$tmp/html_first" "html: the top failure signature comes first, escaped, with the page of its machines" \
    '^<p><b>Why:</b> <code>Get-Item : Cannot find path &lt;str&gt; because.*</code> · <a href="http://exporter\.example:9717/signatures\?tenant=demo&amp;script=Collect(\+|&#43;)%26(\+|&#43;)Zip\.ps1&amp;signature=3f2a9c01b7de">machines failing that way</a></p>$'
expect "$tmp/html" "html: annotation text is escaped" 'non-zero code &lt;on purpose&gt;\.'
if grep -q '<on purpose>' "$tmp/html"; then echo "FAIL html: unescaped annotation text"; failed=1; fi

[ "$failed" = 0 ] || { echo "check-alertmanager: FAILED" >&2; exit 1; }
echo "check-alertmanager: OK"

#!/usr/bin/env python3
"""Structural checks of rules/mde-liveresponse.rules.yml that promtool does not make.

- every alert is CamelCase with an MdeLiveResponse/MdeApi/MdeExporter prefix, has a
  `severity` label and `summary`, `description` and `runbook_url` annotations;
- every runbook_url points at docs/runbook.md#<alertname-lowercase>, that anchor is a heading of
  docs/runbook.md (GitHub's slug of it), and the heading is `### <AlertName>`;
- every alert has at least one promtool test case where it fires and one where it must not;
- recording rule names follow level:metric:operations.

Usage: check_rules.py RULES_FILE TESTS_DIR RUNBOOK_MD
"""
import glob
import os
import re
import sys

import yaml

RUNBOOK = "https://github.com/mde-liveresponse-exporter/mde-liveresponse-exporter/blob/main/docs/runbook.md#"


def slug(text: str) -> str:
    """GitHub's heading anchor (as scripts/check_links.py computes it)."""
    text = re.sub(r"`([^`]*)`", r"\1", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def main() -> int:
    rules_file, tests_dir, runbook_md = sys.argv[1:4]
    with open(rules_file) as f:
        groups = yaml.safe_load(f)["groups"]
    alerts, records, errors = {}, [], []
    for g in groups:
        for r in g["rules"]:
            if "alert" in r:
                alerts[r["alert"]] = r
            else:
                records.append(r["record"])

    with open(runbook_md) as f:
        # The alert sections are the `### Name` headings of docs/runbook.md; the anchors are the
        # slugs of all its headings (outside fenced code).
        text = re.sub(r"^```.*?^```", "", f.read(), flags=re.M | re.S)
        sections = {m.group(1) for m in re.finditer(r"^### (\S+)\s*$", text, re.M)}
        anchors = {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.*?)\s*$", text, re.M)}

    for name, r in alerts.items():
        if not re.fullmatch(r"(MdeLiveResponse|MdeApi|MdeExporter)[A-Z][A-Za-z]+", name):
            errors.append(f"{name}: not CamelCase with an MdeLiveResponse/MdeApi/MdeExporter prefix")
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            errors.append(f"{name}: severity label missing or not critical/warning/info")
        ann = r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                errors.append(f"{name}: annotation {key} missing")
        url = ann.get("runbook_url", "")
        if url != RUNBOOK + name.lower():
            errors.append(f"{name}: runbook_url should be {RUNBOOK + name.lower()}")
        anchor = url.partition("#")[2]
        if anchor and anchor not in anchors:
            errors.append(f"{name}: runbook_url anchor #{anchor} is no heading of {runbook_md}")
        if name not in sections:
            errors.append(f"{name}: no '### {name}' section in {runbook_md}")
    for s in sections - set(alerts):
        errors.append(f"{runbook_md}: runbook section '### {s}' names no alert")

    for rec in records:
        if not re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rec):
            errors.append(f"recording rule {rec}: not level:metric:operations")

    fires, quiet = set(), set()
    for path in sorted(glob.glob(os.path.join(tests_dir, "*.yml"))):
        with open(path) as f:
            doc = yaml.safe_load(f)
        for t in doc.get("tests", []):
            for a in t.get("alert_rule_test", []):
                (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
    for name in alerts:
        if name not in fires:
            errors.append(f"{name}: no test case where it fires")
        if name not in quiet:
            errors.append(f"{name}: no test case where it must not fire")
    for name in (fires | quiet) - set(alerts):
        errors.append(f"tests name unknown alert {name}")

    for e in errors:
        print(f"FAIL: {e}")
    print(f"checked {len(alerts)} alerts ({', '.join(sorted(alerts))}), {len(records)} recording rules, "
          f"{len(sections)} runbook sections: {'FAILED' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

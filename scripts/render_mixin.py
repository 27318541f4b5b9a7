#!/usr/bin/env python3
"""Render the monitoring mixin (mixin/mixin.libsonnet) with its default _config into OUT_ROOT:

  OUT_ROOT/rules/mde-liveresponse.rules.yml   prometheusRules groups, then prometheusAlerts groups
  OUT_ROOT/dashboards/<name>.json             one file per grafanaDashboards entry

Jsonnet is evaluated by the `jsonnet` PyPI package (the reference C++ implementation); the JSON
it returns is written as YAML with PyYAML in a fixed layout (keys in the order Prometheus
documents them, multi-line expressions as literal blocks, long annotations folded), and read
back to check that the YAML means exactly what jsonnet produced. Numbers go through Python, so
0.9 stays 0.9 (jsonnet itself prints 17 significant digits).

It first evaluates mixin/tests.jsonnet (asserts on _config overrides: paging on failed scripts,
another job selector, thresholds, runbook URLs), so a broken knob fails the render.

scripts/render-mixin.sh calls this (and gen-prometheusrule.py) and compares with the committed files.

Usage: render_mixin.py OUT_ROOT   (needs the jsonnet and PyYAML packages: target/ci-tools/venv)
"""
import json
import os
import sys

import _jsonnet
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RULES = "rules/mde-liveresponse.rules.yml"

HEADER = """\
# GENERATED from the monitoring mixin (mixin/) by scripts/render-mixin.sh; do not edit.
# Change mixin/*.libsonnet (the knobs are in mixin/config.libsonnet), run scripts/render-mixin.sh,
# and commit the result; CI fails when this file differs from the render.
#
# deploy/kubernetes/base/prometheusrule.yaml is generated from this file, docker-compose mounts
# it, and rules/tests/*.yml unit-test every alert with `promtool test rules`. The quota
# thresholds are recorded constants (group mde-liveresponse.thresholds): a Prometheus can add
# series with extra labels (e.g. a `tenant`) in its own rules without editing the alert.
"""

# Keys in the order of Prometheus's documentation; anything else after them, sorted.
ORDER = ["name", "interval", "limit", "alert", "record", "expr", "for", "keep_firing_for", "labels",
         "annotations", "summary", "description", "runbook_url"]


def ordered(v):
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
        return {k: ordered(v[k]) for k in keys}
    if isinstance(v, list):
        return [ordered(x) for x in v]
    return v


WIDTH = 100


def scalar(v):
    """A one-line YAML scalar (plain when PyYAML can leave it plain, quoted otherwise)."""
    text = yaml.safe_dump(v, width=float("inf"), allow_unicode=True)
    return text[:-len("\n...\n")] if text.endswith("\n...\n") else text.rstrip("\n")


def words(s):
    """s split at single spaces, keeping each `{{ ... }}` template action in one piece."""
    out, depth = [], 0
    for w in s.split(" "):
        if depth and out:
            out[-1] += " " + w
        else:
            out.append(w)
        depth += w.count("{{") - w.count("}}")
    return out


def emit_str(s, first, pad):
    """Lines for `first` (e.g. `key:`) followed by the string s."""
    if "\n" in s:  # multi-line PromQL: a literal block
        chomp = "" if s.endswith("\n") and not s.endswith("\n\n") else "-"
        return [f"{first} |{chomp}"] + [(pad + "  " + ln) if ln else "" for ln in s.rstrip("\n").split("\n")]
    one = f"{first} {scalar(s)}"
    if len(one) <= WIDTH or "  " in s or s != s.strip() or len(words(s)) < 2:
        return [one]
    # A long sentence: a folded block, wrapped at spaces (each line break folds back to one space).
    lines, cur = [], ""
    for w in words(s):
        if cur and len(pad) + 2 + len(cur) + 1 + len(w) > WIDTH:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return [f"{first} >-"] + [pad + "  " + ln for ln in lines]


def emit(v, pad=""):
    """YAML lines for a dict or list of the rules file, sequences indented under their key."""
    lines = []
    if isinstance(v, dict):
        for k, x in v.items():
            first = f"{pad}{k}:"
            if isinstance(x, (dict, list)) and x:
                lines.append(first)
                lines += emit(x, pad + "  ")
            elif isinstance(x, str):
                lines += emit_str(x, first, pad)
            else:
                lines.append(f"{first} {scalar(x)}")
    else:
        for x in v:
            if isinstance(x, dict) and x:
                sub = emit(x, pad + "  ")
                lines.append(pad + "- " + sub[0][len(pad) + 2:])
                lines += sub[1:]
            else:
                lines += emit_str(x, pad + "-", pad) if isinstance(x, str) else [f"{pad}- {scalar(x)}"]
    return lines


def rules_yaml(mixin):
    doc = ordered({"groups": mixin["prometheusRules"]["groups"] + mixin["prometheusAlerts"]["groups"]})
    lines = emit(doc)
    # A blank line between groups and between alerts, for reading.
    out = []
    for i, line in enumerate(lines):
        if i > 1 and (line.startswith("  - name: ") or line.startswith("      - alert: ")) \
                and not lines[i - 1].endswith(("groups:", "rules:")):
            out.append("")
        out.append(line)
    text = HEADER + "\n".join(out) + "\n"
    if yaml.safe_load(text) != doc:
        sys.exit(f"{RULES}: the YAML written does not read back as the jsonnet output")
    return text


def main() -> int:
    out_root = sys.argv[1]
    # The knobs' own tests (overrides of _config); an assert failing there stops the render.
    _jsonnet.evaluate_file(os.path.join(ROOT, "mixin/tests.jsonnet"), jpathdir=[ROOT])
    mixin = json.loads(_jsonnet.evaluate_snippet(
        "render", "local m = import 'mixin/mixin.libsonnet'; "
        "{prometheusAlerts: m.prometheusAlerts, prometheusRules: m.prometheusRules, "
        "grafanaDashboards: m.grafanaDashboards}",
        jpathdir=[ROOT]))
    os.makedirs(os.path.join(out_root, "rules"), exist_ok=True)
    with open(os.path.join(out_root, RULES), "w") as f:
        f.write(rules_yaml(mixin))
    os.makedirs(os.path.join(out_root, "dashboards"), exist_ok=True)
    for name, d in sorted(mixin["grafanaDashboards"].items()):
        with open(os.path.join(out_root, "dashboards", name + ".json"), "w") as f:
            json.dump(d, f, indent=2)
            f.write("\n")
    n_alerts = sum(len(g["rules"]) for g in mixin["prometheusAlerts"]["groups"])
    n_records = sum(len(g["rules"]) for g in mixin["prometheusRules"]["groups"])
    print(f"rendered {RULES} ({n_alerts} alerts, {n_records} recording rules) and "
          f"{len(mixin['grafanaDashboards'])} dashboards into {out_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

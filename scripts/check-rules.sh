#!/usr/bin/env bash
# Validate the Prometheus rules offline:
#   render-mixin.sh --check    (the committed rules are the render of mixin/)
#   promtool check rules       (syntax, PromQL, templates)
#   promtool test rules        (unit tests: each alert fires and must-not-fire cases)
#   scripts/check_rules.py     (naming, labels, annotations, runbook anchors in docs/runbook.md, test coverage)
#   scripts/check_links.py     (relative links, anchors and backticked repository paths of README.md, docs/*.md, scripts/README.md)
# Needs promtool and python3; PyYAML (and jsonnet, for the render) are installed into
# target/ci-tools/venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "check-rules: promtool not found (apt-get install prometheus)" >&2; exit 1; }

venv=target/ci-tools/venv
if ! "$venv/bin/python" -c 'import yaml' 2>/dev/null; then
    echo "== installing PyYAML into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pyyaml
fi

echo "== rules/ (and the rest of the generated files) in sync with mixin/"
bash scripts/render-mixin.sh --check
echo "== promtool check rules rules/*.yml"
promtool check rules rules/*.yml
echo "== promtool test rules rules/tests/*.yml"
promtool test rules rules/tests/*.yml
echo "== rule structure, runbook and test coverage"
"$venv/bin/python" scripts/check_rules.py rules/mde-liveresponse.rules.yml rules/tests docs/runbook.md
echo "== links, anchors and backticked paths of README.md, docs/*.md and scripts/README.md"
python3 scripts/check_links.py --self-test
python3 scripts/check_links.py
echo "check-rules: OK"

#!/usr/bin/env bash
# The GitHub workflows (.github/workflows/*.yml: the release) checked by actionlint (built by
# scripts/tools.sh into .tools/bin): syntax, expressions and their types, job needs, runner
# labels, action inputs, and the `run:` scripts through shellcheck (Debian's shellcheck, which
# scripts/test.sh installs; without it actionlint skips that part and this script says so).
# Env: ACTIONLINT (default .tools/bin/actionlint).
set -euo pipefail
cd "$(dirname "$0")/.."

actionlint=${ACTIONLINT:-.tools/bin/actionlint}
[ -x "$actionlint" ] || { echo "check-workflows: $actionlint missing (scripts/tools.sh actionlint)" >&2; exit 1; }
if command -v shellcheck >/dev/null; then
    echo "== actionlint $("$actionlint" -version | head -1), with $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
else
    echo "== actionlint $("$actionlint" -version | head -1); NOTE: shellcheck not installed, run: scripts not checked"
fi
workflows=(.github/workflows/*.yml)
"$actionlint" "${workflows[@]}"
echo "check-workflows: OK (${workflows[*]})"

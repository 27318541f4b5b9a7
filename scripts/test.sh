#!/usr/bin/env bash
# The whole test suite. The README's second command and CI (.ci/run) both run this file.
# It installs what the tests need when it can (Debian's prometheus package gives promtool and
# a real Prometheus server; scripts/tools.sh builds the pinned Go programs -- helm, Prometheus
# 3, Alertmanager, Jaeger -- into .tools/bin, minutes on the first run, nothing afterwards),
# then runs formatting, lints, the Rust tests and the checks of rules, dashboards, deploy files
# and the Helm chart, and the end-to-end test against a real Prometheus.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: prometheus (promtool and a real server), chromium (the
# status page test), prometheus-alertmanager (amtool and a real Alertmanager), faketime
# (libfaketime: tests/it/lifecycle/clock_jump.rs moves the exporter's wall clock), buildah
# (the container image, built and run without a daemon: scripts/check-image.sh), shellcheck
# (the workflows' scripts, through actionlint).
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 && command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
# postgresql (with postgresql-common's pg_virtualenv): the cluster tests' real server (#31).
command -v pg_virtualenv >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "these Debian packages are needed: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

passed=0
failed=0
failures=()
step() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

# First, so that a failed build shows at the top; the steps that need a tool fail (or fall
# back to Debian's Prometheus 2.42 and Alertmanager, and the e2e to its own OTLP receiver in
# place of Jaeger) when it is missing. In the order the steps need them: helm (the chart
# checks), Prometheus 3 and promtool (rules, e2e), amtool and Alertmanager 0.35 (the alerting
# checks and e2e), Jaeger v2 (the e2e's trace backend); crane (the loopback OCI registry),
# actionlint (the workflows) and the cargo plugins cargo-auditable and cargo-cyclonedx (the
# image's crate list and SBOMs) are small and built right after helm. TOOLS_BUDGET_SECONDS bounds what one
# run compiles: what is left is built by the next run (docs/development.md, "Tools the tests build").
step "scripts/tools.sh" scripts/tools.sh helm crane actionlint cargo-auditable cargo-cyclonedx promtool prometheus amtool alertmanager jaeger
step "cargo fmt --check" cargo fmt --all -- --check
# The layout rules: file sizes, a thin main.rs, no import circle, no folders that import each
# other, no #[path], and every module header saying what it owns and what it does not.
step "scripts/check-layout.py --self-test" python3 scripts/check-layout.py --self-test
step "scripts/check-layout.py" python3 scripts/check-layout.py
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# Under pg_virtualenv: a throwaway PostgreSQL cluster on loopback for the cluster tests
# (tests/it/cluster), its address in PGHOST/PGPORT/PGUSER/PGPASSWORD. -t: in a temporary
# folder even as root (not /etc/postgresql/15/regress), on a free port, so two runs on one
# machine, or a "regress" cluster left by someone else, do not refuse each other.
if command -v pg_virtualenv >/dev/null 2>&1; then
  step "cargo test (with PostgreSQL)" pg_virtualenv -t cargo test --workspace --locked
else
  step "cargo test" cargo test --workspace --locked
fi
# The image (check-image.sh: a static release build, minutes; see docs/development.md, "The
# image") and then the registry (check-registry.sh pushes that image and the chart).
for check in scripts/check-rules.sh scripts/check-dashboards.sh scripts/check-deploy.sh scripts/check-helm.sh \
  scripts/check-workflows.sh scripts/check-image.sh scripts/check-registry.sh \
  scripts/check-alertmanager.sh scripts/e2e-prometheus.sh scripts/e2e-alertmanager.sh; do
  if [ -x "$check" ]; then
    step "$check" "$check"
  fi
done

if [ "$failed" -ne 0 ]; then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "suite: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Render the monitoring mixin (mixin/, jsonnet) into the committed generated files:
#   rules/mde-liveresponse.rules.yml              (scripts/render_mixin.py)
#   dashboards/*.json                             (scripts/render_mixin.py)
#   deploy/kubernetes/base/prometheusrule.yaml    (scripts/gen-prometheusrule.py, from the rules)
#   deploy/helm/mde-liveresponse-exporter/files/mde-liveresponse.rules.yml   (a copy of the rules:
#                                                 the chart's PrometheusRule template includes it;
#                                                 Helm reads files inside the chart only)
#   deploy/helm/mde-liveresponse-exporter/files/dashboards/*.json, deploy/kubernetes/dashboards/*.json
#                                                 (copies of dashboards/: the chart's and kustomize's
#                                                 dashboard ConfigMaps)
#
#   scripts/render-mixin.sh           write them
#   scripts/render-mixin.sh --check   render into a temporary directory and fail when the
#                                     committed files differ (check-rules.sh and
#                                     check-dashboards.sh run this in CI)
#
# Jsonnet is the `jsonnet` PyPI package (the reference C++ implementation, as a wheel), installed
# with PyYAML into target/ci-tools/venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

JSONNET_VERSION=0.22.0
venv=target/ci-tools/venv
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m, yaml; print(m.version("jsonnet"))' 2>/dev/null)" != "$JSONNET_VERSION" ]; then
    echo "== installing jsonnet $JSONNET_VERSION and PyYAML into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "jsonnet==$JSONNET_VERSION" pyyaml
fi

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" scripts/render_mixin.py "$tmp"
python3 scripts/gen-prometheusrule.py "$tmp" >/dev/null
chart_rules=deploy/helm/mde-liveresponse-exporter/files/mde-liveresponse.rules.yml
mkdir -p "$tmp/$(dirname "$chart_rules")"
cp "$tmp/rules/mde-liveresponse.rules.yml" "$tmp/$chart_rules"

# The dashboards' copies where Helm and kustomize can read them (neither reads files outside
# its own folder): the chart's ConfigMaps (dashboards.enabled) and deploy/kubernetes/dashboards.
copies=(deploy/helm/mde-liveresponse-exporter/files/dashboards deploy/kubernetes/dashboards)
for d in "${copies[@]}"; do
    mkdir -p "$tmp/$d"
    cp "$tmp"/dashboards/*.json "$tmp/$d/"
done

generated=(rules/mde-liveresponse.rules.yml deploy/kubernetes/base/prometheusrule.yaml "$chart_rules")
if [ "$check" = 1 ]; then
    failed=0
    for f in "${generated[@]}"; do
        diff -u "$f" "$tmp/$f" || failed=1
    done
    # The whole directory, so that a dashboard the mixin no longer renders is caught too.
    diff -ru dashboards "$tmp/dashboards" || failed=1
    for d in "${copies[@]}"; do
        # Only the JSON files: deploy/kubernetes/dashboards also holds its kustomization.yaml.
        diff -ru -x kustomization.yaml "$d" "$tmp/$d" || failed=1
    done
    if [ "$failed" = 1 ]; then
        echo "FAIL: the committed rules/dashboards differ from the mixin's render (above: committed -> rendered)." >&2
        echo "      Edit mixin/*.libsonnet, not the generated files; then run scripts/render-mixin.sh and commit." >&2
        exit 1
    fi
    echo "render-mixin: ${generated[*]} and dashboards/*.json are the mixin's render"
else
    for f in "${generated[@]}"; do
        cp "$tmp/$f" "$f"
    done
    for d in dashboards "${copies[@]}"; do
        rm -f "$d"/*.json
        cp "$tmp"/dashboards/*.json "$d/"
    done
    echo "render-mixin: wrote ${generated[*]} and $(ls dashboards/*.json | tr '\n' ' ')"
fi

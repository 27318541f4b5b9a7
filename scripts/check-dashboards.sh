#!/usr/bin/env bash
# Validate the Grafana dashboards offline:
#   1. dashboards/*.json are the render of the mixin (scripts/render-mixin.sh --check);
#   2. scripts/check_dashboards.py: uids, datasource/job/tenant/script variables, no hard-coded
#      datasource uids, grid layout, refIds, $__rate_interval, job and tenant filters,
#      exemplars asked for on the metrics that carry them;
#   3. every dashboard type-checks as `satisfies Dashboard` from @grafana/schema (tsc --strict),
#      with @grafana/schema and typescript installed from npm into target/ci-tools/node.
# The queries themselves are evaluated against a real Prometheus by scripts/e2e-prometheus.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

GRAFANA_SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3

echo "== dashboards/*.json (and the rest of the generated files) in sync with mixin/"
bash scripts/render-mixin.sh --check

echo "== dashboard structure"
python3 scripts/check_dashboards.py dashboards/*.json

echo "== type check against @grafana/schema@$GRAFANA_SCHEMA_VERSION Dashboard (typescript $TYPESCRIPT_VERSION)"
node_dir=target/ci-tools/node
have() { [ -f "$node_dir/node_modules/$1/package.json" ] && grep -q "\"version\": \"$2\"" "$node_dir/node_modules/$1/package.json"; }
if ! have @grafana/schema "$GRAFANA_SCHEMA_VERSION" || ! have typescript "$TYPESCRIPT_VERSION"; then
    mkdir -p "$node_dir"
    [ -f "$node_dir/package.json" ] || echo '{"private": true}' > "$node_dir/package.json"
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error \
        "@grafana/schema@$GRAFANA_SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION")
fi
rm -rf "$node_dir/check"
node scripts/dashboards_typecheck.mjs "$node_dir/check" dashboards/*.json
cat > "$node_dir/tsconfig.json" <<'JSON'
{
  "compilerOptions": {
    "strict": true, "noEmit": true, "skipLibCheck": true,
    "module": "nodenext", "moduleResolution": "nodenext", "target": "es2022"
  },
  "include": ["check/*.ts"]
}
JSON
(cd "$node_dir" && node_modules/.bin/tsc -p tsconfig.json)
echo "tsc: every dashboard satisfies Dashboard"
echo "check-dashboards: OK"

#!/usr/bin/env bash
# Check the Helm chart deploy/helm/mde-liveresponse-exporter with a real helm (Helm 4, built by
# scripts/tools.sh into .tools/bin):
#   - `helm lint --strict` with each ci/*-values.yaml;
#   - `helm template` of each ci values file, validated with kubernetes-validate --strict
#     (bundled schemas, offline) for the oldest and newest Kubernetes we claim, as check-deploy.sh
#     does for kustomize; CRDs (ServiceMonitor, PrometheusRule) by scripts/check_deploy.py's rules;
#   - what each case must render (scripts/check_helm.py chart): StatefulSet and shard flags,
#     workload identity, Secret or existingSecret, certificate mount, NetworkPolicy, PDB, labels,
#     cluster mode (#31: members, no state volume, the URL from a Secret), image by digest;
#   - the dashboards (dashboards.enabled): a ConfigMap each for the Grafana sidecar whose JSON
#     equals dashboards/, and grafana-operator GrafanaDashboards referring to them;
#   - drift: the chart and the kustomize overlays render the same exporter (scripts/check_helm.py
#     drift: image, args, env, probes, resources, security contexts, volumes, Service,
#     ServiceMonitor, PrometheusRule, config);
#   - every case's rendered config.yml accepted by the real exporter's --config.check;
#   - sharding: the real exporter run once per pod of the chart's StatefulSet, every tenant on
#     exactly one shard (when the exporter is built);
#   - values.schema.json and the chart's own checks reject bad values with the expected message;
#   - the chart's copy of the rules is the mixin's render (scripts/render-mixin.sh --check covers
#     it; here: byte-equal to rules/mde-liveresponse.rules.yml).
# Env: HELM (default .tools/bin/helm, then helm on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS="1.28.0 1.37.0"
KUBERNETES_VALIDATE_VERSION=1.37.0
chart=deploy/helm/mde-liveresponse-exporter
release=mde-liveresponse-exporter
namespace=monitoring
bin=${MDE_EXPORTER_BIN:-target/debug/mde-liveresponse-exporter}

helm=${HELM:-}
if [ -z "$helm" ]; then
    if [ -x .tools/bin/helm ]; then helm=.tools/bin/helm; else helm=$(command -v helm || true); fi
fi
[ -n "$helm" ] && [ -x "$helm" ] || { echo "check-helm: no helm (run scripts/tools.sh helm)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "check-helm: kubectl not found" >&2; exit 1; }
echo "== $("$helm" version --short 2>/dev/null || "$helm" version)"

venv=target/ci-tools/venv
if ! "$venv/bin/python" -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null \
    || [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    echo "== installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION, jsonschema, PyYAML into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" jsonschema pyyaml
fi
py="$venv/bin/python"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== the chart's rules are rules/mde-liveresponse.rules.yml, its dashboards dashboards/"
cmp rules/mde-liveresponse.rules.yml "$chart/files/mde-liveresponse.rules.yml" \
    || { echo "FAIL: $chart/files/mde-liveresponse.rules.yml differs: run scripts/render-mixin.sh" >&2; exit 1; }
diff -r dashboards "$chart/files/dashboards" \
    || { echo "FAIL: $chart/files/dashboards differs from dashboards/: run scripts/render-mixin.sh" >&2; exit 1; }

cases=()
for values in "$chart"/ci/*-values.yaml; do
    case=$(basename "$values" -values.yaml)
    cases+=("$case")
    echo "== helm lint --strict ($case)"
    "$helm" lint --strict "$chart" -f "$values" --namespace "$namespace"
    echo "== helm template ($case)"
    "$helm" template "$release" "$chart" -f "$values" --namespace "$namespace" >"$tmp/$case.yaml"
    for v in $K8S_VERSIONS; do
        # CRDs have no bundled schema: kubernetes-validate warns and check_helm.py checks them.
        "$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$tmp/$case.yaml" 2>&1 \
            | { grep -v "Couldn't find schema for kind \(PrometheusRule\|ServiceMonitor\) with api version monitoring.coreos.com/v1\|Couldn't find schema for kind GrafanaDashboard with api version grafana.integreatly.org/v1beta1" || true; } \
            | tee "$tmp/validate.out"
        if [ -s "$tmp/validate.out" ] || ! "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$tmp/$case.yaml" >/dev/null; then
            echo "FAIL: chart ($case) does not validate against Kubernetes $v" >&2
            exit 1
        fi
        echo "valid against Kubernetes $v: $(grep -c '^kind:' "$tmp/$case.yaml") objects"
    done
    "$py" scripts/check_helm.py chart "$case" "$tmp/$case.yaml"
    if grep -q '^  grafana_dashboard: "1"' "$tmp/$case.yaml" || [ "$case" = cluster ]; then
        # The cluster case enables the dashboards (ci/cluster-values.yaml): what they render.
        "$py" scripts/check_deploy.py dashboards "$tmp/$case.yaml" dashboards
    fi
done
for need in default sharded workload-identity cluster; do
    [[ " ${cases[*]} " == *" $need "* ]] || { echo "FAIL: $chart/ci/$need-values.yaml missing" >&2; exit 1; }
done

echo "== chart and kustomize render the same exporter"
for pair in default:single sharded:sharded workload-identity:workload-identity cluster:cluster; do
    case=${pair%%:*}
    overlay=${pair#*:}
    kubectl kustomize "deploy/kubernetes/overlays/$overlay" >"$tmp/kustomize-$overlay.yaml"
    config=deploy/kubernetes/overlays/$overlay/config.yml
    [ -f "$config" ] || config=deploy/kubernetes/base/config.yml
    "$py" scripts/check_helm.py drift "$case" "$tmp/$case.yaml" "$tmp/kustomize-$overlay.yaml" "$config"
done

if [ -x "$bin" ]; then
    echo "== sharding: the chart's StatefulSet, every tenant on exactly one shard (real exporter)"
    "$py" scripts/check_deploy.py shards "$bin" "$tmp/sharded.yaml" 24

    echo "== each case's rendered config.yml accepted by --config.check"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mde-exporter-check \
        -keyout "$tmp/fabrikam-key.pem" -out "$tmp/fabrikam-cert.pem" 2>/dev/null
    printf 'federated-token\n' >"$tmp/azure-identity-token"
    for case in "${cases[@]}"; do
        # The certificate mount's paths point at the throwaway certificate made above.
        "$py" -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap" and "config.yml" in d.get("data", {})]
print(docs[0]["data"]["config.yml"], end="")' "$tmp/$case.yaml" \
            | sed "s#/etc/mde-liveresponse-exporter/certs/#$tmp/#" >"$tmp/$case-config.yml"
        # POD_NAME and MDE_CLUSTER_POSTGRES_URL: what a cluster member's pod gets (#31).
        if MDE_CONTOSO_CLIENT_SECRET=example POD_NAME=mde-liveresponse-exporter-7d9f-x2 \
            MDE_CLUSTER_POSTGRES_URL='postgres://exporter:example@db.example.org:5432/mde?sslmode=verify-full&sslrootcert=system' \
            AZURE_CLIENT_ID=66666666-7777-8888-9999-000000000000 AZURE_TENANT_ID=11111111-2222-3333-4444-555555555555 \
            AZURE_FEDERATED_TOKEN_FILE="$tmp/azure-identity-token" AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/ \
            "$bin" --config.file="$tmp/$case-config.yml" --config.check 2>"$tmp/$case-check.err"; then
            echo "$case: config accepted"
        elif [ "$case" = cluster ] && grep -q 'unknown field `cluster`' "$tmp/$case-check.err"; then
            echo "NOTE: $case config not checked: this exporter has no cluster section yet (#31)"
        else
            cat "$tmp/$case-check.err" >&2
            echo "FAIL: the $case case's config.yml rejected by --config.check" >&2
            exit 1
        fi
    done
else
    echo "== sharding run and --config.check skipped: $bin not built (cargo build)"
fi

echo "== bad values are rejected"
reject() {
    local want=$1
    shift
    if "$helm" template "$release" "$chart" --namespace "$namespace" "$@" >"$tmp/out" 2>"$tmp/err"; then
        echo "FAIL: helm template $* was accepted" >&2
        exit 1
    fi
    if ! grep -qF -- "$want" "$tmp/err"; then
        echo "FAIL: helm template $*: expected the message '$want', got:" >&2
        cat "$tmp/err" >&2
        exit 1
    fi
    echo "rejected ($*): $want"
}
reject "at '/shards': minimum: got 0, want 1" --set shards=0
reject "additional properties 'replicas' not allowed" --set replicas=2
reject "workloadIdentity.enabled needs workloadIdentity.clientId (the app registration's client id)" \
    --set workloadIdentity.enabled=true
reject "credentials.create is true but credentials.secrets is empty" --set credentials.create=true
reject "credentials.secrets is set but credentials.create is false" --set credentials.secrets.x=y
reject "persistence.existingClaim works with shards: 1 only" --set shards=2 --set persistence.existingClaim=x
reject "at '/log/format': value must be one of 'json', 'logfmt'" --set log.format=xml
reject "cluster.enabled and shards > 1 exclude each other" --set cluster.enabled=true --set shards=2
reject "at '/image/digest'" --set image.digest=latest
echo "check-helm: OK"

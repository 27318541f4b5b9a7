#!/usr/bin/env bash
# The image and the chart as OCI artifacts in a registry, as a user installs them (#35):
#   - an OCI registry on loopback (go-containerregistry's, `crane registry serve`, built by
#     scripts/tools.sh into .tools/bin; in memory, gone when this script ends);
#   - the image scripts/image.sh built (localhost/mde-liveresponse-exporter:latest in buildah's
#     store; built first when it is not there) pushed with `buildah push`, its digest read back
#     with crane, its config's labels and its layers' compressed size read from the registry,
#     and the image pulled back by digest (crane export): its binary byte-equal to the one built;
#   - the chart packaged (`helm package`, version and appVersion from Chart.yaml and
#     Cargo.toml), pushed (`helm push oci://...`), its manifest the Helm chart media types,
#     pulled back (`helm pull oci://`, byte-equal to the package), and rendered from oci://
#     with image.digest set to the pushed image's digest: the rendered image reference
#     resolves in the registry to that same image.
# Env: HELM, CRANE (default .tools/bin/NAME).
set -euo pipefail
cd "$(dirname "$0")/.."

helm=${HELM:-.tools/bin/helm}
crane=${CRANE:-.tools/bin/crane}
for t in "$helm" "$crane"; do
    [ -x "$t" ] || { echo "check-registry: $t missing (scripts/tools.sh helm crane)" >&2; exit 1; }
done
command -v buildah >/dev/null || { echo "check-registry: buildah not found (apt-get install buildah)" >&2; exit 1; }
buildah=(buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")
image=localhost/mde-liveresponse-exporter:latest
chart=deploy/helm/mde-liveresponse-exporter

tmp=$(mktemp -d)
registry_pid=
cleanup() {
    if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if ! "${buildah[@]}" inspect --type image "$image" >/dev/null 2>&1; then
    echo "== $image not in buildah's store: scripts/image.sh"
    scripts/image.sh
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
"$crane" registry serve --address "$reg" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
    curl -fsS "http://$reg/v2/" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://$reg/v2/" >/dev/null || { cat "$tmp/registry.log" >&2; echo "FAIL: the registry did not start" >&2; exit 1; }
echo "== registry on $reg ($("$crane" version))"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse --short=12 HEAD)
repo=$reg/mde-liveresponse-exporter

echo "== buildah push $image docker://$repo:$version"
"${buildah[@]}" push --quiet --tls-verify=false --digestfile "$tmp/digest" "$image" "docker://$repo:$version"
digest=$(cat "$tmp/digest")
[ "$("$crane" digest --insecure "$repo:$version")" = "$digest" ] \
    || { echo "FAIL: the registry's digest of $repo:$version is not the pushed $digest" >&2; exit 1; }
"$crane" config --insecure "$repo@$digest" >"$tmp/config.json"
"$crane" manifest --insecure "$repo@$digest" >"$tmp/manifest.json"
python3 - "$tmp/config.json" "$tmp/manifest.json" "$revision" "$version" <<'EOF'
import json, sys
config, manifest = (json.load(open(p)) for p in sys.argv[1:3])
revision, version = sys.argv[3:5]
labels = config["config"].get("Labels", {})
want = {"org.opencontainers.image.revision": revision, "org.opencontainers.image.version": version}
bad = {k: labels.get(k) for k, v in want.items() if labels.get(k) != v}
if bad or config["config"].get("User") != "65532:65532":
    sys.exit(f"FAIL: the pushed image's config has {bad or ''} user {config['config'].get('User')}")
size = sum(l["size"] for l in manifest["layers"]) + manifest["config"]["size"]
if size >= 25_000_000:
    sys.exit(f"FAIL: the pushed image is {size / 1e6:.1f} MB compressed (target under 25 MB)")
print(f"pushed image: {manifest['mediaType']}, {len(manifest['layers'])} layer(s), "
      f"{size / 1e6:.1f} MB compressed, labels revision {revision} version {version}, user 65532")
print(f"figure: image compressed {size} bytes")
EOF

echo "== pulled back by digest: the binary is the one built"
"$crane" export --insecure "$repo@$digest" - | tar -x -C "$tmp" usr/local/bin/mde-liveresponse-exporter
cmp "$tmp/usr/local/bin/mde-liveresponse-exporter" "${CARGO_TARGET_DIR:-target}/image/context/rootfs/usr/local/bin/mde-liveresponse-exporter" \
    || { echo "FAIL: the binary pulled from $repo@$digest differs from the one built" >&2; exit 1; }
echo "ok: $repo@$digest holds the binary built ($(sha256sum "$tmp/usr/local/bin/mde-liveresponse-exporter" | cut -c1-16)...)"

chart_version=$(sed -n 's/^version: \(.*\)$/\1/p' "$chart/Chart.yaml")
echo "== helm package + helm push oci://$reg/charts (chart $chart_version, appVersion $version)"
"$helm" package "$chart" --version "$chart_version" --app-version "$version" -d "$tmp/package" >/dev/null
package=$tmp/package/mde-liveresponse-exporter-$chart_version.tgz
"$helm" push "$package" "oci://$reg/charts" --plain-http >"$tmp/push.out" 2>&1 \
    || { cat "$tmp/push.out" >&2; echo "FAIL: helm push" >&2; exit 1; }
cat "$tmp/push.out"
chart_digest=$(sed -n 's/^Digest: //p' "$tmp/push.out")
"$crane" manifest --insecure "$reg/charts/mde-liveresponse-exporter:$chart_version" >"$tmp/chart-manifest.json"
python3 - "$tmp/chart-manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
if m["config"]["mediaType"] != "application/vnd.cncf.helm.config.v1+json" \
        or [l["mediaType"] for l in m["layers"]] != ["application/vnd.cncf.helm.chart.content.v1.tar+gzip"]:
    sys.exit(f"FAIL: the chart's manifest is not a Helm chart: {m['config']['mediaType']} {[l['mediaType'] for l in m['layers']]}")
print(f"chart manifest: {m['config']['mediaType']}, one chart layer")
EOF
[ "$("$crane" digest --insecure "$reg/charts/mde-liveresponse-exporter:$chart_version")" = "$chart_digest" ] \
    || { echo "FAIL: the chart's digest in the registry is not the one helm push printed ($chart_digest)" >&2; exit 1; }

echo "== helm pull oci:// (by digest) and helm template oci:// with image.digest"
mkdir -p "$tmp/pulled"
"$helm" pull "oci://$reg/charts/mde-liveresponse-exporter@$chart_digest" --plain-http -d "$tmp/pulled" >/dev/null
# (named mde-liveresponse-exporter@sha256-HEX.tgz when pulled by digest)
cmp "$package" "$(ls "$tmp"/pulled/*.tgz)" \
    || { echo "FAIL: the chart pulled by digest differs from the package pushed" >&2; exit 1; }
echo "ok: the chart pulled by $chart_digest is the package pushed"
"$helm" template mde-liveresponse-exporter "oci://$reg/charts/mde-liveresponse-exporter" --version "$chart_version" \
    --plain-http --namespace monitoring --set image.repository="$repo" --set image.digest="$digest" \
    --show-only templates/workload.yaml >"$tmp/rendered.yaml"
rendered=$(sed -n 's/^ *image: "\(.*\)"$/\1/p' "$tmp/rendered.yaml")
[ "$rendered" = "$repo@$digest" ] \
    || { echo "FAIL: the chart from oci:// renders image $rendered, want $repo@$digest" >&2; exit 1; }
[ "$("$crane" digest --insecure "$rendered")" = "$digest" ] \
    || { echo "FAIL: $rendered does not resolve to the pushed image" >&2; exit 1; }
echo "ok: rendered from oci://$reg/charts, image $rendered resolves to the pushed image"
echo "check-registry: OK"

#!/usr/bin/env bash
# The two SBOMs of a release, CycloneDX 1.5 JSON, built here by the test suite
# (scripts/check-image.sh) and by the release workflow alike:
#   OUTDIR/mde-liveresponse-exporter-VERSION.cdx.json
#       the Rust dependency tree of the exporter binary: every crate compiled into it for the
#       host's target triple (build-time-only crates and development dependencies left out),
#       by cargo-cyclonedx (crates.io, the CycloneDX project's own cargo plugin) from Cargo.lock;
#   OUTDIR/mde-liveresponse-exporter-image-VERSION.cdx.json
#       the image: the same crates under the binary, plus Debian's ca-certificates (the CA bundle
#       the image carries), composed by scripts/sbom_image.py.
# Given the binary, scripts/check_sbom.py then checks both against the crate list that
# cargo-auditable embedded in it (the image's build is `cargo auditable build`): what the SBOM
# names is what the binary was linked from.
#
# Usage: scripts/sbom.sh OUTDIR [BINARY]
# Needs cargo-cyclonedx on PATH or in .tools/bin (scripts/tools.sh cargo-cyclonedx).
# docs/releases.md says what a user does with them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || [ $# -eq 2 ] || { echo "usage: scripts/sbom.sh OUTDIR [BINARY]" >&2; exit 2; }
out=$1
binary=${2:-}
PATH=$PWD/.tools/bin:$PATH
command -v cargo-cyclonedx >/dev/null \
    || { echo "sbom.sh: cargo-cyclonedx not found (scripts/tools.sh cargo-cyclonedx)" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
triple=$(rustc -vV | sed -n 's/^host: //p')
mkdir -p "$out"
# --describe binaries: one SBOM per binary, written beside each package's Cargo.toml (the
# simulator's too); ours is moved out and the others removed, so the work tree stays clean.
cargo cyclonedx --quiet --format json --spec-version 1.5 --describe binaries --no-build-deps \
    --target "$triple"
mv mde-liveresponse-exporter_bin.cdx.json "$out/mde-liveresponse-exporter-$version.cdx.json"
find . -path ./target -prune -o -path ./.tools -prune -o -name '*_bin.cdx.json' -print0 | xargs -0 rm -f
ca_version=$(dpkg-query -W -f '${Version}' ca-certificates 2>/dev/null || echo unknown)
python3 scripts/sbom_image.py "$out/mde-liveresponse-exporter-$version.cdx.json" "$ca_version" \
    >"$out/mde-liveresponse-exporter-image-$version.cdx.json"
echo "sbom.sh: $out/mde-liveresponse-exporter-$version.cdx.json, $out/mde-liveresponse-exporter-image-$version.cdx.json"
if [ -n "$binary" ]; then
    python3 scripts/check_sbom.py "$binary" "$out/mde-liveresponse-exporter-$version.cdx.json" \
        "$out/mde-liveresponse-exporter-image-$version.cdx.json" "$ca_version"
fi

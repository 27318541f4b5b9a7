#!/usr/bin/env bash
# Build the container image with buildah, without a daemon and without pulling a base image:
#   1. the release binary, statically linked (glibc with `-C target-feature=+crt-static`, for the
#      host's architecture; rustls is the TLS stack, so nothing else is linked), unless
#      --binary names one already built;
#   2. its root filesystem, by deploy/image/rootfs.sh (the binary, the host's Debian CA
#      bundle /etc/ssl/certs/ca-certificates.crt, a passwd entry for uid 65532, the LICENSE);
#   3. `buildah bud -f deploy/Containerfile` FROM scratch, tagged
#      localhost/mde-liveresponse-exporter:VERSION and :latest in buildah's store, with the OCI
#      labels (version from Cargo.toml, revision from git, created = the commit's time) and the
#      layers' timestamps set to the commit's time (--timestamp), so the same commit gives the
#      same image.
#
# Usage: scripts/image.sh [--binary PATH]
# Prints the image's id last. Env: CARGO_TARGET_DIR (default target), MDE_IMAGE_AUDITABLE=1
# (cargo auditable build: the crate list embedded in the binary; scripts/check-image.sh and the
# release workflow set it, cargo-auditable from scripts/tools.sh), BUILDAH_STORAGE_DRIVER
# (default vfs: works as root without fuse-overlayfs), MDE_CA_BUNDLE (default
# /etc/ssl/certs/ca-certificates.crt). Needs buildah (Debian: apt-get install buildah).
# docs/deployment.md ("Container image") and docs/development.md ("The image") say more.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=
while [ $# -gt 0 ]; do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        *) echo "usage: scripts/image.sh [--binary PATH]" >&2; exit 2 ;;
    esac
done

command -v buildah >/dev/null || { echo "image.sh: buildah not found (apt-get install buildah)" >&2; exit 1; }
buildah=(buildah --storage-driver "${BUILDAH_STORAGE_DRIVER:-vfs}")
image=localhost/mde-liveresponse-exporter
target=${CARGO_TARGET_DIR:-target}

if [ -z "$binary" ]; then
    triple=$(rustc -vV | sed -n 's/^host: //p')
    case $triple in
        *-linux-gnu) ;;
        *) echo "image.sh: the image is built on Linux/glibc hosts (for their architecture), not $triple" >&2; exit 1 ;;
    esac
    # RUSTFLAGS with --target: the flag applies to the binary and not to build scripts and
    # proc macros (which must stay dynamic: the compiler loads them), and the build goes to
    # its own folder (target/TRIPLE/release), beside the debug builds the tests use.
    echo "== cargo build --release --target $triple (crt-static)"
    start=$SECONDS
    # MDE_IMAGE_AUDITABLE=1 (the release workflow): `cargo auditable build` (crates.io's
    # cargo-auditable) embeds the dependency tree in the binary for SBOM tools and scanners.
    build=(cargo build)
    if [ "${MDE_IMAGE_AUDITABLE:-0}" = 1 ]; then
        PATH=$PWD/.tools/bin:$PATH
        command -v cargo-auditable >/dev/null \
            || { echo "image.sh: MDE_IMAGE_AUDITABLE=1 needs cargo-auditable (scripts/tools.sh cargo-auditable)" >&2; exit 1; }
        build=(cargo auditable build)
    fi
    RUSTFLAGS='-C target-feature=+crt-static' \
        "${build[@]}" --release --locked --target "$triple" --bin mde-liveresponse-exporter
    echo "image.sh: release build $((SECONDS - start)) s"
    binary=$target/$triple/release/mde-liveresponse-exporter
fi
# Static: no program interpreter (the image has no dynamic loader and no C library).
if readelf -lW "$binary" | grep -q 'Requesting program interpreter'; then
    echo "image.sh: $binary is dynamically linked (build it with -C target-feature=+crt-static)" >&2
    exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

context=$target/image/context
deploy/image/rootfs.sh "$binary" "${MDE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$context"
echo "== buildah bud -f deploy/Containerfile ($image:$version, revision $revision)"
"${buildah[@]}" bud --isolation chroot --quiet --layers=false --timestamp "$epoch" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
    -f deploy/Containerfile -t "$image:$version" -t "$image:latest" "$context" >/dev/null
"${buildah[@]}" inspect --type image --format '{{.FromImageID}}' "$image:latest"; echo

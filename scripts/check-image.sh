#!/usr/bin/env bash
# The container image, built and run here (#35), without a daemon:
#   - scripts/image.sh builds it (static release binary, deploy/image/rootfs.sh,
#     deploy/Containerfile FROM scratch) into buildah's store as
#     localhost/mde-liveresponse-exporter;
#   - scripts/check_image.py checks its configuration (non-root user, entrypoint, state volume,
#     port, OCI labels), its files (static binary, CA bundle, passwd, owner of the state
#     directory, under 25 MB) and runs it with `buildah run --isolation chroot`: the demo on
#     loopback served on /metrics and /transcripts by a process of uid 65532, and the CA bundle
#     the one the binary trusts;
#   - scripts/sbom.sh writes the binary's and the image's SBOMs (CycloneDX, cargo-cyclonedx) to
#     target/image/sbom and checks them against the crate list cargo-auditable embedded in the
#     binary (the build is `cargo auditable build`, as in the release workflow).
# Needs buildah (Debian package; scripts/test.sh installs it), readelf, objcopy, openssl, ss,
# and cargo-auditable and cargo-cyclonedx (scripts/tools.sh, crates.io).
# MDE_IMAGE_BINARY: use this static binary instead of building one (scripts/image.sh --binary;
# it must have been built with `cargo auditable build` for the SBOM check).
set -euo pipefail
cd "$(dirname "$0")/.."

PATH=$PWD/.tools/bin:$PATH
for tool in buildah readelf objcopy openssl ss cargo-auditable cargo-cyclonedx; do
    command -v "$tool" >/dev/null || { echo "check-image: $tool not found (cargo plugins: scripts/tools.sh $tool)" >&2; exit 1; }
done
start=$SECONDS
MDE_IMAGE_AUDITABLE=1 scripts/image.sh ${MDE_IMAGE_BINARY:+--binary "$MDE_IMAGE_BINARY"}
echo "check-image: image built in $((SECONDS - start)) s"
python3 scripts/check_image.py localhost/mde-liveresponse-exporter:latest
triple=$(rustc -vV | sed -n 's/^host: //p')
scripts/sbom.sh "${CARGO_TARGET_DIR:-target}/image/sbom" \
    "${MDE_IMAGE_BINARY:-${CARGO_TARGET_DIR:-target}/$triple/release/mde-liveresponse-exporter}"
echo "check-image: OK ($((SECONDS - start)) s)"

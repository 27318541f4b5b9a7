#!/usr/bin/env bash
# The container image, built and run here (#35), without a daemon:
#   - scripts/image.sh builds it (static release binary, deploy/image/rootfs.sh,
#     deploy/Containerfile FROM scratch) into buildah's store as
#     localhost/mde-liveresponse-exporter;
#   - scripts/check_image.py checks its configuration (non-root user, entrypoint, state volume,
#     port, OCI labels), its files (static binary, CA bundle, passwd, owner of the state
#     directory, under 25 MB) and runs it with `buildah run --isolation chroot`: the demo on
#     loopback served on /metrics and /transcripts by a process of uid 65532, and the CA bundle
#     the one the binary trusts.
# Needs buildah (Debian package; scripts/test.sh installs it), readelf, openssl, ss.
# MDE_IMAGE_BINARY: use this static binary instead of building one (scripts/image.sh --binary).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in buildah readelf openssl ss; do
    command -v "$tool" >/dev/null || { echo "check-image: $tool not found" >&2; exit 1; }
done
start=$SECONDS
scripts/image.sh ${MDE_IMAGE_BINARY:+--binary "$MDE_IMAGE_BINARY"}
echo "check-image: image built in $((SECONDS - start)) s"
python3 scripts/check_image.py localhost/mde-liveresponse-exporter:latest
echo "check-image: OK ($((SECONDS - start)) s)"

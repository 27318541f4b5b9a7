#!/bin/sh
# Assemble the root filesystem of the mde-liveresponse-exporter image: the one definition of its
# layout, used by scripts/image.sh (buildah, deploy/Containerfile) and by deploy/Dockerfile's
# builder stage, so that both images hold the same files.
#
# Usage: deploy/image/rootfs.sh BINARY CA_BUNDLE OUT
#   BINARY     the static release binary (no PT_INTERP: the image has no C library)
#   CA_BUNDLE  a PEM bundle of trusted roots (Debian's ca-certificates:
#              /etc/ssl/certs/ca-certificates.crt), for the MDE API and the sign-in endpoints
#   OUT        a new directory; OUT/rootfs is copied to / (owned by root), OUT/state to /var/lib
#              (its one folder, the state directory, owned by the non-root user by COPY --chown)
#
# POSIX sh and coreutils only: it runs on the CI machine and in rust:1-bookworm alike.
set -eu
[ $# -eq 3 ] || { echo "usage: $0 BINARY CA_BUNDLE OUT" >&2; exit 2; }
bin=$1
ca=$2
out=$3
[ -f "$bin" ] || { echo "rootfs.sh: no binary at $bin" >&2; exit 1; }
grep -q 'BEGIN CERTIFICATE' "$ca" || { echo "rootfs.sh: $ca holds no PEM certificate" >&2; exit 1; }

rm -rf "$out"
root=$out/rootfs
install -D -m 0755 "$bin" "$root/usr/local/bin/mde-liveresponse-exporter"
# The one path the TLS stack (rustls-native-certs, through openssl-probe) looks at first.
install -D -m 0644 "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
# uid/gid 65532 ("nonroot", as in the distroless images this replaces): a name for the id, so
# that tools which map ids to names show one; no shell, no home.
install -d -m 0755 "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
# Name lookups (statically linked glibc has its files and dns sources built in): /etc/hosts
# first, as Kubernetes and buildah mount it, then DNS.
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
# Where the config is mounted (read-only) and a writable /tmp for nothing in particular: the
# exporter writes only its state file.
install -d -m 0755 "$root/etc/mde-liveresponse-exporter"
install -d -m 1777 "$root/tmp"
# The licence the binary is distributed under.
install -D -m 0644 "$(dirname "$0")/../../LICENSE" "$root/usr/share/doc/mde-liveresponse-exporter/LICENSE"
# The state directory: its owner is set by the image build (COPY --chown=65532:65532), and
# its parents exist here, owned by root (COPY --chown would give new parents the same owner).
install -d -m 0755 "$root/var/lib"
install -d -m 0750 "$out/state/mde-liveresponse-exporter"
echo "rootfs.sh: $(find "$root" -type f | wc -l) files in $root, $(du -sk "$root" | cut -f1) KiB"

#!/usr/bin/env python3
"""The image's SBOM from the binary's (scripts/sbom.sh): CycloneDX 1.5 JSON on stdout.

The image (FROM scratch, deploy/Containerfile) holds the exporter binary, Debian's CA bundle,
a passwd entry and the licence. Its SBOM is therefore the binary's SBOM (cargo-cyclonedx: every
crate compiled in) with a container as the described component, the binary as its first
component, and Debian's ca-certificates package beside it. Nothing is looked up here: the
crates come from cargo-cyclonedx, the package version from dpkg on the building machine (the
bundle deploy/image/rootfs.sh copies).

Usage: scripts/sbom_image.py BINARY_SBOM CA_CERTIFICATES_VERSION
"""
import json
import sys
import uuid


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: sbom_image.py BINARY_SBOM CA_CERTIFICATES_VERSION")
    path, ca_version = sys.argv[1], sys.argv[2]
    try:
        with open(path) as f:
            bom = json.load(f)
        binary = bom["metadata"]["component"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"sbom_image.py: {path} is not a CycloneDX SBOM of a binary: {e}")
    version = binary.get("version", "unknown")
    image_ref = f"image:mde-liveresponse-exporter@{version}"
    ca_ref = f"pkg:deb/debian/ca-certificates@{ca_version}"
    ca = {
        "type": "library",
        "bom-ref": ca_ref,
        "name": "ca-certificates",
        "version": ca_version,
        "description": "Debian's CA bundle, /etc/ssl/certs/ca-certificates.crt in the image",
        "licenses": [{"expression": "MPL-2.0"}],
        "purl": ca_ref,
    }
    image = {
        "type": "container",
        "bom-ref": image_ref,
        "name": "mde-liveresponse-exporter",
        "version": version,
        "description": "The mde-liveresponse-exporter image, FROM scratch (deploy/Containerfile)",
        "licenses": binary.get("licenses", []),
    }
    metadata = dict(bom["metadata"])
    metadata["component"] = image
    out = {
        "bomFormat": "CycloneDX",
        "specVersion": bom.get("specVersion", "1.5"),
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": metadata,
        "components": [binary, ca] + bom.get("components", []),
        "dependencies": [{"ref": image_ref, "dependsOn": [binary["bom-ref"], ca_ref]}, {"ref": ca_ref, "dependsOn": []}]
        + bom.get("dependencies", []),
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

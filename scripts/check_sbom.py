#!/usr/bin/env python3
"""Check the SBOMs that scripts/sbom.sh made against the binary they describe.

Two independent accounts of what the exporter binary is made of must agree:
  - the SBOM (cargo-cyclonedx, from Cargo.lock and cargo's resolution for the target triple);
  - the crate list cargo-auditable embedded in the binary at link time (the `.dep-v0` section:
    zlib-compressed JSON, https://github.com/rust-secure-code/cargo-auditable, format 0),
    read here with objcopy and Python's zlib, not with either tool.
Every crate linked into the binary must be in the SBOM at its version, and the SBOM must name
no crate the binary was not built from (it may name the proc macros that generated code in it,
which cargo-auditable records as compile-time crates). Both SBOMs are also
checked as CycloneDX 1.5 documents: bom-refs unique, every dependency edge resolvable, every
registry crate with a `pkg:cargo/NAME@VERSION` purl; the image's SBOM describes a container
holding the binary and Debian's ca-certificates at the version given.

Usage: scripts/check_sbom.py BINARY BINARY_SBOM IMAGE_SBOM CA_CERTIFICATES_VERSION
Exit 0 when everything holds; otherwise each problem on stderr, exit 1.
"""
import json
import os
import subprocess
import sys
import tempfile
import zlib

problems = []


def fail(msg):
    problems.append(msg)
    print(f"check_sbom: FAIL {msg}", file=sys.stderr)


def embedded_crates(binary):
    """(name, version) of the crates cargo-auditable recorded, the root excluded: those linked
    into the binary (kind "runtime"), and all of them (with the compile-time ones: build
    scripts' dependencies, proc macros and what they use)."""
    with tempfile.TemporaryDirectory() as tmp:
        section = os.path.join(tmp, "dep-v0")
        r = subprocess.run(
            ["objcopy", "--dump-section", f".dep-v0={section}", binary, os.path.join(tmp, "copy")],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0 or not os.path.exists(section):
            sys.exit(
                f"check_sbom: {binary} has no .dep-v0 section (built without `cargo auditable build`?): "
                + r.stderr.strip()
            )
        with open(section, "rb") as f:
            data = json.loads(zlib.decompress(f.read()))
    runtime, everything = set(), set()
    root = None
    for p in data.get("packages", []):
        if p.get("root"):
            root = (p["name"], p["version"])
            continue
        everything.add((p["name"], p["version"]))
        if p.get("kind", "runtime") != "build":
            runtime.add((p["name"], p["version"]))
    return root, runtime, everything


def check_cyclonedx(name, bom):
    if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
        fail(f"{name}: not CycloneDX 1.5 (bomFormat {bom.get('bomFormat')!r}, specVersion {bom.get('specVersion')!r})")
    if not str(bom.get("serialNumber", "")).startswith("urn:uuid:"):
        fail(f"{name}: serialNumber is not a urn:uuid")
    meta = bom.get("metadata", {}).get("component")
    if not meta or "bom-ref" not in meta:
        fail(f"{name}: no described component (metadata.component with a bom-ref)")
        return {}
    refs = {meta["bom-ref"]: meta}
    for c in bom.get("components", []):
        ref = c.get("bom-ref")
        if not ref:
            fail(f"{name}: component {c.get('name')} has no bom-ref")
        elif ref in refs and refs[ref] is not meta:
            fail(f"{name}: bom-ref {ref} used twice")
        refs[ref] = c
        if "crates.io-index" in (ref or "") and c.get("purl") != f"pkg:cargo/{c.get('name')}@{c.get('version')}":
            fail(f"{name}: crate {c.get('name')}@{c.get('version')} has purl {c.get('purl')!r}")
    dangling = set()
    for d in bom.get("dependencies", []):
        for ref in [d.get("ref")] + list(d.get("dependsOn", [])):
            if ref not in refs and ref not in dangling:
                dangling.add(ref)
                fail(f"{name}: dependency edge names {ref}, which is no component")
    return refs


def crates_of(bom):
    return {(c["name"], c["version"]) for c in bom.get("components", []) if c.get("type") == "library" and "purl" in c and c["purl"].startswith("pkg:cargo/")}


def compare(listed, embedded, compiled):
    """Every crate linked in is listed; the SBOM may also list the proc macros (and their own
    dependencies) that generated code in it, which cargo-auditable records as compile-time."""
    out = [f"{n}@{v} is compiled into the binary but missing from the SBOM" for n, v in sorted(embedded - listed)]
    out += [f"{n}@{v} is in the SBOM but the binary was not built from it" for n, v in sorted(listed - compiled)]
    return out


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: check_sbom.py BINARY BINARY_SBOM IMAGE_SBOM CA_CERTIFICATES_VERSION")
    binary, binary_sbom, image_sbom, ca_version = sys.argv[1:]
    root, embedded, compiled = embedded_crates(binary)
    boms = {}
    for label, path in (("binary SBOM", binary_sbom), ("image SBOM", image_sbom)):
        try:
            with open(path) as f:
                boms[label] = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"check_sbom: {label} {path}: {e}")
        check_cyclonedx(label, boms[label])

    binary_bom = boms["binary SBOM"]
    described = binary_bom["metadata"]["component"]
    if root and (described.get("name"), described.get("version")) != root:
        fail(f"binary SBOM describes {described.get('name')}@{described.get('version')}, the binary is {root[0]}@{root[1]}")
    listed = crates_of(binary_bom)
    differences = compare(listed, embedded, compiled)
    for msg in differences:
        fail(msg)
    # The comparison can fail: one linked crate left out and one foreign crate added must be
    # the two differences it reports.
    if embedded and not differences:
        dropped = sorted(embedded)[0]
        mutated = (listed - {dropped}) | {("not-a-crate-of-this-binary", "0.0.1")}
        want = [
            f"{dropped[0]}@{dropped[1]} is compiled into the binary but missing from the SBOM",
            "not-a-crate-of-this-binary@0.0.1 is in the SBOM but the binary was not built from it",
        ]
        got = compare(mutated, embedded, compiled)
        if got != want:
            fail(f"the comparison does not see a changed SBOM: {got}")

    image_bom = boms["image SBOM"]
    image = image_bom["metadata"]["component"]
    if image.get("type") != "container":
        fail(f"image SBOM describes a {image.get('type')!r}, not a container")
    if crates_of(image_bom) != listed:
        fail("image SBOM does not list the binary's crates")
    names = {(c.get("name"), c.get("version"), c.get("type")) for c in image_bom.get("components", [])}
    if ("ca-certificates", ca_version, "library") not in names:
        fail(f"image SBOM has no ca-certificates {ca_version}")
    if (described.get("name"), described.get("version"), "application") not in names:
        fail("image SBOM does not hold the exporter binary as a component")
    edges = {d["ref"]: d.get("dependsOn", []) for d in image_bom.get("dependencies", [])}
    if described.get("bom-ref") not in edges.get(image.get("bom-ref"), []):
        fail("image SBOM: the container does not depend on the binary")

    if problems:
        sys.exit(1)
    print(
        f"check_sbom: OK: the {len(embedded)} crates linked into the binary (cargo-auditable) are in the SBOM, "
        f"with {len(listed - embedded)} proc macros and their dependencies; image SBOM: container, binary, "
        f"ca-certificates {ca_version}"
    )


if __name__ == "__main__":
    main()

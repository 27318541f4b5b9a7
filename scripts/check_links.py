#!/usr/bin/env python3
"""Fail on a broken relative link or anchor in README.md and docs/*.md.

Checked: every Markdown link `[text](target)` outside fenced code blocks and code spans whose
target is not absolute (no `scheme:`, not `//…`). The file part must exist (relative to the page);
an `#anchor` must match a heading of the target page (or of the page itself for `#anchor`),
slugged as GitHub does (lower case, punctuation but `-` and `_` dropped, spaces become `-`,
repeated headings get `-1`, `-2`…). Exit 0 when all resolve, 1 listing each broken one.

    python3 scripts/check_links.py              # README.md and docs/*.md from the repository root
    python3 scripts/check_links.py --self-test  # its own unit tests
"""
import pathlib
import re
import sys
import tempfile
import unittest

LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
IMAGE = re.compile(r"!\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ABSOLUTE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


def slug(text):
    """GitHub's heading anchor: lower case, markup and punctuation dropped, spaces to `-`."""
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if marker:
            if fence is None:
                fence = marker.group(1)[0]
            elif stripped.startswith(fence * 3):
                fence = None
            continue
        if fence is None:
            yield number, line


def anchors(text):
    seen, out = {}, set()
    for _, line in prose_lines(text):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else "%s-%d" % (base, n))
    return out


def links(text):
    for number, line in prose_lines(text):
        line = re.sub(r"`[^`]*`", "", line)
        for pattern in (LINK, IMAGE):
            for m in pattern.finditer(line):
                yield number, m.group(1)


def check(root, pages):
    errors, cache = [], {}

    def anchors_of(path):
        if path not in cache:
            cache[path] = anchors(path.read_text(encoding="utf-8"))
        return cache[path]

    for page in pages:
        text = page.read_text(encoding="utf-8")
        for number, target in links(text):
            if ABSOLUTE.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page.resolve()
            where = "%s:%d: link %s" % (page.relative_to(root), number, target)
            if not dest.exists():
                errors.append("%s: %s does not exist" % (where, file_part))
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors_of(dest):
                errors.append("%s: no heading #%s in %s" % (where, anchor, dest.relative_to(root)))
    return errors


def default_pages(root):
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


class SelfTest(unittest.TestCase):
    def tree(self, files):
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        root = pathlib.Path(d.name)
        for name, body in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(body)
        return root

    def test_slug(self):
        self.assertEqual(slug("Why `prometheus-client`"), "why-prometheus-client")
        self.assertEqual(slug("The MDE API's announced retirement (MC1220762)"),
                         "the-mde-apis-announced-retirement-mc1220762")
        self.assertEqual(slug("Dashboards, alerts and deployment"), "dashboards-alerts-and-deployment")

    def test_good_links_pass(self):
        root = self.tree({
            "README.md": "# T\n[a](docs/a.md#two-words) [b](#t) [c](https://x/#nope) `[d](#nope)`\n",
            "docs/a.md": "# A\n## Two words\n[back](../README.md#t)\n```\n[x](#fenced)\n```\n",
        })
        self.assertEqual(check(root, default_pages(root)), [])

    def test_missing_file_and_anchor_fail(self):
        root = self.tree({
            "README.md": "# T\n[a](docs/gone.md) [b](docs/a.md#nope) [c](#also-nope)\n",
            "docs/a.md": "# A\n",
        })
        errors = check(root, default_pages(root))
        self.assertEqual(len(errors), 3, errors)
        self.assertIn("README.md:2: link docs/gone.md: docs/gone.md does not exist", errors[0])
        self.assertIn("no heading #nope in docs/a.md", errors[1])
        self.assertIn("no heading #also-nope in README.md", errors[2])

    def test_repeated_heading_gets_suffix(self):
        root = self.tree({"README.md": "# X\n## X\n[a](#x-1) [b](#x-2)\n"})
        errors = check(root, default_pages(root))
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("#x-2", errors[0])

    def test_heading_in_fence_is_not_an_anchor(self):
        root = self.tree({"README.md": "# X\n```\n# not a heading\n```\n[a](#not-a-heading)\n"})
        self.assertEqual(len(check(root, default_pages(root))), 1)


def main(argv):
    if "--self-test" in argv:
        result = unittest.main(argv=[argv[0]], exit=False, verbosity=1).result
        return 0 if result.wasSuccessful() else 1
    root = pathlib.Path(__file__).resolve().parent.parent
    errors = check(root, default_pages(root))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print("check_links: %d broken link(s)" % len(errors), file=sys.stderr)
        return 1
    print("check_links: all relative links and anchors in README.md and docs/*.md resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

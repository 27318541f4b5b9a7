#!/usr/bin/env python3
"""Fail on a broken relative link, anchor or backticked path in README.md, docs/*.md and
scripts/README.md.

Checked, outside fenced code blocks:
- every Markdown link `[text](target)` (not inside a code span) whose target is not absolute
  (no `scheme:`, not `//…`). The file part must exist (relative to the page); an `#anchor` must
  match a heading of the target page (or of the page itself for `#anchor`), slugged as GitHub
  does (lower case, punctuation but `-` and `_` dropped, spaces become `-`, repeated headings
  get `-1`, `-2`…);
- every word of a code span that names a file or folder of the repository: it starts with one
  of the repository's top-level entries (`src/`, `scripts/`, `deploy/`, `README.md`, `.ci/`…)
  and contains a `/` or ends in a known extension (.md .rs .py .sh .yml .yaml .json .toml
  .jsonnet .libsonnet .mjs .tmpl .txt). It is read relative to the repository root and must
  exist (a path under a folder that moved away, `bench/` or `tools/`, never does); a `#anchor`
  after a .md file must be one of its headings. Not paths, and skipped:
  URLs, globs (`*`), placeholders (`<…>`, `{…}`, `$VAR`, `%s`), elisions (`...`, `…`),
  absolute and home paths (`/var/…`, `~/…`), and what a build makes (`target/`, `.tools/`,
  `benches/out`). A trailing `:LINE` is dropped.
Exit 0 when all resolve, 1 listing each broken one.

    python3 scripts/check_links.py                  # from the repository root: everything
    python3 scripts/check_links.py --ignore src/    # the same, but no backticked path under src/
    python3 scripts/check_links.py --self-test      # its own unit tests
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
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
PATH_EXTENSIONS = (".md", ".rs", ".py", ".sh", ".yml", ".yaml", ".json", ".toml", ".jsonnet",
                   ".libsonnet", ".mjs", ".tmpl", ".txt")
# Top-level entries that are made by a build or a run, never committed.
BUILT = ("target", "target-", ".tools", ".git", "node_modules", "benches/out", "bench/out")
# Top-level folders that were moved away (bench/ to benches/scripts/, tools/ to scripts/tools/):
# a path under them is a stale one, not a name from elsewhere.
MOVED = {"bench", "tools"}
NOT_A_PATH = re.compile(r"[*<>{}$%~\\|]|\.\.\.|…|^/|^[a-zA-Z][a-zA-Z0-9+.-]*://")


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


def top_level(root):
    """The names of the repository's top-level files and folders (the start of a path)."""
    return ({p.name for p in root.iterdir() if not p.name.startswith(".git")} | MOVED) - {"__pycache__"}


def path_words(text):
    """(line number, word) for each word of a code span outside fences that may be a path."""
    for number, line in prose_lines(text):
        for m in CODE_SPAN.finditer(line):
            for word in m.group(2).split():
                word = word.strip("\"'()[],;")
                word = re.sub(r"[.:]+$", "", word) if not word.endswith("..") else word
                word = re.sub(r":\d+$", "", word)
                if word:
                    yield number, word


def repo_path(word, names):
    """The repository-relative path a code-span word names, or None when it names none."""
    if NOT_A_PATH.search(word) or "=" in word or word.startswith("-"):
        return None
    path = word.partition("#")[0]
    first = path.split("/", 1)[0]
    if first not in names or first.startswith(BUILT) or path.startswith(BUILT):
        return None
    if "/" not in path and not path.endswith(PATH_EXTENSIONS):
        return None
    return word


def check(root, pages, ignore=()):
    errors, cache = [], {}
    names = top_level(root)

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
        for number, word in path_words(text):
            target = repo_path(word, names)
            if target is None or any(target.startswith(prefix) for prefix in ignore):
                continue
            file_part, _, anchor = target.partition("#")
            dest = root / file_part
            where = "%s:%d: path `%s`" % (page.relative_to(root), number, target)
            if not dest.exists():
                errors.append("%s: %s does not exist" % (where, file_part))
            elif anchor and dest.suffix == ".md" and anchor not in anchors_of(dest.resolve()):
                errors.append("%s: no heading #%s in %s" % (where, anchor, file_part))
    return errors


def default_pages(root):
    extra = [root / "scripts" / "README.md"]
    return [root / "README.md"] + sorted((root / "docs").glob("*.md")) + [p for p in extra if p.exists()]


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

    def test_backticked_paths_must_exist(self):
        root = self.tree({
            "README.md": "# T\n`scripts/a.sh`, `scripts/gone.sh --flag` and (`deploy/x/`).\n"
                         "Run `python3 scripts/a.sh` or `docs/a.md#a`; `docs/a.md#b`, `README.md`, `docs/gone.md`\n"
                         "and `CHANGELOG.md` (no such top-level entry here: not a path of this tree).\n",
            "scripts/a.sh": "",
            "deploy/x/y.yml": "",
            "docs/a.md": "# A\n",
        })
        errors = check(root, default_pages(root))
        self.assertEqual(len(errors), 3, errors)
        self.assertIn("README.md:2: path `scripts/gone.sh`: scripts/gone.sh does not exist", errors[0])
        self.assertIn("README.md:3: path `docs/a.md#b`: no heading #b in docs/a.md", errors[1])
        self.assertIn("path `docs/gone.md`: docs/gone.md does not exist", errors[2])

    def test_what_is_not_a_path_is_skipped(self):
        root = self.tree({
            "README.md": "# T\n`https://x/src/a.rs` `src/*.rs` `src/<name>.rs` `src/{a,b}.rs` "
                         "`$HOME/src/a.rs` `/var/lib/x.rs` `/etc/src/a.yml` `~/src/a.rs` `src/...` "
                         "`src/…/a.rs` `target/release/x` `.tools/bin/helm` `benches/out/x.txt` "
                         "`config.yml` `base/config.yml` `a::b=debug` `docs/runbook.md#%s` "
                         "`--x=src/a.rs` `tenant=src/x`\n"
                         "```\n`src/fenced.rs`\n```\n",
            "src/lib.rs": "",
            "benches/x.rs": "",
        })
        self.assertEqual(check(root, default_pages(root)), [])

    def test_trailing_punctuation_and_line_numbers(self):
        root = self.tree({"README.md": "# T\n`src/lib.rs:12`, `src/lib.rs.` `src/gone.rs:3` `bench/x.sh`\n",
                          "src/lib.rs": ""})
        errors = check(root, default_pages(root))
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("src/gone.rs does not exist", errors[0])
        self.assertIn("bench/x.sh does not exist", errors[1])

    def test_ignore_skips_a_prefix_of_backticked_paths_only(self):
        root = self.tree({"README.md": "# T\n`src/gone.rs` `scripts/gone.sh` [a](src/gone.rs)\n",
                          "src/lib.rs": "", "scripts/a.sh": ""})
        errors = check(root, default_pages(root), ignore=("src/",))
        self.assertEqual(len(errors), 2, errors)
        self.assertIn("link src/gone.rs", errors[0])
        self.assertIn("path `scripts/gone.sh`", errors[1])

    def test_heading_in_fence_is_not_an_anchor(self):
        root = self.tree({"README.md": "# X\n```\n# not a heading\n```\n[a](#not-a-heading)\n"})
        self.assertEqual(len(check(root, default_pages(root))), 1)


def main(argv):
    if "--self-test" in argv:
        result = unittest.main(argv=[argv[0]], exit=False, verbosity=1).result
        return 0 if result.wasSuccessful() else 1
    ignore = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ignore"]
    root = pathlib.Path(__file__).resolve().parent.parent
    pages = default_pages(root)
    errors = check(root, pages, ignore)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print("check_links: %d broken link(s) or path(s)" % len(errors), file=sys.stderr)
        return 1
    skipped = " (backticked paths under %s not checked)" % ", ".join(ignore) if ignore else ""
    print("check_links: all relative links, anchors and backticked paths of %d pages resolve%s"
          % (len(pages), skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

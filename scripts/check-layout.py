#!/usr/bin/env python3
"""Layout rules of the workspace (issue #19); exit 1 naming every file or circle that breaks one.

(a) no .rs file under src/ of a workspace member (., crates/mde-sim, crates/exporter-web,
    crates/flat-log) is over 700 lines, test files and `#[cfg(test)]` modules included;
(b) src/main.rs is at most 120 lines;
(c) no import circle between the modules of one crate;
(d) no two folders import each other, even through different files: for two sibling modules
    A and B (the same parent; a folder counts with everything below it), some file under A
    importing something under B and some file under B importing something under A is an
    arrow back up (a longer ring of siblings too), named with one import each way;
(e) no `#[path = ...]` attribute: a file sits where its module is;
(f) every module file (not a crate root, test or fixtures file) opens with a `//!` header that
    says what it owns ("owns"/"own") and what it does not ("does not own", "not own", "nor").

How (c) reads the code. A module is a file or a folder (`src/a.rs` and `src/a/mod.rs` are module
`a`, `src/a/b.rs` is `a::b`; `lib.rs`/`main.rs` are the crate root, shown as `crate`). Comments
and string literals are ignored. An edge M -> N is any path M names that starts with `crate::`,
`super::` or `self::` (in `use` items, brace groups expanded, and anywhere in code), resolved to
the longest module prefix N. A path through a re-export counts as the real dependency: when the
item is brought into N by `pub use` (or `pub(crate) use`), the edge goes on to where that `use`
points, so `use crate::mde::Error` with `pub use error::Error` in mde/mod.rs is an edge to
`mde::error`. The `pub use` itself is no edge of mde (a facade does not depend on what it
re-exports; its users do, and they get the edge), nor is a `mod x;` declaration. A private
`use child::X` in a parent is an edge like any other, so a parent and a child that import each
other (`use super::LogFormat` back) are a circle. Excluded: modules under `#[cfg(test)]` (a `#[cfg(test)] mod x { … }` block, or a
`#[cfg(test)] mod x;` file and everything below it), since test code may reach back into the
module it tests. A module naming itself is no circle.

    python3 scripts/check-layout.py              # check the workspace
    python3 scripts/check-layout.py --self-test  # its unit tests on tiny fixture trees
"""
import pathlib
import re
import sys
import tempfile
import unittest

MEMBERS = [".", "crates/mde-sim", "crates/exporter-web", "crates/flat-log"]
MAX_LINES = 700
MAX_MAIN_LINES = 120


def strip_code(text):
    """Comments and string/char literals blanked out; line structure kept."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif re.match(r'b?r#*"', text[i:i + 8]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append("\n" * text.count("\n", i, end) + '""')
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append("\n" * text.count("\n", i, j) + '""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:]):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


CFG_TEST = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])")


def split_test_code(code):
    """(code without `#[cfg(test)]` modules, names of `#[cfg(test)] mod x;` files)."""
    test_files, parts, pos = set(), [], 0
    for m in CFG_TEST.finditer(code):
        if m.start() < pos:
            continue
        if m.group(2) == ";":
            test_files.add(m.group(1))
            continue
        end = matching_brace(code, m.end() - 1)
        parts.append(code[pos:m.start()])
        parts.append("\n" * code.count("\n", m.start(), end + 1))
        pos = end + 1
    parts.append(code[pos:])
    return "".join(parts), test_files


def expand_use(tree):
    """`a::{b, c::{d, self}}` -> ['a::b', 'a::c::d', 'a::c']."""
    tree = re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree))
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [tree[:-6] if tree.endswith("::self") else tree]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    out = []
    for item in items:
        if not item:
            continue
        if item == "self":
            out.append(prefix.rstrip(":"))
        else:
            out += expand_use(prefix + item)
    return out


USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
PATH = re.compile(r"(?<![\w:])((?:crate|super|self)(?:\s*::\s*\w+)+)")


class Crate:
    def __init__(self, src):
        self.src = src
        self.modules = {}  # module path (tuple) -> file
        self.test_modules = set()
        self.code = {}
        for f in sorted(src.rglob("*.rs")):
            rel = f.relative_to(src).with_suffix("").parts
            if rel in (("lib",), ("main",)):
                mod = ()
            elif rel[0] == "bin":
                continue
            elif rel[-1] == "mod":
                mod = tuple(rel[:-1])
            else:
                mod = tuple(rel)
            if mod == () and () in self.modules and rel == ("main",):
                mod = ("<main>",)  # a binary root beside lib.rs: its own node
            self.modules[mod] = f
        for mod, f in self.modules.items():
            code, test_files = split_test_code(strip_code(f.read_text(encoding="utf-8")))
            self.code[mod] = code
            base = () if mod == ("<main>",) else mod
            for t in test_files:
                self.test_modules.add(base + (t,))
        self.reexports = {mod: {} for mod in self.modules}
        for mod, code in self.code.items():
            for m in USE.finditer(code):
                if not m.group(1):
                    continue
                for path in expand_use(m.group(2)):
                    name = path.split("::")[-1]
                    if name != "*":
                        self.reexports[mod][name] = self.absolute(mod, path)

    def excluded(self, mod):
        return any(mod[:k] in self.test_modules for k in range(1, len(mod) + 1))

    def absolute(self, mod, path):
        """Segments of `path` as seen from `mod`, from the crate root, or None (another crate)."""
        segs = [s for s in re.split(r"\s*::\s*", path.strip()) if s]
        base = list(mod) if mod != ("<main>",) else []
        if segs[0] == "crate":
            return segs[1:]
        if segs[0] == "self":
            return base + segs[1:]
        if segs[0] == "super":
            here = base
            while segs and segs[0] == "super":
                here = here[:-1]
                segs = segs[1:]
            return here + segs
        if tuple(base + segs[:1]) in self.modules:
            return base + segs  # `use child::X` in a parent names its own child module
        return None

    def resolve(self, segs, seen=()):
        """The module that really holds the item `segs` names (following `pub use`)."""
        for k in range(len(segs), -1, -1):
            mod = tuple(segs[:k])
            if mod in self.modules:
                break
        rest = segs[k:]
        if rest and rest[0] in self.reexports.get(mod, {}) and (mod, rest[0]) not in seen:
            target = self.reexports[mod][rest[0]]
            if target is not None:
                return self.resolve(target + rest[1:], seen + ((mod, rest[0]),))
        return mod

    def edges(self):
        """{(from, to): 'file:line text'} between distinct, non-test modules."""
        out = {}
        for mod, code in self.code.items():
            if self.excluded(mod):
                continue
            paths = []
            for m in USE.finditer(code):
                if m.group(1):
                    continue  # a re-export: followed by whoever names it, no edge of its own
                for p in expand_use(m.group(2)):
                    paths.append((m.start(), p))
            code_wo_use = USE.sub(lambda m: "\n" * m.group(0).count("\n"), code)
            for m in PATH.finditer(code_wo_use):
                paths.append((m.start(), m.group(1)))
            for at, p in paths:
                segs = self.absolute(mod, p)
                if segs is None:
                    continue
                if segs and segs[-1] == "*":
                    segs = segs[:-1]
                to = self.resolve(segs)
                if to == mod or self.excluded(to) or to == ("<main>",):
                    continue
                line = code.count("\n", 0, at) + 1
                out.setdefault((mod, to), "%s:%d (%s)" % (self.modules[mod], line, re.sub(r"\s+", "", p)))
        return out


def name(mod):
    return "::".join(mod) if mod else "crate"


def cycles(crate):
    """One circle per strongly connected component of more than one module."""
    edges = crate.edges()
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    found = []
    for comp in comps:
        start = min(comp)
        # the shortest way round from `start` inside the component (breadth first)
        prev, frontier, last = {start: None}, [start], None
        while frontier and last is None:
            nxt = []
            for v in frontier:
                targets = graph.get(v, set()) & comp
                if start in targets:
                    last = v
                    break
                for w in sorted(targets):
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        chain, u = [], last
        while u is not None:
            chain.append(u)
            u = prev[u]
        chain = chain[::-1] + [start]
        found.append((chain, [edges[(chain[i], chain[i + 1])] for i in range(len(chain) - 1)], comp))
    return found


def sibling_pair(a, b):
    """The two sibling modules under which `a` and `b` sit apart, or None (one holds the other)."""
    k = 0
    while k < len(a) and k < len(b) and a[k] == b[k]:
        k += 1
    if k == len(a) or k == len(b):
        return None
    return a[:k + 1], b[:k + 1]


def strong_components(graph):
    """Strongly connected components of more than one node (Tarjan, iterative order)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return comps


def folder_circles(crate, file_circles=()):
    """[(sibling modules that import each other, evidence lines)] of one crate; the imports of
    a file circle (`file_circles`: its components) are left to that circle's report."""
    in_circle = {m: i for i, comp in enumerate(file_circles) for m in comp}
    graph, why = {}, {}
    for (a, b), w in crate.edges().items():
        if a in ((), ("<main>",)) or b == ():
            continue
        if a in in_circle and in_circle.get(b) == in_circle[a]:
            continue
        pair = sibling_pair(a, b)
        if pair is None:
            continue
        graph.setdefault(pair[0], set()).add(pair[1])
        why.setdefault(pair, w)
    found = []
    for comp in strong_components(graph):
        members = set(comp)
        lines = [why[(x, y)] for x in comp for y in sorted(graph.get(x, ())) if y in members]
        found.append((comp, lines))
    return found


TEST_FILE = re.compile(r"(^|/)(tests?|fixtures)(/|\.rs$)|_tests\.rs$")
NOT_OWN = re.compile(r"does not own|not own|\bnor\b|never own", re.I)


def header_problem(rel, text):
    """Why a module file's header breaks (f), or None."""
    if rel.name in ("main.rs", "lib.rs") or TEST_FILE.search(rel.as_posix()):
        return None
    header = []
    for line in text.splitlines():
        if line.startswith("//!"):
            header.append(line[3:])
        elif header or line.strip():
            break
    if not header:
        return "no //! header saying what the module owns and what it does not"
    words = re.sub(r"\s+", " ", " ".join(header))
    if not re.search(r"\bowns?\b", words, re.I):
        return "its //! header does not say what the module owns"
    if not NOT_OWN.search(words):
        return "its //! header does not say what the module does not own"
    return None


PATH_ATTR = re.compile(r"#\[\s*path\s*=")


def check(root, headers=True):
    errors = []
    for member in MEMBERS:
        src = root / member / "src"
        if not src.is_dir():
            continue
        for f in sorted(src.rglob("*.rs")):
            lines = len(f.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                errors.append("%s: %d lines, over the %d-line limit" % (f.relative_to(root), lines, MAX_LINES))
        main = src / "main.rs"
        if member == "." and main.exists():
            lines = len(main.read_text(encoding="utf-8").splitlines())
            if lines > MAX_MAIN_LINES:
                errors.append("%s: %d lines, over the %d-line limit for main.rs (wiring belongs in app)"
                              % (main.relative_to(root), lines, MAX_MAIN_LINES))
        crate = Crate(src)
        file_circles = cycles(crate)
        for chain, why, comp in file_circles:
            errors.append("import circle in %s: %s%s\n    %s" % (
                member, " -> ".join(name(m) for m in chain),
                "" if len(comp) == len(chain) - 1 else " (%d modules in the tangle: %s)"
                % (len(comp), ", ".join(sorted(name(m) for m in comp))),
                "\n    ".join(w.replace(str(root) + "/", "") for w in why)))
        for comp, why in folder_circles(crate, [comp for _, _, comp in file_circles]):
            errors.append("folders that import each other in %s: %s\n    %s" % (
                member, " <-> ".join(name(m) for m in comp),
                "\n    ".join(w.replace(str(root) + "/", "") for w in why)))
        for f in sorted(src.rglob("*.rs")):
            why = headers and header_problem(f.relative_to(src), f.read_text(encoding="utf-8"))
            if why:
                errors.append("%s: %s" % (f.relative_to(root), why))
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if PATH_ATTR.search(line):
                    errors.append("%s:%d: #[path] attribute (put the file where its module is)"
                                  % (f.relative_to(root), n))
    return errors


class SelfTest(unittest.TestCase):
    def tree(self, files):
        d = tempfile.TemporaryDirectory()
        self.addCleanup(d.cleanup)
        root = pathlib.Path(d.name)
        for path, body in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(body)
        return root

    def test_clean_tree_passes(self):
        root = self.tree({
            "src/lib.rs": "pub mod a;\npub mod b;\n",
            "src/a.rs": "use crate::b::Thing;\n// use crate::a::x; in a comment\nfn f() { let s = \"crate::b\"; }\n",
            "src/b.rs": "pub struct Thing;\n",
            "src/main.rs": "fn main() {}\n",
        })
        self.assertEqual(check(root, headers=False), [])

    def test_circle_is_named_with_evidence(self):
        root = self.tree({
            "src/lib.rs": "pub mod a;\npub mod b;\npub mod c;\n",
            "src/a.rs": "use crate::b::X;\n",
            "src/b.rs": "pub struct X;\nfn f() { crate::c::g(); }\n",
            "src/c.rs": "use super::{a::Y, b};\npub fn g() {}\n",
        })
        errors = check(root, headers=False)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("import circle in .: a -> b -> c -> a", errors[0])
        self.assertIn("src/c.rs:1 (super::a::Y)", errors[0])
        self.assertIn("src/b.rs:2 (crate::c::g)", errors[0])

    def test_reexport_counts_as_the_real_dependency(self):
        root = self.tree({
            "src/lib.rs": "pub mod m;\npub mod q;\n",
            "src/m/mod.rs": "mod error;\nmod http;\npub use error::Error;\npub use self::http::Client;\n",
            "src/m/error.rs": "pub enum Error {}\n",
            "src/m/http.rs": "use super::Error;\nuse crate::q::Quota;\npub struct Client;\n",
            "src/q.rs": "use crate::m::Client;\npub struct Quota;\n",
        })
        # http -> error is fine (through m's re-export, and m's `pub use` lines are no edges of m);
        # q -> m::Client is q -> m::http: a circle.
        errors = check(root, headers=False)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("m::http -> q -> m::http", errors[0])

    def test_test_modules_are_excluded(self):
        root = self.tree({
            "src/lib.rs": "pub mod a;\npub mod b;\n",
            "src/a.rs": "use crate::b::X;\n#[cfg(test)]\nmod tests {\n    use crate::b::X;\n}\n",
            "src/b.rs": "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::a::*;\n    fn f() { let _ = '{'; }\n}\n"
                        "#[cfg(test)]\nmod fixtures;\n",
            "src/b/fixtures.rs": "use crate::a::Y;\n",
        })
        self.assertEqual(check(root, headers=False), [])

    def test_folders_that_import_each_other_through_different_files(self):
        root = self.tree({
            "src/lib.rs": "pub mod config;\npub mod metrics;\n",
            "src/config/mod.rs": "pub mod rules;\npub mod names;\n",
            "src/config/rules.rs": "use crate::metrics::parse::valid;\n",
            "src/config/names.rs": "pub fn n() {}\n",
            "src/metrics/mod.rs": "pub mod parse;\npub mod store;\n",
            "src/metrics/parse.rs": "pub fn valid() {}\n",
            "src/metrics/store.rs": "use crate::config::names::n;\n",
        })
        # No file circle (rules -> parse, store -> names), but the folders import each other.
        errors = check(root, headers=False)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("folders that import each other in .: config <-> metrics", errors[0])
        self.assertIn("src/config/rules.rs:1 (crate::metrics::parse::valid)", errors[0])
        self.assertIn("src/metrics/store.rs:1 (crate::config::names::n)", errors[0])

    def test_a_child_may_use_its_parent_and_siblings_one_way(self):
        root = self.tree({
            "src/lib.rs": "pub mod a;\n",
            "src/a/mod.rs": "pub mod b;\npub mod c;\npub struct T;\n",
            "src/a/b.rs": "use super::T;\nuse super::c::U;\n",
            "src/a/c.rs": "pub struct U;\n",
        })
        self.assertEqual(check(root, headers=False), [])

    def test_headers_say_what_a_module_owns_and_does_not(self):
        root = self.tree({
            "src/lib.rs": "pub mod a;\npub mod b;\npub mod c;\n#[cfg(test)]\nmod tests;\n",
            "src/a.rs": "//! The a.\n//!\n//! Owns x. Does not own y.\n",
            "src/b.rs": "// not a header\n",
            "src/c.rs": "//! Owns everything.\n",
            "src/tests.rs": "\n",
        })
        self.assertEqual(check(root), [
            "src/b.rs: no //! header saying what the module owns and what it does not",
            "src/c.rs: its //! header does not say what the module does not own",
        ])

    def test_path_attribute_is_refused(self):
        root = self.tree({
            "src/lib.rs": "#[path = \"x.rs\"]\nmod y;\n",
            "src/x.rs": "\n",
        })
        self.assertEqual(check(root, headers=False), ["src/lib.rs:1: #[path] attribute (put the file where its module is)"])

    def test_sizes(self):
        root = self.tree({
            "src/lib.rs": "x\n" * 701,
            "src/main.rs": "x\n" * 121,
            "crates/mde-sim/src/tests.rs": "x\n" * 701,
            "crates/mde-sim/src/main.rs": "x\n" * 200,
        })
        errors = check(root, headers=False)
        self.assertEqual(errors, [
            "src/lib.rs: 701 lines, over the 700-line limit",
            "src/main.rs: 121 lines, over the 120-line limit for main.rs (wiring belongs in app)",
            "crates/mde-sim/src/tests.rs: 701 lines, over the 700-line limit",
        ])

    def test_expand_use(self):
        self.assertEqual(expand_use("crate::a::{b, c::{d, self}, e as f, hasher}"),
                         ["crate::a::b", "crate::a::c::d", "crate::a::c", "crate::a::e", "crate::a::hasher"])


def main(argv):
    if "--self-test" in argv:
        result = unittest.main(argv=[argv[0]], exit=False, verbosity=1).result
        return 0 if result.wasSuccessful() else 1
    root = pathlib.Path(__file__).resolve().parent.parent
    errors = check(root, headers=False)
    for e in errors:
        print("check-layout: " + e, file=sys.stderr)
    if errors:
        print("check-layout: %d problem(s)" % len(errors), file=sys.stderr)
        return 1
    print("check-layout: file sizes, main.rs, module imports and folder imports ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

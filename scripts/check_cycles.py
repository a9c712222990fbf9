#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a cycle.

For every crate root of the workspace (src/lib.rs, src/main.rs, src/bin/*.rs,
tests/*.rs and tests/*/main.rs of each member) this builds the module tree
from `mod` declarations, then an edge for every path that starts with
`crate::`, `super::` or `self::` (in `use` trees and in expressions), from the
module the path is written in to the deepest module it names.

Edges are counted between siblings: an edge from `a::b::c` to `a::d::e` is
the edge `a::b -> a::d` at level `a`. A path between a module and one of its
ancestors or descendants (a parent `mod.rs` using its submodules, a
submodule's `use super::*`) is no edge. Any strongly connected set of two or
more siblings is a cycle and is reported with the lines that make it.

Usage: check_cycles.py [--allow FILE] [ROOT]
  ROOT   the workspace (default: the parent of this script's directory)
  FILE   known cycles to tolerate (default: ROOT/scripts/cycles-allow.txt);
         one per line as printed after "cycle", e.g.
         `node-agent/src/lib.rs: config fill server`; `#` starts a comment.
Exit status: 0 with no cycle outside the allowlist, 1 otherwise.
"""

import os
import re
import sys
from collections import defaultdict

MEMBER_RE = re.compile(r"members\s*=\s*\[([^\]]*)\]", re.S)
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
MOD_DECL_RE = re.compile(r"\b(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")
PATH_ATTR_RE = re.compile(r'#\[path\s*=\s*"([^"]+)"\]')


def strip_code(text):
    """Blanks comments, string and char literals, keeping line breaks."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and re.match(r"[A-Za-z0-9_]", text[i - 1])):
            hashes = len(re.match(r"r(#*)", text[i:]).group(1))
            end = text.find('"' + "#" * hashes, i + 2 + hashes)
            j = n if end < 0 else end + 1 + hashes
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('x', '\n', '"'), or a lifetime ('a).
            if nxt == "\\":
                j = text.find("'", i + 3)
                j = n if j < 0 else j + 1
            elif i + 2 < n and text[i + 2] == "'":
                j = i + 3
            else:
                out.append(c)
                i += 1
                continue
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Module:
    def __init__(self, path, file):
        self.path = path  # tuple of names below the crate root
        self.file = file
        self.children = {}


def child_file(parent_file, parent_is_dir_owner, name):
    """Where `mod name;` in `parent_file` lives."""
    base = os.path.dirname(parent_file)
    if not parent_is_dir_owner:
        stem = os.path.splitext(os.path.basename(parent_file))[0]
        base = os.path.join(base, stem)
    for candidate in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
        if os.path.isfile(candidate):
            return candidate
    return None


def owns_dir(file, is_root):
    return is_root or os.path.basename(file) == "mod.rs"


class Crate:
    def __init__(self, root_file, label):
        self.label = label
        self.modules = {}
        self.uses = []  # (from module path, to module path, file, line)
        self._load(root_file, (), True)

    def _load(self, file, path, is_root):
        with open(file, encoding="utf-8") as f:
            raw = f.read()
        code = strip_code(raw)
        self._scan(code, raw, file, path, is_root)

    def _scan(self, code, raw, file, path, is_root):
        mod = Module(path, file)
        self.modules[path] = mod
        # Walk the file keeping a stack of inline modules (`mod x { ... }`).
        stack = [(path, None)]  # (module path, brace depth where it closes)
        depth = 0
        file_modules = []
        tokens = re.finditer(r"\{|\}|" + MOD_DECL_RE.pattern, code)
        spans = []  # (start offset, module path) in order
        spans.append((0, path))
        for m in tokens:
            t = m.group(0)
            if t == "{":
                depth += 1
            elif t == "}":
                depth -= 1
                if len(stack) > 1 and stack[-1][1] == depth:
                    stack.pop()
                    spans.append((m.end(), stack[-1][0]))
            else:
                name, end = m.group(1), m.group(2)
                current = stack[-1][0]
                if end == "{":
                    inner = current + (name,)
                    self.modules.setdefault(inner, Module(inner, file))
                    self.modules[current].children[name] = self.modules[inner]
                    stack.append((inner, depth))
                    depth += 1
                    spans.append((m.end(), inner))
                elif current == path:
                    # `#[path]` on the line before overrides the location.
                    before = raw[max(0, m.start() - 200) : m.start()]
                    attr = PATH_ATTR_RE.findall(before.split(";")[-1])
                    if attr:
                        target = os.path.join(os.path.dirname(file), attr[-1])
                    else:
                        target = child_file(file, owns_dir(file, is_root), name)
                    if target:
                        file_modules.append((name, target))
        self._paths(code, file, spans)
        for name, target in file_modules:
            self._load(target, path + (name,), False)
            self.modules[path].children[name] = self.modules[path + (name,)]

    def _paths(self, code, file, spans):
        def module_at(offset):
            current = spans[0][1]
            for start, p in spans:
                if start > offset:
                    break
                current = p
            return current

        def line_of(offset):
            return code.count("\n", 0, offset) + 1

        for m in re.finditer(r"\buse\s+([^;]*);", code):
            for p in expand_use_tree(m.group(1)):
                if p and p[0] in ("crate", "super", "self"):
                    self.uses.append((module_at(m.start()), p, file, line_of(m.start())))
        # Paths in expressions and types; `use` items were handled above.
        blank_uses = re.sub(r"\buse\s+[^;]*;", lambda u: re.sub(r"[^\n]", " ", u.group(0)), code)
        for m in re.finditer(r"\b(?:crate|super|self)(?:\s*::\s*" + IDENT + r")+", blank_uses):
            p = [s.strip() for s in m.group(0).split("::")]
            self.uses.append((module_at(m.start()), p, file, line_of(m.start())))

    def resolve(self, at, segments):
        """The deepest module `segments`, written in module `at`, names."""
        segs = list(segments)
        if segs[0] == "crate":
            current = ()
            segs = segs[1:]
        else:
            current = at
            while segs and segs[0] in ("self", "super"):
                if segs[0] == "super":
                    current = current[:-1]
                segs = segs[1:]
        for s in segs:
            mod = self.modules.get(current)
            if mod is None or s not in mod.children:
                break
            current = current + (s,)
        return current

    def sibling_edges(self):
        edges = defaultdict(list)  # (level, a, b) -> [(file, line)]
        for at, segments, file, line in self.uses:
            target = self.resolve(at, segments)
            common = 0
            while common < min(len(at), len(target)) and at[common] == target[common]:
                common += 1
            if common == len(at) or common == len(target):
                continue  # an ancestor or descendant: no edge
            level = at[:common]
            edges[(level, at[common], target[common])].append((file, line))
        return edges


def expand_use_tree(text):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    text = re.sub(r"\s+as\s+" + IDENT, "", text)
    text = re.sub(r"\s+", "", text)

    def parse(s, i, prefix):
        out, seg = [], ""
        while i < len(s):
            c = s[i]
            if c == "{":
                parts = [p for p in prefix + seg.split("::") if p]
                sub, i = parse(s, i + 1, parts)
                out.extend(sub)
                seg = None
            elif c == "}":
                if seg:
                    out.append([p for p in prefix + seg.split("::") if p])
                return out, i + 1
            elif c == ",":
                if seg:
                    out.append([p for p in prefix + seg.split("::") if p])
                seg = ""
                i += 1
                continue
            else:
                seg = (seg or "") + c
            i += 1
        if seg:
            out.append([p for p in prefix + seg.split("::") if p])
        return out, i

    paths, _ = parse(text, 0, [])
    return [[p for p in path if p not in ("*",)] for path in paths]


def strongly_connected(nodes, succ):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ.get(v, ()):
            if w not in index:
                visit(w)
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
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def crate_roots(root):
    with open(os.path.join(root, "Cargo.toml"), encoding="utf-8") as f:
        members = re.findall(r'"([^"]+)"', MEMBER_RE.search(f.read()).group(1))
    for member in members:
        candidates = [os.path.join(member, "src", "lib.rs"), os.path.join(member, "src", "main.rs")]
        for sub in ("src/bin", "tests"):
            d = os.path.join(root, member, sub)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    full = os.path.join(member, sub, name)
                    if name.endswith(".rs"):
                        candidates.append(full)
                    elif os.path.isfile(os.path.join(root, full, "main.rs")):
                        candidates.append(os.path.join(full, "main.rs"))
        for c in candidates:
            if os.path.isfile(os.path.join(root, c)):
                yield c


def main(argv):
    args = argv[1:]
    allow_file = None
    if args[:1] == ["--allow"]:
        allow_file, args = args[1], args[2:]
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    allow_file = allow_file or os.path.join(root, "scripts", "cycles-allow.txt")
    allowed = set()
    if os.path.isfile(allow_file):
        with open(allow_file, encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:
                    allowed.add(" ".join(line.split()))

    found, tolerated = [], []
    for label in crate_roots(root):
        crate = Crate(os.path.join(root, label), label)
        edges = crate.sibling_edges()
        by_level = defaultdict(lambda: defaultdict(set))
        for level, a, b in edges:
            by_level[level][a].add(b)
        for level, succ in sorted(by_level.items()):
            nodes = set(succ) | {b for bs in succ.values() for b in bs}
            for comp in strongly_connected(nodes, succ):
                if len(comp) < 2:
                    continue
                prefix = "::".join(level) + "::" if level else ""
                key = f"{label}: " + " ".join(prefix + m for m in sorted(comp))
                lines = []
                for a in sorted(comp):
                    for b in sorted(succ[a] & set(comp)):
                        where = edges[(level, a, b)]
                        shown = ", ".join(f"{os.path.relpath(f, root)}:{ln}" for f, ln in where[:3])
                        more = f" (+{len(where) - 3})" if len(where) > 3 else ""
                        lines.append(f"    {prefix}{a} -> {prefix}{b}  ({shown}{more})")
                (tolerated if key in allowed else found).append((key, lines))

    for key, lines in tolerated:
        print(f"allowed cycle {key}")
        print("\n".join(lines))
    for key, lines in found:
        print(f"cycle {key}")
        print("\n".join(lines))
    stale = allowed - {k for k, _ in tolerated}
    for key in sorted(stale):
        print(f"note: {os.path.relpath(allow_file, root)} lists {key!r}, which is no longer a cycle: remove it")
    if found:
        print(f"{len(found)} import cycle(s) among sibling modules", file=sys.stderr)
        return 1
    print(f"no import cycles among sibling modules ({len(tolerated)} allowed)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

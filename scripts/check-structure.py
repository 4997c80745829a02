#!/usr/bin/env python3
"""The workspace's shape, checked: what docs/architecture.md promises.

1. No module circle: inside every crate, sibling modules (at any depth) import
   one way. An import is a `crate::`, `super::` or `self::` path in a non-test
   source file; `a::b` importing `a::c` is an edge c <- b among a's children.
   Doc links count: a `[crate::x]` in a comment is a dependency of the docs.
   Where a crate states its order (LAYERS, the map in its lib.rs), every
   top-level module is listed and imports only from strictly lower layers.
2. No source file over 800 lines, except generated code and test fixtures.
3. meshctl's dependency tree holds no libpcap binding, OpenTelemetry or axum.

Text-level, like any import reader: it reads paths, not rustc's name
resolution, so a name that shadows a module can fool it. It is strict rather
than lenient: a path that names a module counts whatever it imports.
Exit 0 when every check holds, 1 with one line per failure otherwise.
"""
import os
import re
import subprocess
import sys

MAX_LINES = 800
ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
# Test code may import anything: integration tests, fixtures, test-only modules.
TEST_FILE = re.compile(r"(/tests/|/fixtures/|/benches/|_tests\.rs$|/tests\.rs$|/testing\.rs$)")
# Inline test modules: from `#[cfg(test)]` before a `mod` to the end of the file (they sit last).
INLINE_TESTS = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{.*", re.S | re.M)
# Each crate's stated module order, lowest layer first (the maps in its lib.rs
# and docs/architecture.md). A new top-level module must be given its layer.
LAYERS = {
    "coordinator": [
        ["clock", "inventory", "telemetry", "shutdown"],
        ["registry"],
        ["error", "dispatch", "metrics"],
        ["bounds", "revocation", "etcd"],
        ["authz", "runs", "tokens", "resolve", "correlate"],
        ["store"],
        ["policy"],
        ["state"],
        ["clock_sync"],
        ["execute", "mesh"],
        ["tool_run", "capture"],
        ["diagnose"],
        ["matrix"],
        ["clock_udp", "enroll"],
        ["link", "control", "peer", "web"],
        ["server"],
    ],
    "probe": [
        ["types", "time", "backoff", "coordinators", "error", "interfaces", "metrics", "telemetry"],
        ["platform"],
        ["capture"],
        ["tasks"],
        ["clock_udp", "renew"],
        ["link", "join"],
    ],
}
FORBIDDEN_IN_MESHCTL = re.compile(r"^(pcap|opentelemetry[\w-]*|axum[\w-]*|tracing-opentelemetry) v", re.M)


def crate_roots():
    """src/ directories of every crate in the workspace (a folder with Cargo.toml and src/)."""
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if x not in ("target", ".git", "node_modules")]
        if "Cargo.toml" in files and os.path.isdir(os.path.join(d, "src")):
            yield os.path.join(d, "src")


def module_of(src, path):
    """`src/a/b.rs` -> ('a', 'b'); `src/a/mod.rs` -> ('a',); lib.rs/main.rs -> ()."""
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod" or (len(rel) == 1 and rel[0] in ("lib", "main")):
        rel = rel[:-1]
    return tuple(rel)


def resolve(current, segments, modules):
    """The module a path names: the longest prefix of `segments` that is a module."""
    best = None
    for i in range(1, len(segments) + 1):
        if tuple(segments[:i]) in modules:
            best = tuple(segments[:i])
    return best


def import_paths(text):
    """Every `crate::`/`super::`/`self::` path, with `use` groups expanded one level."""
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)+)(::\{([^}]*)\})?", text):
        head = [m.group(1)] + m.group(2).split("::")[1:]
        if m.group(4):
            for item in m.group(4).split(","):
                item = item.strip().split(" as ")[0].split("::")
                if item and item[0] and item[0] != "self":
                    yield head + [x for x in item if x and x != "*"]
            yield head
        else:
            yield head


def absolute(current, path):
    """A path relative to `current` (the importing module) made absolute."""
    base, rest = list(current), path[1:]
    if path[0] == "crate":
        base = []
    elif path[0] == "super":
        base = base[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    return base + rest


def circles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(20000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def check_circles():
    failures = []
    for src in sorted(crate_roots()):
        crate = os.path.relpath(os.path.dirname(src), ROOT)
        files = {}
        for d, _, fs in os.walk(src):
            for f in fs:
                if f.endswith(".rs"):
                    p = os.path.join(d, f)
                    files[p] = module_of(src, p)
        modules = set(files.values())
        edges = {}
        for p, current in files.items():
            if TEST_FILE.search(p):
                continue
            text = INLINE_TESTS.sub("", open(p, errors="replace").read())
            for path in import_paths(text):
                target = resolve(current, absolute(current, path), modules)
                if target is None:
                    continue
                common = 0
                while common < min(len(current), len(target)) and current[common] == target[common]:
                    common += 1
                if common == len(current) or common == len(target):
                    continue  # a module and its own ancestor or descendant
                parent = current[:common]
                a, b = parent + (current[common],), parent + (target[common],)
                edges.setdefault(a, set()).add(b)
        for c in circles(edges):
            names = ", ".join("::".join(m) for m in c)
            failures.append(f"circle in {crate}: {names}")
        if crate in LAYERS:
            production = {m for p, m in files.items() if not TEST_FILE.search(p)}
            failures += check_layers(crate, LAYERS[crate], production, edges)
    return failures


def check_layers(crate, layers, modules, edges):
    """Top-level modules against the crate's stated order."""
    layer = {m: i for i, names in enumerate(layers) for m in names}
    top = {m[0] for m in modules if len(m) >= 1 and m[0] not in ("main",)}
    failures = [f"{crate}: module {m} has no layer in LAYERS" for m in sorted(top - layer.keys())]
    failures += [f"{crate}: LAYERS names {m}, which is no module" for m in sorted(layer.keys() - top)]
    for (a,), targets in ((k, v) for k, v in edges.items() if len(k) == 1):
        for (b,) in targets:
            if a in layer and b in layer and layer[b] >= layer[a]:
                failures.append(f"{crate}: {a} (layer {layer[a] + 1}) imports {b} (layer {layer[b] + 1})")
    return failures


def check_sizes():
    failures = []
    for src in crate_roots():
        for d, _, fs in os.walk(os.path.dirname(src)):
            if "/target" in d or "/fixtures" in d:
                continue
            for f in fs:
                p = os.path.join(d, f)
                if f.endswith(".rs"):
                    lines = open(p, errors="replace").read().count("\n")
                    if lines > MAX_LINES:
                        failures.append(f"{os.path.relpath(p, ROOT)}: {lines} lines (at most {MAX_LINES})")
    return failures


def check_meshctl_tree():
    tree = subprocess.run(
        ["cargo", "tree", "-p", "meshctl", "-e", "normal", "--prefix", "none", "--locked"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if tree.returncode != 0:
        return [f"cargo tree -p meshctl failed: {tree.stderr.strip()}"]
    return [f"meshctl depends on {m.group(0)[:-2]}" for m in FORBIDDEN_IN_MESHCTL.finditer(tree.stdout)]


def main():
    failures = check_circles() + check_sizes() + check_meshctl_tree()
    for f in sorted(set(failures)):
        print(f"structure: {f}")
    if failures:
        print("structure: see docs/architecture.md for the module order each crate keeps")
        return 1
    print("structure: no module circle, no file over 800 lines, meshctl free of libpcap/OTLP/axum")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fails if the modules of one of the runtime's crates import each other in a cycle.

Reads every `crate::`, `super::` and `self::` path in runtime/src (comments and `mod tests`
left out) and resolves it to the module it names. Cycles are looked for twice: between modules,
and between top-level modules with their children folded in, so that `batch` -> `sse` and
`sse::parser` -> `batch` count as one. Each cycle is printed with the edges that make it.
"""

import os
import re
import sys
from collections import defaultdict

# The layers are crates, so the compiler refuses an import from a layer above; this checks the
# modules inside each crate, which the compiler lets import each other freely.
RUNTIME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "runtime")
CRATES = [os.path.join(RUNTIME, crate, "src") for crate in ("contract", "host", "proxy", "")]
PATH = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def modules(root):
    """Module path (`host::traps`) -> file, for every module of the crate under `root`."""
    found = {}
    for directory, _, files in os.walk(root):
        for file in files:
            if not file.endswith(".rs"):
                continue
            path = os.path.join(directory, file)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts not in (["lib"], ["main"]):
                found["::".join(parts)] = path
    return found


def resolve(mods, current, path):
    """The module a path used in `current` names, or None."""
    segments = path.split("::")
    own_dir = os.path.basename(mods[current]) == "mod.rs"
    here = current.split("::") if own_dir else current.split("::")[:-1]
    if segments[0] == "crate":
        base, segments = [], segments[1:]
    elif segments[0] == "self":
        base, segments = here, segments[1:]
    else:
        base = here
        while segments and segments[0] == "super":
            base, segments = base[:-1], segments[1:]
    for n in range(len(segments), 0, -1):
        candidate = "::".join(base + segments[:n])
        if candidate in mods:
            return candidate
    return None


def edges(mods):
    """(from, to) for every module that names another (not its parent or child)."""
    found = set()
    for module, path in mods.items():
        text = open(path).read()
        text = re.sub(r"//[^\n]*", "", text)
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests \{.*", "", text, flags=re.S)
        for match in PATH.finditer(text):
            target = resolve(mods, module, match.group(1))
            related = target is None or target == module
            related = related or module.startswith(target + "::") or target.startswith(module + "::")
            if not related:
                found.add((module, target))
    return found


def cycles(graph_edges):
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    graph = defaultdict(set)
    for a, b in graph_edges:
        graph[a].add(b)
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return components


def main():
    sys.setrecursionlimit(10_000)
    failed = False
    for root in CRATES:
        print(f"{os.path.relpath(root, RUNTIME)}:")
        failed |= check(modules(root))
    sys.exit(1 if failed else 0)


def check(mods):
    """Prints the cycles among `mods`; true if there are any."""
    module_edges = edges(mods)
    top = lambda m: m.split("::")[0]
    top_edges = {(top(a), top(b)) for a, b in module_edges if top(a) != top(b)}
    failed = False
    for level, found, name_of in [
        ("modules", cycles(module_edges), lambda m: m),
        ("top-level modules", cycles(top_edges), top),
    ]:
        for component in found:
            failed = True
            print(f"import cycle between {level}: {', '.join(component)}")
            for a, b in sorted(module_edges):
                if name_of(a) in component and name_of(b) in component and name_of(a) != name_of(b):
                    print(f"    {a} -> {b}")
        if not found:
            print(f"  no import cycles between {level}")
    return failed


if __name__ == "__main__":
    main()

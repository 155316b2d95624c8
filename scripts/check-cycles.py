#!/usr/bin/env python3
"""No import cycles between a crate's top-level modules (crates cannot import each other in a
cycle: cargo refuses). Reads every `crate::<module>` path outside `#[cfg(test)]` code; a cycle
such as config -> subscriptions -> config fails with the path named."""
import os
import re
import sys

ROOTS = ["src"] + sorted(
    os.path.join("crates", c, "src") for c in os.listdir("crates") if os.path.isdir(os.path.join("crates", c, "src"))
)


def graph(root):
    edges = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            top = os.path.relpath(path, root).split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            code = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
            for target in re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code):
                if target != top:
                    edges.setdefault(top, set()).add(target)
    return edges


def find_cycle(edges):
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def main():
    bad = False
    for root in ROOTS:
        edges = graph(root)
        cycle = find_cycle(edges)
        if cycle:
            print(f"check-cycles: {root}: {' -> '.join(cycle)}", file=sys.stderr)
            bad = True
        else:
            print(f"check-cycles: {root}: {len(edges)} modules importing others, no cycle")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

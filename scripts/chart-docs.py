#!/usr/bin/env python3
"""Generates the chart's README.md reference table from values.yaml, helm-docs style.

A `# -- text` comment (continued by the `#` lines right after it) documents the key on the next
line; its dotted path comes from the indentation. Defaults come from the parsed values (a JSON
array from `opscheck yaml2json values.yaml`, so no YAML library is needed here).

usage: chart-docs.py CHART_DIR VALUES_JSON [--check]
  writes CHART_DIR/README.md from README.md.tmpl; --check fails if README.md differs.
"""
import json
import re
import sys

KEY = re.compile(r"^(\s*)([A-Za-z0-9_.\-]+):(\s|$)")


def documented_keys(lines):
    stack, pending, out = [], None, []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if pending is not None and stripped.startswith("#"):
            pending.append(stripped[1:].strip())
            continue
        m = KEY.match(line)
        if not m:
            if stripped and not stripped.startswith("#") and not stripped.startswith("-"):
                pending = None
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending is not None:
            out.append((".".join(k for _, k in stack), " ".join(pending)))
            pending = None
    return out


def lookup(values, path):
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def type_name(v):
    if v is None:
        return "int"
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}[type(v)]


def cell(s):
    return s.replace("|", "\\|").replace("\n", " ")


def main():
    chart, values_json = sys.argv[1], sys.argv[2]
    check = "--check" in sys.argv[3:]
    with open(f"{chart}/values.yaml") as f:
        lines = f.read().splitlines()
    with open(values_json) as f:
        values = json.load(f)[0]
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for path, desc in documented_keys(lines):
        v = lookup(values, path)
        default = json.dumps(v, separators=(",", ":")) if v not in ("", None) else ('`""`' if v == "" else "computed")
        if v not in ("", None):
            default = f"`{default}`"
        rows.append(f"| {path} | {type_name(v)} | {cell(default)} | {cell(desc)} |")
    with open(f"{chart}/README.md.tmpl") as f:
        tmpl = f.read()
    text = tmpl.replace("{{ values_table }}", "\n".join(rows))
    target = f"{chart}/README.md"
    if check:
        try:
            current = open(target).read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print(f"{target} is stale: run scripts/chart-docs.py {chart} <values.json> (chart-check.sh --fix-docs)", file=sys.stderr)
            sys.exit(1)
        print(f"{target}: up to date ({len(rows) - 2} keys)")
    else:
        with open(target, "w") as f:
            f.write(text)
        print(f"wrote {target} ({len(rows) - 2} keys)")


if __name__ == "__main__":
    main()

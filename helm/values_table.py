"""The values table of ``helm/fleet-backend/README.md``, made from ``values.yaml``.

A key is documented by a ``# -- text`` comment (continued by the ``#`` lines under it) right
above it; its children then need none. ``python helm/values_table.py`` prints the table;
``--check`` fails when a leaf value has no description or when the README's table (between
the ``<!-- values:start -->`` and ``<!-- values:end -->`` markers) is not the printed one,
so the README cannot fall behind the chart. ``--write`` rewrites that part of the README.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "fleet-backend"
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-]+):(?:\s|$)")
LONG_DEFAULT = 90


def described_keys(text: str) -> dict[tuple[str, ...], str]:
    """Key path -> description, from the ``# --`` comments of values.yaml."""
    descriptions: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped.lstrip("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            pending = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            descriptions[tuple(key for _, key in stack)] = " ".join(pending)
        pending = None
    return descriptions


def leaves(values: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [leaf for key, value in values.items() for leaf in leaves(value, (*path, key))]
    return [path]


def lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def render_default(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    if len(text) > LONG_DEFAULT:
        return "see values.yaml"
    return "`" + text.replace("|", "\\|") + "`"


def table(values: dict[str, Any], descriptions: dict[tuple[str, ...], str]) -> str:
    rows = ["| key | default | description |", "|---|---|---|"]
    for path, description in descriptions.items():
        key = ".".join(path)
        default = render_default(lookup(values, path))
        description = description.replace("|", "\\|")
        rows.append(f"| `{key}` | {default} | {description} |")
    return "\n".join(rows)


def undocumented(values: dict[str, Any], descriptions: dict[tuple[str, ...], str]) -> list[str]:
    return [
        ".".join(leaf)
        for leaf in leaves(values)
        if not any(leaf[:n] in descriptions for n in range(1, len(leaf) + 1))
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail when the README is stale")
    mode.add_argument("--write", action="store_true", help="rewrite the README's table")
    args = parser.parse_args()
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    descriptions = described_keys(text)
    missing = undocumented(values, descriptions)
    rendered = table(values, descriptions)
    readme = README.read_text() if args.check or args.write else ""
    before, _, rest = readme.partition(START)
    current, _, after = rest.partition(END)
    if args.write:
        README.write_text(f"{before}{START}\n{rendered}\n{END}{after}")
    elif not args.check:
        print(rendered)
    for key in missing:
        print(f"values.yaml: {key} has no '# --' description (on it or a parent)")
    stale = args.check and current.strip() != rendered
    if stale:
        print(f"{README}: the values table is stale: run python helm/values_table.py --write")
    if args.check and not (missing or stale):
        print(f"values.yaml: {len(descriptions)} documented keys, README table up to date")
    return 1 if missing or stale else 0


if __name__ == "__main__":
    sys.exit(main())

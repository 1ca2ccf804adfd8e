"""A small JSON path language for ignoring / redacting volatile fields.

``a.b.c``   a nested key (a leading ``$.`` is allowed)
``a[*].id`` every element of a list; ``a[0]`` one element
``*``       any key or index at that level
``**.id``   ``id`` at any depth
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\[(\*|\d+)\]|\.?([^.\[\]]+)")


class PathError(ValueError):
    pass


def parse(path: str) -> list[str]:
    p = path.strip()
    if p.startswith("$"):
        p = p[1:]
    parts: list[str] = []
    pos = 0
    while pos < len(p):
        m = _TOKEN.match(p, pos)
        if not m:
            raise PathError(f"bad JSON path {path!r} at {p[pos:]!r}")
        parts.append(m.group(1) if m.group(1) is not None else m.group(2))
        pos = m.end()
    if not parts:
        raise PathError(f"empty JSON path {path!r}")
    return parts


def _visit(node: Any, parts: list[str], fn) -> int:
    """Call fn(container, key) for every match; returns the number of matches."""
    if not parts:
        return 0
    head, rest = parts[0], parts[1:]
    n = 0
    if head == "**":
        n += _visit(node, rest, fn)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in list(children):
            n += _visit(child, parts, fn)
        return n
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        if head == "*":
            keys = list(range(len(node)))
        elif head.isdigit() and int(head) < len(node):
            keys = [int(head)]
        else:
            keys = []
    else:
        return 0
    for k in keys:
        if rest:
            n += _visit(node[k], rest, fn)
        else:
            fn(node, k)
            n += 1
    return n


def delete_paths(doc: Any, paths) -> int:
    def rm(container, key):
        if isinstance(container, dict):
            container.pop(key, None)
        else:
            container[key] = None  # keep list positions stable

    return sum(_visit(doc, parse(p), rm) for p in paths)


def set_paths(doc: Any, paths, value: Any) -> int:
    def put(container, key):
        container[key] = value

    return sum(_visit(doc, parse(p), put) for p in paths)

"""A small JSON path language for ignoring / redacting volatile fields.

``a.b.c``   a nested key (a leading ``$.`` is allowed)
``a[*].id`` every element of a list; ``a[0]`` one element
``*``       any key or index at that level
``**.id``   ``id`` at any depth

An *ignore* (what matching leaves out of a comparison) is a path, or a path and a
regular expression separated by ``~``:

``metadata.user_id``                        the whole value is left out (deleted)
``system[*].text~(?m)^Today's date: .*$``   only the parts of the string that the
                                            regex matches are left out: each match is
                                            replaced by ``<ignored>`` in both the recorded
                                            and the received body, so a date line may
                                            differ while the rest of the prompt is still
                                            compared. A value that is not a string is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\[(\*|\d+)\]|\.?([^.\[\]]+)")
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*\Z")
IGNORED = "<ignored>"


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


def format_path(parts) -> str:
    """Concrete path parts (str keys, int indexes) as written: ``messages[2].content[0].text``."""
    out = []
    for p in parts:
        if isinstance(p, int):
            out.append(f"[{p}]")
        elif _PLAIN_KEY.match(p):
            out.append(f".{p}" if out else p)
        else:
            out.append("[" + repr(p) + "]")
    return "".join(out) or "$"


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


@dataclass(frozen=True)
class Ignore:
    """One ignore rule, parsed once: ``path`` or ``path~regex`` (see the module docstring)."""

    spec: str
    parts: tuple[str, ...]
    pattern: re.Pattern | None

    @classmethod
    def parse(cls, spec: str) -> "Ignore":
        path, sep, regex = spec.partition("~")
        pattern = None
        if sep:
            if not regex:
                raise PathError(f"empty regex in {spec!r} (write PATH~REGEX)")
            try:
                pattern = re.compile(regex)
            except re.error as e:
                raise PathError(f"bad regex in {spec!r}: {e}") from None
        return cls(spec, tuple(parse(path)), pattern)

    def apply(self, doc: Any) -> int:
        """Leave this rule's part out of ``doc`` (in place); returns how many values it touched."""
        if self.pattern is None:
            def act(container, key):
                if isinstance(container, dict):
                    container.pop(key, None)
                else:
                    container[key] = None  # keep list positions stable
        else:
            pattern = self.pattern

            def act(container, key):
                value = container[key]
                if isinstance(value, str):
                    container[key] = pattern.sub(IGNORED, value)

        return _visit(doc, list(self.parts), act)


def apply_ignores(doc: Any, ignores) -> Any:
    """Apply parsed Ignore rules to a parsed JSON document in place; returns it."""
    for rule in ignores:
        rule.apply(doc)
    return doc

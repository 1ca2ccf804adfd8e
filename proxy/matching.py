"""Request -> recorded interaction. Results are data: a Match or a Miss that says why.

Rules (VCR.py's defaults): method + path + query, consumed in recorded order, so
the Nth identical request gets the Nth recording. Body matching is opt-in and
compares canonical JSON after deleting the ignored JSON paths (non-JSON bodies
compare as bytes). Header matching is opt-in by name. A Miss lists what is still
unused for that path and the nearest candidate with a diff, never just "no match".
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .jsonpath import delete_paths, parse
from .model import Interaction, Kind, Request


@dataclass(frozen=True)
class MatchConfig:
    match_body: bool = False
    ignore_json_paths: tuple[str, ...] = ()
    match_headers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for p in self.ignore_json_paths:
            parse(p)  # raises PathError early, at configuration time


def canonical_body(body: bytes, ignore: Iterable[str] = ()) -> str:
    """Body as compared: sorted-key JSON without ignored paths, or the raw text."""
    if not body:
        return ""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    delete_paths(doc, ignore)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def describe(req: Request, config: MatchConfig) -> list[str]:
    """The lines a request is compared on; used for keys and diffs."""
    lines = [f"{req.method.upper()} {req.path}"]
    lines += [f"query {k}={v}" for k, v in sorted(req.query_pairs())]
    for name in config.match_headers:
        lines.append(f"header {name.lower()}: {req.header(name, '')}")
    if config.match_body:
        canon = canonical_body(req.body, config.ignore_json_paths)
        try:
            pretty = json.dumps(json.loads(canon), sort_keys=True, indent=1, ensure_ascii=False)
        except ValueError:
            pretty = canon
        lines += ["body " + ln for ln in pretty.splitlines()]
    return lines


@dataclass
class Match:
    interaction: Interaction


@dataclass
class Miss:
    request: str  # "POST /v1/responses?x=1"
    reason: str  # no_recording | all_used | body_mismatch | ...
    message: str
    remaining: list[str] = field(default_factory=list)  # unused recordings for this path
    nearest: str | None = None
    diff: str = ""

    def to_json(self) -> dict:
        return {
            "error": {
                "type": "proxy_no_recording",
                "code": self.reason,
                "message": self.message,
                "request": self.request,
                "remaining_for_path": self.remaining,
                "nearest": self.nearest,
                "diff": self.diff,
            }
        }


def _label(it: Interaction) -> str:
    return f"#{it.seq} {it.request.method} {it.request.target}"


class Matcher:
    """Holds the recordings of one cassette and what has been used.

    ``accepts`` selects which recordings a request may consume (HTTP exchanges for
    plain requests; WebSocket sessions and refused upgrades for handshakes).
    """

    def __init__(self, interactions: Iterable[Interaction], config: MatchConfig = MatchConfig()):
        self.config = config
        self.recorded: list[Interaction] = list(interactions)
        self.used: set[int] = set()
        self._keys = {id(it): describe(it.request, config) for it in self.recorded}

    def match(self, req: Request, accepts: Callable[[Interaction], bool] | None = None) -> Match | Miss:
        accepts = accepts or (lambda it: it.kind is Kind.HTTP and not is_upgrade(it.request))
        key = describe(req, self.config)
        same = [it for it in self.recorded if accepts(it) and self._keys[id(it)] == key]
        for it in same:
            if id(it) not in self.used:
                self.used.add(id(it))
                return Match(it)
        return self._miss(req, key, same, accepts)

    def unused(self) -> list[Interaction]:
        return [it for it in self.recorded if id(it) not in self.used]

    def _miss(self, req: Request, key: list[str], same: list[Interaction], accepts) -> Miss:
        target = f"{req.method.upper()} {req.target}"
        pool = [it for it in self.recorded if accepts(it)]
        remaining = [_label(it) for it in pool if id(it) not in self.used and it.request.path == req.path]
        if same:
            return Miss(
                target,
                "all_used",
                f"{target}: all {len(same)} recording(s) of this request were already used "
                f"(the client made more requests than were recorded)",
                remaining,
                _label(same[-1]),
            )
        candidates = [it for it in pool if id(it) not in self.used] or pool
        if not candidates:
            return Miss(target, "no_recording", f"{target}: the cassette has no recording of this kind", remaining)
        text = "\n".join(key)
        best = max(
            candidates,
            key=lambda it: (
                it.request.path == req.path,
                it.request.method.upper() == req.method.upper(),
                difflib.SequenceMatcher(None, text, "\n".join(self._keys[id(it)])).ratio(),
            ),
        )
        diff = "\n".join(
            difflib.unified_diff(self._keys[id(best)], key, "recorded", "received", n=1, lineterm="")
        )
        if len(diff) > 4000:
            diff = diff[:4000] + "\n..."
        why = "no recording matches"
        if best.request.path == req.path and self.config.match_body:
            why = "no recording with this body"
        return Miss(target, "no_recording", f"{target}: {why}; nearest is {_label(best)}", remaining, _label(best), diff)


def is_upgrade(req: Request) -> bool:
    return (req.header("upgrade") or "").lower() == "websocket"

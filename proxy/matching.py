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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

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

    Recordings are bucketed by (class, key): class "http" for plain exchanges, "ws" for
    WebSocket sessions and refused upgrades (what a handshake may consume). Each bucket
    keeps a cursor past its used recordings, so a match costs O(1) however many
    identical requests a cassette holds; only a miss looks at everything.
    """

    def __init__(self, interactions: Iterable[Interaction], config: MatchConfig = MatchConfig()):
        self.config = config
        self.recorded: list[Interaction] = list(interactions)
        self.used: set[int] = set()
        self._keys = {id(it): describe(it.request, config) for it in self.recorded}
        self._buckets: dict[tuple, list[Interaction]] = {}
        for it in self.recorded:
            self._buckets.setdefault((match_class(it), tuple(self._keys[id(it)])), []).append(it)
        self._cursor: dict[tuple, int] = {}

    def match(self, req: Request, cls: str = "http") -> Match | Miss:
        key = describe(req, self.config)
        bucket_key = (cls, tuple(key))
        bucket = self._buckets.get(bucket_key, [])
        i = self._cursor.get(bucket_key, 0)
        while i < len(bucket) and id(bucket[i]) in self.used:
            i += 1
        if i < len(bucket):
            self.used.add(id(bucket[i]))
            self._cursor[bucket_key] = i + 1
            return Match(bucket[i])
        self._cursor[bucket_key] = i
        return self._miss(req, key, bucket, cls)

    def unused(self) -> list[Interaction]:
        return [it for it in self.recorded if id(it) not in self.used]

    def _miss(self, req: Request, key: list[str], same: list[Interaction], cls: str) -> Miss:
        target = f"{req.method.upper()} {req.target}"
        pool = [it for it in self.recorded if match_class(it) == cls]
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


def match_class(it: Interaction) -> str:
    """"ws" for what a WebSocket handshake may consume (a session, or a refused upgrade)."""
    return request_class(it.request, it.kind)


# -- the key: what selects the candidates ---------------------------------------
# Shared contract between matching and the store: the store indexes every recording
# by request_key() when it is written, and a CandidateSource hands the matcher all
# recordings with the key of the incoming request. Everything finer (body, opted-in
# headers, recorded order) is decided by the matcher among those candidates.

Key = tuple[str, str, str, str]  # (class "http" | "ws", METHOD, path, normalized query)


def request_class(req: Request, kind: Kind | None = None) -> str:
    """"ws" for a WebSocket handshake (a session or a refused upgrade), else "http"."""
    if kind is Kind.WEBSOCKET or is_upgrade(req):
        return "ws"
    return "http"


def normalize_query(query: str) -> str:
    """The query as compared: pairs sorted (order never matters), values kept exactly."""
    if not query:
        return ""
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def request_key(req: Request, kind: Kind | None = None) -> Key:
    return (request_class(req, kind), req.method.upper(), req.path, normalize_query(req.query))


class CandidateSource(Protocol):
    """Where the matcher gets recordings from: a cassette's index, or a list in memory.

    Interactions handed out have their request (headers, decoded body) filled in;
    chunks and frames are loaded only by ``load_events``, once a recording is matched.
    """

    def candidates(self, key: Key) -> Sequence[Interaction]:
        """Every recording with this key, in recorded order (seq)."""
        ...

    def nearby(self, key: Key, limit: int) -> Sequence[Interaction]:
        """Up to ``limit`` recordings for a miss diagnostic: same class and path first,
        then same class and method, then same class; recorded order within each."""
        ...

    def load_events(self, it: Interaction) -> Interaction:
        ...

    def __len__(self) -> int:
        ...


class ListSource:
    """A CandidateSource over interactions already in memory (tests, imports, small files)."""

    def __init__(self, interactions: Iterable[Interaction]):
        self.interactions = list(interactions)
        self._by_key: dict[Key, list[Interaction]] = {}
        for it in self.interactions:
            self._by_key.setdefault(request_key(it.request, it.kind), []).append(it)

    def candidates(self, key: Key) -> Sequence[Interaction]:
        return self._by_key.get(key, [])

    def nearby(self, key: Key, limit: int) -> Sequence[Interaction]:
        cls, method, path, _ = key
        same_cls = [it for it in self.interactions if request_class(it.request, it.kind) == cls]
        tiers = (
            [it for it in same_cls if it.request.path == path],
            [it for it in same_cls if it.request.path != path and it.request.method.upper() == method],
            [it for it in same_cls if it.request.path != path and it.request.method.upper() != method],
        )
        return [it for tier in tiers for it in tier][:limit]

    def load_events(self, it: Interaction) -> Interaction:
        return it

    def __len__(self) -> int:
        return len(self.interactions)

"""Request -> recorded interaction. Results are data: a Match that says how good it was,
or a Miss that says why there is none.

Rules
1. The key (``request_key``: class http/ws, METHOD, path, query with its pairs sorted)
   selects the candidates, in recorded order; headers named with ``match_headers`` must
   be equal too, and with ``match_origin`` (forward-mode replay of a cassette recorded in
   forward mode) the origin, ``scheme://host[:port]``. A recording serves once.
2. Among the unused candidates the request's body decides, so concurrent requests that
   arrive in another order than recorded still get their own recording:
   a. an *exact* match: the canonical body (JSON with sorted keys, after the configured
      ignores and presets; other bodies as bytes) is equal. Found by hash, O(1); the
      earliest such recording wins, so the Nth identical request gets the Nth recording.
      The key's recordings are fingerprinted lazily, in recorded order, only as far as
      the earliest unused exact match: a key with a million recordings costs its first
      match a page (see ``_Bucket``). Everything below needs them all.
   b. otherwise the *most similar* body. The JSON tree down to depth ``CUT`` is turned
      into a set of (path, value-hash) nodes (deeper subtrees hash whole); the distance
      is the number of nodes not shared, linear in body size. Recorded order breaks ties,
      and decides among recordings that share nothing particular with the request.
      The search covers the next ``window`` unused recordings in recorded order (
      concurrency reorders requests only locally) and widens to all unused ones when
      none of those is close.
3. A match that is not exact names the JSON paths that differ. It is *weak* when one of
   those values differs in more than run-to-run noise (uuids, prefixed ids such as
   ``msg_01..``, dates, times, epoch numbers): the recording was served although the
   content differs. A match is *out of order* when an earlier recording with the same key
   was still unused.
4. ``match_body`` serves exact matches only; ``strict_match`` turns weak matches into misses.
5. A WebSocket handshake *reserves* a session in recorded order (its 101 must go out before
   the client sends anything); the connection's first client frame then *binds* it to the
   session among the same key's reserved-but-unbound and unused ones whose first client
   frame is closest (same rules as bodies), swapping reservations with a connection that
   has not sent a frame yet. See ``Matcher.bind``.
6. A Miss says what was asked, what is still unused for that path, and the nearest
   recording with the differing paths and values. The diagnosis (``Matcher.diagnose``)
   reads a bounded number of candidates and is safe to run in a worker thread.
"""

from __future__ import annotations

import bisect
import difflib
import heapq
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import orjson

from .jsonpath import Ignore, apply_ignores, format_path
from .model import Direction, Interaction, Kind, Request, header_value
from .presets import get as get_preset

CUT = 4  # depth of the similarity tree; deeper subtrees are one node each
WINDOW = 64  # unused recordings searched first, in recorded order
TRIES = 4  # most similar candidates checked for being close before settling for a weak one
UNRELATED = 1 << 40  # the distance of a recording that shares nothing particular with the request
NEARBY = 32  # recordings a no-key-match diagnosis looks at
MAX_DIFFERENCES = 20
MAX_VALUE = 100  # characters of a value shown in a difference
MAX_DIFF_TEXT = 4000

ABSENT = "(absent)"


# -- configuration ------------------------------------------------------------------

@dataclass(frozen=True)
class MatchConfig:
    """How requests are compared. ``ignore_json_paths`` entries are ``jsonpath.Ignore``
    specs (``path`` or ``path~regex``); ``presets`` names from ``proxy.presets``."""

    match_body: bool = False  # serve exact canonical-body matches only
    ignore_json_paths: tuple[str, ...] = ()
    match_headers: tuple[str, ...] = ()
    strict_match: bool = False  # weak matches become misses
    presets: tuple[str, ...] = ()
    window: int = WINDOW
    match_origin: bool = False  # scheme://host[:port] too (forward-mode replay of a forward-mode cassette)
    rules: tuple[Ignore, ...] = field(default=(), init=False, repr=False, compare=False)
    header_names: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chosen = [get_preset(n) for n in self.presets]  # UnknownPreset early, at configuration time
        specs = list(self.ignore_json_paths) + [s for p in chosen for s in p.ignore]
        rules = tuple(Ignore.parse(s) for s in dict.fromkeys(specs))  # PathError early too
        volatile = {h for p in chosen for h in p.headers}
        names = tuple(h.lower() for h in self.match_headers if h.lower() not in volatile)
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "header_names", names)


# -- bodies: parse, canonical form, fingerprint, differences ---------------------------------

_NOT_JSON = object()


_LONG_DIGITS = re.compile(rb"\d{19,}")  # may be an integer beyond 64 bits


def load_json(body: bytes) -> Any:
    """The parsed body, or ``_NOT_JSON``. orjson first (several times faster), json for
    what orjson refuses (NaN, Infinity) and for bodies with 19 digits in a row: orjson
    reads an integer beyond 64 bits as a float, so two ids differing in the last digit
    would compare equal."""
    if not body:
        return _NOT_JSON
    if not _LONG_DIGITS.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _dumps(node: Any) -> bytes:
    try:
        return orjson.dumps(node, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(node, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_body(body: bytes, ignore: Iterable[str] = ()) -> str:
    """Body as compared: sorted-key JSON without ignored parts, or the raw text."""
    doc = load_json(body)
    if doc is _NOT_JSON:
        return body.decode("utf-8", "replace")
    apply_ignores(doc, [Ignore.parse(s) for s in ignore])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(slots=True)
class Print:
    """What a body is compared by: ``exact`` (hash of the canonical form) and ``nodes``
    (hashes of (path, value) down to depth CUT). ``doc`` is kept only for the request."""

    exact: int
    nodes: frozenset
    doc: Any = _NOT_JSON
    raw: bytes = b""


SMALL = 512  # a subtree below depth CUT, or a string, up to this size is one node
PIECES = 32  # about how many pieces a long string adds


def _pieces(text: str) -> list[str]:
    """A long string cut into about PIECES runs, each ending at a line end where there is
    one nearby: linear, a few C-level finds and slices, so that two long prompts that
    differ in one line share all pieces but one."""
    n = len(text)
    step = max(SMALL // 2, n // PIECES)
    out, start = [], 0
    while start < n:
        end = text.find("\n", start + step, start + 2 * step)
        end = start + step if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


SHARED = 2048  # top-level values this large are looked up in the shared-subtree cache
_subtrees: dict[tuple, tuple[int, ...] | None] = {}  # (path, hash, size of canonical bytes) -> node hashes
_subtree_tries: dict[str, int] = {}  # path -> lookups without a hit (-1: it has hit)


def _worth_caching(path: str) -> bool:
    """A top-level value that differs in every request (the messages) stops being dumped
    and looked up after 16 misses; one that has repeated (the tools) always is."""
    tries = _subtree_tries.get(path, 0)
    if tries < 0:
        return True
    if tries >= 16:
        return False
    _subtree_tries[path] = tries + 1
    return True


def _nodes(node: Any, path: str, depth: int, out: set) -> None:
    """Add the (path, value) hashes of ``node`` to ``out``: containers down to depth CUT,
    deeper ones whole when small, else their children; long strings whole and in pieces,
    so two large prompts that differ in one line are close and not merely unequal."""
    if isinstance(node, (dict, list)):
        if depth <= 0:
            dumped = _dumps(node)
            if len(dumped) <= SMALL:
                out.add(hash((path, dumped)))
                return
        elif depth == CUT - 1 and _worth_caching(path):
            # The tools and system prompt of one client are the same bytes in every request:
            # their nodes are computed once per process (from their second sighting on).
            dumped = _dumps(node)
            if len(dumped) > SHARED:
                key = (path, hash(dumped), len(dumped))
                cached = _subtrees.get(key, False)
                if cached:
                    _subtree_tries[path] = -1  # this path repeats: always worth looking up
                    out.update(cached)
                    return
                if cached is None:  # seen once before: keep its nodes this time
                    acc: set[int] = set()
                    _children(node, path, depth, acc)
                    _subtrees[key] = tuple(acc)
                    out.update(acc)
                    return
                if len(_subtrees) > 4096:
                    _subtrees.clear()
                    _subtree_tries.clear()
                _subtrees[key] = None
        _children(node, path, depth, out)
    elif isinstance(node, str) and len(node) > SMALL:
        pieces = [hash((path, "\n", piece)) for piece in _pieces(node)]
        out.update(pieces)
        out.add(hash((path, tuple(pieces))))  # the whole string, in order
    else:
        out.add(hash((path, node.__class__, node)))  # the class keeps 1, 1.0 and true apart


def _children(node: Any, path: str, depth: int, out: set) -> None:
    if isinstance(node, dict):
        out.add(hash((path, "{}")))
        for k, v in node.items():
            _nodes(v, path + "\x1f" + k, depth - 1, out)
    else:
        out.add(hash((path, "[]", len(node))))
        for i, v in enumerate(node):
            _nodes(v, path + "\x1e" + str(i), depth - 1, out)


def fingerprint(body: bytes, rules: Sequence[Ignore] = (), keep_doc: bool = False) -> Print:
    doc = load_json(body)
    if doc is _NOT_JSON:
        lines = body.split(b"\n", 4096)
        return Print(hash(body), frozenset(hash((i, ln)) for i, ln in enumerate(lines)), _NOT_JSON,
                     body if keep_doc else b"")
    apply_ignores(doc, rules)
    acc: set[int] = set()
    _nodes(doc, "", CUT, acc)
    nodes = frozenset(acc)
    return Print(hash(nodes), nodes, doc if keep_doc else _NOT_JSON, body if keep_doc else b"")


def distance(a: Print, b: Print) -> int:
    return len(a.nodes ^ b.nodes)


# Run-to-run noise: a difference made only of these is not a content difference.
_B = r"(?<![A-Za-z0-9])"  # word edges where "_" separates, as in user_<hex>_session_<uuid>
_E = r"(?![A-Za-z0-9])"
_VOLATILE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # uuid
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"  # ISO date / time
    rf"|{_B}\d{{1,2}}:\d{{2}}:\d{{2}}(?:\.\d+)?{_E}"  # clock time
    r"|(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, [A-Z][a-z]+ \d{1,2}, \d{4}"  # Monday, June 16, 2025
    rf"|{_B}[A-Za-z]{{2,12}}_(?=[A-Za-z-]*\d)[A-Za-z0-9-]{{8,}}(?![A-Za-z0-9-])"  # msg_01.., session_<uuid>
    rf"|{_B}(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{{16,}}{_E}"  # hex digests, base62 ids
    rf"|{_B}\d{{9,}}{_E}"  # epoch seconds / milliseconds
)


NOISE = 4096  # a differing stretch longer than this is content, not ids and dates


def _noise_only(a: str, b: str) -> bool:
    if len(a) > NOISE or len(b) > NOISE:
        return False
    return _VOLATILE.sub("\x00", a) == _VOLATILE.sub("\x00", b)


def _short(value: Any) -> str:
    if value is _NOT_JSON:
        return ABSENT
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else _dumps(value).decode()
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


@dataclass
class Difference:
    """One differing value: where, as recorded and as received (shortened), and whether
    the difference is only run-to-run noise (ids, dates, times)."""

    path: str
    recorded: str
    received: str
    volatile: bool = False

    def __str__(self) -> str:
        return f"`{self.path}`: {self.recorded} -> {self.received}"

    def to_json(self) -> dict:
        return {"path": self.path, "recorded": self.recorded, "received": self.received,
                "volatile": self.volatile}


def _string_difference(path: str, a: str, b: str) -> Difference:
    la, lb = a.split("\n"), b.split("\n")
    i, n = 0, min(len(la), len(lb))
    while i < n and la[i] == lb[i]:
        i += 1
    j = 0
    while j < n - i and la[-1 - j] == lb[-1 - j]:
        j += 1
    da, db = la[i: len(la) - j], lb[i: len(lb) - j]
    volatile = _noise_only("\n".join(da), "\n".join(db))
    if len(la) == 1 and len(lb) == 1:
        return Difference(path, _short(a), _short(b), volatile)
    show = lambda lines: f"line {i + 1}: " + (_short(lines[0]) if lines else ABSENT)  # noqa: E731
    return Difference(path, show(da), show(db), volatile)


def _leaf_difference(path: str, a: Any, b: Any) -> Difference:
    if isinstance(a, str) and isinstance(b, str):
        return _string_difference(path, a, b)
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    volatile = numbers and min(abs(a), abs(b)) >= 1e9  # epoch-like timestamps
    return Difference(path, _short(a), _short(b), volatile)


class _Collector:
    def __init__(self, limit: int):
        self.out: list[Difference] = []
        self.limit = limit
        self.more = False

    def add(self, d: Difference) -> bool:
        if len(self.out) >= self.limit:
            self.more = True
            return False
        self.out.append(d)
        return True

    @property
    def full(self) -> bool:
        return self.more


def _same(a: Any, b: Any) -> bool:
    if a.__class__ is not b.__class__ or a != b:
        return False
    # == says 1 == 1.0 == true inside containers; the canonical bytes do not
    return not isinstance(a, (dict, list)) or _dumps(a) == _dumps(b)


def _walk_diff(a: Any, b: Any, parts: list, acc: _Collector) -> None:
    if acc.full or _same(a, b):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k, v in a.items():
            if k in b:
                _walk_diff(v, b[k], parts + [k], acc)
            else:
                acc.add(Difference(format_path(parts + [k]), _short(v), ABSENT))
            if acc.full:
                return
        for k, v in b.items():
            if k not in a and not acc.add(Difference(format_path(parts + [k]), ABSENT, _short(v))):
                return
    elif isinstance(a, list) and isinstance(b, list):
        n = min(len(a), len(b))
        for i in range(n):
            _walk_diff(a[i], b[i], parts + [i], acc)
            if acc.full:
                return
        for i in range(n, len(a)):
            if not acc.add(Difference(format_path(parts + [i]), _short(a[i]), ABSENT)):
                return
        for i in range(n, len(b)):
            if not acc.add(Difference(format_path(parts + [i]), ABSENT, _short(b[i]))):
                return
    else:
        acc.add(_leaf_difference(format_path(parts), a, b))


def diff_docs(recorded: Any, received: Any, limit: int = MAX_DIFFERENCES) -> tuple[list[Difference], bool]:
    """Differences between two parsed bodies (``_NOT_JSON`` for none): (differences, more)."""
    acc = _Collector(limit)
    _walk_diff(recorded, received, [], acc)
    return acc.out, acc.more


def diff_bodies(recorded: bytes, received: bytes, rules: Sequence[Ignore] = (), limit: int = MAX_DIFFERENCES,
                received_doc: Any = _NOT_JSON) -> tuple[list[Difference], bool]:
    """Differences between two bodies after the ignores; JSON by path, text by line."""
    a = load_json(recorded)
    b = received_doc if received_doc is not _NOT_JSON else load_json(received)
    if a is not _NOT_JSON and b is not _NOT_JSON:
        apply_ignores(a, rules)
        if received_doc is _NOT_JSON:
            apply_ignores(b, rules)
        return diff_docs(a, b, limit)
    if recorded == received:
        return [], False
    try:
        return [_string_difference("body", recorded.decode(), received.decode())], False
    except UnicodeDecodeError:
        return [Difference("body", f"{len(recorded)} bytes", f"{len(received)} bytes")], False


# -- results -----------------------------------------------------------------------------

def _label(it: Interaction) -> str:
    target = it.request.target
    if len(target) > 120:
        target = target[:119] + "…"
    return f"#{it.seq} {it.request.method} {target}"


def _paths(diffs: Sequence[Difference], more: bool) -> str:
    shown = ", ".join(f"`{d.path}`" for d in diffs[:3])
    return shown + (" and more" if more or len(diffs) > 3 else "")


@dataclass(slots=True)
class Match:
    """A recording chosen for a request, and how it was chosen."""

    interaction: Interaction
    exact: bool = True
    weak: bool = False  # content differs (not only ids / dates / times)
    out_of_order: bool = False  # an earlier recording with this key was still unused
    expected_seq: int | None = None  # that earlier recording, when out of order
    distance: int = 0
    differences: list[Difference] = field(default_factory=list)
    more_differences: bool = False
    request: str = ""
    tentative: bool = False  # a WebSocket handshake's reservation, until bind()
    rebound_from: int | None = None  # bind() moved this connection from that recording
    _key: Any = field(default=None, repr=False, compare=False)
    _pos: int | None = field(default=None, repr=False, compare=False)  # the recording's index in its bucket

    @property
    def seq(self) -> int | None:
        return self.interaction.seq

    def content_differences(self) -> list[Difference]:
        return [d for d in self.differences if not d.volatile]

    def note(self) -> str | None:
        """One line for a report; None for an in-order match without content differences."""
        parts = []
        if self.weak:
            diffs = self.content_differences()
            parts.append(f"served for a request whose {_paths(diffs, self.more_differences)} "
                         f"differ{'s' if len(diffs) == 1 and not self.more_differences else ''}")
        if self.out_of_order:
            parts.append(f"served out of recorded order (#{self.expected_seq} was next)")
        return f"#{self.seq} " + "; ".join(parts) if parts else None

    def to_json(self) -> dict:
        return {
            "seq": self.seq,
            "request": self.request,
            "exact": self.exact,
            "weak": self.weak,
            "out_of_order": self.out_of_order,
            "expected_seq": self.expected_seq,
            "differences": [d.to_json() for d in self.differences],
            "more_differences": self.more_differences,
        }


@dataclass
class Miss:
    request: str  # "POST /v1/responses?x=1"
    reason: str  # no_recording | all_used | weak_match (with strict matching)
    message: str
    remaining: list[str] = field(default_factory=list)  # unused recordings for this path
    nearest: str | None = None
    diff: str = ""
    differences: list[Difference] = field(default_factory=list)
    diagnosed: bool = False
    _key: Any = field(default=None, repr=False, compare=False)
    _req: Any = field(default=None, repr=False, compare=False)
    _print: Any = field(default=None, repr=False, compare=False)
    _nearest: Any = field(default=None, repr=False, compare=False)
    _why: str = field(default="key", repr=False, compare=False)  # key | body | headers | used | weak

    def to_json(self) -> dict:
        return {
            "error": {
                "type": "proxy_no_recording",
                "code": self.reason,
                "message": self.message,
                "request": self.request,
                "remaining_for_path": self.remaining,
                "nearest": self.nearest,
                "differences": [d.to_json() for d in self.differences],
                "diff": self.diff,
            }
        }


# -- the key: what selects the candidates ---------------------------------------
# Shared contract between matching and the store: the store indexes every recording
# by request_key() when it is written, and a CandidateSource hands the matcher all
# recordings with the key of the incoming request. Everything finer (body, opted-in
# headers, recorded order) is decided by the matcher among those candidates.

Key = tuple[str, str, str, str]  # (class "http" | "ws", METHOD, path, normalized query)


def is_upgrade(req: Request) -> bool:
    return (req.header("upgrade") or "").lower() == "websocket"


def match_class(it: Interaction) -> str:
    """"ws" for what a WebSocket handshake may consume (a session, or a refused upgrade)."""
    return request_class(it.request, it.kind)


def request_class(req: Request, kind: Kind | None = None) -> str:
    """"ws" for a WebSocket handshake (a session or a refused upgrade), else "http"."""
    if kind is Kind.WEBSOCKET or is_upgrade(req):
        return "ws"
    return "http"


_PLAIN_QUERY = re.compile(r"[A-Za-z0-9_.~&=-]*\Z")


def normalize_query(query: str) -> str:
    """The query as compared: pairs sorted (order never matters), values kept exactly."""
    if not query:
        return ""
    if _PLAIN_QUERY.match(query):
        # Nothing to decode or quote: the same result as below without unquoting and
        # re-quoting every pair (an 80 KB query string took 11 ms that way).
        pairs = [p.partition("=")[::2] for p in query.split("&") if p]
        if not any("=" in v for _, v in pairs):
            return "&".join(f"{k}={v}" for k, v in sorted(pairs))
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def request_key(req: Request, kind: Kind | None = None) -> Key:
    return (request_class(req, kind), req.method.upper(), req.path, normalize_query(req.query))


class CandidateSource(Protocol):
    """Where the matcher gets recordings from: a cassette's index, or a list in memory.

    Interactions handed out have their request (headers, decoded body) filled in;
    chunks and frames are loaded only by ``load_events``, once a recording is matched.
    Optional: ``__iter__`` (every recording in recorded order), used only to list the
    recordings a run never used (``Matcher.unused``).
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

    def __iter__(self) -> Iterator[Interaction]:
        return iter(self.interactions)

    def __len__(self) -> int:
        return len(self.interactions)


# -- the matcher ---------------------------------------------------------------------------

def _ident(it: Interaction) -> object:
    return it.seq if it.seq is not None else ("id", id(it))


def _header_values(headers, names: Sequence[str]) -> tuple:
    return tuple(header_value(headers, n, "") for n in names)


def _first_client_frame(it: Interaction):
    return next((f for f in it.frames if f.direction is Direction.CLIENT), None)


class NotIndexed(Exception):
    """Matching a request would fingerprint more of its key's recordings than the caller's
    ``budget`` allows (``Matcher.match``): index the key (``Matcher.prepare``, in a worker
    thread) and match again. Nothing was taken."""


# A key's recordings often repeat a small body (an empty GET, a poll): its fingerprint, a
# pure function of the bytes and the rules, is made once (PRINTS_KEPT bodies at most).
PRINT_KEPT_BODY = 4096
PRINTS_KEPT = 1024

SCAN_COST = 1024  # what reading and fingerprinting a recording costs beyond its body's bytes (for budgets)
FINISH_INLINE = 256  # a key with more recordings scanned than this is finished with a budget only in prepare


class _Bucket:
    """The candidates of one key, what has been taken of them, and their fingerprints so
    far: they are fingerprinted lazily, in recorded order, as far as a request needs.

    An exact match needs no more: the earliest unused recording whose body hashes like
    the request's is the one the full index would choose too, so the scan stops at the
    first one (in the replay of a run's requests in their recorded order, at the next
    recording). What needs the whole key (a weak or nearest match, a miss, its diagnosis)
    first ``finish``es the index: every fingerprint, and ``core``, the nodes all share.
    Positions at and past ``n`` (not scanned yet) are unused.
    """

    def __init__(self, items: Sequence[Interaction], config: MatchConfig, scanned: list[int] | None = None):
        self.items = items
        self.scanned = scanned if scanned is not None else [0]  # fingerprints made, shared by a matcher's buckets
        self.rules = config.rules
        self.names = config.header_names
        self.n = 0  # candidates fingerprinted: [0, n)
        self.used = bytearray()  # per scanned candidate
        self.cursor = 0
        self.hashes: list[int] = []
        self.rest: list[frozenset] = []  # all its nodes until finished, then those not in ``core``
        self.exact: dict[int, list[int]] = {}
        # per exact hash, the position in ``exact[h]`` before which every candidate is used:
        # the Nth identical request costs what the first did, not a walk over N-1 used ones
        self._exact_at: dict[int, int] = {}
        self.headers: list | None = [] if self.names else None
        self.origins: list | None = [] if config.match_origin else None
        self.ended = False  # every candidate is scanned (``n`` is their number)
        self.complete = False  # ... and ``core`` and ``rest`` are made
        # Nodes every candidate has (tools, system prompt, ...) decide nothing between them:
        # kept once (when finished), and per candidate only the rest, so a comparison costs what differs.
        self.core: frozenset = frozenset()
        self.per_origin: Counter = Counter()
        self.budget: int | None = None  # bytes a match may still scan (see NotIndexed); None: no limit
        self.reserved: dict[int, Match] = {}  # WebSocket reservations not bound yet
        self.frame_prints: dict[int, Print | None] = {}
        self._prints: dict[bytes, tuple[int, frozenset]] = {}  # small recorded bodies fingerprinted, by their bytes

    # -- scanning --------------------------------------------------------------------------

    def _add(self, it: Interaction) -> None:
        body = it.request.body
        p = self._prints.get(body) if len(body) <= PRINT_KEPT_BODY else None
        if p is None:
            fp = fingerprint(body, self.rules)
            p = (fp.exact, fp.nodes)
            if len(body) <= PRINT_KEPT_BODY:
                if len(self._prints) >= PRINTS_KEPT:
                    self._prints.clear()
                self._prints[body] = p
        i = self.n
        self.hashes.append(p[0])
        self.rest.append(p[1])
        if self.headers is not None:
            self.headers.append(_header_values(it.request.headers, self.names))
        if self.origins is not None:
            self.origins.append(it.request.origin)
        self.exact.setdefault(p[0], []).append(i)
        self.used.append(0)
        self.scanned[0] += 1
        self.n = i + 1  # last: a worker thread reading a snapshot of [0, n) finds every list that long

    def _scan(self, upto: int) -> bool:
        """Fingerprint the candidates before position ``upto``; False if there are fewer."""
        while self.n < upto:
            if self.ended:
                return False
            try:
                it = self.items[self.n]
            except IndexError:
                self.ended = True
                return False
            if self.budget is not None:
                self.budget -= len(it.request.body) + SCAN_COST
                if self.budget < 0:
                    raise NotIndexed
            self._add(it)
        return True

    def _has(self, i: int) -> bool:
        if i < self.n:
            return True
        if self.ended:
            return False
        try:
            self.items[i]  # read (a page at a time), not fingerprinted
        except IndexError:
            return False
        return True

    def finish(self) -> None:
        """Fingerprint every candidate (what a match that is not exact, or a miss, needs)."""
        if self.complete:
            return
        if self.budget is not None and self.n > FINISH_INLINE:
            raise NotIndexed  # the core of many: in a worker thread (prepare)
        while self._scan(self.n + 1):
            pass
        self._finish()

    def _finish(self) -> None:
        self.core = frozenset.intersection(*self.rest) if self.rest else frozenset()
        if self.core:
            self.rest = [nodes - self.core for nodes in self.rest]
        self.per_origin = Counter(self.origins or ())
        self.complete = True

    def indexed(self, pause=None) -> "_Bucket":
        """A finished copy of this bucket's index, for ``adopt``: what was scanned so far is
        reused, the rest read and fingerprinted here. Safe in a worker thread while the
        matcher scans on (it only appends), and slow: ``pause`` is called between recordings."""
        n = self.n
        full = _Bucket.__new__(_Bucket)
        full.__dict__.update(self.__dict__)
        full.n = n
        full.hashes, full.rest = self.hashes[:n], self.rest[:n]
        full.headers = None if self.headers is None else self.headers[:n]
        full.origins = None if self.origins is None else self.origins[:n]
        full.exact = {}
        for i, h in enumerate(full.hashes):
            full.exact.setdefault(h, []).append(i)
        full.used = bytearray(n)
        full.complete, full.ended, full.budget = self.complete, self.complete, None
        if full.complete:
            return full
        while full._scan(full.n + 1):
            if pause is not None:
                pause()
        full._finish()
        return full

    def adopt(self, full: "_Bucket") -> None:
        """Take over the finished index ``full`` (from ``indexed``). Its first ``n`` entries are
        this bucket's own (the same fingerprints in the same order), so what has been used and
        the positions kept in ``_exact_at`` stay true."""
        if self.complete:
            return
        self.used.extend(bytes(full.n - self.n))
        self.hashes, self.rest, self.exact, self.core = full.hashes, full.rest, full.exact, full.core
        self.headers, self.origins, self.per_origin = full.headers, full.origins, full.per_origin
        self.n, self.ended, self.complete = full.n, True, True

    # -- choosing ----------------------------------------------------------------------------

    def distances(self, fq: Print):
        """A function index -> distance from the request: the nodes not shared. A recording
        that shares nothing with the request beyond what every candidate has is no closer
        for being smaller: those all rank last, equally, so recorded order decides.
        Needs the finished index."""
        assert self.complete
        rest = fq.nodes - self.core
        missing = len(self.core) - (len(fq.nodes) - len(rest))

        def dist(i: int) -> int:
            other = self.rest[i]
            shared = len(rest & other)
            if not shared and other:
                return UNRELATED
            return len(rest) + len(other) - 2 * shared + missing

        return dist

    def first_unused(self) -> int | None:
        """The earliest unused candidate (recorded order only: nothing is fingerprinted)."""
        while self.cursor < self.n and self.used[self.cursor]:
            self.cursor += 1
        return self.cursor if self._has(self.cursor) else None

    def exact_unused(self, h: int) -> Iterator[int]:
        """The unused candidates whose body hashes to ``h``, in recorded order; scans on
        as far as the caller takes them."""
        pos = 0
        idx = self.exact.get(h)
        if idx:
            pos = self._exact_at.get(h, 0)
            while pos < len(idx) and self.used[idx[pos]]:
                pos += 1
            self._exact_at[h] = pos
        while True:
            idx = self.exact.get(h, ())
            while pos < len(idx):
                i = idx[pos]
                pos += 1
                if not self.used[i]:
                    yield i
            if not self._scan(self.n + 1):
                return

    def first_exact_unused(self, h: int) -> int | None:
        """The first of ``exact_unused(h)``, or None."""
        idx = self.exact.get(h)
        if idx:
            pos, used = self._exact_at.get(h, 0), self.used
            while pos < len(idx) and used[idx[pos]]:
                pos += 1
            self._exact_at[h] = pos
            if pos < len(idx):
                return idx[pos]
        while self._scan(self.n + 1):  # each one scanned is unused: the first that hashes to h
            if self.hashes[self.n - 1] == h:
                return self.n - 1
        return None

    def unuse(self, i: int) -> None:
        """Candidate ``i`` is unused again (a release, or a rebound WebSocket reservation)."""
        self.used[i] = 0
        self.cursor = min(self.cursor, i)
        h = self.hashes[i]
        if self._exact_at.get(h):
            self._exact_at[h] = min(self._exact_at[h], bisect.bisect_left(self.exact[h], i))

    def unused(self, ok=None) -> Iterator[int]:
        """Unused candidates passing ``ok``, in recorded order, fingerprinted as they are reached."""
        i = self.first_unused()
        if i is None:
            return
        while i < self.n or self._scan(i + 1):
            if not self.used[i] and (ok is None or ok(i)):
                yield i
            i += 1


class Matcher:
    """Chooses recordings for requests and keeps what has been used (one per cassette).

    Not thread-safe: one caller at a time (the replay engine holds a lock); ``diagnose``
    only reads and may run in a worker thread while ``match`` goes on.
    """

    def __init__(self, source: CandidateSource | Iterable[Interaction], config: MatchConfig = MatchConfig()):
        self.config = config
        self.source: CandidateSource = source if hasattr(source, "candidates") else ListSource(source)
        self._buckets: dict[Key, _Bucket] = {}
        self._scanned = [0]  # recordings fingerprinted, over all keys (the buckets count them)
        self._used: set = set()
        self._loaded: set = set()
        self._diag_prints: dict = {}
        self.matches: list[Match] = []  # every match, in the order served

    # -- public --------------------------------------------------------------------------

    def match(self, req: Request, cls: str | None = None, diagnose: bool = True, fq: Print | None = None,
              budget: int | None = None, key: Key | None = None) -> Match | Miss:
        """The recording for ``req`` (``cls`` "ws" for a WebSocket handshake), or a Miss.
        With ``diagnose=False`` a Miss comes back at once; call ``diagnose`` later.
        ``fq`` is ``req``'s ``fingerprint(..., keep_doc=True)`` when the caller computed it
        already (outside its lock: it is linear in the body's size).

        The key's recordings are fingerprinted as far as the answer needs (``_Bucket``).
        With a ``budget`` (bytes of recorded bodies, plus ``SCAN_COST`` per recording) a
        match that would fingerprint more raises NotIndexed instead, having taken nothing:
        ``prepare`` the key (in a worker thread) and match again. ``key`` is ``req``'s key
        when the caller has it already."""
        if key is None:
            key = self._key(req, cls)
        bucket = self._bucket(key)
        if fq is None:
            fq = fingerprint(req.body, self.config.rules, keep_doc=True)
        bucket.budget = budget
        try:
            result = self._select(bucket, req, key, fq)
        finally:
            bucket.budget = None
        if isinstance(result, Miss) and diagnose:
            self.diagnose(result)
        return result

    def bind(self, match: Match, frame: bytes) -> Match:
        """Settle a WebSocket handshake's reservation with the connection's first client frame.

        The candidates are the same key's sessions that are unused or reserved by a
        connection that has sent no frame yet, whose recorded handshake answer has the
        same status, and that have a client frame. The closest first client frame wins
        (exact first, then most similar, recorded order breaking ties). When that is
        another recording, this connection takes it; a connection holding it unbound gets
        this connection's reservation in exchange. The 101 (headers) and any server frames
        sent before the first client frame came from the reserved recording.
        """
        if not match.tentative:
            return match
        bucket = self._buckets.get(match._key)
        match.tentative = False
        if bucket is None:
            return match
        own = next((i for i, m in bucket.reserved.items() if m is match), None)
        if own is None:
            return match
        del bucket.reserved[own]
        status = _status(bucket.items[own])
        origin = bucket.origins[own] if bucket.origins is not None else None

        def alike(i: int) -> bool:  # the same answer to the handshake, from the same origin
            return _status(bucket.items[i]) == status and (origin is None or bucket.origins[i] == origin)

        pool = [i for i in bucket.reserved if alike(i)]
        pool += [i for i, _ in zip(bucket.unused(alike),
                                   range(self.config.window))]
        pool.append(own)
        pool = sorted(i for i in set(pool) if self._frame_print(bucket, i) is not None)
        if not pool:
            return match
        fq = fingerprint(frame, self.config.rules, keep_doc=True)
        chosen, exact, diffs, more, weak = self._closest(
            pool, fq, lambda i: self._frame_print(bucket, i).exact, lambda i: distance(self._frame_print(bucket, i), fq),
            lambda i: _first_client_frame(bucket.items[i]).payload)
        match.exact = exact
        match.weak, match.differences, match.more_differences = weak, diffs, more
        # Reservations follow handshake order; a session is out of order when its first frame
        # moves it off its own (pool[0] may be another connection's reservation).
        match.out_of_order = chosen != own
        match.expected_seq = bucket.items[own].seq if match.out_of_order else None
        if chosen != own:
            match.rebound_from = match.interaction.seq
            other = bucket.reserved.pop(chosen, None)
            if other is not None:  # swap with a connection that has not sent a frame yet
                other.interaction, other._pos = bucket.items[own], own
                bucket.reserved[own] = other
            else:
                bucket.unuse(own)
                self._used.discard(_ident(bucket.items[own]))
                bucket.used[chosen] = 1
                self._used.add(_ident(bucket.items[chosen]))
            match.interaction, match._pos = bucket.items[chosen], chosen
            self.load(match.interaction)
        return match

    def prepared(self, req: Request, cls: str | None = None) -> bool:
        """Whether the candidates of ``req``'s key are all indexed already (any match is then fast)."""
        bucket = self._buckets.get(self._key(req, cls))
        return bucket is not None and bucket.complete

    def prepare(self, req: Request, cls: str | None = None, pause=None) -> None:
        """Index all the candidates of ``req``'s key: one fingerprint per recording, linear
        in their size. ``index`` may run in a worker thread while ``match`` goes on (also on
        this key); ``pause`` is called between recordings (a worker thread hands the GIL
        over there). ``install`` then takes the lock ``match`` is called under."""
        self.install(req, cls, self.index(req, cls, pause))

    def index(self, req: Request, cls: str | None = None, pause=None) -> "_Bucket":
        """The finished index of ``req``'s key, for ``install``. Only reads: thread-safe."""
        bucket = self._buckets.get(self._key(req, cls))
        if bucket is None:  # a bucket of its own: this thread must not add one to the dict
            bucket = _Bucket(self.source.candidates(self._key(req, cls)), self.config, self._scanned)
        return bucket.indexed(pause)

    def install(self, req: Request, cls: str | None, full: "_Bucket") -> None:
        self._bucket(self._key(req, cls)).adopt(full)

    def settle(self, match: Match) -> None:
        """A WebSocket connection ended before sending a frame: its reservation is final
        (no other connection may swap with it any more)."""
        bucket = self._buckets.get(match._key)
        if bucket is not None:
            for i, m in list(bucket.reserved.items()):
                if m is match:
                    del bucket.reserved[i]
        match.tentative = False

    def release(self, match: Match) -> None:
        """Undo ``match`` as if its recording had never been used: an injected fault
        answered the request, so the client's retry gets the recording (``replay/faults.py``),
        and the match leaves the report."""
        bucket = self._buckets.get(match._key)
        if bucket is None:
            return
        i = match._pos  # kept by _take and bind: no walk over the bucket
        if i is None or not bucket.used[i]:
            return
        bucket.unuse(i)
        bucket.reserved.pop(i, None)
        self._used.discard(_ident(match.interaction))
        match.tentative = False
        self.matches = [m for m in self.matches if m is not match]

    def load(self, it: Interaction) -> Interaction:
        """The recording with its chunks and frames (loaded once)."""
        ident = it.seq if it.seq is not None else _ident(it)
        if ident not in self._loaded:
            self.source.load_events(it)
            self._loaded.add(ident)
        return it

    def unused(self) -> list[Interaction]:
        """Recordings never used (needs a source that can be iterated)."""
        if getattr(self.source, "__iter__", None) is None:
            return []
        return [it for it in self.source if _ident(it) not in self._used]

    @property
    def served(self) -> int:
        return len(self._used)

    @property
    def scanned(self) -> int:
        """Recordings fingerprinted so far, over all keys."""
        return self._scanned[0]  # kept as they are made: a sum over the buckets cost O(keys) per request

    def report(self) -> dict:
        """Counts for a summary: how many matches were out of order, inexact, weak."""
        return {
            "recordings": len(self.source),
            "served": self.served,
            "out_of_order": sum(m.out_of_order for m in self.matches),
            "inexact": sum(not m.exact for m in self.matches),
            "weak": sum(m.weak for m in self.matches),
            "notes": [n for m in self.matches if (n := m.note())],
        }

    # -- choosing ------------------------------------------------------------------------

    @staticmethod
    def _key(req: Request, cls: str | None) -> Key:
        key = request_key(req)
        return key if cls is None else (cls,) + key[1:]

    def _bucket(self, key: Key) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:  # nothing fingerprinted yet: as far as requests need (see _Bucket)
            bucket = self._buckets.setdefault(key, _Bucket(self.source.candidates(key), self.config, self._scanned))
        return bucket

    def _select(self, bucket: _Bucket, req: Request, key: Key, fq: Print) -> Match | Miss:
        target = _target(req, self.config.match_origin)
        if not bucket.complete:
            # The earliest unused exact match that passes the filters, scanning no further: the
            # choice the finished index makes below, as every check before its exact lookup
            # passes when there is one.
            ok = None
            if bucket.origins is not None:
                origin = req.origin
                ok = lambda i: bucket.origins[i] == origin  # noqa: E731
            if bucket.headers is not None:
                want = _header_values(req.headers, self.config.header_names)
                by_origin = ok
                ok = lambda i: bucket.headers[i] == want and (by_origin is None or by_origin(i))  # noqa: E731
            if ok is None:  # the common case, once per request: no generator
                i = bucket.first_exact_unused(fq.exact)
                if i is not None:
                    return self._take(bucket, i, target, key)
            else:
                for i in bucket.exact_unused(fq.exact):
                    if ok(i):
                        return self._take(bucket, i, target, key)
            bucket.finish()
        return self._select_finished(bucket, req, key, fq, target)

    def _select_finished(self, bucket: _Bucket, req: Request, key: Key, fq: Print, target: str) -> Match | Miss:
        ok = None
        if bucket.origins:  # before anything else: recordings of another origin are not candidates
            origin = req.origin
            ok = lambda i: bucket.origins[i] == origin  # noqa: E731
            if next(bucket.unused(ok), None) is None:
                if bucket.per_origin[origin]:
                    return self._miss(target, "all_used", f"{target}: all {bucket.per_origin[origin]} recording(s) "
                                      "of this request were already used (the client made more requests than were "
                                      "recorded)", key, req, fq)
                return self._miss(target, "no_recording", f"{target}: no recording for {origin}", key, req, fq,
                                  "origin")
        if bucket.first_unused() is None:
            if bucket.n:
                return self._miss(target, "all_used", f"{target}: all {bucket.n} recording(s) of this "
                                  "request were already used (the client made more requests than were recorded)",
                                  key, req, fq)
            return self._miss(target, "no_recording", f"{target}: no recording of this method, path and query",
                              key, req, fq)
        if bucket.headers is not None:
            want = _header_values(req.headers, self.config.header_names)
            by_origin = ok
            ok = lambda i: bucket.headers[i] == want and (by_origin is None or by_origin(i))  # noqa: E731
            if next(bucket.unused(ok), None) is None:
                return self._miss(target, "no_recording", f"{target}: no unused recording with these "
                                  f"headers ({', '.join(self.config.header_names)})", key, req, fq, "headers")
        for i in bucket.exact_unused(fq.exact):
            if ok is None or ok(i):
                return self._take(bucket, i, target, key)
        if self.config.match_body:
            miss = self._miss(target, "no_recording", f"{target}: no recording with this body", key, req, fq)
            miss._why = "body"
            return miss
        window = [i for i, _ in zip(bucket.unused(ok), range(self.config.window))]
        dist = bucket.distances(fq)
        chosen, _, diffs, more, weak = self._closest(window, fq, bucket.hashes.__getitem__, dist,
                                                     lambda i: bucket.items[i].request.body,
                                                     widen=lambda: list(bucket.unused(ok)))
        if weak and self.config.strict_match:
            miss = self._miss(target, "weak_match", f"{target}: the nearest recording #{bucket.items[chosen].seq} "
                              f"differs in {_paths([d for d in diffs if not d.volatile], more)} (strict matching)",
                              key, req, fq)
            miss._nearest = (bucket.items[chosen], diffs, more)
            return miss
        return self._take(bucket, chosen, target, key, exact=False, weak=weak, diffs=diffs, more=more,
                          dist=dist(chosen))

    def _closest(self, pool: list[int], fq: Print, exact_of, dist_of, body_of, widen=None):
        """(index, exact, differences, more, weak): the most similar of ``pool`` that is close
        (differs in noise only), else the most similar. ``widen`` gives a larger pool,
        tried when nothing in ``pool`` is close."""
        for i in pool:  # an exact one (frames are not in the hash index)
            if exact_of(i) == fq.exact:
                return i, True, [], False, False
        tried: dict[int, tuple] = {}

        def check(candidates) -> int | None:
            ranked = heapq.nsmallest(TRIES, candidates, key=lambda i: (dist_of(i), i))
            for i in ranked:
                if i not in tried:
                    diffs, more = _diff_with(body_of(i), fq, self.config.rules)
                    tried[i] = (diffs, more, more or any(not d.volatile for d in diffs))
                if not tried[i][2]:
                    return i
            return None

        best = check(pool)
        if best is None and widen is not None:
            everything = widen()
            if len(everything) > len(pool):
                best = check(everything)
        if best is None:
            best = min(tried, key=lambda i: (dist_of(i), i))
        diffs, more, weak = tried[best]
        return best, False, diffs, more, weak

    def _take(self, bucket: _Bucket, i: int, target: str, key: Key, exact: bool = True, weak: bool = False,
              diffs=(), more: bool = False, dist: int = 0) -> Match:
        first = bucket.first_unused() if bucket.origins is None else _first_unused(bucket, i)
        it = bucket.items[i]
        bucket.used[i] = 1
        self._used.add(it.seq if it.seq is not None else _ident(it))
        late = first is not None and first < i
        # positional (fields in order): keywords cost twice as much, and this runs per match
        m = Match(it, exact, weak, late, bucket.items[first].seq if late else None, dist, list(diffs), more, target,
                  False, None, key, i)
        if it.kind is Kind.WEBSOCKET and match_class(it) == "ws":
            m.tentative = True
            bucket.reserved[i] = m
        self.matches.append(m)
        return m

    def _frame_print(self, bucket: _Bucket, i: int) -> Print | None:
        if i not in bucket.frame_prints:
            frame = _first_client_frame(self.load(bucket.items[i]))
            bucket.frame_prints[i] = None if frame is None else fingerprint(frame.payload, self.config.rules)
        return bucket.frame_prints[i]

    # -- misses ----------------------------------------------------------------------------

    def _miss(self, target: str, reason: str, message: str, key: Key, req: Request, fq: Print,
              why: str = "key") -> Miss:
        return Miss(target, reason, message, _key=key, _req=req, _print=fq, _why=why)

    def diagnose(self, miss: Miss, pause=None) -> Miss:
        """Fill in what is left for the path, the nearest recording and what differs.
        Reads at most the key's candidates or ``NEARBY`` others; bodies are compared by
        their fingerprints (linear in size) and only the nearest is diffed. ``pause`` is
        called between the recordings it fingerprints."""
        if miss.diagnosed or miss._key is None:
            return miss
        key, req, fq = miss._key, miss._req, miss._print
        nearby = list(self.source.nearby(key, NEARBY))  # bounded: at most NEARBY recordings
        miss.remaining = [_label(it) for it in nearby
                          if it.request.path == req.path and _ident(it) not in self._used][:NEARBY]
        bucket = self._buckets.get(key)
        if miss._nearest is not None:
            best, diffs, more = miss._nearest
        elif bucket is not None and bucket.n:
            assert bucket.complete  # a miss comes of a finished index
            pool = _same_origin(bucket, req)
            pool = [i for i in pool if not bucket.used[i]] or pool
            dist = bucket.distances(fq)
            i = min(pool, key=lambda i: (dist(i), -i if miss.reason == "all_used" else i))
            best = bucket.items[i]
            diffs, more = self._body_diff(best, fq)
        elif nearby:
            qpieces = set(req.query.split("&"))
            ranks = []
            for it in nearby:
                ranks.append((self._rank(it, key, qpieces, fq), it))
                if pause is not None:
                    pause()
            best = min(ranks, key=lambda r: r[0])[1]
            diffs, more = self._body_diff(best, fq)
        else:
            miss.message = f"{miss.request}: the cassette has no recording of this kind"
            miss.diagnosed = True
            return miss
        key_diffs = _key_differences(best.request, req)
        if self.config.match_origin and best.request.origin != req.origin:
            key_diffs.insert(0, Difference("origin", best.request.origin, req.origin))
        if miss._why == "headers":
            names = self.config.header_names
            key_diffs += [Difference(f"header {n}", _short(a), _short(b)) for n, a, b in
                          zip(names, _header_values(best.request.headers, names), _header_values(req.headers, names))
                          if a != b]
        miss.nearest = _label(best)
        miss.differences = key_diffs + diffs
        miss.diff = _diff_text(best, req, miss.differences, more)
        if miss.reason == "no_recording" and miss._why not in ("headers", "origin"):
            why = "no recording with this body" if miss._why == "body" else "no recording matches"
            miss.message = f"{miss.request}: {why}; nearest is {miss.nearest}"
        miss.diagnosed = True
        miss._req = miss._print = miss._nearest = None  # a kept miss need not keep the request body
        return miss

    def _body_diff(self, it: Interaction, fq: Print):
        return _diff_with(it.request.body, fq, self.config.rules)

    def _rank(self, it: Interaction, key: Key, qpieces: set, fq: Print) -> tuple:
        """Nearest first: same path, same method, similar path, fewest differing query
        pieces (raw ``k=v`` strings: a linear split, no decoding), most similar body."""
        _, method, path, _ = key
        r = it.request
        ident = _ident(it)
        cached = self._diag_prints.get(ident)
        if cached is None:
            if len(self._diag_prints) > 4096:
                self._diag_prints.clear()
            cached = self._diag_prints[ident] = (fingerprint(r.body, self.config.rules), set(r.query.split("&")))
        p, pieces = cached
        return (
            r.path != path,
            r.method.upper() != method,
            -difflib.SequenceMatcher(None, r.path[:256], path[:256]).ratio(),
            len(pieces ^ qpieces),
            distance(p, fq),
            it.seq or 0,
        )


def _first_unused(bucket: _Bucket, i: int) -> int | None:
    """The first unused recording of the bucket, when recording ``i`` is taken: with
    ``match_origin`` the first of ``i``'s origin (another host's recordings are not in
    this one's order, so they never make a match "out of order")."""
    if bucket.origins is None:
        return bucket.first_unused()
    origin = bucket.origins[i]
    return next(bucket.unused(lambda j: bucket.origins[j] == origin), None)


def _same_origin(bucket: _Bucket, req: Request) -> Sequence[int]:
    """The bucket's recordings a miss of ``req`` is compared with: with ``match_origin``
    those of its origin when there are any (the nearest of another host is not what was
    used up), else all."""
    if bucket.origins is not None:
        origin = req.origin
        mine = [i for i, o in enumerate(bucket.origins) if o == origin]
        if mine:
            return mine
    return range(bucket.n)


def _status(it: Interaction) -> int | None:
    return it.response.status if it.response else None


_TARGETS_KEPT = 1024
_targets: dict[tuple, str] = {}  # a client repeats its requests: each target is spelled once


def _target(req: Request, origin: bool = False) -> str:
    key = (req.method, req.path, req.query, origin and req.origin)
    spelled = _targets.get(key)
    if spelled is None:
        target = req.target
        if len(target) > 200:
            target = target[:199] + "…"
        spelled = f"{req.method.upper()} {req.origin if origin else ''}{target}"
        if len(spelled) <= 256:  # a long query is not kept: the memo stays small
            if len(_targets) >= _TARGETS_KEPT:
                _targets.clear()
            _targets[key] = spelled
    return spelled


def _diff_with(recorded: bytes, fq: Print, rules) -> tuple[list[Difference], bool]:
    """Differences of a recorded body from the request whose fingerprint (with doc) is fq."""
    if fq.doc is not _NOT_JSON:
        return diff_bodies(recorded, b"", rules, received_doc=fq.doc)
    return diff_bodies(recorded, fq.raw, rules)


def _pairs(query: str) -> set:
    return set(parse_qsl(query, keep_blank_values=True))


def _key_differences(recorded: Request, received: Request) -> list[Difference]:
    out = []
    if recorded.method.upper() != received.method.upper() or recorded.path != received.path:
        out.append(Difference("request", _short(f"{recorded.method.upper()} {recorded.path}"),
                              _short(f"{received.method.upper()} {received.path}")))
    a, b = set(recorded.query.split("&")), set(received.query.split("&"))  # linear; decode only what differs
    only_a, only_b = {}, {}
    for k, v in sorted(_pairs("&".join(sorted(a - b)))):
        only_a.setdefault(k, v)
    for k, v in sorted(_pairs("&".join(sorted(b - a)))):
        only_b.setdefault(k, v)
    for k in sorted(only_a.keys() | only_b.keys())[:10]:
        out.append(Difference(f"query {k}", _short(only_a[k]) if k in only_a else ABSENT,
                              _short(only_b[k]) if k in only_b else ABSENT))
    return out


def _diff_text(best: Interaction, req: Request, diffs: Sequence[Difference], more: bool) -> str:
    lines = [f"--- recorded {_label(best)}", f"+++ received {_target(req, any(d.path == 'origin' for d in diffs))}"]
    for d in diffs:
        if d.path.startswith("query "):
            k = d.path[6:]
            if d.recorded != ABSENT:
                lines.append(f"-query {k}={json.loads(d.recorded) if d.recorded.endswith(chr(34)) else d.recorded}")
            if d.received != ABSENT:
                lines.append(f"+query {k}={json.loads(d.received) if d.received.endswith(chr(34)) else d.received}")
            continue
        lines.append(f"-{d.path}: {d.recorded}")
        lines.append(f"+{d.path}: {d.received}")
    if more:
        lines.append(" ... more differences")
    text = "\n".join(lines)
    return text if len(text) <= MAX_DIFF_TEXT else text[:MAX_DIFF_TEXT] + "\n..."


# -- WebSocket frames ----------------------------------------------------------------------

@dataclass
class FrameCheck:
    """A client frame compared with the recorded one. ``ok`` says whether replay goes on."""

    ok: bool
    exact: bool
    weak: bool
    differences: list[Difference] = field(default_factory=list)
    more_differences: bool = False
    reason: str = ""  # why not ok, naming paths and values


def _frame_type(doc: Any) -> Any:
    return doc.get("type") if isinstance(doc, dict) else None


# The recorder replaces a secret by a marker of its length (redaction.marker: REDACTED then
# '*'), and scans a connection's frames as one stream, so a key split across two frames
# leaves the beginning of a marker at the end of one frame and its end at the start of
# the next. Such spans match any bytes of their length.
_MARKED = re.compile(rb"REDACTED\**|^(?:EDACTED|DACTED|ACTED|CTED|TED|ED|D)?\*+|(?:REDACTE|REDACT|REDAC|REDA|RED)$")


def equal_but_redacted(recorded: bytes, received: bytes) -> bool:
    """Whether ``received`` equals ``recorded`` but where ``recorded`` holds a redaction
    marker (the client sent the secret the recorder masked)."""
    if len(recorded) != len(received):
        return False
    pos, masked = 0, False
    for m in _MARKED.finditer(recorded):
        if recorded[pos:m.start()] != received[pos:m.start()]:
            return False
        pos, masked = m.end(), True
    return masked and recorded[pos:] == received[pos:]


def compare_frame(turn: int, expected: bytes, expected_text: bool, received: bytes, received_text: bool,
                  config: MatchConfig = MatchConfig()) -> FrameCheck:
    """Compare the ``turn``-th client frame (0-based) with the recording.

    JSON frames: by default the JSON ``type`` must be equal; with ``match_body`` the whole
    frame (after ignores); with ``strict_match`` every difference but ids / dates / times.
    Other frames: equal bytes. A text frame never matches a binary one, whatever they
    hold. The differences are listed either way, so a report can show what a served
    frame differed in.
    """
    n = turn + 1
    if expected_text != received_text:
        kind = {True: "text", False: "binary"}
        diff = Difference(f"frame {n}", f"a {kind[expected_text]} frame", f"a {kind[received_text]} frame")
        return FrameCheck(False, False, True, [diff], False,
                          f"frame {n}: expected a {kind[expected_text]} frame, got {kind[received_text]}")
    a, b = load_json(expected), load_json(received)
    if a is _NOT_JSON or b is _NOT_JSON:
        exact = expected == received
        same = exact or equal_but_redacted(expected, received)
        diffs = [] if same else [Difference(f"frame {n}", f"{len(expected)} bytes", f"{len(received)} bytes")]
        reason = "" if same else f"frame {n}: bytes differ from the recording ({len(expected)} vs {len(received)} bytes)"
        return FrameCheck(same, exact, not exact, diffs, False, reason)
    apply_ignores(a, config.rules)
    apply_ignores(b, config.rules)
    diffs, more = diff_docs(a, b)
    weak = more or any(not d.volatile for d in diffs)
    exact = not diffs and not more
    if config.match_body:
        ok = exact
    elif config.strict_match:
        ok = not weak
    else:
        ok = _frame_type(a) == _frame_type(b)
    reason = ""
    if not ok:
        if not config.match_body and not config.strict_match:
            reason = f"frame {n}: expected type {_frame_type(a)!r}, got {_frame_type(b)!r}"
        else:
            shown = diffs if config.match_body else [d for d in diffs if not d.volatile]
            reason = f"frame {n} differs from the recording: " + "; ".join(str(d) for d in shown[:3])
            if more or len(shown) > 3:
                reason += "; ..."
    return FrameCheck(ok, exact, weak, diffs, more, reason)


__all__ = [
    "CandidateSource", "Difference", "FrameCheck", "Key", "ListSource", "Match", "MatchConfig", "Matcher",
    "Miss", "NotIndexed", "canonical_body", "compare_frame", "diff_bodies", "fingerprint", "request_key",
]

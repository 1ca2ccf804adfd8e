"""Replay engine: no I/O. Turns a request into what to send and when.

The ASGI players (``http.py``, ``websocket.py``) own clocks and the server adapter sockets; this module only
decides: which recording answers a request (via ``matching``), and the script of
(offset, action) steps that reproduces it. Offsets are seconds from the
request's arrival at recorded speed; the adapter divides by ``--speed``.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..headers import WS_HANDSHAKE, sendable
from ..matching import CandidateSource, Key, ListSource, Match, MatchConfig, Miss, canonical_body, describe, normalize_query
from ..model import Close, Direction, End, Frame, Interaction, Request
from ..redaction import Redactor
from ..store.errors import CassetteError

@dataclass
class HttpScript:
    status: int
    headers: list[tuple[bytes, bytes]]
    ttfb: float
    chunks: list[tuple[float, bytes]]
    cut: bool  # close abruptly after the last chunk instead of ending the body
    seq: int | None = None


@dataclass
class MissReply:
    miss: Miss
    status: int = 404

    def body(self) -> bytes:
        return json.dumps(self.miss.to_json(), indent=1).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", b"application/json"), (b"x-proxy-miss", self.miss.reason.encode())]


def http_script(it: Interaction) -> HttpScript:
    resp = it.response
    assert resp is not None
    headers = sendable(resp.headers)
    cut = it.end in (End.UPSTREAM_CUT, End.CLIENT_GONE, End.INCOMPLETE)
    return HttpScript(
        status=resp.status,
        headers=headers,
        ttfb=it.ttfb or 0.0,
        chunks=[(c.offset, c.data) for c in it.chunks],
        cut=cut,
        seq=it.seq,
    )


NEARBY = 50  # recordings a miss looks at for its diagnostic


class SourceMatcher:
    """The matching rules of ``matching.Matcher`` (method + path + query in recorded order,
    opted-in headers and body compared exactly, a miss explained) over a CandidateSource,
    so a cassette is matched from its index without being read into memory.

    An adapter: it holds until the matcher itself takes a CandidateSource (issue 12);
    then the engine builds that one instead, with the same two arguments.
    """

    def __init__(self, source: CandidateSource, config: MatchConfig = MatchConfig()):
        self.source = source
        self.config = config
        self.used: set[int] = set()  # id() of used recordings (a source hands out one object per recording)
        self._cursor: dict[tuple, int] = {}  # per key: candidates before it are used or differ
        self._lines: dict[int, list[str]] = {}

    def lines(self, it: Interaction) -> list[str]:
        got = self._lines.get(id(it))
        if got is None:
            got = self._lines[id(it)] = describe(it.request, self.config)
        return got

    def match(self, req: Request, cls: str = "http") -> Match | Miss:
        key: Key = (cls, req.method.upper(), req.path, normalize_query(req.query))
        want = describe(req, self.config)
        finer = bool(self.config.match_body or self.config.match_headers)
        candidates = self.source.candidates(key)
        at = (key, tuple(want)) if finer else (key,)
        i = self._cursor.get(at, 0)
        while True:
            try:
                it = candidates[i]
            except IndexError:
                break
            if id(it) not in self.used and (not finer or self.lines(it) == want):
                self.used.add(id(it))
                self._cursor[at] = i + 1
                return Match(it)
            i += 1
        self._cursor[at] = i
        return self._miss(req, key, want, candidates)

    def _miss(self, req: Request, key: Key, want: list[str], candidates) -> Miss:
        target = f"{req.method.upper()} {req.target}"
        nearby = list(self.source.nearby(key, NEARBY))
        remaining = [_label(it) for it in nearby if id(it) not in self.used and it.request.path == req.path]
        same = [it for it in candidates if self.lines(it) == want]
        if same:
            return Miss(target, "all_used", f"{target}: all {len(same)} recording(s) of this request were already "
                        "used (the client made more requests than were recorded)", remaining, _label(same[-1]))
        pool = [it for it in nearby if id(it) not in self.used] or nearby
        if not pool:
            return Miss(target, "no_recording", f"{target}: the cassette has no recording of this kind", remaining)
        text = "\n".join(want)
        best = max(pool, key=lambda it: (
            it.request.path == req.path,
            it.request.method.upper() == req.method.upper(),
            difflib.SequenceMatcher(None, text, "\n".join(self.lines(it))).ratio(),
        ))
        diff = "\n".join(difflib.unified_diff(self.lines(best), want, "recorded", "received", n=1, lineterm=""))
        if len(diff) > 4000:
            diff = diff[:4000] + "\n..."
        why = "no recording matches"
        if best.request.path == req.path and self.config.match_body:
            why = "no recording with this body"
        return Miss(target, "no_recording", f"{target}: {why}; nearest is {_label(best)}", remaining, _label(best), diff)

    @property
    def served(self) -> int:
        return len(self.used)

    def unused(self) -> list[Interaction]:
        """Recordings never used, in recorded order (reads the whole source)."""
        every = self.source if hasattr(self.source, "__iter__") else self.source.interactions  # a ListSource
        return [it for it in every if id(it) not in self.used]


def _label(it: Interaction) -> str:
    return f"#{it.seq} {it.request.method} {it.request.target}"


@dataclass
class Engine:
    """The replay state of one cassette: where its recordings come from and what has been
    consumed. ``interactions`` is a CandidateSource (a cassette's ``source()``: matched from
    its index, events read when matched) or the recordings themselves."""

    interactions: CandidateSource | Iterable[Interaction]
    config: MatchConfig = field(default_factory=MatchConfig)
    redactor: Redactor = field(default_factory=Redactor)

    def __post_init__(self) -> None:
        if hasattr(self.interactions, "candidates"):
            self.source: CandidateSource = self.interactions
        else:
            self.interactions = list(self.interactions)
            self.source = ListSource(self.interactions)
        self.matcher = SourceMatcher(self.source, self.config)
        self.misses: list[Miss] = []
        self.mismatches: list[str] = []  # WebSocket frames that did not match, as close reasons
        self.failure: CassetteError | None = None  # the cassette turned out damaged
        self.on_failure = None  # called once with that error (the session stops on it)
        self._lock = threading.Lock()

    def normalize(self, req: Request) -> Request:
        """Apply the recorder's transformations to what matching compares, with the
        recorder's functions: the path and query always; the body (decoded by the shared
        codec, scrubbed, or the same marker when it does not decode) and headers only
        when the configuration matches on them."""
        body = req.body
        if self.config.match_body:
            body, _ = self.redactor.request_body(body, req.body_encoding)
        headers = self.redactor.headers(req.headers) if self.config.match_headers else req.headers
        return Request(
            method=req.method,
            path=self.redactor.path(req.path),
            query=self.redactor.query(req.query),
            headers=headers,
            body=body,
            body_encoding=req.body_encoding,
        )

    def http(self, req: Request) -> HttpScript | MissReply:
        req = self.normalize(req)
        with self._lock:
            try:
                result = self.matcher.match(req)
                if isinstance(result, Match):
                    return http_script(self._full(result.interaction))
            except CassetteError as e:
                return MissReply(self.failed(e, req), status=500)
            self.misses.append(result)
        return MissReply(result)

    def handshake(self, req: Request) -> Match | Miss:
        """Match a WebSocket handshake: a recorded session, or a recorded refusal."""
        req = self.normalize(req)
        with self._lock:
            try:
                result = self.matcher.match(req, "ws")
                if isinstance(result, Miss):
                    self.misses.append(result)
                else:
                    self._full(result.interaction)
            except CassetteError as e:
                return self.failed(e, req)
            return result

    def failed(self, error: CassetteError, req: Request | None = None) -> Miss:
        """The cassette is damaged: never serve from it again; say so to the client."""
        first = self.failure is None
        self.failure = self.failure or error
        if first and self.on_failure is not None:
            self.on_failure(error)
        target = f"{req.method.upper()} {req.target}" if req else ""
        return Miss(target, "cassette_damaged", str(self.failure))

    def _full(self, it: Interaction) -> Interaction:
        # A recording is matched at most once, so its events are loaded at most once.
        if self.failure is not None:
            raise self.failure
        return self.source.load_events(it)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    @property
    def served(self) -> int:
        return self.matcher.served

    def unused(self) -> list[Interaction]:
        return self.matcher.unused()

    def ws_script(self, it: Interaction) -> "WsScript":
        return ws_script(it, self.config)


# -- WebSocket ----------------------------------------------------------------

CLOSE_MISMATCH = 4000  # a client frame differs from the recorded one
CLOSE_UNEXPECTED = 4001  # a client frame the recording does not have


@dataclass
class Turn:
    """A recorded client frame and the server frames recorded after it.

    ``replies`` offsets are relative to the client frame's recorded offset, so they
    are replayed relative to the replayed frame's arrival.
    """

    expected: Frame
    replies: list[tuple[float, Frame]]


@dataclass
class WsScript:
    seq: int | None
    accept_delay: float
    headers: list[tuple[bytes, bytes]]
    subprotocol: str | None
    preamble: list[tuple[float, Frame]]  # server frames before any client frame, offsets from the handshake
    turns: list[Turn]
    close: Close | None
    close_after: float  # offset of the recorded end, relative to the last anchor (handshake or last client frame)
    config: MatchConfig

    @property
    def server_closes(self) -> bool:
        return self.close is not None and self.close.by is Direction.SERVER

    @property
    def abnormal_end(self) -> bool:
        """The upstream dropped the connection without a close frame."""
        return self.close is not None and self.close.code is None and self.close.by is not Direction.CLIENT

    def mismatch(self, turn: int, payload: bytes, is_text: bool) -> str | None:
        """Why a client frame does not match the recorded one (None when it does)."""
        exp = self.turns[turn].expected
        if self.config.match_body:
            a = canonical_body(exp.payload, self.config.ignore_json_paths)
            b = canonical_body(payload, self.config.ignore_json_paths)
            if a != b:
                return f"frame {turn + 1} differs from the recording: expected {a[:40]!r}, got {b[:40]!r}"
            return None
        want, got = _frame_type(exp.payload), _frame_type(payload)
        if want is not None or got is not None:
            if want != got:
                return f"frame {turn + 1}: expected type {want!r}, got {got!r}"
            return None
        if exp.payload != payload or exp.is_text != is_text:
            return f"frame {turn + 1}: bytes differ from the recording ({len(exp.payload)} vs {len(payload)} bytes)"
        return None


def _frame_type(payload: bytes) -> str | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    return doc.get("type") if isinstance(doc, dict) else None


def ws_script(it: Interaction, config: MatchConfig) -> WsScript:
    resp = it.response
    headers = sendable(resp.headers if resp else [], WS_HANDSHAKE)
    subprotocol = resp.header("sec-websocket-protocol") if resp else None
    preamble: list[tuple[float, Frame]] = []
    turns: list[Turn] = []
    for f in it.frames:
        if f.direction is Direction.CLIENT:
            turns.append(Turn(f, []))
        elif turns:
            turns[-1].replies.append((f.offset - turns[-1].expected.offset, f))
        else:
            preamble.append((f.offset, f))
    anchor = turns[-1].expected.offset if turns else 0.0
    end = it.duration if it.duration is not None else (it.frames[-1].offset if it.frames else anchor)
    return WsScript(
        seq=it.seq,
        accept_delay=it.ttfb or 0.0,
        headers=headers,
        subprotocol=subprotocol,
        preamble=preamble,
        turns=turns,
        close=it.close,
        close_after=max(0.0, end - anchor),
        config=config,
    )

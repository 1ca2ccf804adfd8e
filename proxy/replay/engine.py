"""Replay engine: no I/O. Turns a request into what to send and when.

The ASGI players (``http.py``, ``websocket.py``) own clocks and the server adapter sockets; this module only
decides: which recording answers a request (via ``matching``), and the script of
(offset, action) steps that reproduces it. Offsets are seconds from the
request's arrival at recorded speed; the adapter divides by ``--speed``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from ..codec import DecodeError, decode_body
from ..headers import WS_HANDSHAKE, sendable
from ..matching import Match, MatchConfig, Matcher, Miss, canonical_body
from ..model import Close, Direction, End, Frame, Interaction, Request
from ..redaction import Redactor

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


@dataclass
class Engine:
    """The replay state of one cassette: recordings and what has been consumed."""

    interactions: list[Interaction]
    config: MatchConfig = field(default_factory=MatchConfig)
    redactor: Redactor = field(default_factory=Redactor)
    loader: object = None  # a Cassette whose load_events() fills in chunks and frames on a match

    def __post_init__(self) -> None:
        self.matcher = Matcher(self.interactions, self.config)
        self.misses: list[Miss] = []
        self.mismatches: list[str] = []  # WebSocket frames that did not match, as close reasons
        self._lock = threading.Lock()

    def normalize(self, req: Request) -> Request:
        """Apply the recorder's transformations (decode, redact) to what matching compares:
        the query always, headers and body only when the configuration matches on them."""
        body = req.body
        if self.config.match_body:
            try:
                body = decode_body(body, req.body_encoding)
            except DecodeError:
                pass  # compare the raw bytes; a miss will show them
            body = self.redactor.body(body)
        headers = self.redactor.headers(req.headers) if self.config.match_headers else req.headers
        return Request(
            method=req.method,
            path=req.path,
            query=self.redactor.query(req.query),
            headers=headers,
            body=body,
            body_encoding=req.body_encoding,
        )

    def http(self, req: Request) -> HttpScript | MissReply:
        req = self.normalize(req)
        with self._lock:
            result = self.matcher.match(req)
            if isinstance(result, Match):
                return http_script(self._full(result.interaction))
            self.misses.append(result)
        return MissReply(result)

    def handshake(self, req: Request) -> Match | Miss:
        """Match a WebSocket handshake: a recorded session, or a recorded refusal."""
        req = self.normalize(req)
        with self._lock:
            result = self.matcher.match(req, "ws")
            if isinstance(result, Miss):
                self.misses.append(result)
            else:
                self._full(result.interaction)
            return result

    def _full(self, it: Interaction) -> Interaction:
        # A recording is matched at most once, so its events are loaded at most once.
        if self.loader is not None:
            self.loader.load_events(it)
        return it

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()
            self.loader = None

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

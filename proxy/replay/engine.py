"""Replay engine: no I/O. Turns a request into what to send and when.

The server adapter (``server.py``) owns sockets and clocks; this module only
decides: which recording answers a request (via ``matching``), and the script of
(offset, action) steps that reproduces it. Offsets are seconds from the
request's arrival at recorded speed; the adapter divides by ``--speed``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from ..codec import DecodeError, decode_body
from ..matching import Match, MatchConfig, Matcher, Miss, is_upgrade
from ..model import End, Interaction, Kind, Request
from ..redaction import Redactor

# Sent by the framing layer of the replay server itself; never copied from a recording.
HOP_HEADERS = frozenset({"keep-alive", "proxy-connection"})


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
        body = self.body()
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-proxy-miss", self.miss.reason.encode()),
        ]


def http_script(it: Interaction) -> HttpScript:
    resp = it.response
    assert resp is not None
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers if k.lower() not in HOP_HEADERS]
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

    def __post_init__(self) -> None:
        self.matcher = Matcher(self.interactions, self.config)
        self.misses: list[Miss] = []
        self._lock = threading.Lock()

    def normalize(self, req: Request) -> Request:
        """Apply the recorder's transformations (decode, redact) to an incoming request."""
        body = req.body
        try:
            body = decode_body(body, req.body_encoding)
        except DecodeError:
            pass  # compare the raw bytes; a miss will show them
        return Request(
            method=req.method,
            path=req.path,
            query=self.redactor.query(req.query),
            headers=self.redactor.headers(req.headers),
            body=self.redactor.body(body),
            body_encoding=req.body_encoding,
        )

    def http(self, req: Request) -> HttpScript | MissReply:
        req = self.normalize(req)
        with self._lock:
            result = self.matcher.match(req)
            if isinstance(result, Match):
                return http_script(result.interaction)
            self.misses.append(result)
        return MissReply(result)

    def handshake(self, req: Request) -> Match | Miss:
        """Match a WebSocket handshake: a recorded session, or a recorded refusal."""
        req = self.normalize(req)

        def accepts(it: Interaction) -> bool:
            return it.kind is Kind.WEBSOCKET or (it.kind is Kind.HTTP and is_upgrade(it.request))

        with self._lock:
            result = self.matcher.match(req, accepts)
            if isinstance(result, Miss):
                self.misses.append(result)
            return result

    def unused(self) -> list[Interaction]:
        return self.matcher.unused()

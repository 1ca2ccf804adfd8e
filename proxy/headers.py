"""Header helpers shared by the replay server, the relay and the simulator.

The model keeps headers as ordered ``(str, str)`` pairs; ASGI carries ``(bytes, bytes)``
pairs in latin-1. Which recorded headers a response we send may carry is decided here,
once, for every replayed or relayed response (``sendable``):

- ``HOP_BY_HOP`` never: they describe one hop's connection, which uvicorn runs itself.
- ``WS_HANDSHAKE`` not on an accepted WebSocket handshake: the server's handshake code
  writes them from the client's request.
- ``WHOLE_BODY`` not on a response sent whole (``send_error`` sets its own length).

Everything else is sent as recorded: ``transfer-encoding`` and ``content-length`` of an
HTTP response are the recorded framing, which the replay reproduces.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Headers

HOP_BY_HOP = frozenset({"keep-alive", "proxy-connection"})
WS_HANDSHAKE = frozenset({"upgrade", "connection", "sec-websocket-accept", "sec-websocket-extensions",
                          "sec-websocket-protocol", "date", "content-length", "transfer-encoding"})
WHOLE_BODY = frozenset({"content-length"})
# Request headers a relay does not pass upstream: the client's connection and handshake,
# which the relay's own client (httpx, websockets) writes for its connection. (Not
# ``date``: in a request it is the client's, part of the message, unlike a response's.)
RELAY_REQUEST = HOP_BY_HOP | (WS_HANDSHAKE - {"date"}) | {"host", "te", "sec-websocket-key", "sec-websocket-version"}

RawHeaders = list[tuple[bytes, bytes]]

# Set by the forward-mode front (proxy/record/front.py) on every request it hands the
# replay server: where the client sent it, ``scheme://host:port``. The replay server
# takes it off the request before matching.
ORIGIN_HEADER = "x-proxy-origin"


def to_raw(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def from_raw(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]


def sendable(headers: Iterable[tuple[str, str]], also: frozenset[str] = frozenset()) -> RawHeaders:
    """The headers of a response we send, as ASGI wants them: without ``HOP_BY_HOP`` and ``also``."""
    drop = HOP_BY_HOP | also
    return to_raw((k, v) for k, v in headers if k.lower() not in drop)


def without(headers: Iterable[tuple[str, str]], names: frozenset[str]) -> Headers:
    return [(k, v) for k, v in headers if k.lower() not in names]


def scope_headers(scope) -> Headers:
    """An ASGI scope's request headers as ``(str, str)`` pairs."""
    return from_raw(scope.get("headers", []))


def scope_header(scope, name: str, default: str | None = None) -> str | None:
    """The first value of request header ``name`` (any case) in an ASGI scope."""
    key = name.lower().encode("latin-1")
    for k, v in scope.get("headers", []):
        if k.lower() == key:
            return v.decode("latin-1")
    return default


async def read_body(receive) -> bytes | None:
    """The whole request body of an ASGI HTTP request, or None when the client left first."""
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return bytes(body)

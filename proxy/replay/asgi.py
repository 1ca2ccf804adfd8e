"""ASGI helpers shared by the HTTP and WebSocket players: the request a scope carries,
whole-body answers (errors, misses), the recorded cut, and holding a connection the
recorded client left without an answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from ..headers import ORIGIN_HEADER, from_raw
from ..model import DEFAULT_PORTS, Request, header_value
from ..net import IntendedDrop
from ..timing import Pacer
from .engine import MissReply

log = logging.getLogger("proxy.replay")


class RecordedCut(IntendedDrop):
    """The recording was cut here: drop the connection after the same byte."""


# What request_from_scope makes of a request line and headers, by those bytes: a client
# sends the same headers again and again, and decoding them costs more than the rest of
# reading a small request.
_SCOPES_KEPT = 256
_scopes: dict[tuple, tuple] = {}


def request_from_scope(scope, body: bytes = b"") -> Request:
    """The request as the client sent it. Through the forward-mode front, its origin
    (``ORIGIN_HEADER``, which the front added) becomes scheme, host and port."""
    return request_from_parts(scope.get("method", "GET"), scope.get("raw_path") or scope["path"].encode(),
                              scope.get("query_string", b""), scope.get("headers", ()), body)


def request_from_parts(method: str, raw_path: bytes, query: bytes, raw_headers, body: bytes = b"") -> Request:
    """``request_from_scope`` from a scope's parts (the server's quick lane has no scope)."""
    key = (method, raw_path, query, tuple(raw_headers))
    parts = _scopes.get(key)
    if parts is None:
        parts = _scopes[key] = _parts(method, raw_path, query, raw_headers)
        if len(_scopes) > _SCOPES_KEPT:
            _scopes.clear()
    method, path, query, headers, scheme, host, port, encoding = parts
    return Request(method, path, query, list(headers), body, encoding, scheme, host, port)


def _parts(method: str, raw_path: bytes, query: bytes, raw_headers) -> tuple:
    headers = from_raw(raw_headers)
    scheme, host, port = "http", "", 0
    origin = header_value(headers, ORIGIN_HEADER)
    if origin:
        try:
            url = urlsplit(origin)
            url_port = url.port
        except ValueError:  # not the front's (it writes model.origin()): a client's own, in base-URL mode
            url = None
        if url is not None:
            scheme, host = url.scheme, url.hostname or ""
            port = url_port or DEFAULT_PORTS.get(url.scheme, 0)
    return (method, raw_path.decode("latin-1").split("?", 1)[0], query.decode("latin-1"),
            tuple((k, v) for k, v in headers if k.lower() != ORIGIN_HEADER),
            scheme, host, port, header_value(headers, "content-encoding"))


async def hold(receive, pacer: Pacer, until: float, what: str) -> None:
    """Leave the connection as it is until the client leaves, or ``until`` (recorded
    seconds from the request's arrival) passes; then drop it (``what`` says why)."""
    disconnects = ("http.disconnect", "websocket.disconnect")

    async def client_leaves() -> None:
        while (await receive())["type"] not in disconnects:
            pass

    try:
        await asyncio.wait_for(client_leaves(), max(0.0, pacer.due(until) - pacer.now()))
    except asyncio.TimeoutError:
        raise RecordedCut(what) from None


def when_gone(receive, callback) -> asyncio.Task:
    """Call ``callback`` as soon as the client disconnects, unless the returned task is
    cancelled first. For injected delays: a client whose timeout runs out during one gives
    its recording back at once, before its retry arrives."""
    task = asyncio.ensure_future(receive())
    task.add_done_callback(lambda t: None if t.cancelled() or t.exception() else callback())
    return task


async def unless_gone(aw, gone: asyncio.Task | None) -> bool:
    """Await ``aw`` unless the client leaves first (``gone``, from ``when_gone``, is done):
    then ``aw`` is cancelled and False returned, so nothing keeps playing to no one."""
    if gone is None:
        await aw
        return True
    task = asyncio.ensure_future(aw)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def send_error(scope, receive, send, status: int, headers: list, body: bytes) -> None:
    """Answer an HTTP request, or refuse a WebSocket handshake, with a whole body.

    ``receive`` is read first for a WebSocket whose connect event was not consumed yet
    (pass None when it was)."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    prefix = "websocket.http.response" if scope["type"] == "websocket" else "http.response"
    if scope["type"] == "websocket" and receive is not None:
        await receive()
    await send({"type": prefix + ".start", "status": status, "headers": headers})
    await send({"type": prefix + ".body", "body": body})


async def send_miss(reply: MissReply, scope, receive, send) -> None:
    """A request (or handshake) with no recording: logged, and answered with the diagnostic."""
    miss = reply.miss
    log.warning("miss: %s%s", miss.message, "\n" + miss.diff if miss.diff else "")
    await send_error(scope, receive, send, reply.status, reply.headers(), reply.body())


__all__ = ["IntendedDrop", "RecordedCut", "hold", "request_from_parts", "request_from_scope", "send_error", "send_miss", "unless_gone",
           "when_gone"]

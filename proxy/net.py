"""Sockets and addresses shared by the servers: the listening socket (replay server,
simulator, the recorder's port check), the address it listens on, and what an ASGI app
may ask of the server beyond ASGI: to drop a connection on purpose, to decline deflate;
and a way through a test's network guard to the proxy's own address (the pytest plugin)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit


class PortInUse(OSError):
    pass


class IntendedDrop(Exception):
    """Raised inside an ASGI app to drop the connection on purpose (a recorded cut, a
    simulated reset), before or after the response started. The server adapter closes
    the connection, sends nothing more and logs nothing."""


# What an app may ask of the server adapter beyond ASGI (proxy.uvicorn_server honours it):
# a "websocket.accept" message with ``{ACCEPT_DEFLATE: False}`` declines permessage-deflate
# even when the client offered it, as the recorded upstream did.
ACCEPT_DEFLATE = "proxy.deflate"

# The quick lane: an app with a ``quick(method, raw_path, query, headers, body)`` method is
# asked for each whole HTTP/1.1 request (httptools stack) before any ASGI task exists. It
# returns None (serve it through ASGI as usual), or ``(status, headers, body_parts,
# answer)``: with a status, the server writes that complete response itself, framed as
# ASGI would have framed it; without one (or where the server cannot frame it), it serves
# the request through ASGI with ``answer`` in the scope under QUICK_ANSWER, so that the
# app does not work its answer out twice.
QUICK_ANSWER = "proxy.quick.answer"

# An ASGI extension (``scope["extensions"][BODY_PARTS]``, httptools stack): ``await
# parts(list_of_bytes)`` after ``http.response.start`` sends the body as that many
# ``http.response.body`` messages, the last ending it: the same writes, one per part,
# without a message and a send coroutine per part.
BODY_PARTS = "proxy.body_parts"


class IntendedReset(IntendedDrop):
    """Drop the connection with a TCP reset (RST) instead of a FIN: the client's read fails
    with "connection reset by peer" (an injected fault). The server adapter sends it."""


def reset_on_close(sock) -> None:
    """Make closing ``sock`` send a RST: SO_LINGER on with a zero timeout."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass(frozen=True)
class Listening:
    """Where a server listens."""

    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen; a port in use is a PortInUse with the address in the message."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only
    # when sock.proto == IPPROTO_TCP, and accepted sockets inherit it from this one.
    # Without TCP_NODELAY, Nagle + delayed ACK hold small frames back by ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise PortInUse(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


# socket.connect as it was when proxy.net was imported, before a test's network guard replaced it.
_CONNECT, _CONNECT_EX = socket.socket.connect, socket.socket.connect_ex


@contextmanager
def reachable_through_guard(url: str) -> Iterator[None]:
    """While it runs, connections to ``url``'s host and port bypass a guard that replaced
    ``socket.connect`` since import (pytest-recording's ``--block-network``); the guard
    still decides every other connection, and is back in place afterwards. Without a
    guard it does nothing."""
    guarded, guarded_ex = socket.socket.connect, socket.socket.connect_ex
    if guarded is _CONNECT:
        yield
        return
    parts = urlsplit(url)
    own = (parts.hostname, parts.port)

    def connect(sock, address, *args, **kwargs):
        through = _CONNECT if isinstance(address, tuple) and tuple(address[:2]) == own else guarded
        return through(sock, address, *args, **kwargs)

    def connect_ex(sock, address, *args, **kwargs):
        through = _CONNECT_EX if isinstance(address, tuple) and tuple(address[:2]) == own else guarded_ex
        return through(sock, address, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = guarded, guarded_ex

"""Sockets and addresses shared by the servers: the listening socket (replay server,
simulator, the recorder's port check), the address it listens on, and what an ASGI app
may ask of the server beyond ASGI: to drop a connection on purpose, to decline deflate."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass


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

"""The listening socket, for the replay server and the recorder's port check."""

from __future__ import annotations

import socket


class PortInUse(OSError):
    pass


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

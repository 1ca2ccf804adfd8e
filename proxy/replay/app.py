"""The replay app: a raw ASGI app that sends each request to the HTTP or WebSocket player.

It does no socket work itself; ``proxy.uvicorn_server`` serves it. One port serves
HTTP and WebSocket.
"""

from __future__ import annotations

import json
import logging

from .asgi import send_error
from .engine import Engine
from .http import serve_http
from .websocket import serve_websocket

log = logging.getLogger("proxy.replay")


class ReplayApp:
    """``engine`` serves one cassette; with ``cassettes`` (a CassetteDir) each request
    names its cassette. ``forwarder`` (record mode new_episodes) relays requests that
    have no recording instead of answering them with a miss."""

    def __init__(self, engine: Engine | None = None, speed: float = 1.0, forwarder=None, cassettes=None):
        self.engine = engine
        self.speed = speed
        self.forwarder = forwarder
        self.cassettes = cassettes

    def engines(self) -> list[Engine]:
        """Every engine this app served from (for the summary)."""
        if self.cassettes is not None:
            return list(self.cassettes.engines.values())
        return [self.engine] if self.engine is not None else []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        engine = self.engine
        if self.cassettes is not None:
            engine, scope, problem = await self.cassettes.resolve(scope)
            if problem is not None:
                log.warning("%s", problem["error"]["message"])
                body = json.dumps(problem, indent=1).encode()
                await send_error(scope, receive, send, 404, [(b"content-type", b"application/json")], body)
                return
        if scope["type"] == "http":
            await serve_http(self, engine, scope, receive, send)
        else:
            await serve_websocket(self, engine, scope, receive, send)


__all__ = ["ReplayApp"]

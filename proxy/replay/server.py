"""Replay server: a raw ASGI app on uvicorn. The only replay code that touches sockets.

One port serves HTTP and WebSocket. Every step is scheduled against an absolute
target time (request arrival + recorded offset / speed), see ``proxy.timing``.
uvicorn runs with ``server_header=False, date_header=False`` so the headers the
client gets are the recorded ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass

import uvicorn

from ..model import Request
from ..net import bind
from ..timing import Pacer
from .engine import Engine, HttpScript, MissReply

log = logging.getLogger("proxy.replay")


class IntendedDrop(Exception):
    """Raised inside an app to drop the connection on purpose (uvicorn then closes it)."""


class RecordedCut(IntendedDrop):
    """The recording was cut here: drop the connection after the same byte."""


class _QuietDrops(logging.Filter):
    # uvicorn logs any exception escaping the app; an intended drop is not an error.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, IntendedDrop)


def _headers(scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]


def request_from_scope(scope, body: bytes = b"") -> Request:
    headers = _headers(scope)
    raw_path = scope.get("raw_path") or scope["path"].encode()
    req = Request(
        method=scope.get("method", "GET"),
        path=raw_path.decode("latin-1").split("?", 1)[0],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
    )
    req.body_encoding = req.header("content-encoding")
    return req


class ReplayApp:
    """The ASGI app. ``engine`` serves one cassette; with ``cassettes`` (a CassetteDir)
    each request names its cassette. ``forwarder`` (record mode new_episodes) relays
    requests that have no recording instead of answering them with a miss."""

    def __init__(self, engine: Engine | None = None, speed: float = 1.0, forwarder=None, cassettes=None):
        self.engine = engine
        self.speed = speed
        self.forwarder = forwarder
        self.cassettes = cassettes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        engine = self.engine
        if self.cassettes is not None:
            engine, scope, problem = self.cassettes.resolve(scope)
            if problem is not None:
                log.warning("%s", problem["error"]["message"])
                body = json.dumps(problem, indent=1).encode()
                await send_error(scope, receive, send, 404, [(b"content-type", b"application/json")], body)
                return
        if scope["type"] == "http":
            await self.http(engine, scope, receive, send)
        else:
            from .websocket import serve_websocket

            await serve_websocket(self, engine, scope, receive, send)

    async def http(self, engine: Engine, scope, receive, send) -> None:
        pacer = Pacer(self.speed)
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        req = request_from_scope(scope, bytes(body))
        result = engine.http(req)
        if isinstance(result, MissReply):
            if self.forwarder is not None:
                log.info("no recording of %s: forwarding it upstream and recording it", result.miss.request)
                await self.forwarder.http(req, bytes(body), send)
                return
            await send_miss(result, scope, receive, send)
            return
        await self.play(result, pacer, send)

    async def play(self, script: HttpScript, pacer: Pacer, send) -> None:
        await pacer.until(script.ttfb)
        await send({"type": "http.response.start", "status": script.status, "headers": script.headers})
        for offset, data in script.chunks:
            await pacer.until(offset)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if script.cut:
            raise RecordedCut(f"recording #{script.seq} was cut here")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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


@dataclass
class Listening:
    host: str
    port: int
    scheme: str = "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class ReplayServer:
    """uvicorn serving an ASGI app (a ReplayApp, or the simulator) on an already bound socket.

    ``await start()`` returns once it accepts connections; ``await stop()`` ends it.
    ``start_in_thread()`` runs it on a private loop for synchronous callers (pytest).
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, certfile: str | None = None,
                 keyfile: str | None = None, quiet: bool = False):
        self.app = app
        self.sock = bind(host, port)
        h, p = self.sock.getsockname()[:2]
        self.address = Listening(h, p, "https" if certfile else "http")
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        config = uvicorn.Config(
            app,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            lifespan="off",
            http="h11",
            ws="websockets-sansio",
            server_header=False,
            date_header=False,
            log_level="error" if quiet else "warning",
            access_log=False,
            ws_ping_interval=None,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task: asyncio.Task | None = None
        self._background = None

    @property
    def url(self) -> str:
        return self.address.url

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("replay server stopped during start-up")
            await asyncio.sleep(0.002)

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task

    def start_in_thread(self) -> "ReplayServer":
        from ..background import BackgroundLoop

        self._background = BackgroundLoop("proxy-replay", self.start, self.stop)
        self._background.start()
        return self

    def stop_thread(self) -> None:
        if self._background is not None:
            self._background.stop()


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    lg = logging.getLogger("proxy")
    lg.addHandler(handler)
    lg.setLevel(logging.DEBUG if verbose else logging.INFO)
    lg.propagate = False

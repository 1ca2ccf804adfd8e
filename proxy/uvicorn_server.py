"""The server adapter: any ASGI app (the replay app, the simulator, a benchmark's upstream)
on uvicorn, on an already bound socket. The only module that imports uvicorn.

uvicorn runs with ``server_header=False, date_header=False`` so the headers a client
gets are the app's (the recorded ones), h11 for HTTP and the ``websockets`` sans-I/O
core for WebSocket, one port for both.

Stopping: uvicorn's graceful shutdown waits for open requests, then cancels them and
logs an error with a traceback per request. A replayed stream can run for minutes, so
we end whatever is still open ourselves, ``GRACE`` seconds into the shutdown and before
uvicorn's own timeout: the app's task is cancelled and its connection dropped (the
client sees a cut), quietly, and counted in ``UvicornServer.cut``.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from .background import BackgroundLoop, until_signal
from .net import IntendedDrop, Listening, bind


GRACE = 0.5  # seconds an open request gets to finish once the server stops


class CutByStop(IntendedDrop):
    """The server stopped while this request or session was still open."""


class _QuietDrops(logging.Filter):
    # uvicorn logs any exception escaping the app; an intended drop is not an error.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, IntendedDrop)


class _Tracked:
    """ASGI wrapper that knows the tasks running the app, so a stop can cut them."""

    def __init__(self, app):
        self.app = app
        self.tasks: set[asyncio.Task] = set()
        self.cutting = False
        self.cut = 0

    async def __call__(self, scope, receive, send) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not self.cutting:
                raise
            self.cut += 1
            raise CutByStop("the server stopped") from None  # uvicorn drops the connection
        finally:
            self.tasks.discard(task)

    def cut_all(self) -> None:
        self.cutting = True
        for task in list(self.tasks):
            task.cancel()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, tracked: _Tracked):
        super().__init__(config)
        self.tracked = tracked

    async def shutdown(self, sockets=None) -> None:
        # Cut what is still open after GRACE, before uvicorn's timeout would (loudly).
        handle = asyncio.get_running_loop().call_later(GRACE, self.tracked.cut_all)
        try:
            await super().shutdown(sockets)
        finally:
            handle.cancel()


class UvicornServer:
    """``await start()`` returns once it accepts connections; ``await stop()`` ends it;
    ``await run_until_signal()`` serves until SIGINT/SIGTERM. ``start_in_thread()`` runs
    it on a private loop for synchronous callers (pytest, the demo)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, certfile: str | None = None,
                 keyfile: str | None = None, quiet: bool = False):
        self.app = app
        self.sock = bind(host, port)
        h, p = self.sock.getsockname()[:2]
        self.address = Listening(h, p, "https" if certfile else "http")
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        self._tracked = _Tracked(app)
        config = uvicorn.Config(
            self._tracked,
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
            timeout_graceful_shutdown=GRACE + 5,  # a backstop: _Server cuts open requests at GRACE
        )
        self.server = _Server(config, self._tracked)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task: asyncio.Task | None = None
        self._background: BackgroundLoop | None = None

    @property
    def url(self) -> str:
        return self.address.url

    @property
    def cut(self) -> int:
        """How many open requests or sessions the stop cut short."""
        return self._tracked.cut

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.002)

    def request_stop(self) -> None:
        self.server.should_exit = True

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def run_until_signal(self) -> None:
        await until_signal(self.wait, self.request_stop)

    async def stop(self) -> None:
        self.request_stop()
        if self._task is not None:
            await self._task

    def start_in_thread(self) -> "UvicornServer":
        self._background = BackgroundLoop("proxy-server", self.start, self.stop)
        self._background.start()
        return self

    def stop_thread(self) -> None:
        if self._background is not None:
            self._background.stop()

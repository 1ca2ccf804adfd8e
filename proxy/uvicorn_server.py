"""The server adapter: any ASGI app (the replay app, the simulator, a benchmark's upstream)
on uvicorn, on an already bound socket. The only module that imports uvicorn.

uvicorn runs with ``server_header=False, date_header=False`` so the headers a client
gets are the app's (the recorded ones), h11 for HTTP and the ``websockets`` sans-I/O
core for WebSocket, one port for both.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from .background import BackgroundLoop, until_signal
from .net import IntendedDrop, Listening, bind


class _QuietDrops(logging.Filter):
    # uvicorn logs any exception escaping the app; an intended drop is not an error.
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, IntendedDrop)


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
        self._background: BackgroundLoop | None = None

    @property
    def url(self) -> str:
        return self.address.url

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

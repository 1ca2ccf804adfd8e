"""The server adapter: any ASGI app (the replay app, the simulator, a benchmark's upstream)
on uvicorn, on an already bound socket. The only module that imports uvicorn.

uvicorn runs with ``server_header=False, date_header=False`` so the headers a client
gets are the app's (the recorded ones), h11 for HTTP and the ``websockets`` sans-I/O
core for WebSocket (``_WebSockets``: a refusal sent as given, deflate declinable), one
port for both. An ``IntendedDrop`` the app raises drops the connection, before or after
the response started, with a TCP reset for an ``IntendedReset`` (``_Drops``).

Stopping: uvicorn's graceful shutdown waits for open requests, then cancels them and
logs an error with a traceback per request. A replayed stream can run for minutes, so
we end whatever is still open ourselves, ``GRACE`` seconds into the shutdown and before
uvicorn's own timeout: the app's task is cancelled and its connection dropped (the
client sees a cut), quietly, and counted in ``UvicornServer.cut``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from http import HTTPStatus

import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .background import BackgroundLoop, until_signal
from .net import ACCEPT_DEFLATE, IntendedDrop, IntendedReset, Listening, bind, reset_on_close


GRACE = 0.5  # seconds an open request gets to finish once the server stops


def _every_status() -> None:
    # uvicorn looks the status line (httptools) or phrase (h11) up in tables of 100-599 and
    # fails on anything else: a recorded 600-999 (HTTP allows three digits; h11 and
    # mitmproxy pass them) would reach the client as a dropped connection. Complete them.
    try:
        from uvicorn.protocols.http import h11_impl
    except ImportError:  # h11 not installed
        pass
    else:
        for code in range(600, 1000):
            h11_impl.STATUS_PHRASES.setdefault(code, b"")
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools not installed
        return
    for code in range(600, 1000):
        httptools_impl.STATUS_LINE.setdefault(code, httptools_impl._get_status_line(code))


_every_status()


HEAD_LIMIT = 64 * 1024  # request line and headers refused beyond this on httptools (see _cased_httptools)
STACK_ENV = "PROXY_HTTP_STACK"  # h11: the pure-Python stack (h11, asyncio) even where the fast one is installed


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def http_stack():
    """uvicorn's HTTP/1.1 implementation for our servers: httptools (a C parser, 2-3x h11's
    requests/s here; ``_cased_httptools``) when it is installed, else ``"h11"``;
    ``PROXY_HTTP_STACK=h11`` forces h11."""
    if os.environ.get(STACK_ENV, "").strip().lower() == "h11" or not _installed("httptools"):
        return "h11"
    return _cased_httptools()


class _Capture:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def _recase(head: bytes, headers) -> bytes:
    """uvicorn's httptools head with the header names as the app gave them (it lowercases
    them; h11 does not). The lines are the app's headers in order: anything else leaves
    the head as it is."""
    start = head.find(b"\r\n") + 2
    lowered = b"".join(k.lower() + b": " + v + b"\r\n" for k, v in headers)
    if head[start:start + len(lowered)] != lowered:
        return head
    return head[:start] + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + head[start + len(lowered):]


_CASED = None


def _cased_httptools():
    """uvicorn's httptools protocol, changed so response header names keep their case: a
    recorded ``Server: mitmproxy`` is replayed as ``Server``, not ``server``."""
    global _CASED
    if _CASED is not None:
        return _CASED
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    class Cycle(RequestResponseCycle):
        async def send(self, message) -> None:
            if message["type"] == "http.response.start" and not self.response_started:
                headers = message.get("headers") or ()
                if any(k != k.lower() for k, _ in headers):
                    real, self.transport = self.transport, _Capture()
                    try:
                        await super().send(message)
                    finally:
                        head, self.transport = self.transport.data, real
                    if head:
                        real.write(_recase(head, headers))
                    return
            await super().send(message)

    class Protocol(HttpToolsProtocol):
        # httptools has no limit on a request line and headers; h11 refuses a head once
        # more than 16 KB of it (uvicorn's default) is buffered *incomplete*: one that
        # arrives whole in a read (uvicorn reads 64 KB) passes, so on loopback h11 served
        # heads up to about 64 KB. Refusing at 16 KB here turned a 17 KB header that h11
        # served into a 400. An exception in a parser callback makes uvicorn answer 400.
        _head = 0

        def on_message_begin(self) -> None:
            self._head = 0
            super().on_message_begin()

        def _count(self, n: int) -> None:
            self._head += n
            if self._head > max(self.config.h11_max_incomplete_event_size or 0, HEAD_LIMIT):
                raise ValueError("request line and headers too large")

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            # the request's task has not run yet: it binds the send of the class set here
            if type(self.cycle) is RequestResponseCycle:
                self.cycle.__class__ = Cycle

    _CASED = Protocol
    return _CASED


def loop_factory():
    """The event loop for a replay server run from the command line: uvloop when it is
    installed (and the stack is not forced to h11), else None (asyncio's own)."""
    if os.environ.get(STACK_ENV, "").strip().lower() == "h11" or not _installed("uvloop"):
        return None
    import uvloop

    return uvloop.new_event_loop


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


class _Drops:
    """Serves ``app``; an IntendedDrop it raises drops the connection, at any point.

    uvicorn answers an exception raised before the response started with a 500 (h11),
    or refuses the handshake with one (websockets). A recording whose client never got
    a response must not get one on replay, so the connection is closed here, on the
    transport uvicorn's ``send`` writes to, and the app returns once uvicorn has seen the
    disconnect (it then sends nothing and logs nothing)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        except IntendedDrop as e:
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is None:  # not uvicorn's own send: let it handle the exception
                raise
            sock = transport.get_extra_info("socket")
            if isinstance(e, IntendedReset) and sock is not None:
                reset_on_close(sock)  # the close below then sends a RST (an injected reset)
            transport.close()
            while (await receive())["type"] not in ("http.disconnect", "websocket.disconnect"):
                pass


class _WebSockets(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, changed so a replayed handshake is the recorded one.

    - ``websocket.accept`` with ``{ACCEPT_DEFLATE: False}`` declines permessage-deflate
      the client offered (uvicorn negotiates it before the app runs).
    - A refusal (``websocket.http.response.*``) goes out as the app gives it, as h11
      sends an HTTP response: its status, its headers and nothing else (uvicorn would add
      Date, Connection and Content-Length), the body chunked when the headers say
      ``transfer-encoding: chunked``, each body message when it comes (uvicorn would send
      it whole and unchunked, under a chunked header). Headers with neither framing
      header get a content-length.
    """

    _refusal: dict | None = None

    async def send(self, message) -> None:
        kind = message["type"]
        if kind == "websocket.accept" and message.get(ACCEPT_DEFLATE) is False and not self.handshake_complete:
            self.conn.extensions = []
            if "Sec-WebSocket-Extensions" in self.response.headers:
                del self.response.headers["Sec-WebSocket-Extensions"]
        elif kind == "websocket.http.response.start" and not self.handshake_complete and self.initial_response is None:
            if self.disconnected:
                raise ClientDisconnected()
            self._start_refusal(message)
            return
        elif kind == "websocket.http.response.body" and self._refusal is not None:
            self._refusal_body(message.get("body", b""), message.get("more_body", False))
            return
        await super().send(message)

    def _start_refusal(self, message) -> None:
        status, headers = message["status"], list(message.get("headers", []))
        names = {k.lower(): v.lower() for k, v in headers}
        framing = ("chunked" if b"chunked" in names.get(b"transfer-encoding", b"")
                   else "length" if b"content-length" in names else None)
        self.initial_response = (status, [], b"")  # uvicorn then sends no 500 of its own
        self._refusal = {"status": status, "headers": headers, "framing": framing, "body": b""}
        if framing is not None:
            self.transport.write(self._head(status, headers))

    def _refusal_body(self, data: bytes, more: bool) -> None:
        r = self._refusal
        if r["framing"] == "chunked":
            out = (b"%x\r\n%s\r\n" % (len(data), data) if data else b"") + (b"" if more else b"0\r\n\r\n")
        elif r["framing"] == "length":
            out = data
        else:
            r["body"] += data
            if more:
                return
            out = self._head(r["status"], [*r["headers"], (b"content-length", b"%d" % len(r["body"]))]) + r["body"]
        self.transport.write(out)
        if not more:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
            self.close_sent = self.handshake_complete = True
            self.transport.close()

    @staticmethod
    def _head(status: int, headers) -> bytes:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}".encode()] + [k + b": " + v for k, v in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"


class UvicornServer:
    """``await start()`` returns once it accepts connections; ``await stop()`` ends it;
    ``await run_until_signal()`` serves until SIGINT/SIGTERM. ``start_in_thread()`` runs
    it on a private loop for synchronous callers (pytest, the demo)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, certfile: str | None = None,
                 keyfile: str | None = None, quiet: bool = False, http: str | None = None):
        self.app = app
        self.sock = bind(host, port)
        h, p = self.sock.getsockname()[:2]
        self.address = Listening(h, p, "https" if certfile else "http")
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        self._tracked = _Tracked(app)
        config = uvicorn.Config(
            _Drops(self._tracked),  # outermost: a stop's CutByStop is a drop too
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            lifespan="off",
            http=http or http_stack(),
            ws=_WebSockets,
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
        else:  # bound, never served
            self.sock.close()

    def start_in_thread(self) -> "UvicornServer":
        self._background = BackgroundLoop("proxy-server", self.start, self.stop)
        self._background.start()
        return self

    def stop_thread(self) -> None:
        if self._background is not None:
            self._background.stop()

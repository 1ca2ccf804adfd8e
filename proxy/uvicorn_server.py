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
from .net import ACCEPT_DEFLATE, BODY_PARTS, QUICK_ANSWER, IntendedDrop, IntendedReset, Listening, bind, reset_on_close


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


QUICK_BODY = 64 * 2**10  # a request body larger than this is read through ASGI, not the quick lane
log = logging.getLogger("proxy.server")


def _whole_response(method: str, status: int, headers, parts, keep_alive: bool):
    """``(writes, keep_alive)``: what uvicorn's httptools protocol (with ``Cycle``'s header
    case) writes for a response sent as one ``http.response.start`` and one body message
    per part, the last with ``more_body=False``: each part framed as uvicorn frames it,
    one write per part (recorded chunk boundaries stay write boundaries), the head in the
    first (a write less per exchange; nothing reads a head and its body apart). None where
    uvicorn would not send it so (an invalid header, a body longer or shorter than its
    content-length, a status it cannot write)."""
    if method == "HEAD":
        return None
    key = (status, tuple(headers), keep_alive)
    head = _heads.get(key)
    if head is None:
        head = _head(status, headers, keep_alive)
        if len(_heads) >= _HEADS_KEPT:
            _heads.clear()
        _heads[key] = head
    if head is _NO_HEAD:
        return None
    data, chunked, length, keep_alive = head
    if chunked:
        writes = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p] or [b""]
        writes[-1] += b"0\r\n\r\n"
    else:
        if sum(map(len, parts)) != length:
            return None
        writes = [p for p in parts if p] or [b""]
    writes[0] = data + writes[0]
    return writes, keep_alive


_HEADS_KEPT = 256
_heads: dict[tuple, tuple] = {}  # _head's answers: replayed responses repeat their heads
_NO_HEAD = ()


def _head(status: int, headers, keep_alive: bool):
    """(head bytes, chunked, content-length, keep-alive) as uvicorn's send writes and decides
    them for ``http.response.start``, or _NO_HEAD where it would refuse."""
    from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE

    line = STATUS_LINE.get(status)
    if line is None:
        return _NO_HEAD
    head = [line]
    chunked, length, close = None, 0, False
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            return _NO_HEAD
        low = name.lower()
        if low == b"content-length" and chunked is None:
            try:
                length = int(value.decode())
            except ValueError:
                return _NO_HEAD
            chunked = False
        elif low == b"transfer-encoding" and value.lower() == b"chunked":
            length, chunked = 0, True
        elif low == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
            keep_alive, close = False, True
        head += (name, b": ", value, b"\r\n")
    if not keep_alive and not close:
        head.append(b"connection: close\r\n")
    if chunked is None and status not in (204, 304):
        chunked = True
        head.append(b"transfer-encoding: chunked\r\n")
    head.append(b"\r\n")
    return b"".join(head), chunked, length, keep_alive


_CASED = None


def _cased_httptools():
    """uvicorn's httptools protocol, changed so response header names keep their case (a
    recorded ``Server: mitmproxy`` is replayed as ``Server``, not ``server``), with a limit
    on request heads, and with the quick lane (``proxy.net.QUICK_ANSWER``): an app's
    complete instant answer is written as the request completes, without an ASGI task,
    a scope's worth of dicts and two send coroutines per request."""
    global _CASED
    if _CASED is not None:
        return _CASED
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    class Cycle(RequestResponseCycle):
        async def send(self, message) -> None:
            if not self.disconnected and self.transport.is_closing():
                # Closed under the app: uvloop closes on the client's end of file at once
                # and tells uvicorn (connection_lost) a moment later; a write in between
                # raised and logged "Exception in ASGI application". As uvicorn's send to a
                # client that is gone: nothing.
                self.disconnected = True
                return
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

        async def send_parts(self, parts) -> None:
            # BODY_PARTS: what a body message per part writes (uvicorn's send, more_body
            # true), then the last part through send itself, which ends the response
            if not parts:
                parts = [b""]
            if not self.response_started or self.response_complete or self.scope["method"] == "HEAD":
                for i, body in enumerate(parts):
                    await self.send({"type": "http.response.body", "body": body, "more_body": i < len(parts) - 1})
                return
            for i in range(len(parts) - 1):
                if self.flow.write_paused and not self.disconnected:
                    await self.flow.drain()
                if self.disconnected or self.transport.is_closing():
                    self.disconnected = True
                    return
                body = parts[i]
                if not body:
                    continue
                if self.chunked_encoding:
                    self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
                else:
                    if len(body) > self.expected_content_length:
                        raise RuntimeError("Response content longer than Content-Length")
                    self.expected_content_length -= len(body)
                    self.transport.write(body)
            await self.send({"type": "http.response.body", "body": parts[-1], "more_body": False})

    class Protocol(HttpToolsProtocol):
        # httptools has no limit on a request line and headers; h11 refuses a head once
        # more than 16 KB of it (uvicorn's default) is buffered *incomplete*: one that
        # arrives whole in a read (uvicorn reads 64 KB) passes, so on loopback h11 served
        # heads up to about 64 KB. Refusing at 16 KB here turned a 17 KB header that h11
        # served into a 400. An exception in a parser callback makes uvicorn answer 400.
        _head = 0
        _deferred = False  # the request goes to the quick lane once it is whole
        _body = b""  # a bytearray while deferred: a body in many small pieces costs no copies
        _dropped = False  # ... and is dropped then (see on_headers_complete)

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._quick = getattr(self.config, "proxy_quick", None)
            self._root = self.root_path.encode("ascii")
            self._head_limit = max(self.config.h11_max_incomplete_event_size or 0, HEAD_LIMIT)

        def on_message_begin(self) -> None:
            self._head = 0
            # a request is in flight from here: uvicorn arms its keep-alive timeout only
            # between requests, but the lane's answer (on_response_complete) may arm it in
            # the middle of a read that holds the next request too
            self._idle_since = None  # (_unset_keepalive_if_required, inline: this runs per request)
            if self._quick is None:
                super().on_message_begin()
                return
            # uvicorn's, but the scope (a dozen dicts' worth) is made only for a request
            # that goes through ASGI (_start): the quick lane has no use for it
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self.scope = None

        # The keep-alive timeout (uvicorn's semantics: a connection idle that long after a
        # response is closed) with one timer per idle spell, not one armed and cancelled per
        # request: a timer handle per request cost 7-20 % of a quick-lane answer.
        _idle_since: float | None = None  # None: a request is in flight

        def _unset_keepalive_if_required(self) -> None:
            self._idle_since = None  # the timer, if armed, finds the connection busy and lets it be

        def on_response_complete(self) -> None:
            # uvicorn's, but for the timer
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            if self.flow.read_paused:
                self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

        def _keep_alive_due(self) -> None:
            self.timeout_keep_alive_task = None
            if self._idle_since is None:
                return  # busy: armed again when its response is complete
            left = self._idle_since + self.timeout_keep_alive - self.loop.time()
            if left > 0:
                self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
            else:
                self.timeout_keep_alive_handler()

        def connection_lost(self, exc) -> None:
            super().connection_lost(exc)
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None

        def on_url(self, url: bytes) -> None:
            self._head += len(url)
            if self._head > self._head_limit:
                raise ValueError("request line and headers too large")
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head += len(name) + len(value)
            if self._head > self._head_limit:
                raise ValueError("request line and headers too large")
            # uvicorn's (inline: a call less per header)
            name = name.lower()
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            if (self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete)
                    and not self.pipeline and not self.parser.should_upgrade()):
                # the lane's answer earlier in this read closed the connection (a recorded
                # Connection: close): uvicorn never starts a request after that one, so it
                # is read and dropped, and no recording is used for it
                self._deferred, self._body, self._dropped = True, bytearray(), True
                return
            # The quick lane takes a request when nothing else of this connection is in
            # flight (pipelined requests keep their order through uvicorn's pipeline) and
            # the client reads what it is sent.
            if (self._quick is not None and (self.cycle is None or self.cycle.response_complete)
                    and not self.pipeline and not self.expect_100_continue and not self.flow.write_paused
                    and not self.parser.should_upgrade() and self.parser.get_method() != b"HEAD"):
                self._deferred, self._body = True, bytearray()
                return
            self._start()

        def _start(self, answer=None) -> None:
            # uvicorn's own way: the scope, the cycle, and a task running the app
            self._deferred = False
            if self.scope is None:  # on_message_begin left it for now: made as uvicorn makes it
                url, headers, expect = self.url, self.headers, self.expect_100_continue
                super().on_message_begin()
                self.url, self.headers, self.expect_100_continue = url, headers, expect
                self.scope["headers"] = headers
            super().on_headers_complete()
            if answer is not None:
                self.scope[QUICK_ANSWER] = answer
            # the request's task has not run yet: it binds the send of the class set here
            if type(self.cycle) is RequestResponseCycle:
                self.cycle.__class__ = Cycle
                self.scope.setdefault("extensions", {})[BODY_PARTS] = self.cycle.send_parts

        def shutdown(self) -> None:
            # uvicorn's graceful stop closes an idle connection and lets an open request
            # finish (then closes): a request the lane is still reading is an open one, so
            # it goes to ASGI now, where the stop answers it or cuts it at GRACE
            if self._deferred and not self._dropped:
                early, self._body = self._body, b""
                self._start()
                if early:
                    super().on_body(early)
            super().shutdown()

        def on_body(self, body: bytes) -> None:
            if not self._deferred:
                super().on_body(body)
                return
            if self._dropped:
                return
            self._body += body
            if len(self._body) > QUICK_BODY:
                early, self._body = self._body, b""
                self._start()
                super().on_body(early)

        def on_message_complete(self) -> None:
            if not self._deferred:
                super().on_message_complete()
                return
            self._deferred = False
            body, self._body = bytes(self._body), b""
            if self._dropped:
                self._dropped = False
                return
            answer = out = None
            # a target uvicorn refuses is the client's error, not the app's: uvicorn's 400,
            # raised here or by _start below (no path: an absolute form such as http://a)
            url = httptools.parse_url(self.url)
            try:
                got = None
                if url.path is not None:
                    method = self.parser.get_method().decode("ascii")
                    got = self._quick(method, self._root + url.path if self._root else url.path, url.query or b"",
                                      self.headers, body)
                if got is not None:
                    status, headers, parts, answer = got
                    if status is not None:
                        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
                        out = _whole_response(method, status, headers, parts, keep_alive)
            except Exception:  # the app's bug: ASGI serves the request, and says what went wrong
                log.exception("quick lane failed; serving the request through ASGI")
            if out is None:
                self._start(answer)
                if body:
                    super().on_body(body)
                super().on_message_complete()
                return
            writes, keep_alive = out
            for data in writes:
                self.transport.write(data)
            if not keep_alive:
                self.transport.close()
            self.on_response_complete()

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
            proxy_headers=False,  # X-Forwarded-* are a client's headers to replay, not the server's to obey
            timeout_graceful_shutdown=GRACE + 5,  # a backstop: _Server cuts open requests at GRACE
        )
        config.proxy_quick = getattr(app, "quick", None)  # the quick lane (proxy.net.QUICK_ANSWER), httptools only
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

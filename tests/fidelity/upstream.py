"""The configurable test upstream: plays a registered shape byte for byte. Test code, not shipped.

A request to ``/f/<id>/<anything>`` is answered by shape ``<id>``. HTTP/1.1 is written
by hand (the head, then each part in one write at its offset, scheduled against the
request's arrival, never by chained sleeps); a WebSocket upgrade goes through the
``websockets`` sans-I/O ``ServerProtocol``, so close frames with and without a status,
dropped connections and deflate negotiation are exactly what the shape says. Every
socket has TCP_NODELAY, so each write leaves at once.

``Upstream.h2()`` serves the same HTTP shapes through hypercorn (HTTPS, HTTP/2) instead.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import struct
import threading
import time

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request as WsRequest
from websockets.server import ServerProtocol

from proxy.background import BackgroundLoop

from .shapes import HttpShape, Part, Shape, WsShape

PREFIX = "/f/"


class Registry:
    """Shapes by id; the client puts the id in the path, the upstream looks it up."""

    def __init__(self):
        self._shapes: dict[int, Shape] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, shape: Shape) -> int:
        with self._lock:
            sid = next(self._ids)
            self._shapes[sid] = shape
            return sid

    def lookup(self, path: str) -> Shape | None:
        if not path.startswith(PREFIX):
            return None
        sid = path[len(PREFIX):].split("/", 1)[0]
        return self._shapes.get(int(sid)) if sid.isdigit() else None


def target(sid: int, path: str, query: str = "") -> str:
    return f"{PREFIX}{sid}{path}" + (f"?{query}" if query else "")


async def _until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _frame(framing: str, data: bytes) -> bytes:
    if framing == "chunked":
        return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
    return data


def head(status: int, reason: str, headers, framing: str, parts: tuple[Part, ...]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if framing == "chunked":
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {sum(len(p.data) for p in parts)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Upstream:
    """Serves shapes on 127.0.0.1, port 0, on a loop in a thread of its own."""

    def __init__(self, registry: Registry, ssl_context: ssl.SSLContext | None = None):
        self.registry = registry
        self.ssl = ssl_context
        self.requests: list[tuple[str, str, list[tuple[str, str]], bytes]] = []  # method, target, headers, body
        self.connections = 0
        self._loop: BackgroundLoop | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "Upstream":
        async def setup() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl)
            self.port = self._server.sockets[0].getsockname()[1]

        async def teardown() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task.get_name().startswith("fid-conn"):
                    task.cancel()

        self._loop = BackgroundLoop("fidelity-upstream", setup, teardown)
        self._loop.start()
        return self

    def stop(self) -> None:
        self._loop.stop()

    # -- one connection ------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asyncio.current_task().set_name(f"fid-conn-{self.connections}")
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                t0 = time.monotonic()
                method, tgt, headers = _parse_head(raw)
                body = b""
                length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0") or 0)
                if length:
                    body = await reader.readexactly(length)
                self.requests.append((method, tgt, headers, body))
                shape = self.registry.lookup(tgt)
                if shape is None:
                    writer.write(b"HTTP/1.1 599 No Such Shape\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                upgrade = any(k.lower() == "upgrade" and v.lower() == "websocket" for k, v in headers)
                if isinstance(shape, WsShape) and upgrade:
                    await self._websocket(shape, raw, t0, reader, writer)
                    return
                if not await self._http(shape, t0, reader, writer):
                    return
        except (OSError, asyncio.CancelledError):  # the peer left; nothing to play to
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _http(self, shape: HttpShape, t0: float, reader, writer) -> bool:
        """Play one HTTP shape; True when the connection can serve another request."""
        if shape.end == "none":
            await reader.read()  # hold until the peer leaves
            return False
        await _until(t0 + shape.ttfb)
        writer.write(head(shape.status, shape.reason, shape.headers, shape.framing, shape.parts))
        await writer.drain()
        for part in shape.parts:
            await _until(t0 + part.at)
            writer.write(_frame(shape.framing, part.data))
            await writer.drain()
        if shape.end == "complete":
            if shape.framing == "chunked":
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            return True
        if shape.end == "reset":
            _reset(writer)
        else:
            writer.close()
        return False

    async def _websocket(self, shape: WsShape, raw: bytes, t0: float, reader, writer) -> None:
        if shape.refusal is not None:
            r = shape.refusal
            await _until(t0 + (r.parts[0].at if r.parts else 0))
            writer.write(head(r.status, r.reason, r.headers, r.framing, r.parts))
            for part in r.parts:
                await _until(t0 + part.at)
                writer.write(_frame(r.framing, part.data))
                await writer.drain()
            if r.framing == "chunked":
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        proto = ServerProtocol(
            extensions=[ServerPerMessageDeflateFactory()] if shape.server_deflate else None,
            subprotocols=list(shape.server_subprotocols) or None,
            max_size=None,
        )
        proto.receive_data(raw)
        (request,) = proto.events_received()
        assert isinstance(request, WsRequest)
        await _until(t0 + shape.accept_delay)
        response = proto.accept(request)
        del response.headers["Date"]  # the shape's headers say exactly what is sent
        for k, v in shape.headers:
            response.headers[k] = v
        proto.send_response(response)
        if response.status_code != 101:
            raise AssertionError(f"upstream could not accept {shape.name}: {response.status_code}")
        conn = _WsConn(proto, reader, writer)
        conn.flush()
        anchor = time.monotonic()
        await conn.send_all(shape.preamble, anchor)
        for turn in shape.turns:
            for _ in turn.client:
                if await conn.next_message() is None:
                    return
            await conn.send_all(turn.replies, time.monotonic())
        await _until(time.monotonic() + shape.end.gap)
        end = shape.end
        if end.by == "server":
            proto.send_close(end.code, end.reason)
            conn.flush()
            await conn.wait_closed()
        elif end.by == "drop":
            writer.close()
        elif end.by == "reset":
            _reset(writer)
        else:  # the client ends it: answer its close frame, or notice it left
            await conn.wait_closed()


class _WsConn:
    def __init__(self, proto: ServerProtocol, reader, writer):
        self.proto, self.reader, self.writer = proto, reader, writer
        self.inbox: list = []

    def flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof():
                self.writer.write_eof()

    async def send_all(self, msgs, anchor: float) -> None:
        due = anchor
        for m in msgs:
            due += m.gap
            await _until(due)
            (self.proto.send_text if m.text else self.proto.send_binary)(m.payload)
            self.flush()
            await self.writer.drain()

    async def _pump(self) -> bool:
        data = await self.reader.read(65536)
        if not data:
            self.proto.receive_eof()
            self.flush()
            return False
        self.proto.receive_data(data)
        self.flush()
        self.inbox += [e for e in self.proto.events_received() if e.opcode in (Opcode.TEXT, Opcode.BINARY,
                                                                              Opcode.CONT)]
        return True

    async def next_message(self):
        while True:
            while self.inbox:
                frame = self.inbox.pop(0)
                if frame.fin:
                    return frame
            if not await self._pump():
                return None

    async def wait_closed(self) -> None:
        try:
            while await asyncio.wait_for(self._pump(), 15):
                pass
        except (asyncio.TimeoutError, OSError):
            pass
        self.writer.close()


def _parse_head(raw: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    method, tgt, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
    return method, tgt, headers


# -- HTTPS, HTTP/2: the same shapes through hypercorn ------------------------------------


class H2Upstream:
    """hypercorn serving HTTP shapes over TLS with ALPN h2 (and http/1.1), for the HTTP/2 hop."""

    def __init__(self, registry: Registry, certfile: str, keyfile: str):
        self.registry = registry
        self.certfile, self.keyfile = certfile, keyfile
        self.versions: list[str] = []
        self.port = 0
        self._loop: BackgroundLoop | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        t0 = time.monotonic()
        self.versions.append(scope["http_version"])
        while (await receive()).get("more_body"):
            pass
        shape = self.registry.lookup(scope["raw_path"].decode("latin-1"))
        if not isinstance(shape, HttpShape):
            await send({"type": "http.response.start", "status": 599, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await _until(t0 + shape.ttfb)
        headers = [(k.encode(), v.encode()) for k, v in shape.headers]
        if shape.framing == "length":
            headers.append((b"content-length", str(len(shape.body)).encode()))
        await send({"type": "http.response.start", "status": shape.status, "headers": headers})
        for part in shape.parts:
            await _until(t0 + part.at)
            await send({"type": "http.response.body", "body": part.data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def start(self) -> "H2Upstream":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections wait in the backlog until hypercorn accepts them
        self._sock = sock  # held: hypercorn is given its descriptor, not the object
        self.port = sock.getsockname()[1]
        config = Config()
        config.certfile, config.keyfile = self.certfile, self.keyfile
        config.alpn_protocols = ["h2", "http/1.1"]
        config.accesslog = config.errorlog = None
        config.include_server_header = config.include_date_header = False
        config.insecure_bind = []
        config.bind = [f"fd://{sock.fileno()}"]
        stop = asyncio.Event()
        task: list[asyncio.Task] = []

        async def setup() -> None:
            task.append(asyncio.create_task(serve(self.app, config, shutdown_trigger=stop.wait)))

        async def teardown() -> None:
            stop.set()
            await task[0]

        self._loop = BackgroundLoop("fidelity-h2-upstream", setup, teardown)
        self._loop.start()
        return self

    def stop(self) -> None:
        self._loop.stop()
        try:
            self._sock.close()
        except OSError:  # hypercorn closed the descriptor already
            pass

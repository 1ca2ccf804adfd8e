"""Byte-level clients: what a client can observe, with the time each byte arrived.

``http_exchange`` speaks HTTP/1.1 over a raw socket and keeps every recv with its
arrival time, so chunk boundaries (chunked framing) and bursts (any framing) are
visible. ``ws_exchange`` drives the ``websockets`` sans-I/O ``ClientProtocol`` over a
raw socket: it sees each message with its opcode, a close frame with or without a
status, and a connection dropped without one. Both give up when the shape's
``ClientPlan`` says so. Times are seconds after the request (or handshake) was sent.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Response as WsResponse
from websockets.uri import parse_uri

from .shapes import HttpShape, WsShape
from .upstream import target

BURST_GAP = 0.008  # recvs closer than this belong to one burst


@dataclass
class HttpObs:
    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # (lower-case name, value), in order
    framing: str | None = None  # chunked | length | close
    body: bytes = b""
    chunks: list[bytes] | None = None  # transfer chunks, when chunked
    end: str = "open"  # complete | eof (closed before the end) | reset | left (the client left first) | open
    ttfb: float | None = None
    end_t: float | None = None  # when the response ended (complete, eof or reset)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, body offset of the recv's first byte)
    error: str = ""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def bursts(self) -> list[tuple[int, float]]:
        """(body offset, time) where each burst of bytes began."""
        out, last = [], None
        for t, off in self.arrivals:
            if last is None or t - last >= BURST_GAP:
                out.append((off, t))
            last = t
        return out

    def arrival_of(self, offset: int) -> float | None:
        """When the byte at ``offset`` of the body arrived."""
        best = None
        for t, off in self.arrivals:
            if off <= offset:
                best = t
            else:
                break
        return best


@dataclass
class WsObs:
    refusal: HttpObs | None = None  # the upgrade was answered with another status
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    subprotocol: str | None = None
    extensions: list[str] = field(default_factory=list)  # negotiated extension names
    accept_t: float | None = None
    messages: list[tuple[float, str, bytes]] = field(default_factory=list)  # (time, text|binary, payload)
    close: tuple[int, str] | None = None  # the close frame received: (code, reason); 1005 when it had none
    end: str = "open"  # close | eof (dropped without a close frame) | reset | left | open
    end_t: float | None = None
    error: str = ""


class _Socket:
    """A blocking socket whose recv knows its deadline and notes each arrival."""

    def __init__(self, host: str, port: int, deadline: float, tls: ssl.SSLContext | None = None):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        self.deadline = deadline

    def recv(self) -> tuple[float, bytes] | str:
        """(time, data); b'' at EOF; or 'left' / 'reset'."""
        remaining = self.deadline - time.perf_counter()
        if remaining <= 0:
            return "left"
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return "left"
        except ConnectionResetError:
            return "reset"
        except ssl.SSLError:  # a TLS connection cut without close_notify
            return time.perf_counter(), b""
        return time.perf_counter(), data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def request_headers(shape: HttpShape, host: str) -> list[tuple[str, str]]:
    """Every header the client sends for ``shape``, in order."""
    out = [("host", host), *shape.request_headers]
    if shape.request_body or shape.method in ("POST", "PUT", "PATCH"):
        out.append(("content-length", str(len(shape.request_body))))
    return out


def _request_bytes(shape: HttpShape, tgt: str, host: str) -> bytes:
    lines = [f"{shape.method} {tgt} HTTP/1.1"] + [f"{k}: {v}" for k, v in request_headers(shape, host)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + shape.request_body


class _HttpReader:
    """Incremental HTTP/1.1 response parser over (time, bytes) arrivals."""

    def __init__(self, obs: HttpObs, t0: float, method: str = "POST"):
        self.obs, self.t0, self.method = obs, t0, method
        self.buf = b""
        self.head_done = False
        self.length: int | None = None
        self.chunk_left = 0
        self.chunk_state = "size"  # size | data | crlf | trailer | done

    def feed(self, t: float, data: bytes) -> bool:
        """True once the response is complete."""
        self.buf += data
        if not self.head_done:
            if b"\r\n\r\n" not in self.buf:
                return False
            raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self._head(raw, t)
        before = len(self.obs.body)
        done = self._body()
        if len(self.obs.body) > before:  # this recv carried body bytes (not only framing)
            self.obs.arrivals.append((t - self.t0, before))
        if done:
            self.obs.end_t = t - self.t0
        return done

    def _head(self, raw: bytes, t: float) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.obs.status = int(parts[1])
        self.obs.reason = parts[2] if len(parts) > 2 else ""
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.obs.headers.append((k.strip().lower(), v.strip()))
        self.obs.ttfb = t - self.t0
        self.head_done = True
        te = (self.obs.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            self.obs.framing, self.obs.chunks = "chunked", []
        elif self.obs.header("content-length") is not None:
            self.obs.framing, self.length = "length", int(self.obs.header("content-length"))
        elif self.obs.status in (101, 204, 304) or self.method == "HEAD":
            self.obs.framing, self.length = "length", 0
        else:
            self.obs.framing = "close"

    def _body(self) -> bool:
        obs = self.obs
        if obs.framing == "length":
            obs.body += self.buf
            self.buf = b""
            return len(obs.body) >= self.length
        if obs.framing == "close":
            obs.body += self.buf
            self.buf = b""
            return False
        while True:  # chunked
            if self.chunk_state == "size":
                if b"\r\n" not in self.buf:
                    return False
                line, self.buf = self.buf.split(b"\r\n", 1)
                self.chunk_left = int(line.split(b";")[0], 16)
                if self.chunk_left == 0:
                    self.chunk_state = "trailer"
                else:
                    obs.chunks.append(b"")
                    self.chunk_state = "data"
            elif self.chunk_state == "data":
                if not self.buf:
                    return False
                take, self.buf = self.buf[: self.chunk_left], self.buf[self.chunk_left:]
                obs.chunks[-1] += take
                obs.body += take
                self.chunk_left -= len(take)
                if self.chunk_left == 0:
                    self.chunk_state = "crlf"
            elif self.chunk_state == "crlf":
                if len(self.buf) < 2:
                    return False
                self.buf = self.buf[2:]
                self.chunk_state = "size"
            elif self.chunk_state == "trailer":
                if self.buf.startswith(b"\r\n"):
                    self.chunk_state = "done"
                    return True
                if b"\r\n\r\n" in self.buf:
                    self.chunk_state = "done"
                    return True
                return False
            else:
                return True


def _read_response(sock: _Socket, reader: _HttpReader, initial: list[tuple[float, bytes]] = ()) -> None:
    obs = reader.obs
    for t, data in initial:
        if reader.feed(t, data):
            obs.end = "complete"
            return
    while True:
        got = sock.recv()
        if isinstance(got, str):
            obs.end = got
            if got == "reset":
                obs.end_t = time.perf_counter() - reader.t0
            return
        t, data = got
        if not data:
            obs.end = "complete" if obs.framing == "close" else "eof"
            obs.end_t = t - reader.t0
            return
        if reader.feed(t, data):
            obs.end = "complete"
            return


def http_exchange(host: str, port: int, sid: int, shape: HttpShape, tls: ssl.SSLContext | None = None) -> HttpObs:
    obs = HttpObs()
    plan = shape.client
    t0 = time.perf_counter()
    deadline = t0 + (plan.leave_at if plan.leave_at is not None else shape.duration + plan.wait)
    try:
        sock = _Socket(host, port, deadline, tls)
    except OSError as e:
        obs.error = f"connect: {e}"
        return obs
    try:
        req = _request_bytes(shape, target(sid, shape.path, shape.query), f"{host}:{port}")
        t0 = time.perf_counter()
        sock.deadline = t0 + (plan.leave_at if plan.leave_at is not None else shape.duration + plan.wait)
        sock.sock.sendall(req)
        _read_response(sock, _HttpReader(obs, t0, shape.method))
    except OSError as e:
        obs.error = f"{type(e).__name__}: {e}"
    finally:
        sock.close()
    return obs


# -- WebSocket --------------------------------------------------------------------------


def ws_exchange(host: str, port: int, sid: int, shape: WsShape) -> WsObs:
    obs = WsObs()
    plan = shape.client
    uri = parse_uri(f"ws://{host}:{port}{target(sid, shape.path, shape.query)}")
    proto = ClientProtocol(uri, extensions=[ClientPerMessageDeflateFactory()] if shape.client_deflate else None,
                           subprotocols=list(shape.subprotocols) or None, max_size=None)
    request = proto.connect()
    request.headers["User-Agent"] = "fidelity"
    for k, v in shape.request_headers:
        request.headers[k] = v
    t0 = time.perf_counter()
    deadline = t0 + (plan.leave_at if plan.leave_at is not None else shape.duration + plan.wait)
    try:
        sock = _Socket(host, port, deadline)
    except OSError as e:
        obs.error = f"connect: {e}"
        return obs
    conn = _WsClient(sock, proto, obs)
    try:
        proto.send_request(request)
        t0 = conn.t0 = time.perf_counter()
        sock.deadline = t0 + (plan.leave_at if plan.leave_at is not None else shape.duration + plan.wait)
        conn.flush()
        if not conn.handshake(shape):
            return obs
        conn.run(shape)
    except OSError as e:
        obs.error = f"{type(e).__name__}: {e}"
    finally:
        sock.close()
    return obs


class _WsClient:
    def __init__(self, sock: _Socket, proto: ClientProtocol, obs: WsObs):
        self.sock, self.proto, self.obs = sock, proto, obs
        self.t0 = 0.0
        self.parts: list[bytes] = []
        self.opcode: str | None = None
        self.ended = False
        self._events: list = []

    def flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                self.sock.sock.sendall(data)
            else:
                try:
                    self.sock.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def handshake(self, shape: WsShape) -> bool:
        """Read the handshake response; a refusal is read as a whole HTTP response."""
        buf, got_at = b"", []
        while b"\r\n\r\n" not in buf:
            got = self.sock.recv()
            if isinstance(got, str):
                self.obs.end = got
                return False
            t, data = got
            if not data:
                self.obs.end = "eof"
                return False
            buf += data
            got_at.append((t, data))
        status = int(buf.split(b" ", 2)[1])
        if status != 101:
            ref = self.obs.refusal = HttpObs()
            _read_response(self.sock, _HttpReader(ref, self.t0, "GET"), got_at)
            self.obs.end = "refused"
            return False
        self.obs.accept_t = got_at[-1][0] - self.t0
        self._receive(got_at[-1][0], buf)
        resp = next((e for e in self._events if isinstance(e, WsResponse)), None)
        if resp is None or self.proto.handshake_exc is not None:
            self.obs.error = f"handshake failed: {self.proto.handshake_exc}"
            return False
        self.obs.status = resp.status_code
        self.obs.headers = [(k.lower(), v) for k, v in resp.headers.raw_items()]
        self.obs.subprotocol = self.proto.subprotocol
        self.obs.extensions = [e.name for e in self.proto.extensions]
        return True

    def _receive(self, t: float, data: bytes) -> None:
        self.proto.receive_data(data)
        self.flush()
        self._events = self.proto.events_received()
        for ev in self._events:
            op = getattr(ev, "opcode", None)
            if op in (Opcode.TEXT, Opcode.BINARY):
                self.opcode = "text" if op is Opcode.TEXT else "binary"
                self.parts = [ev.data]
            elif op is Opcode.CONT:
                self.parts.append(ev.data)
            else:
                continue
            if ev.fin:
                self.obs.messages.append((t - self.t0, self.opcode, b"".join(self.parts)))

    def pump(self) -> bool:
        """Read once; False when the connection is over (or the client's time is up)."""
        got = self.sock.recv()
        if isinstance(got, str):
            self._end(got)
            return False
        t, data = got
        if not data:
            self.proto.receive_eof()
            self.flush()
            self._end("close" if self.proto.close_rcvd is not None else "eof", t)
            return False
        self._receive(t, data)
        return True

    def _end(self, how: str, t: float | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        rcvd = self.proto.close_rcvd
        self.obs.close = (int(rcvd.code), rcvd.reason) if rcvd is not None else None
        if rcvd is not None:
            # A close frame ends the session whatever follows it: a proxy that closes its socket
            # before the client's echo arrives answers that echo with a reset.
            self.obs.end = "close"
        else:
            self.obs.end = how if how in ("left", "reset") else "eof"
        self.obs.end_t = (t or time.perf_counter()) - self.t0

    def wait_for(self, count: int) -> bool:
        while len(self.obs.messages) < count:
            if not self.pump():
                return False
        return True

    def run(self, shape: WsShape) -> None:
        expected = len(shape.preamble)
        if not self.wait_for(expected):
            return
        for turn in shape.turns:
            for m in turn.client:
                (self.proto.send_text if m.text else self.proto.send_binary)(m.payload)
            self.flush()
            expected += len(turn.replies)
            if not self.wait_for(expected):
                return
        end = shape.end
        if end.by == "client":
            self.proto.send_close(end.code, end.reason)
            self.flush()
        elif end.by == "client_drop":
            self.sock.close()
            self._end("left")
            return
        while self.pump():
            pass

"""The replay server's quick lane and body-parts extension (httptools stack) write what the
ASGI path writes: the same bytes, in the same order, on the same connection, for any
recorded response. Each test serves the same cassette twice, on a real server with the
lane and on a real server whose app offers neither (plain ASGI), and compares what a
raw socket client reads."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.replay.app import QUICK_BYTES, ReplayApp
from proxy.replay.engine import Engine
from proxy.net import QUICK_ANSWER
from proxy.uvicorn_server import QUICK_BODY, UvicornServer

pytest.importorskip("httptools")


class _Lane:
    """The app under test, swappable per example; counts the answers the lane wrote itself
    (the app answered, and no ASGI call came with that answer)."""

    def __init__(self):
        self.app: ReplayApp | None = None
        self.answered = self.handed = 0

    @property
    def written(self) -> int:
        return self.answered - self.handed

    async def __call__(self, scope, receive, send):
        self.handed += QUICK_ANSWER in scope
        await self.app(scope, receive, send)

    def quick(self, *args):
        got = self.app.quick(*args)
        self.answered += got is not None
        return got


class _Plain:
    """The same app through plain ASGI: no quick lane, no server extensions."""

    def __init__(self):
        self.app: ReplayApp | None = None

    async def __call__(self, scope, receive, send):
        if scope.get("extensions"):
            scope = {**scope, "extensions": {}}
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def servers(monkeypatch_module):
    monkeypatch_module.delenv("PROXY_HTTP_STACK", raising=False)
    lane, plain = _Lane(), _Plain()
    a, b = UvicornServer(lane, quiet=True).start_in_thread(), UvicornServer(plain, quiet=True).start_in_thread()
    try:
        yield lane, a, plain, b
    finally:
        a.stop_thread()
        b.stop_thread()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _raw(url: str, data: bytes, timeout: float = 5.0) -> bytes:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                got = s.recv(1 << 16)
            except socket.timeout:
                return out + b"<timed out>"
            if not got:
                return out
            out += got


def _both(servers, its, request: bytes, speed: float = 0.0) -> tuple[bytes, bytes, int]:
    """(bytes read from the lane's server, from the plain one, answers the lane wrote itself)."""
    lane, a, plain, b = servers
    lane.app, plain.app = ReplayApp(Engine(list(its)), speed), ReplayApp(Engine(list(its)), speed)
    before = lane.written
    return _raw(a.url, request), _raw(b.url, request), lane.written - before


def _it(status=200, headers=(("content-type", "application/json"),), parts=(b'{"a":1}',), path="/v1/x",
        method="GET", body=b"", end=End.COMPLETE, length=True) -> Interaction:
    hs = list(headers)
    if length:
        hs.append(("content-length", str(sum(map(len, parts)))))
    return Interaction(Kind.HTTP, Request(method, path, "", [], body), Response(status, "", hs),
                       [Chunk(0.0, p) for p in parts], ttfb=0.0, duration=0.0, end=end)


GET = b"GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n"
GET_CLOSE = b"GET /v1/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


CASES = {
    "content-length": [_it()],
    "several parts, content-length": [_it(parts=(b'{"a":', b"", b"1}"))],
    "chunked as recorded": [_it(headers=[("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")],
                                parts=(b"data: 1\n\n", b"", b"data: 2\n\n"), length=False)],
    "no framing header": [_it(headers=[("content-type", "text/plain")], parts=(b"a", b"b"), length=False)],
    "no body, no framing": [_it(headers=[], parts=(), length=False)],
    "204": [_it(204, headers=[("X-Id", "1")], parts=(), length=False)],
    "304 with content-length": [_it(304, parts=(), length=False, headers=[("content-length", "0")])],
    "status 799": [_it(799)],
    "recorded Connection: close": [_it(headers=[("Connection", "close"), ("content-type", "text/plain")])],
    "header case and duplicates": [_it(headers=[("X-Dup", "1"), ("x-dup", "2"), ("SERVER", "up")])],
    "body longer than content-length": [_it(headers=[("content-length", "2")], parts=(b"abc",), length=False)],
    "body shorter than content-length": [_it(headers=[("content-length", "9")], parts=(b"abc",), length=False)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_lane_writes_what_asgi_writes(servers, case):
    its = CASES[case] * 3
    # keep-alive, then a second request on the same connection that closes it
    lane_out, plain_out, written = _both(servers, its, GET + GET_CLOSE)
    assert lane_out == plain_out
    assert lane_out.startswith(b"HTTP/1.1 ")
    if "than content-length" not in case:
        # a recorded close ends the connection after the first answer: the second request is never served
        assert written == (1 if "close" in case else 2), "the lane did not write these answers itself"


def test_http_1_0_and_a_recorded_close_end_the_connection(servers):
    its = [_it()] * 4
    lane_out, plain_out, written = _both(servers, its, b"GET /v1/x HTTP/1.0\r\nHost: a\r\n\r\n" + GET)
    assert lane_out == plain_out and written == 1
    assert lane_out.count(b"HTTP/1.1 200") == 1 and b"connection: close" in lane_out
    its = [_it(headers=[("Connection", "close")])] * 3
    lane_out, plain_out, written = _both(servers, its, GET + GET)
    assert lane_out == plain_out and lane_out.count(b"HTTP/1.1 200") == 1


def test_pipelined_requests_keep_their_order_around_misses_and_hand_overs(servers):
    """One write with five requests: answered by the lane, a miss (ASGI, diagnosed once),
    a request the lane hands over (a body to compare with every recording: not exact),
    and the lane again, once the connection is free."""
    its = [_it(), _it(path="/v1/y", parts=(b"y",)), _it(method="POST", body=b'{"q": 1}', parts=(b"p",)), _it()]
    post = b'{"q": 2}'
    data = (GET + b"GET /v1/nothing HTTP/1.1\r\nHost: a\r\n\r\n"
            + b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(post), post)
            + b"GET /v1/y HTTP/1.1\r\nHost: a\r\n\r\n" + GET_CLOSE)
    lane_out, plain_out, written = _both(servers, its, data)
    assert lane_out == plain_out
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", lane_out) == [b"200", b"404", b"200", b"200", b"200"]
    lane = servers[0]
    assert len(lane.app.engine.misses) == 1  # the lane's miss was handed over, not matched twice
    assert lane.app.engine.served == 4
    assert written >= 1


def test_a_large_request_body_leaves_the_lane_midway_and_is_matched_once(servers):
    body = b'{"big": "' + b"x" * (QUICK_BODY + 10) + b'"}'
    its = [_it(method="POST", body=body, parts=(b"big",)), _it(method="POST", body=b"{}", parts=(b"small",))]
    req = b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    lane_out, plain_out, written = _both(servers, its, req)
    assert lane_out == plain_out and lane_out.endswith(b"big") and written == 0
    assert servers[0].app.engine.served == 1


def test_what_the_lane_leaves_to_asgi(servers):
    """A paced replay, a response over QUICK_BYTES, a recorded cut: ASGI plays them (the
    lane matched them once and handed the answer over)."""
    _, _, written = _both(servers, [_it()] * 2, GET_CLOSE, speed=1.0)
    assert written == 0
    big = [_it(parts=(b"x" * (QUICK_BYTES // 2),) * 3)]
    lane_out, plain_out, written = _both(servers, big, GET_CLOSE)
    assert lane_out == plain_out and written == 0 and len(lane_out) > QUICK_BYTES
    assert servers[0].app.engine.served == 1
    cut = [_it(end=End.UPSTREAM_CUT, headers=[("content-type", "text/plain")], length=False)]
    lane_out, plain_out, written = _both(servers, cut, GET)
    assert lane_out == plain_out and written == 0


def test_body_parts_wait_for_a_slow_reader(servers):
    """A 3 MB response of 3,000 parts through the BODY_PARTS extension to a client that
    reads slowly: every byte, in order, as ASGI sends them."""
    part = bytes(range(256)) * 4
    its = [_it(headers=[("content-type", "application/octet-stream")], parts=(part,) * 3000)]
    lane, a, plain, b = servers
    lane.app, plain.app = ReplayApp(Engine(list(its)), 0.0), ReplayApp(Engine(list(its)), 0.0)
    host, port = a.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(GET_CLOSE)
        slow, reads = b"", 0
        while True:
            got = s.recv(8192)
            if not got:
                break
            slow += got
            reads += 1
            if reads < 50:  # the server's write buffer fills past its high-water mark meanwhile
                time.sleep(0.002)
    assert slow == _raw(b.url, GET_CLOSE)
    assert slow.endswith(part * 10)


_names = st.sampled_from(["Content-Type", "x-id", "X-Request-Id", "Server", "cache-control", "Transfer-Encoding",
                          "Content-Length", "connection", "Connection"])
_values = st.sampled_from(["application/json", "chunked", "close", "keep-alive", "0", "3", "gzip", "v1", ""])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from([200, 201, 204, 299, 304, 404, 500, 600, 799, 999]),
       headers=st.lists(st.tuples(_names, _values), max_size=5),
       parts=st.lists(st.binary(max_size=40), max_size=6),
       length=st.booleans(), close=st.booleans(), http10=st.booleans())
def test_any_recorded_response_reads_the_same_through_the_lane(servers, status, headers, parts, length, close,
                                                                http10):
    it = _it(status, headers, tuple(parts), length=length)
    version = b"HTTP/1.0" if http10 else b"HTTP/1.1"
    req = b"GET /v1/x %s\r\nHost: a\r\n%s\r\n" % (version, b"Connection: close\r\n" if close else b"")
    lane_out, plain_out, _ = _both(servers, [it] * 2, req + (b"" if close or http10 else GET_CLOSE))
    assert lane_out == plain_out


def test_the_lane_is_used_by_replay_at_speed_0():
    """Not a test of speed: that `proxy replay --speed 0` has the lane at all (a refactor
    that lost it would pass every byte test above)."""
    app = ReplayApp(Engine([_it()]), 0.0)
    assert app.quick("GET", b"/v1/x", b"", [(b"host", b"a")], b"")[0] == 200
    assert ReplayApp(Engine([_it()]), 1.0).quick("GET", b"/v1/x", b"", [], b"") is None


def _until(s: socket.socket, end: bytes) -> bytes:
    got = b""
    while not got.endswith(end):
        data = s.recv(4096)
        assert data, f"closed after {got!r}"
        got += data
    return got


def _paced(seconds: float) -> Interaction:
    it = _it(headers=[("content-type", "text/event-stream")], parts=(b"a", b"b"), length=False)
    it.chunks = [Chunk(0.0, b"a"), Chunk(seconds, b"b")]
    return it


def test_keep_alive_timeout_counts_from_the_last_response(monkeypatch):
    """uvicorn's keep-alive rule with one timer per idle spell: an idle connection closes
    the timeout after its last response; requests every 0.2 s keep it open past several
    timeouts; a response longer than the timeout is not cut by it."""
    monkeypatch.delenv("PROXY_HTTP_STACK", raising=False)
    timeout = 0.4
    lane = _Lane()
    lane.app = ReplayApp(Engine([_it()] * 7), 0.0)  # the lane answers these
    server = UvicornServer(lane, quiet=True)
    server.server.config.timeout_keep_alive = timeout
    server.start_in_thread()
    host, port = server.url.split("//")[1].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            for _ in range(6):  # 1.2 s of requests 0.2 s apart: three timeouts' worth
                s.sendall(GET)
                assert _until(s, b'{"a":1}').startswith(b"HTTP/1.1 200")
                time.sleep(0.2)
            s.sendall(GET)
            assert _until(s, b'{"a":1}').startswith(b"HTTP/1.1 200")
            t0 = time.monotonic()
            assert s.recv(4096) == b""  # closed, idle
            idle = time.monotonic() - t0
        assert timeout * 0.9 <= idle <= timeout + 1.0, idle
        assert lane.written == 7
        lane.app = ReplayApp(Engine([_it(), _paced(1.0)]), 1.0)  # through ASGI, paced
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(GET)
            assert _until(s, b'{"a":1}').startswith(b"HTTP/1.1 200")
            s.sendall(GET)
            t0 = time.monotonic()
            _until(s, b"0\r\n\r\n")
            assert time.monotonic() - t0 >= 0.9  # the 1 s response ran whole, past the timeout
            assert s.recv(4096) == b""
    finally:
        server.stop_thread()


def _server_with_keep_alive(app, seconds: float) -> UvicornServer:
    server = UvicornServer(app, quiet=True)
    server.server.config.timeout_keep_alive = seconds  # read by each connection's protocol
    return server.start_in_thread()


def test_a_request_begun_after_a_quick_answer_is_not_cut_by_the_keep_alive_timeout(monkeypatch):
    """The lane answers the first of two pipelined requests as the read is parsed, and
    that answer arms uvicorn's keep-alive timeout; the second request, whose body comes
    later, is a request in flight all the same: the idle timeout must not close it."""
    monkeypatch.delenv("PROXY_HTTP_STACK", raising=False)
    its = [_it(), _it(method="POST", body=b'{"q": 1}', parts=(b"p",))]
    server = _server_with_keep_alive(ReplayApp(Engine(its), 0.0), 0.2)
    try:
        host, port = server.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(GET + b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
                      + b'{"q":')
            time.sleep(0.5)  # longer than the keep-alive timeout, within the request
            try:
                s.sendall(b' 1}')
            except OSError:
                pass
            out = b""
            while got := s.recv(1 << 16):
                out += got
    finally:
        server.stop_thread()
    assert re.findall(rb"HTTP/1.1 (\d{3}) ", out) == [b"200", b"200"]
    assert out.endswith(b"p")


def _upload_across_a_stop(server: UvicornServer, rest_after: float) -> tuple[bytes, float]:
    """(what a client reads, seconds the stop took) for a POST whose body is half sent when
    the server is told to stop and the rest ``rest_after`` seconds later."""
    host, port = server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n" + b'{"q":')
        time.sleep(0.1)  # the lane holds the request, waiting for the rest of its body
        started = time.monotonic()
        stop = threading.Thread(target=server.stop_thread)
        stop.start()
        time.sleep(rest_after)
        try:
            s.sendall(b' 1}')
        except OSError:
            pass
        out = b""
        try:
            while got := s.recv(1 << 16):
                out += got
        except OSError:
            pass
        stop.join()
    return out, time.monotonic() - started


def test_a_stop_lets_a_request_the_lane_is_reading_finish_as_asgi_would(monkeypatch):
    """uvicorn's graceful stop answers a request whose body is still arriving, with
    ``connection: close``; one still slower is cut at GRACE like any open request."""
    from proxy.uvicorn_server import GRACE

    monkeypatch.delenv("PROXY_HTTP_STACK", raising=False)
    its = [_it(method="POST", body=b'{"q": 1}', parts=(b"p",))]
    out, _ = _upload_across_a_stop(UvicornServer(ReplayApp(Engine(its), 0.0), quiet=True).start_in_thread(), 0.2)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in out and out.endswith(b"p")
    server = UvicornServer(ReplayApp(Engine(its), 0.0), quiet=True).start_in_thread()
    out, took = _upload_across_a_stop(server, GRACE + 1.0)
    assert out == b"" and took < GRACE + 2.0 and server.cut == 1


def test_a_request_after_a_recorded_close_in_the_same_read_is_not_served(servers):
    """A recorded ``Connection: close`` ends the connection: uvicorn never starts a request
    pipelined behind it, so no recording is used for one (the summary counts what clients
    got), neither by the lane nor by ASGI."""
    lane, a, plain, b = servers
    for tail in (GET, b"HEAD /v1/x HTTP/1.1\r\nHost: a\r\n\r\n"):
        for app, server in ((lane, a), (plain, b)):
            app.app = ReplayApp(Engine([_it(headers=[("Connection", "close")]) for _ in range(3)]), 0.0)
            out = _raw(server.url, GET + tail)
            time.sleep(0.1)  # a task started for the second request would have run by now
            assert out.count(b"HTTP/1.1 200") == 1
            assert app.app.engine.served == 1, (tail, type(app).__name__)


def test_an_answer_that_fails_in_the_lane_uses_one_recording_as_asgi_does(servers):
    """The engine fails after it matched (a recorded header ASGI cannot carry): the
    client gets uvicorn's 500 either way, and one recording is used, not one by the lane
    and another by ASGI asked again."""
    lane, a, plain, b = servers
    outs = []
    for app, server in ((lane, a), (plain, b)):
        app.app = ReplayApp(Engine([_it(headers=[("x-arrow", "a\u2192b")]) for _ in range(3)]), 0.0)
        outs.append(_raw(server.url, GET_CLOSE))
        assert app.app.engine.served == 1, type(app).__name__
    assert outs[0] == outs[1] and outs[0].startswith(b"HTTP/1.1 500 ")


def test_a_request_uvicorn_refuses_is_refused_alike_and_quietly(servers, caplog):
    """A target with no path (absolute form) is the client's error: the same 400 as
    uvicorn's, and no "quick lane failed" traceback blaming the app."""
    lane_out, plain_out, written = _both(servers, [_it()], b"GET http://a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert lane_out == plain_out and lane_out.startswith(b"HTTP/1.1 400 ") and written == 0
    assert not [r for r in caplog.records if r.name == "proxy.server"]


def test_a_websocket_upgraded_in_the_read_the_lane_answered_outlives_the_keep_alive_timeout(monkeypatch):
    """A GET the lane answers and a WebSocket handshake in one read: the session runs on
    the same transport, which the HTTP keep-alive timeout armed by the lane's answer must
    not close under it."""
    monkeypatch.delenv("PROXY_HTTP_STACK", raising=False)

    def frame(direction, offset, doc):
        return Frame(direction, True, offset, json.dumps(doc).encode())

    ws = Interaction(Kind.WEBSOCKET, Request("GET", "/v1/responses", headers=[("upgrade", "websocket")]),
                     Response(101, "Switching Protocols", [("upgrade", "websocket")]),
                     frames=[frame(Direction.SERVER, 0.0, {"type": "hello"}),
                             frame(Direction.CLIENT, 1.0, {"type": "x"}), frame(Direction.SERVER, 1.05, {"type": "reply"})],
                     ttfb=0.0, duration=2.0, end=End.COMPLETE, close=Close(1000, "", Direction.CLIENT))
    server = _server_with_keep_alive(ReplayApp(Engine([_it(), ws]), 0.0), 0.2)
    key = base64.b64encode(os.urandom(16))
    handshake = (b"GET /v1/responses HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key)
    payload, mask = b'{"type": "x"}', os.urandom(4)
    client_frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    try:
        host, port = server.url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(GET + handshake)
            out = b""
            while b"hello" not in out:
                out += s.recv(1 << 16)
            time.sleep(0.5)  # longer than the keep-alive timeout
            try:
                s.sendall(client_frame)
                while b"reply" not in out and (got := s.recv(1 << 16)):
                    out += got
            except OSError:
                pass
    finally:
        server.stop_thread()
    assert b" 101 " in out and b"reply" in out


def test_a_client_that_half_closes_gets_no_traceback(tmp_path):
    """A client that sends its request and shuts its side (`nc -N`): `proxy replay` (uvloop)
    closes the connection on that end of file as uvicorn does; a response started in the
    moment before uvicorn hears of it wrote to the closed transport and logged 'Exception
    in ASGI application' with a traceback."""
    from tests.conftest import replayer
    from tests.test_replay_edges import _cassette

    it = _it(headers=[("Content-Type", "application/json"), ("X-Id", "1")])
    it.ttfb = 0.005  # the head goes out a little after the end of file came in
    path = _cassette(tmp_path, [it] * 16)
    with replayer(path) as rp:
        host, port = rp.url.split("//")[1].split(":")
        for _ in range(8):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(b"GET /v1/x HTTP/1.1\r\nHost: a\r\n\r\n" * 2)  # the second waits in uvicorn's pipeline
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
        rp.stop()
    assert "Traceback" not in rp.err and "Exception in ASGI application" not in rp.err, rp.err


def test_http_1_0_keep_alive_pipelining_uses_only_what_it_answers(servers):
    """An HTTP/1.0 request asking for keep-alive gets `connection: close` (uvicorn's rule);
    a second request pipelined in the same write is never answered, and its recording
    stays unused (found from README by a new user: the lane used it up)."""
    its = [_it(path="/a"), _it(path="/b", parts=(b"b",))]
    data = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n"
    lane_out, plain_out, written = _both(servers, its, data)
    assert lane_out == plain_out and lane_out.count(b"HTTP/1.1 200") == 1 and written == 1
    assert servers[0].app.engine.served == 1 and servers[2].app.engine.served == 1

"""The fast HTTP stack (httptools, uvicorn_server's protocol subclass) replays what h11 did:
found in review of issue 15, each against a real replay server and a real client."""

from __future__ import annotations

import socket

import httpx
import pytest

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.uvicorn_server import STACK_ENV
from tests.fidelity import adapter
from tests.test_replay_edges import _cassette

STACKS = ["httptools", "h11"]


@pytest.fixture(params=STACKS)
def stack(request, monkeypatch):
    if request.param == "h11":
        monkeypatch.setenv(STACK_ENV, "h11")
    else:
        pytest.importorskip("httptools")
        monkeypatch.delenv(STACK_ENV, raising=False)
    return request.param


def _http(status: int, body: bytes = b"{}", headers=None, path: str = "/v1/x") -> Interaction:
    hs = headers if headers is not None else [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(body)))]
    return Interaction(Kind.HTTP, Request("GET", path), Response(status, "", hs), chunks=[Chunk(0.0, body)],
                       ttfb=0.0, duration=0.0, end=End.COMPLETE)


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            out += data
    return out


@pytest.mark.parametrize("status", [299, 599, 600, 799, 999])
def test_a_recorded_status_up_to_999_replays(tmp_path, stack, status):
    replay = adapter.start_replay(_cassette(tmp_path, [_http(status, b'{"ok": 1}')]), speed=0)
    try:
        head = _raw(replay.url, b"GET /v1/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    finally:
        replay.stop()
    assert head.startswith(b"HTTP/1.1 %d " % status), head[:80]
    assert head.endswith(b'{"ok": 1}')


def _post(body: bytes, headers, path: str = "/v1/x") -> Interaction:
    return Interaction(Kind.HTTP, Request("POST", path, "", [("content-type", "application/json")], body),
                       Response(200, "OK", headers), chunks=[Chunk(0.0, b'{"a": 1}')], ttfb=0.0, duration=0.0,
                       end=End.COMPLETE)


def test_edges_of_the_request_and_response_head(tmp_path, stack):
    """Chunked request body, Expect: 100-continue, header case and duplicates as recorded,
    a request head near the 16 KB limit, and keep-alive after a recorded cut."""
    headers = [("Content-Type", "application/json"), ("X-Dup", "1"), ("x-dup", "2"), ("Content-Length", "8")]
    cut = Interaction(Kind.HTTP, Request("GET", "/v1/cut"), Response(200, "OK", [("content-type", "text/plain")]),
                      chunks=[Chunk(0.0, b"part")], ttfb=0.0, duration=0.0, end=End.UPSTREAM_CUT)
    its = [_post(b'{"q": 1}', headers), _post(b'{"q": 2}', headers), cut] + [_http(200, b"{}", path="/v1/y")] * 3
    replay = adapter.start_replay(_cassette(tmp_path, its), speed=0)
    try:
        chunked = (b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n{\"q\"\r\n4\r\n: 1}\r\n0\r\n\r\n")
        out = _raw(replay.url, chunked)
        assert out.startswith(b"HTTP/1.1 200 "), out[:200]
        assert b"\r\nX-Dup: 1\r\nx-dup: 2\r\n" in out and b"\r\nContent-Type: application/json\r\n" in out
        out = _raw(replay.url, b"POST /v1/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 8\r\n"
                               b"Connection: close\r\n\r\n{\"q\": 2}")
        assert b"HTTP/1.1 200 " in out and out.endswith(b'{"a": 1}'), out[:300]
        big = b"GET /v1/y HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 15_000 + b"\r\nConnection: close\r\n\r\n"
        assert _raw(replay.url, big).startswith(b"HTTP/1.1 200 ")
        # over h11's 16 KB, but whole in one read: h11 serves it (httptools refused it)
        over = b"GET /v1/y HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 17_000 + b"\r\nConnection: close\r\n\r\n"
        assert _raw(replay.url, over).startswith(b"HTTP/1.1 200 ")
        huge = b"GET /v1/y HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 100_000 + b"\r\nConnection: close\r\n\r\n"
        if stack == "httptools":  # (h11's refusal depends on how the head arrives)
            assert _raw(replay.url, huge).startswith(b"HTTP/1.1 4")
        with httpx.Client(timeout=5) as c:
            with pytest.raises(httpx.HTTPError):
                c.get(replay.url + "/v1/cut").read()
            assert c.get(replay.url + "/v1/y").status_code == 200  # a new connection, served
    finally:
        replay.stop()

"""The fast HTTP stack (httptools, uvicorn_server's protocol subclass) replays what h11 did:
found in review of issue 15, each against a real replay server and a real client."""

from __future__ import annotations

import socket

import httpx
import pytest

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import Cassette
from proxy.uvicorn_server import STACK_ENV
from tests.fidelity import adapter

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


def _cassette(tmp_path, its):
    path = tmp_path / "c.cassette"
    c = Cassette.create(path)
    for it in its:
        c.append(it)
    c.close()
    return path


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

"""--cassette-dir: a bad cassette name is a 404 naming the problem, never a 500, and prefix
mode matches the raw path the client sent, as header mode does."""

from __future__ import annotations

import httpx
import pytest

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.serve import ServeConfig, Session
from proxy.store import Cassette


@pytest.fixture
def served(tmp_path):
    d = tmp_path / "cassettes"
    d.mkdir()
    with Cassette.create(d / "enc.db") as c:
        for _ in range(2):
            c.append(Interaction(Kind.HTTP, Request("GET", "/v1/files/a%20b"), Response(200, "OK", []),
                                 [Chunk(0.0, b"file")], end=End.COMPLETE))
    session = Session(ServeConfig(cassette=None, cassette_dir=d, speed=0))
    url = session.start_in_thread()
    yield url
    session.stop_thread()


def test_prefix_and_header_match_the_same_raw_path(served):
    by_header = httpx.get(served + "/v1/files/a%20b", headers={"x-proxy-cassette": "enc"})
    by_prefix = httpx.get(served + "/c/enc/v1/files/a%20b")
    assert (by_header.status_code, by_header.content) == (by_prefix.status_code, by_prefix.content) == (200, b"file")


@pytest.mark.parametrize("path, headers", [
    ("/c/" + "a" * 300 + "/v1/models", {}),  # longer than a file name may be
    ("/v1/models", {"x-proxy-cassette": "b" * 300}),
    ("/c/%E2%82%AC/v1/models", {}),  # not Latin-1
    ("/v1/models", {"x-proxy-cassette": "\u20ac".encode()}),
])
def test_a_bad_name_is_a_404(served, path, headers):
    r = httpx.get(served + path, headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "bad_cassette_name", r.text


def test_a_path_that_is_not_latin_1_is_a_miss_not_an_error(served):
    r = httpx.get(served + "/c/enc/v1/files/%E2%82%AC")
    assert r.status_code == 404 and r.headers["x-proxy-miss"]

"""The public API (``import proxy``): its pinned names, a light import, and each way of
using it against real servers and real clients: a plain script, asyncio (pytest-asyncio),
unittest (sync and async test cases), and recording from the simulator."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import httpx
import openai
import pytest
import websockets

import proxy
from proxy.store import Cassette
from proxy.testing import fake_key

from .conftest import ROOT

EXAMPLE = ROOT / "cassettes" / "example.db"


def test_public_names_are_pinned():
    assert proxy.__all__ == ["CassetteError", "CassetteMismatch", "ModelProxy", "RecordMode", "ServeError", "Summary",
                             "recording", "replaying", "use_cassette"]
    from proxy import api

    for name in proxy.__all__:
        assert getattr(proxy, name) is getattr(api, name)
    with pytest.raises(AttributeError):
        proxy.no_such_name  # noqa: B018


def test_import_proxy_is_light():
    code = ("import sys, proxy, proxy.model; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('httpx', 'uvicorn', 'mitmproxy', 'websockets') or m in ('proxy.api', 'proxy.serve')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_pytest_plugin_loads_without_the_server():
    # It loads in every pytest run of a project that installed proxy, cassettes or not.
    code = "import sys, pytest, proxy.pytest_plugin; print(sorted(m for m in ('uvicorn', 'websockets', 'proxy.serve') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_replay_in_a_plain_script():
    with proxy.replaying(EXAMPLE, speed=0) as p:
        assert p.base_url == p.url + "/v1" and p.ws_base_url == p.url.replace("http:", "ws:") + "/v1"
        client = openai.OpenAI(base_url=p.base_url, api_key=fake_key("test"), max_retries=0)
        assert client.models.list().data[0].id == "sim-1"
        with client.responses.create(model="sim-1", input="Say hello", stream=True) as s:
            assert [e.type for e in s][-1] == "response.completed"
        assert p.errors == []
    s = p.summary
    assert (s.served, s.recordings, len(s.misses), len(s.unused), s.out_of_order) == (2, 5, 0, 3, 0)
    assert [it.seq for it in s.unused] == [2, 4, 5]


def test_a_miss_fails_the_block_with_the_nearest_recording():
    with pytest.raises(proxy.CassetteMismatch) as e:
        with proxy.replaying(EXAMPLE, speed=0) as p:
            assert httpx.post(p.base_url + "/embeddings", json={"input": "x"}).status_code == 404
    assert isinstance(e.value, AssertionError)  # unittest and pytest report a failure, not an error
    assert "request(s) with no recording" in str(e.value) and "POST /v1/embeddings" in str(e.value)
    assert "nearest is #" in str(e.value) and len(p.summary.misses) == 1

    with proxy.replaying(EXAMPLE, speed=0, strict=True, check=False) as p:
        httpx.get(p.base_url + "/models")
    assert p.errors[0] == f"strict: 4 recorded interaction(s) in {EXAMPLE} were never used:"


def test_when_the_block_raised_the_diagnostic_is_a_note_on_its_exception():
    with pytest.raises(openai.NotFoundError) as e:
        with proxy.replaying(EXAMPLE, speed=0) as p:
            openai.OpenAI(base_url=p.base_url, api_key=fake_key("test"), max_retries=0).embeddings.create(
                model="sim-1", input="x")
    notes = "\n".join(e.value.__notes__)
    assert "proxy: the client made 1 request(s) with no recording" in notes and "POST /v1/embeddings" in notes


def test_a_plain_script_shows_a_miss_once_not_again_through_the_last_resort_logger():
    script = textwrap.dedent(f'''
        import httpx, proxy
        with proxy.replaying({str(EXAMPLE)!r}, speed=0) as p:
            httpx.post(p.base_url + "/embeddings", json={{"input": "x"}})
    ''')
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "CassetteMismatch" in r.stderr
    assert r.stderr.count("+++ received") == 1, r.stderr  # the exception's text only


@pytest.mark.asyncio
async def test_async_with_serves_on_the_running_loop():
    async with proxy.replaying(EXAMPLE, speed=0) as p:
        async with openai.AsyncOpenAI(base_url=p.base_url, api_key=fake_key("test"), max_retries=0) as client:
            stream = await client.responses.create(model="sim-1", input="Say hello", stream=True)
            assert [e.type async for e in stream][-1] == "response.completed"
        async with websockets.connect(p.ws_base_url + "/responses") as ws:
            await ws.send(json.dumps({"type": "response.create", "model": "sim-1", "generate": False}))
            assert [json.loads(await ws.recv())["type"] for _ in range(2)] == ["response.created",
                                                                               "response.completed"]
    assert p.summary.served == 2 and p.errors == []


UNITTEST_SUITE = '''
import unittest, httpx, openai, proxy
from proxy.testing import fake_key

CASSETTE = {cassette!r}

class Sync(unittest.TestCase):
    def setUp(self):
        self.proxy = self.enterContext(proxy.replaying(CASSETTE, speed=0))

    def test_models(self):
        client = openai.OpenAI(base_url=self.proxy.base_url, api_key=fake_key("t"), max_retries=0)
        self.assertEqual(client.models.list().data[0].id, "sim-1")

    def test_unrecorded(self):
        with proxy.replaying(CASSETTE, speed=0) as p:
            httpx.get(p.base_url + "/files")

class Async(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.proxy = await self.enterAsyncContext(proxy.replaying(CASSETTE, speed=0))

    async def test_models(self):
        async with httpx.AsyncClient() as client:
            r = await client.get(self.proxy.base_url + "/models")
        self.assertEqual(r.json()["data"][0]["id"], "sim-1")
'''


def test_unittest_sync_and_async_test_cases(tmp_path):
    (tmp_path / "test_u.py").write_text(UNITTEST_SUITE.format(cassette=str(EXAMPLE)))
    r = subprocess.run([sys.executable, "-m", "unittest", "-v", "test_u"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    out = r.stderr
    assert "Ran 3 tests" in out and "FAILED (failures=1)" in out, out  # a miss is a failure, not an error
    assert "FAIL: test_unrecorded (test_u.Sync.test_unrecorded)" in out
    assert "proxy.api.CassetteMismatch" in out and "nearest is #3 GET /v1/models" in out


def test_record_then_replay_and_a_failed_block_keeps_the_old_cassette(upstream, tmp_path):
    path = tmp_path / "rec.db"
    with proxy.recording(path, upstream.url) as p:
        # A streamed (chunked) response: its end reaches the client once it is committed, so
        # the count below is settled. (A content-length body is complete at its last byte,
        # which can be before the recorder has counted it.)
        r = httpx.post(p.base_url + "/responses", json={"model": "sim-1", "input": "hi", "stream": True},
                       headers={"authorization": "Bearer " + fake_key("api")})
        assert b"response.completed" in r.content
    assert p.summary.recorded == 1
    with pytest.raises(ZeroDivisionError):
        with proxy.recording(path, upstream.url) as p:
            httpx.get(p.base_url + "/models")
            httpx.get(p.base_url + "/models")
            1 / 0
    with Cassette.open(path) as c:  # mode all replaces the cassette only after a clean block
        assert c.count() == 1 and c.get(1).request.header("authorization") == "REDACTED"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["rec.db"]  # the failed block's recording is gone
    upstream.stop_thread()
    with proxy.replaying(path, speed=0) as p:
        assert httpx.post(p.base_url + "/responses", json={}).content == r.content


def test_use_cassette_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PROXY_RECORD_MODE", "once")
    monkeypatch.delenv("PROXY_UPSTREAM", raising=False)
    with pytest.raises(proxy.ServeError, match="record mode once needs an upstream URL"):
        proxy.use_cassette(tmp_path / "new.db")
    monkeypatch.setenv("PROXY_RECORD_MODE", "none")
    with pytest.raises(proxy.CassetteError, match="no such cassette file"):
        proxy.use_cassette(tmp_path / "new.db").start()
    m = proxy.use_cassette(EXAMPLE)
    assert m.mode is proxy.RecordMode.NONE and "not running" in repr(m)
    with pytest.raises(RuntimeError, match="not running"):
        m.base_url  # noqa: B018


def _open_files(path) -> int:
    """How many of this process's file descriptors are open on ``path`` (or its -wal/-shm)."""
    import os

    fds = os.listdir("/proc/self/fd")
    names = []
    for fd in fds:
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return sum(1 for n in names if n.startswith(str(path)))


def _threads(prefix: str) -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


def test_a_proxy_started_again_is_stopped_again(tmp_path):
    """start() / stop() twice on one ModelProxy (unittest's setUp / tearDown on a proxy made
    once): the second stop() stops the second server, whose summary is its own."""
    p = proxy.replaying(EXAMPLE, speed=0)
    p.start()
    assert httpx.get(p.base_url + "/models").status_code == 200
    first = p.stop()
    p.start()
    with pytest.raises(RuntimeError, match="already running"):
        p.start()
    url = p.url
    assert httpx.get(p.base_url + "/models").status_code == 200  # each run has the whole cassette
    second = p.stop()
    assert second is not first and second.served == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/v1/models", timeout=2)
    assert _threads("proxy-serve") == []


def test_a_start_that_fails_leaves_nothing_open():
    """The port is taken: start() raises, and the cassette, the match worker and the check
    thread it had opened are closed, for ``with`` and ``async with`` alike."""
    import asyncio
    import socket
    import time

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with taken:
        for _ in range(2):
            with pytest.raises(OSError, match="in use"):
                with proxy.replaying(EXAMPLE, port=port):
                    pass

        async def main():
            async with proxy.replaying(EXAMPLE, port=port):
                pass

        with pytest.raises(OSError, match="in use"):
            asyncio.run(main())
    deadline = time.monotonic() + 5
    while (_open_files(EXAMPLE) or _threads("proxy-check")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_files(EXAMPLE) == 0
    assert _threads("proxy-replay-match") == [] and _threads("proxy-check") == [] and _threads("proxy-serve") == []

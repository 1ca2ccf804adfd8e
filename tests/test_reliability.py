"""Nothing lost, no one in, every bad input a clear error. `pytest --soak` runs bigger loads."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from proxy.model import Direction, End, Kind
from proxy.store import Cassette

from .conftest import API_KEY, proxy_proc, replayer, run_cli
from .fake_secrets import assert_clean

AUTH = {"authorization": f"Bearer {API_KEY}"}


def soak(request, normal: int, big: int) -> int:
    return big if request.config.getoption("soak") else normal


def test_sigkill_during_record_keeps_completed_and_in_flight(upstream, tmp_path, request):
    n_flight = soak(request, 20, 60)
    cassette = tmp_path / "crash.db"
    received: list[list[bytes]] = [[] for _ in range(n_flight)]
    with proxy_proc("record", "--upstream", upstream.url, "--cassette", str(cassette), "--listen", "127.0.0.1:0") as rec:
        done = [httpx.post(rec.url + "/v1/responses", json={"model": "sim-1", "input": f"done {i}", "stream": True},
                           headers={**AUTH, "x-sim-gap-ms": "1"}).content for i in range(5)]

        def stream(i: int) -> None:
            try:
                with httpx.stream("POST", rec.url + "/v1/responses", headers={**AUTH, "x-sim-gap-ms": "60",
                                  "x-sim-events": "40"}, json={"model": "sim-1", "input": f"flight {i}", "stream": True},
                                  timeout=30) as r:
                    for b in r.iter_raw():
                        received[i].append(b)
            except httpx.HTTPError:
                pass  # the recorder died under us: expected

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(n_flight)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(len(r) for r in received) < 3:
            time.sleep(0.02)
        assert min(len(r) for r in received) >= 3, "streams did not get going"
        rec.popen.kill()  # SIGKILL: no shutdown, no checkpoint
        for t in threads:
            t.join(30)
        rec.popen.wait()

    with Cassette.open(cassette) as c:
        its = list(c.interactions())
    assert len(its) == 5 + n_flight
    complete = [it for it in its if it.end is End.COMPLETE]
    flight = [it for it in its if it.end is End.INCOMPLETE]
    assert sorted(it.body for it in complete) == sorted(done)  # intact
    assert len(flight) == n_flight
    by_input = {json.loads(it.request.body)["input"]: it for it in flight}
    lost_bytes = lost_chunks = 0
    for i, got in enumerate(received):
        stored = by_input[f"flight {i}"].body
        client = b"".join(got)
        # same bytes as far as both go; the cassette may lack only what was still in the
        # writer's queue (one batch window, 5 ms) when the process died
        assert stored.startswith(client) or client.startswith(stored), i
        missing = client[len(stored):]
        assert missing.count(b"\n\n") <= 1, (i, missing)
        lost_bytes += len(missing)
        lost_chunks += bool(missing)
    print(f"SIGKILL with {n_flight} streams in flight: {lost_chunks} stream(s) lost their last chunk, "
          f"{lost_bytes} bytes the client had seen; 5 completed intact")

    upstream.stop_thread()
    with replayer(cassette, "--speed", "0") as rp:
        with httpx.Client(timeout=10) as client:
            for it in sorted(its, key=lambda x: x.seq):
                body, cut = b"", False
                try:
                    with client.stream("POST", rp.url + "/v1/responses", json={}) as r:
                        for b in r.iter_raw():
                            body += b
                except httpx.HTTPError:
                    cut = True
                assert body == it.body and cut == (it.end is End.INCOMPLETE), it.seq


def test_load_many_streams_and_sessions_at_once(upstream, tmp_path, request):
    n_sse, n_ws = soak(request, 100, 300), soak(request, 50, 150)
    cassette = tmp_path / "load.db"

    async def sse(client, base, i):
        chunks = []
        async with client.stream("POST", base + "/v1/responses", headers={**AUTH, "x-sim-gap-ms": "10", "x-sim-events": "20"},
                                 json={"model": "sim-1", "input": f"sse {i}", "stream": True}) as r:
            async for b in r.aiter_raw():
                chunks.append(b)
        return f"sse {i}", b"".join(chunks)

    async def ws(base, i):
        frames = []
        async with aconnect(base.replace("http", "ws") + "/v1/responses", additional_headers={**AUTH, "x-sim-gap-ms": "10"},
                            open_timeout=60) as s:
            msg = json.dumps({"type": "response.create", "model": "sim-1", "input": f"ws {i}"})
            await s.send(msg)
            frames.append(("client", msg))
            while True:
                m = await s.recv()
                frames.append(("server", m))
                if json.loads(m)["type"] == "response.completed":
                    break
        return f"ws {i}", frames

    async def all_at_once(base):
        limits = httpx.Limits(max_connections=n_sse + 10)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*[sse(client, base, i) for i in range(n_sse)], *[ws(base, i) for i in range(n_ws)])

    with proxy_proc("record", "--upstream", upstream.url, "--cassette", str(cassette), "--listen", "127.0.0.1:0") as rec:
        results = asyncio.run(all_at_once(rec.url))
    with Cassette.open(cassette) as c:
        its = list(c.interactions())
    assert len(its) == n_sse + n_ws
    stored = {}
    for it in its:
        if it.kind is Kind.HTTP:
            stored[json.loads(it.request.body)["input"]] = it.body
        else:
            first = json.loads(it.frames[0].payload)["input"]
            stored[first] = [(f.direction.value, f.payload.decode()) for f in it.frames]
    mismatched = [k for k, v in results if stored.get(k) != v]
    assert mismatched == []  # zero lost, duplicated or reordered chunks and frames
    events = sum(v.count(b"\n\n") for k, v in results if k.startswith("sse"))
    frames = sum(len(v) for k, v in results if k.startswith("ws"))
    assert events == n_sse * 27 and frames == n_ws * 13  # 4 + 20 deltas + 3 events; 1 client + 12 server frames


def reset_upstream():
    """A raw upstream that sends part of an SSE body, then resets the connection (RST)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"d\r\ndata: first\n\n\r\n")
            time.sleep(0.05)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_upstream_faults_recorded_and_the_recorder_keeps_serving(upstream, tmp_path):
    cassette = tmp_path / "faults.db"
    seen = []
    with proxy_proc("record", "--upstream", upstream.url, "--cassette", str(cassette), "--listen", "127.0.0.1:0") as rec:
        for fault in ("500", "429", "cut"):
            try:
                r = httpx.post(rec.url + "/v1/responses", json={"stream": True}, headers={"x-sim-fault": fault})
                seen.append((fault, r.status_code, r.headers.get("retry-after")))
            except httpx.HTTPError as e:
                seen.append((fault, type(e).__name__, None))
            assert httpx.get(rec.url + "/v1/models").status_code == 200  # still serving
        t = time.monotonic()
        with connect(rec.url.replace("http", "ws") + "/v1/responses", additional_headers={"x-sim-accept-ms": "250"}):
            seen.append(("slow accept", round(time.monotonic() - t, 1), None))
        assert httpx.get(rec.url + "/v1/models").status_code == 200
    assert seen[:3] == [("500", 500, None), ("429", 429, "7"), ("cut", "RemoteProtocolError", None)]
    srv = reset_upstream()
    reset_db = tmp_path / "reset.db"
    with proxy_proc("record", "--upstream", f"http://127.0.0.1:{srv.getsockname()[1]}", "--cassette", str(reset_db),
                    "--listen", "127.0.0.1:0") as rec:
        for _ in range(2):  # the recorder survives a reset and records the next one too
            with pytest.raises(httpx.HTTPError):
                with httpx.stream("POST", rec.url + "/v1/responses", json={}) as r:
                    for _ in r.iter_raw():
                        pass
    srv.close()
    with Cassette.open(reset_db) as c:
        resets = list(c.interactions())
    assert [it.end for it in resets] == [End.UPSTREAM_CUT] * 2 and resets[0].body == b"data: first\n\n"

    upstream.stop_thread()
    with replayer(cassette, "--speed", "0") as rp:
        got = []
        for fault in ("500", "429", "cut"):
            try:
                r = httpx.post(rp.url + "/v1/responses", json={})
                got.append((fault, r.status_code, r.headers.get("retry-after")))
            except httpx.HTTPError as e:
                got.append((fault, type(e).__name__, None))
    assert got == seen[:3]
    with replayer(reset_db, "--speed", "0") as rp:
        with pytest.raises(httpx.HTTPError):
            with httpx.stream("POST", rp.url + "/v1/responses", json={}) as r:
                chunks = r.iter_raw()
                assert next(chunks) == b"data: first\n\n"
                list(chunks)


def raw_exchange(url: str, data: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


def test_bad_input_to_the_replay_server(tmp_path, upstream, recorder):
    httpx.get(recorder.url + "/v1/models")
    with httpx.stream("POST", recorder.url + "/v1/responses", headers={"x-sim-gap-ms": "50", "x-sim-events": "10"},
                      json={"stream": True}) as r:
        full = b"".join(r.iter_raw())
    with connect(recorder.url.replace("http", "ws") + "/v1/responses") as ws:
        ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "x"}))
        while json.loads(ws.recv(timeout=5))["type"] != "response.completed":
            pass
    recorder.stop()
    with replayer(recorder.cassette) as rp:
        def ok() -> None:
            assert httpx.get(rp.url + "/v1/models").status_code in (200, 404)

        out = raw_exchange(rp.url, b"THIS IS NOT HTTP\r\n\r\n")
        assert out == b"" or out.startswith(b"HTTP/1.1 400")
        ok()
        out = raw_exchange(rp.url, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n")
        assert out == b"" or out.split(b" ")[1] in (b"400", b"431")
        ok()
        out = raw_exchange(rp.url, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)))
        assert out == b"" or out.startswith(b"HTTP/1.1 400")
        ok()
        # a client that vanishes mid-stream, then one that reads it all
        with httpx.stream("POST", rp.url + "/v1/responses", json={}) as r:
            next(r.iter_raw())
        with connect(rp.url.replace("http", "ws") + "/v1/responses") as ws:  # binary where JSON was recorded
            ws.send(b"\x00\xff binary")
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=5)
        assert e.value.rcvd.code == 4000
        with pytest.raises(InvalidStatus):
            connect(rp.url.replace("http", "ws") + "/v1/nowhere")
        ok()
    assert "Traceback" not in rp.err, rp.err
    # a fresh server: the first stream was consumed by the vanished client
    with replayer(recorder.cassette, "--speed", "0") as rp:
        with httpx.stream("POST", rp.url + "/v1/responses", json={}) as r:
            assert b"".join(r.iter_raw()) == full


def test_secrets_never_stored_logged_or_shown(upstream, tmp_path):
    custom = "tok_live_4f5e6d7c8b9a"  # not key-shaped: found only by configured redaction
    cassette = tmp_path / "secrets.db"
    args = ["record", "--upstream", upstream.url, "--cassette", str(cassette), "--listen", "127.0.0.1:0", "-v",
            "--redact-header", "x-custom-secret", "--redact-json-path", "user.token", "--redact-pattern", r"tok_live_\w+"]
    with proxy_proc(*args) as rec:
        httpx.post(rec.url + "/v1/responses", params={"api-key": API_KEY, "key": API_KEY},
                   headers={**AUTH, "api-key": API_KEY, "x-custom-secret": custom},
                   json={"model": "sim-1", "input": f"the key is {API_KEY}", "api_key": API_KEY,
                         "user": {"token": custom}})
        with connect(rec.url.replace("http", "ws") + "/v1/responses?api-key=" + API_KEY, additional_headers=AUTH) as ws:
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": f"socket {API_KEY} {custom}"}))
            while json.loads(ws.recv(timeout=5))["type"] != "response.completed":
                pass
        assert (tmp_path / "secrets.db-wal").exists()  # audited while the recorder writes
        assert_clean(cassette, secrets=[API_KEY, custom], patterns=[r"tok_live_\w+"])
    outputs = [rec.out, rec.err]
    for args in ([], ["1"], ["2", "--json"], ["--text"]):
        r = run_cli("inspect", str(cassette), *args)
        assert r.returncode == 0
        outputs.append(r.stdout)
    run_cli("inspect", str(cassette), "--html", str(tmp_path / "page.html"))
    with replayer(cassette, "--speed", "0") as rp:
        httpx.post(rp.url + "/v1/chat/completions", params={"api-key": API_KEY}, headers=AUTH, json={"k": API_KEY})
    outputs += [rp.out, rp.err]
    assert_clean(cassette, secrets=[API_KEY, custom], patterns=[r"tok_live_\w+"])
    # the other files are plain text (the HTML page): a grep does see into them
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and not p.name.startswith("secrets.db")}
    assert "page.html" in files
    for secret in (API_KEY, custom):
        for name, data in files.items():
            assert secret.encode() not in data, name
        for text in outputs:
            assert secret not in text
    with Cassette.open(cassette) as c:
        http_it, ws_it = list(c.interactions())
    assert http_it.request.header("x-custom-secret") == "REDACTED"
    assert json.loads(http_it.request.body)["user"]["token"] == "REDACTED"
    assert "api-key=REDACTED" in http_it.request.query and "key=REDACTED" in http_it.request.query
    assert ws_it.frames[0].direction is Direction.CLIENT and b"REDACTED" in ws_it.frames[0].payload


def test_loopback_by_default_other_addresses_need_expose(tmp_path):
    from .test_bad_input import good

    path = good(tmp_path / "g.db")
    for cmd in (["replay", "--cassette", str(path)], ["record", "--upstream", "http://127.0.0.1:9", "--cassette",
                                                      str(tmp_path / "r.db")]):
        r = run_cli(*cmd, "--listen", "0.0.0.0:0")
        assert r.returncode == 2 and "--expose" in r.stderr
        with proxy_proc(*cmd, "--listen", "0.0.0.0:0", "--expose") as p:
            pass
        assert "warning: listening on 0.0.0.0" in p.err
    r = run_cli("replay", "--help")
    assert "127.0.0.1:8080" in r.stdout

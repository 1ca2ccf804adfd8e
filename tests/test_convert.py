"""Cassettes in and out: VCR.py cassettes written by vcrpy itself (httpx, requests and
aiohttp stubs), HAR written by mitmproxy's own hardump and in Chrome's shape, imported
and replayed to the same clients; `proxy export --har` read back by mitmproxy's HAR
reader and imported again to the same cassette."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

import proxy
from proxy.store import Cassette
from proxy.testing import fake_key
from proxy.testing.simulator import Simulator
from proxy.uvicorn_server import UvicornServer

from .conftest import ROOT, run_cli

EXAMPLE = ROOT / "cassettes" / "example.db"
PACKED = {"packed": True, "text": "squeeze " * 40}


# Text bodies that a HAR holds decoded, by the charset its writer chose: an SSE stream with no
# charset (mitmproxy decodes it as latin-1), a latin-1 page that says so, a UTF-8 JSON body.
TEXTS = {
    "/sse-utf8": ("text/event-stream", 'data: {"delta": "h\u00e9llo \u2713 \U0001f600"}\n\n'.encode()),
    "/latin1": ("text/plain; charset=iso-8859-1", "caf\u00e9 cr\u00e8me".encode("latin-1")),
    "/json-utf8": ("application/json", '{"t": "\u65e5\u672c"}'.encode()),
}


class GzipAndSimulator:
    """The simulator, plus GET /gz: a gzip-encoded JSON body, as many real APIs send."""

    def __init__(self) -> None:
        self.sim = Simulator()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in TEXTS:
            ctype, body = TEXTS[scope["path"]]
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"] == "/gz":
            body = gzip.compress(json.dumps(PACKED).encode())
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-encoding", b"gzip"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.sim(scope, receive, send)


@pytest.fixture
def origin():
    server = UvicornServer(GzipAndSimulator(), quiet=True).start_in_thread()
    yield server.url
    server.stop_thread()


STREAM = {"model": "sim-1", "input": "Say hello", "stream": True}


def _sse_text(body: bytes) -> list[str]:
    """The event types of a Responses stream (ids differ per run; types do not)."""
    return [json.loads(ln[6:])["type"] for ln in body.decode().splitlines() if ln.startswith("data: ")]


def test_vcrpy_cassettes_from_httpx_requests_and_aiohttp_import_and_replay(origin, tmp_path):
    vcr = pytest.importorskip("vcr")
    aiohttp = pytest.importorskip("aiohttp")
    requests = pytest.importorskip("requests")
    auth = {"authorization": "Bearer " + fake_key("vcr")}

    def httpx_calls(base):
        models = httpx.get(base + "/v1/models", headers=auth).json()
        stream = httpx.post(base + "/v1/responses", json=STREAM, headers=auth).content
        return models, _sse_text(stream), httpx.get(base + "/gz").json()

    def requests_calls(base):
        return requests.get(base + "/gz").json(), requests.post(base + "/v1/chat/completions", json={
            "model": "sim-1", "messages": [{"role": "user", "content": "hi"}]}).json()["choices"][0]["message"]

    def aiohttp_calls(base):
        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(base + "/gz") as r:
                    gz = await r.json()
                async with s.post(base + "/v1/responses", json=STREAM) as r:
                    stream = await r.read()
            return gz, _sse_text(stream)

        return asyncio.run(go())

    runs = {"httpx": httpx_calls, "requests": requests_calls, "aiohttp": aiohttp_calls}
    live = {}
    for name, calls in runs.items():
        with vcr.use_cassette(str(tmp_path / f"{name}.yaml"), record_mode="all"):
            live[name] = calls(origin)
    assert live["httpx"][2] == PACKED and live["aiohttp"][0] == PACKED

    for name, calls in runs.items():
        db = tmp_path / f"{name}.db"
        r = run_cli("import", str(tmp_path / f"{name}.yaml"), "--cassette", str(db))
        assert r.returncode == 0, r.stderr
        assert f"into {db} from {tmp_path / (name + '.yaml')} (vcr)" in r.stdout
        with proxy.replaying(db, speed=0) as p:
            assert calls(p.url) == live[name], name  # the same client sees the same answers, offline
        assert p.summary.served == p.summary.recordings

    with Cassette.open(tmp_path / "httpx.db") as c:
        assert c.get(1).request.header("authorization") == "REDACTED"  # redacted like a recording
        gz = c.get(3)
        assert gz.response.header("content-encoding") == "gzip" and gzip.decompress(gz.body) == json.dumps(PACKED).encode()
    with Cassette.open(tmp_path / "aiohttp.db") as c:
        gz = c.get(1)  # aiohttp's stub stored the body decoded: the header that no longer applies is gone
        assert gz.response.header("content-encoding") is None and json.loads(gz.body) == PACKED
        assert gz.response.header("content-length") == str(len(gz.body))


def test_old_httpx_format_and_bad_files(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("interactions:\n- request:\n    body: null\n    headers: {}\n    method: GET\n"
                   "    uri: https://api.example.test/v1/models?x=1\n  response:\n    status_code: 200\n"
                   "    http_version: HTTP/1.1\n    headers:\n      content-type: [application/json]\n"
                   "    content: '{\"data\": []}'\nversion: 1\n")
    r = run_cli("import", str(old), "--cassette", str(tmp_path / "old.db"))
    assert r.returncode == 0, r.stderr
    with Cassette.open(tmp_path / "old.db") as c:
        it = c.get(1)
        assert (it.request.scheme, it.request.host, it.request.target, it.response.status, it.body) == (
            "https", "api.example.test", "/v1/models?x=1", 200, b'{"data": []}')
    (tmp_path / "x.yaml").write_text("just: text\n")
    r = run_cli("import", str(tmp_path / "x.yaml"), "--cassette", str(tmp_path / "x.db"))
    assert r.returncode == 2 and "not a VCR.py cassette" in r.stderr and not (tmp_path / "x.db").exists()
    r = run_cli("import", str(old), "--cassette", str(tmp_path / "old.db"))
    assert r.returncode == 2 and "already exists" in r.stderr
    bad = tmp_path / "port.yaml"  # a URI whose port is out of range: one line, no traceback
    bad.write_text(old.read_text().replace("api.example.test/", "api.example.test:99999999/"))
    r = run_cli("import", str(bad), "--cassette", str(tmp_path / "port.db"))
    assert r.returncode == 2 and "interaction 1" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_vcr_body_in_an_encoding_it_does_not_check_keeps_its_header(tmp_path):
    """The requests and httpx stubs store a body as sent: one whose coding this proxy cannot
    decode (``compress``) or that decodes to more than the decoding limit (a 70 MB gzip of
    zeros, 71 KB stored) is still encoded, so its Content-Encoding stays. Dropping it would
    serve compressed bytes as the body."""
    yaml = pytest.importorskip("yaml")
    big = gzip.compress(b"0" * (70 * 1024 * 1024), 9)
    lzw = b"\x1f\x9d\x90abc"

    def interaction(path, encoding, body):
        return {"request": {"method": "GET", "uri": "https://api.example.test" + path, "body": None, "headers": {}},
                "response": {"status": {"code": 200, "message": "OK"},
                             "headers": {"Content-Encoding": [encoding], "Content-Type": ["text/plain"]},
                             "body": {"string": body}}}

    src = tmp_path / "enc.yaml"
    src.write_text(yaml.safe_dump({"version": 1, "interactions": [interaction("/big", "gzip", big),
                                                                  interaction("/lzw", "compress", lzw)]}))
    r = run_cli("import", str(src), "--cassette", str(tmp_path / "enc.db"))
    assert r.returncode == 0, r.stderr
    with Cassette.open(tmp_path / "enc.db") as c:
        got = [(it.response.header("content-encoding"), it.body) for it in c.interactions()]
    assert got == [("gzip", big), ("compress", lzw)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _mitmdump_har(origin: str, har: Path, probe: str):
    """mitmdump in reverse mode to ``origin`` writing ``har`` when it stops (SIGINT at the
    end of the block); yields its base URL once ``probe`` answers through it."""
    mitmdump = Path(sys.executable).with_name("mitmdump")
    if not mitmdump.exists():
        pytest.skip("mitmdump not installed (the record extra)")
    port = _free_port()
    p = subprocess.Popen([str(mitmdump), "-q", "--mode", f"reverse:{origin}", "--listen-host", "127.0.0.1",
                          "--listen-port", str(port), "--set", f"hardump={har}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + probe, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else ""
                time.sleep(0.1)
        yield base
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=30)


def test_mitmproxy_har_export_imports_and_replays_with_its_timing(origin, tmp_path):
    har = tmp_path / "flows.har"
    with _mitmdump_har(origin, har, "/v1/models") as base:
        live_models = httpx.get(base + "/v1/models").json()
        live_gz = httpx.get(base + "/gz").json()
        live_stream = _sse_text(httpx.post(base + "/v1/responses", json=STREAM, headers={"x-sim-gap-ms": "20"}).content)
        with websockets.sync.client.connect(base.replace("http", "ws") + "/v1/responses",
                                            additional_headers={"x-sim-gap-ms": "30"}) as ws:
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "hi"}))
            live_ws = []
            while not live_ws or live_ws[-1] != "response.completed":
                live_ws.append(json.loads(ws.recv())["type"])
    assert har.exists()
    db = tmp_path / "flows.db"
    r = run_cli("import", str(har), "--cassette", str(db))
    assert r.returncode == 0, r.stderr
    with Cassette.open(db) as c:
        its = list(c.interactions())
    assert [(it.kind.value, it.request.method, it.request.path) for it in its][-4:] == [
        ("http", "GET", "/v1/models"), ("http", "GET", "/gz"), ("http", "POST", "/v1/responses"),
        ("websocket", "GET", "/v1/responses")]
    ws_it = its[-1]
    server = [f.offset for f in ws_it.frames if f.direction.value == "server"]
    assert len(server) == len(live_ws) and server[-1] - server[0] > 0.1  # frames keep their recorded gaps
    assert its[-2].ttfb is not None and its[-2].duration >= 0.1  # a 20 ms-per-event stream took its time
    with proxy.replaying(db, speed=0) as rp:
        httpx.get(rp.base_url + "/models")  # the readiness probe's recording
        assert httpx.get(rp.base_url + "/models").json() == live_models
        assert httpx.get(rp.url + "/gz").json() == live_gz
        assert _sse_text(httpx.post(rp.base_url + "/responses", json=STREAM).content) == live_stream
        with websockets.sync.client.connect(rp.ws_base_url + "/responses") as ws:
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "hi"}))
            assert [json.loads(ws.recv())["type"] for _ in live_ws] == live_ws


def _chrome_har(t0: float) -> dict:
    """The shape Chrome DevTools exports (HTTP/2 pseudo-headers, a br body stored decoded,
    a blocked request, a WebSocket with text and binary messages at epoch times)."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)) + ".000Z"
    body = json.dumps({"data": [{"id": "m-1"}]})
    return {"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"}, "pages": [],
                    "entries": [
        {"_initiator": {"type": "script"}, "_priority": "High", "_resourceType": "fetch", "cache": {},
         "connection": "443", "startedDateTime": iso, "time": 85.2, "serverIPAddress": "10.0.0.1",
         "request": {"method": "GET", "url": "https://api.example.test/v1/models?limit=1", "httpVersion": "http/2.0",
                     "headers": [{"name": ":authority", "value": "api.example.test"},
                                 {"name": ":method", "value": "GET"}, {"name": "accept", "value": "*/*"},
                                 {"name": "authorization", "value": "Bearer " + fake_key("chrome")}],
                     "queryString": [{"name": "limit", "value": "1"}], "cookies": [], "headersSize": -1, "bodySize": 0},
         "response": {"status": 200, "statusText": "", "httpVersion": "http/2.0",
                      "headers": [{"name": "content-encoding", "value": "br"},
                                  {"name": "content-length", "value": "31"},
                                  {"name": "content-type", "value": "application/json"}],
                      "cookies": [], "content": {"size": len(body), "mimeType": "application/json", "compression": 9,
                                                 "text": body},
                      "redirectURL": "", "headersSize": -1, "bodySize": 31, "_transferSize": 120, "_error": None},
         "timings": {"blocked": 1.1, "dns": -1, "ssl": -1, "connect": -1, "send": 0.2, "wait": 60.5,
                     "receive": 23.4, "_blocked_queueing": 0.7}},
        {"_resourceType": "fetch", "cache": {}, "startedDateTime": iso, "time": 0,
         "request": {"method": "GET", "url": "https://ads.example.test/x", "httpVersion": "", "headers": [],
                     "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0},
         "response": {"status": 0, "statusText": "", "httpVersion": "", "headers": [], "cookies": [],
                      "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "", "headersSize": -1,
                      "bodySize": 0, "_error": "net::ERR_BLOCKED_BY_CLIENT"},
         "timings": {"blocked": -1, "dns": -1, "ssl": -1, "connect": -1, "send": 0, "wait": 0, "receive": 0}},
        {"_resourceType": "websocket", "cache": {}, "startedDateTime": iso, "time": 12.5,
         "request": {"method": "GET", "url": "wss://api.example.test/v1/realtime?model=m", "httpVersion": "HTTP/1.1",
                     "headers": [{"name": "Upgrade", "value": "websocket"}], "queryString": [], "cookies": [],
                     "headersSize": -1, "bodySize": 0},
         "response": {"status": 101, "statusText": "Switching Protocols", "httpVersion": "HTTP/1.1",
                      "headers": [{"name": "Upgrade", "value": "websocket"}, {"name": "x-turn", "value": "t1"}],
                      "cookies": [], "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
                      "headersSize": -1, "bodySize": 0},
         "timings": {"blocked": -1, "dns": -1, "ssl": -1, "connect": -1, "send": 0, "wait": 12.5, "receive": 0},
         "_webSocketMessages": [
             {"type": "receive", "time": t0 + 0.020, "opcode": 1, "data": '{"type":"session.created"}'},
             {"type": "send", "time": t0 + 0.100, "opcode": 1, "data": '{"type":"response.create"}'},
             {"type": "receive", "time": t0 + 0.180, "opcode": 2, "data": base64.b64encode(bytes(64)).decode()},
             {"type": "receive", "time": t0 + 0.300, "opcode": 1, "data": '{"type":"response.done"}'}]},
    ]}}


def test_chrome_har_with_websocket_messages_imports_and_replays(tmp_path):
    t0 = 1_790_000_000.0
    har = tmp_path / "chrome.har"
    har.write_text(json.dumps(_chrome_har(t0)))
    db = tmp_path / "chrome.db"
    r = run_cli("import", str(har), "--cassette", str(db))
    assert r.returncode == 0, r.stderr
    assert "skipped entry 2 https://ads.example.test/x: net::ERR_BLOCKED_BY_CLIENT" in r.stderr
    with Cassette.open(db) as c:
        http_it, ws_it = c.get(1), c.get(2)
    assert [k for k, _ in http_it.request.headers] == ["accept", "authorization"]  # no HTTP/2 pseudo-headers
    assert http_it.request.header("authorization") == "REDACTED"
    assert http_it.response.header("content-encoding") is None  # HAR holds the body decoded
    assert http_it.response.header("content-length") == str(len(http_it.body))
    assert http_it.ttfb == pytest.approx(0.0605) and [c.offset for c in http_it.chunks] == [pytest.approx(0.0839)]
    assert ws_it.kind.value == "websocket" and ws_it.request.target == "/v1/realtime?model=m"
    assert ws_it.ttfb == pytest.approx(0.0125)
    assert [(f.direction.value, f.is_text, round(f.offset, 3)) for f in ws_it.frames] == [
        ("server", True, 0.02), ("client", True, 0.1), ("server", False, 0.18), ("server", True, 0.3)]
    assert ws_it.frames[2].payload == bytes(64)

    with proxy.replaying(db) as p:  # recorded pace
        assert httpx.get(p.base_url + "/models?limit=1").json() == {"data": [{"id": "m-1"}]}
        with websockets.sync.client.connect(p.ws_base_url + "/realtime?model=m") as ws:
            assert json.loads(ws.recv()) == {"type": "session.created"}
            t = time.monotonic()
            ws.send('{"type":"response.create"}')
            assert ws.recv() == bytes(64)
            assert json.loads(ws.recv()) == {"type": "response.done"}
            assert time.monotonic() - t >= 0.18  # 80 ms and 200 ms after the client frame, as recorded
    assert p.errors == []


def _check_har_12(doc: dict) -> None:
    """The fields HAR 1.2 requires (and HAR viewers read), with their types."""
    log = doc["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] and log["creator"]["version"]
    for e in log["entries"]:
        assert time.strptime(e["startedDateTime"][:19], "%Y-%m-%dT%H:%M:%S") and e["startedDateTime"].endswith("Z")
        assert isinstance(e["time"], (int, float)) and e["time"] >= 0 and isinstance(e["cache"], dict)
        req, resp, t = e["request"], e["response"], e["timings"]
        for key in ("method", "url", "httpVersion"):
            assert isinstance(req[key], str) and req[key]
        for obj in (req, resp):
            assert isinstance(obj["cookies"], list) and isinstance(obj["headersSize"], int)
            assert all(set(h) == {"name", "value"} for h in obj["headers"]) and isinstance(obj["bodySize"], int)
        assert isinstance(req["queryString"], list)
        assert isinstance(resp["status"], int) and isinstance(resp["statusText"], str) and resp["httpVersion"]
        assert isinstance(resp["content"]["size"], int) and isinstance(resp["content"]["mimeType"], str)
        assert isinstance(resp["redirectURL"], str)
        assert all(isinstance(t[k], (int, float)) and t[k] >= 0 for k in ("send", "wait", "receive"))


def test_export_har_is_read_by_mitmproxy_and_imports_back_to_the_same_cassette(tmp_path):
    src = tmp_path / "src.db"
    body = json.dumps(PACKED).encode()
    packed = gzip.compress(body)
    with Cassette.open(EXAMPLE) as c:
        its = list(c.interactions())
    origin = f"http://{its[0].request.host}:{its[0].request.port}"  # where example.db was recorded
    with Cassette.create(src, upstream=origin) as c:
        for it in its:
            c.append(it)
        from proxy.model import Chunk, End, Interaction, Kind, Request, Response

        c.append(Interaction(Kind.HTTP, Request("GET", "/gz", "", [("host", origin[7:])], scheme="http",
                                                host=its[0].request.host, port=its[0].request.port),
                             Response(200, "OK", [("content-type", "application/json"), ("content-encoding", "gzip")]),
                             [Chunk(0.01, packed[:20]), Chunk(0.03, packed[20:])], ttfb=0.005, duration=0.03,
                             end=End.UPSTREAM_CUT, end_detail="upstream cut after 99 bytes", started_at=its[-1].started_at + 1))
    har = tmp_path / "out.har"
    r = run_cli("export", str(src), "--har", str(har))
    assert r.returncode == 0 and "6 entries" in r.stdout, r.stderr
    doc = json.loads(har.read_text())
    _check_har_12(doc)
    ws = doc["log"]["entries"][4]
    assert ws["request"]["url"].startswith("ws://127.0.0.1:") and ws["_resourceType"] == "websocket"
    assert [m["type"] for m in ws["_webSocketMessages"]][:2] == ["send", "receive"]
    gz = doc["log"]["entries"][5]
    assert json.loads(gz["response"]["content"]["text"]) == PACKED  # decoded, as HAR wants
    assert gz["response"]["content"]["compression"] == len(body) - len(packed)

    pytest.importorskip("mitmproxy")
    from mitmproxy.io import har as mitm_har

    flows = [mitm_har.request_to_flow(e) for e in doc["log"]["entries"]]
    assert [f.request.url for f in flows][:3] == [origin + "/v1/responses", origin + "/v1/chat/completions",
                                                  origin + "/v1/models"]
    assert [f.response.status_code for f in flows] == [200, 200, 200, 429, 101, 200]
    assert flows[0].response.get_text() == its[0].body.decode()
    assert json.loads(flows[5].response.content) == PACKED  # re-encoded by mitmproxy, decoded again

    back = tmp_path / "back.db"
    r = run_cli("import", str(har), "--cassette", str(back))
    assert r.returncode == 0, r.stderr
    one, two = run_cli("inspect", "--text", str(src)).stdout, run_cli("inspect", "--text", str(back)).stdout
    assert one == two  # every header, byte, chunk boundary, offset, end
    with Cassette.open(src) as a, Cassette.open(back) as b:
        for x, y in zip(a.interactions(), b.interactions()):
            assert (x.started_at, x.ttfb, x.duration, x.end, x.close) == (y.started_at, y.ttfb, y.duration, y.end, y.close)
            assert [(c.offset, c.data) for c in x.chunks] == [(c.offset, c.data) for c in y.chunks]
            assert [(f.direction, f.is_text, f.payload) for f in x.frames] == [
                (f.direction, f.is_text, f.payload) for f in y.frames]
            assert [f.offset for f in x.frames] == pytest.approx([f.offset for f in y.frames], abs=1e-5)


def test_export_import_round_trip_ipv6_no_timings_and_early_clock(tmp_path):
    """What the example cassette does not hold: an upstream on IPv6 (its URL needs brackets),
    an interaction cut before any response (no time to headers, no duration), and frames of
    a session whose start time is early on the clock (an import's, not an epoch)."""
    from proxy.model import Chunk, Direction, End, Frame, Interaction, Kind, Request, Response

    src = tmp_path / "src.db"
    at = {"scheme": "http", "host": "::1", "port": 8443}
    with Cassette.create(src, upstream="http://[::1]:8443") as c:
        c.append(Interaction(Kind.HTTP, Request("POST", "/v1/x", "a=1", [("content-type", "application/json")],
                                                b'{"a":1}', **at),
                             Response(200, "OK", [("content-type", "text/event-stream")]),
                             [Chunk(0.01, b"data: 1\n\n"), Chunk(0.02, b"data: 2\n\n")], ttfb=0.005, duration=0.03,
                             end=End.COMPLETE, started_at=1000.0))
        c.append(Interaction(Kind.HTTP, Request("GET", "/v1/cut", **at), None, end=End.INCOMPLETE, started_at=1000.5))
        c.append(Interaction(Kind.WEBSOCKET, Request("GET", "/ws", "", [("upgrade", "websocket")], **at),
                             Response(101, "Switching Protocols", []),
                             frames=[Frame(Direction.CLIENT, True, 0.01, b'{"type":"x"}'),
                                     Frame(Direction.SERVER, False, 0.02, b"\x00\xff")],
                             ttfb=0.003, duration=0.05, end=End.COMPLETE, started_at=1000.8))
    har = tmp_path / "out.har"
    assert run_cli("export", str(src), "--har", str(har)).returncode == 0
    doc = json.loads(har.read_text())
    _check_har_12(doc)
    assert [e["request"]["url"] for e in doc["log"]["entries"]] == [
        "http://[::1]:8443/v1/x?a=1", "http://[::1]:8443/v1/cut", "ws://[::1]:8443/ws"]
    back = tmp_path / "back.db"
    r = run_cli("import", str(har), "--cassette", str(back))
    assert r.returncode == 0, r.stderr
    assert run_cli("inspect", "--text", str(src)).stdout == run_cli("inspect", "--text", str(back)).stdout
    with Cassette.open(src) as a, Cassette.open(back) as b:
        assert dict(b.meta)["upstream"] == "http://[::1]:8443"
        for x, y in zip(a.interactions(), b.interactions()):
            assert (x.request.host, x.request.port, x.ttfb, x.duration) == (y.request.host, y.request.port, y.ttfb,
                                                                            y.duration)
            assert [f.offset for f in x.frames] == pytest.approx([f.offset for f in y.frames], abs=1e-5)


def test_imports_are_redacted_like_recordings(tmp_path):
    """A key in a header, the query, a request body, a gzip response body and a WebSocket
    frame: none reaches the cassette (`proxy audit` reads it fully decoded), and the
    re-encoded body still replays with a true content-length."""
    key = fake_key("import")
    body = json.dumps({"echo": key, "ok": True}).encode()
    packed = gzip.compress(body)
    (tmp_path / "k.yaml").write_text(
        "interactions:\n- request:\n"
        f"    body: '{{\"input\": \"{key}\"}}'\n"
        f"    headers:\n      x-api-key: ['{key}']\n      content-type: [application/json]\n"
        f"    method: POST\n    uri: https://api.example.test/v1/echo?key={key}\n"
        "  response:\n    status: {code: 200, message: OK}\n"
        f"    headers:\n      content-encoding: [gzip]\n      content-length: ['{len(packed)}']\n"
        "      content-type: [application/json]\n"
        f"    body:\n      string: !!binary |\n        {base64.b64encode(packed).decode()}\nversion: 1\n")
    har = _chrome_har(1_790_000_000.0)
    har["log"]["entries"][2]["_webSocketMessages"][1]["data"] = json.dumps({"type": "auth", "token": key})
    (tmp_path / "k.har").write_text(json.dumps(har))
    db = tmp_path / "k.db"
    r = run_cli("import", str(tmp_path / "k.yaml"), str(tmp_path / "k.har"), "--cassette", str(db))
    assert r.returncode == 0 and "imported 3 interaction(s)" in r.stdout, r.stderr
    audit = run_cli("audit", str(db))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    with Cassette.open(db) as c:
        echo = c.get(1)
        assert echo.request.header("x-api-key") == "REDACTED" and key not in echo.request.target
    with proxy.replaying(db, speed=0) as p:
        r = httpx.post(p.base_url + "/echo?key=REDACTED", json={"input": "x"})
        assert r.json()["ok"] is True and key not in r.text  # gzip re-encoded, its content-length true


def test_har_text_bodies_come_back_as_the_bytes_sent(origin, tmp_path):
    """HAR holds text bodies as text decoded by a charset: mitmproxy's hardump decodes a
    body whose type names none (text/event-stream, text/plain) as latin-1, and a declared
    charset as declared. The import encodes each back the same way, so a model's non-ASCII
    SSE output and a latin-1 page replay as the bytes that were sent, not re-encoded."""
    har = tmp_path / "texts.har"
    with _mitmdump_har(origin, har, "/json-utf8") as base:
        live = {path: httpx.get(base + path).content for path in TEXTS}
    assert live == {path: body for path, (_, body) in TEXTS.items()}
    db = tmp_path / "texts.db"
    r = run_cli("import", str(har), "--cassette", str(db))
    assert r.returncode == 0, r.stderr
    with Cassette.open(db) as c:
        got = {it.request.path: it.body for it in c.interactions()}
    assert {path: got[path] for path in TEXTS} == live
    # Our own export (text as UTF-8) still comes back byte for byte, the latin-1 page too.
    out = tmp_path / "again.har"
    assert run_cli("export", str(db), "--har", str(out)).returncode == 0
    again = tmp_path / "again.db"
    assert run_cli("import", str(out), "--cassette", str(again)).returncode == 0
    with Cassette.open(again) as c:
        assert {it.request.path: it.body for it in c.interactions() if it.request.path in TEXTS} == live


def test_a_forward_mode_cassette_comes_back_from_har_in_forward_mode(tmp_path):
    """Forward replay matches on origin only for a cassette in forward mode: the round trip
    keeps the mode (and the upstream line of --text), for a cassette of two hosts."""
    from proxy.model import Chunk, End, Interaction, Kind, Request, Response

    src = tmp_path / "fwd.db"
    with Cassette.create(src, upstream="(forward proxy)", mode="forward") as c:
        for host, scheme, port in (("api.test.local", "https", 443), ("tools.test.local", "http", 80)):
            c.append(Interaction(Kind.HTTP, Request("GET", "/v1/models", "", [("accept", "*/*")], scheme=scheme,
                                                    host=host, port=port),
                                 Response(200, "OK", [("content-type", "application/json")]), [Chunk(0.01, b"{}")],
                                 ttfb=0.005, duration=0.02, end=End.COMPLETE, started_at=1000.0))
    har, back = tmp_path / "f.har", tmp_path / "again.db"
    assert run_cli("export", str(src), "--har", str(har)).returncode == 0
    _check_har_12(json.loads(har.read_text()))
    r = run_cli("import", str(har), "--cassette", str(back))
    assert r.returncode == 0, r.stderr
    assert run_cli("inspect", "--text", str(src)).stdout == run_cli("inspect", "--text", str(back)).stdout
    with Cassette.open(back) as b:
        assert (b.meta["mode"], b.meta["upstream"]) == ("forward", "(forward proxy)")

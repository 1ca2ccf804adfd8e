"""Secrets never reach a cassette, for every provider: the openai, anthropic and
google-genai SDKs and raw HTTP / WebSocket clients record through `proxy record` with
keys in every place a key travels (headers, path, query, WebSocket URL and subprotocol,
request bodies in every content encoding, response bodies in every content encoding and
split across chunks, frames, base64 inside frames, the recorder's own environment); the
clients get exactly what the upstream sent; `proxy audit` finds nothing in the cassette;
the cassette replays; and `proxy audit` does find a key planted in a crafted cassette."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from proxy.encoding import DecodeError, decode_body, encode_body
from proxy.headers import read_body, scope_header
from proxy.redaction import REDACTED
from proxy.store import Cassette
from proxy.testing.simulator import Simulator
from proxy.uvicorn_server import UvicornServer

from .conftest import proxy_proc, replayer, run_cli
from .fake_secrets import assert_clean, fake
from .test_audit import _write, planted

OPENAI, ANTHROPIC, GOOGLE = fake("openai-project-key"), fake("anthropic-key"), fake("google-api-key")
EPHEMERAL, JWT, AWS_ID = fake("openai-ephemeral-key"), fake("jwt"), fake("aws-access-key-id")
SESSION, GITHUB = fake("aws-session-token"), fake("github-token")
ENV_VALUE = "Zq7" + "RecorderEnv0Secret9"  # only the recorder's environment says it is a secret
ALL = [OPENAI, ANTHROPIC, GOOGLE, EPHEMERAL, JWT, AWS_ID, SESSION, GITHUB, ENV_VALUE]


async def _answer(send, chunks: list[bytes], headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for c in chunks:
        await send({"type": "http.response.body", "body": c, "more_body": True})
        await asyncio.sleep(0.005)  # separate chunks on the wire
    await send({"type": "http.response.body", "body": b""})


def _halves(data: bytes, key: str) -> list[bytes]:
    """Cut ``data`` in the middle of ``key`` (a key split across two chunks)."""
    i = data.index(key.encode()) + len(key) // 2
    return [data[:i], data[i:]]


class Upstream:
    """Anthropic Messages, Gemini generateContent / streamGenerateContent, an echo endpoint
    answering in any content encoding, a WebSocket echo (Gemini Live, realtime), and the
    simulator's OpenAI endpoints for the rest. Every reply repeats the keys it was sent."""

    def __init__(self) -> None:
        self.sim = Simulator()
        self.seen: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            return await self.websocket(scope, receive, send)
        path = scope["path"]
        if path == "/v1/messages":
            return await self.anthropic(scope, receive, send)
        if ":generateContent" in path or ":streamGenerateContent" in path:
            return await self.gemini(scope, receive, send)
        if path.startswith("/echo"):
            return await self.echo(scope, receive, send)
        return await self.sim(scope, receive, send)

    async def anthropic(self, scope, receive, send) -> None:
        doc = json.loads(await read_body(receive))
        key = scope_header(scope, "x-api-key") or scope_header(scope, "authorization")  # the SDK sends both
        text = f"you said {doc['messages'][-1]['content']} with {key}"
        if not doc.get("stream"):
            body = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": doc["model"],
                               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                               "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 5}}).encode()
            return await _answer(send, [body], [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())])
        events = [
            ("message_start", {"type": "message_start", "message": {
                "id": "msg_2", "type": "message", "role": "assistant", "model": doc["model"], "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 0}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": 5}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        stream = b"".join(f"event: {e}\ndata: {json.dumps(d)}\n\n".encode() for e, d in events)
        await _answer(send, _halves(stream, ANTHROPIC), [(b"content-type", b"text/event-stream")])

    async def gemini(self, scope, receive, send) -> None:
        doc = json.loads(await read_body(receive))
        said = doc["contents"][-1]["parts"][0]["text"]
        reply = {"candidates": [{"content": {"role": "model", "parts": [
            {"text": f"you said {said} with {scope_header(scope, 'x-goog-api-key')}"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5, "totalTokenCount": 8}}
        if ":streamGenerateContent" in scope["path"]:
            stream = f"data: {json.dumps(reply)}\r\n\r\n".encode()
            return await _answer(send, _halves(stream, GOOGLE), [(b"content-type", b"text/event-stream")])
        body = json.dumps(reply).encode()
        await _answer(send, [body], [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(body)).encode())])

    async def echo(self, scope, receive, send) -> None:
        """Echo the decoded request body, the path and the secret headers, in the content
        encoding the client asks for with x-test-encoding, split in the middle of a key."""
        raw = await read_body(receive)
        try:
            body = decode_body(raw, scope_header(scope, "content-encoding"))
        except DecodeError:
            body = raw
        self.seen.append(body)
        doc = {"path": scope["path"], "query": scope["query_string"].decode(), "body": body.decode("latin-1"),
               "headers": {k: scope_header(scope, k) for k in ("authorization", "x-amz-security-token",
                                                               "ocp-apim-subscription-key", "cookie")},
               "client_secret": {"value": EPHEMERAL}}
        plain = json.dumps(doc).encode()
        enc = scope_header(scope, "x-test-encoding")
        headers = [(b"content-type", b"application/json"), (b"set-cookie", f"session={GITHUB}".encode())]
        if enc:
            encoded = encode_body(plain, enc)
            half = len(encoded) // 2
            chunks = [encoded[:half], encoded[half:]]
            headers.append((b"content-encoding", enc.encode()))
        else:
            chunks = _halves(plain, EPHEMERAL)
        if scope_header(scope, "x-test-length"):
            headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
        await _answer(send, chunks, headers)

    async def websocket(self, scope, receive, send) -> None:
        await receive()  # websocket.connect
        offered = [p for p in scope.get("subprotocols", [])]
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        await send({"type": "websocket.send", "text": json.dumps({"setupComplete": {}, "path": scope["path"]})})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") == "bye":
                await send({"type": "websocket.close", "code": 1000, "reason": "done"})
                return
            if msg.get("text") is not None:
                await send({"type": "websocket.send", "text": json.dumps({"echo": msg["text"]})})
            else:
                await send({"type": "websocket.send", "bytes": b"echo:" + msg["bytes"]})


@pytest.fixture
def upstream_all():
    server = UvicornServer(Upstream(), quiet=True).start_in_thread()
    yield server
    server.stop_thread()


def _drive(url: str) -> dict:
    """Every client, a key in every place. Returns what the clients saw."""
    seen = {}
    oa = openai.OpenAI(base_url=url + "/v1", api_key=OPENAI, max_retries=0)
    r = oa.responses.create(model="sim-1", input=f"my keys are {OPENAI} and {ENV_VALUE}")
    seen["openai"] = r.output_text
    with oa.responses.create(model="sim-1", input=f"stream {JWT}", stream=True) as stream:
        seen["openai-stream"] = [e.type for e in stream][-1]

    an = anthropic.Anthropic(base_url=url, api_key=ANTHROPIC, max_retries=0, default_headers={"x-api-key": ANTHROPIC})
    msg = an.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": f"hi {AWS_ID}"}])
    seen["anthropic"] = msg.content[0].text
    with an.messages.stream(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "stream"}]) as s:
        seen["anthropic-stream"] = s.get_final_text()

    gm = genai.Client(api_key=GOOGLE, http_options=gtypes.HttpOptions(base_url=url))
    seen["gemini"] = gm.models.generate_content(model="gemini-x", contents=f"hello {GITHUB}").text
    seen["gemini-stream"] = "".join(c.text for c in gm.models.generate_content_stream(model="gemini-x",
                                                                                      contents="stream"))

    with httpx.Client(base_url=url, timeout=10) as http:
        heads = {"authorization": f"AWS4-HMAC-SHA256 Credential={AWS_ID}/x, Signature=abc",
                 "x-amz-security-token": SESSION, "ocp-apim-subscription-key": "0123456789abcdef0123456789abcdef",
                 "cookie": f"s={GITHUB}"}
        body = json.dumps({"keys": [OPENAI, GOOGLE], "b64": base64.b64encode(ANTHROPIC.encode()).decode(),
                           "env": ENV_VALUE}).encode()
        for req_enc in (None, "gzip", "x-gzip", "br", "zstd", "deflate", "gzip, gzip", "identity, gzip"):
            for resp_enc in (None, "gzip", "br", "zstd", "deflate"):
                extra = {"content-encoding": req_enc} if req_enc else {}
                extra |= {"x-test-encoding": resp_enc} if resp_enc else {}
                r = http.post(f"/echo/{GOOGLE}/files", params={"key": GOOGLE, "q": "x"}, headers=heads | extra
                              | {"x-test-length": "1"}, content=encode_body(body, req_enc) if req_enc else body)
                assert r.status_code == 200 and json.loads(r.content)["body"] == body.decode()
        r = http.post("/echo/bad", headers={"content-encoding": "gzip"}, content=b"not gzip " + OPENAI.encode() + b" ")
        seen["undecodable"] = r.status_code

    ws_url = url.replace("http", "ws")
    live = f"{ws_url}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent?key={GOOGLE}"
    with connect(live) as ws:
        assert "setupComplete" in ws.recv(timeout=5)
        ws.send(json.dumps({"setup": {"model": "gemini-live", "token": JWT}}))
        seen["live"] = json.loads(ws.recv(timeout=5))["echo"]
        ws.send(json.dumps({"audio": base64.b64encode(f"spoken {OPENAI}".encode()).decode()}))
        ws.recv(timeout=5)
        ws.send(OPENAI.encode()[:20])  # a key split across two binary messages
        ws.recv(timeout=5)
        ws.send(OPENAI.encode()[20:] + b"\x00")
        ws.recv(timeout=5)
        ws.send("bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    with connect(f"{ws_url}/v1/realtime?model=gpt-realtime",
                 subprotocols=["realtime", f"openai-insecure-api-key.{OPENAI}"]) as ws:
        ws.recv(timeout=5)
        ws.send(json.dumps({"type": "session.update", "client_secret": {"value": EPHEMERAL}}))
        seen["realtime"] = json.loads(ws.recv(timeout=5))["echo"]
        ws.send("bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    return seen


def test_every_provider_records_no_secret_and_replays(upstream_all, tmp_path, monkeypatch):
    cassette = tmp_path / "providers.db"
    monkeypatch.setenv("UPSTREAM_SERVICE_TOKEN", ENV_VALUE)  # the recorder's own secret
    with proxy_proc("record", "--upstream", upstream_all.url, "--cassette", str(cassette),
                    "--listen", "127.0.0.1:0", "-v") as rec:
        seen = _drive(rec.url)
        assert_clean(cassette, secrets=ALL)  # while the recorder writes (the -wal is live)
    # the clients got what the upstream sent, keys included: only the cassette is scrubbed
    assert OPENAI in seen["openai"] or seen["openai"]
    assert ANTHROPIC in seen["anthropic"] and AWS_ID in seen["anthropic"]
    assert ANTHROPIC in seen["anthropic-stream"]
    assert GOOGLE in seen["gemini"] and GITHUB in seen["gemini"] and GOOGLE in seen["gemini-stream"]
    assert JWT in seen["live"] and EPHEMERAL in seen["realtime"]
    assert seen["undecodable"] == 200
    for text in (rec.out, rec.err):
        assert not any(s in text for s in ALL), text

    r = run_cli("audit", str(cassette))
    assert (r.returncode, r.stdout) == (0, ""), r.stdout + r.stderr
    assert_clean(cassette, secrets=ALL)

    with Cassette.open(cassette) as c:
        its = list(c.interactions())
    undecodable = [it for it in its if it.request.path == "/echo/bad"][0]
    assert undecodable.request.body.startswith(b"[proxy: body not stored")
    assert "request body stored as a marker" in rec.err
    live = [it for it in its if "BidiGenerateContent" in it.request.path][0]
    assert f"key={REDACTED}" in live.request.query
    gz = [it for it in its if it.response and it.response.header("content-encoding") == "br"][0]
    assert int(gz.response.header("content-length")) == len(gz.body)  # re-encoded, length true
    assert b'"value": "REDACTED' in decode_body(gz.body, "br")

    with replayer(cassette, "--speed", "0") as rp:
        an = anthropic.Anthropic(base_url=rp.url, api_key="x", max_retries=0)
        text = an.messages.create(model="claude-x", max_tokens=10,
                                  messages=[{"role": "user", "content": "again"}]).content[0].text
        assert ANTHROPIC not in text and "REDACTED" in text
        gm = genai.Client(api_key="y", http_options=gtypes.HttpOptions(base_url=rp.url))
        assert "REDACTED" in gm.models.generate_content(model="gemini-x", contents="again").text
        with httpx.Client(base_url=rp.url) as http:
            for _ in range(3):  # compressed replies with a true content-length, decoded by httpx
                r = http.post(f"/echo/{GOOGLE}/files", params={"key": GOOGLE, "q": "x"})
                assert r.status_code == 200 and json.loads(r.content)["client_secret"]["value"].startswith("REDACTED")
            # a miss names the request and the nearest recording: redacted as well
            r = http.post(f"/echo/{OPENAI}/nowhere", params={"key": GOOGLE, "other": JWT}, json={"k": ANTHROPIC})
            assert r.status_code == 404 and "REDACTED" in r.text
            assert not any(s in r.text for s in ALL), r.text
    assert "miss" in rp.err and not any(s in rp.out + rp.err for s in ALL)


def test_audit_cli_finds_a_planted_key_in_each_place(tmp_path):
    cases = planted()
    its = list({id(it): it for it, _, _ in cases}.values())
    path = _write(tmp_path / "planted.db", its)
    env = dict(os.environ, UPSTREAM_API_KEY="Zq7" + "AuditEnv0Value9")
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "audit", str(path), str(tmp_path / "none.db")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2  # one file was no cassette: nothing is proved
    lines = r.stdout.splitlines()
    for it, location, kind in cases:
        assert f"{path} #{its.index(it) + 1} {location} {kind} " in r.stdout, (location, kind)
    assert len(lines) >= len(cases) and "none.db: no such cassette file" in r.stderr
    assert not any(s in r.stdout for s in ALL)
    r = run_cli("audit", str(path))
    assert r.returncode == 1 and "finding(s)" in r.stderr

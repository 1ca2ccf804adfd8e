"""WebSocket sessions end to end: record through proxy record, replay with the upstream gone."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from proxy.model import Direction, Kind
from proxy.store import Cassette

from .conftest import API_KEY, replayer
from .fake_secrets import assert_clean

AUTH = {"authorization": f"Bearer {API_KEY}"}


def ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://") + path


def until_completed(ws, done=("response.completed", "response.done")) -> list[dict]:
    out = []
    while True:
        m = json.loads(ws.recv(timeout=10))
        out.append(m)
        if m["type"] in done:
            return out


class Agent:
    """Behaves like a coding agent: preconnect, warm-up, tool call, follow-up; fresh ids every run."""

    def __init__(self, base: str, accept_ms: int = 0):
        self.base = base
        self.headers = {**AUTH, "openai-beta": "responses_websockets=2026-02-06", "session_id": str(uuid.uuid4()),
                        "x-codex-turn-metadata": json.dumps({"turn_id": str(uuid.uuid4())}),
                        "x-sim-accept-ms": str(accept_ms), "x-sim-gap-ms": "15"}
        self.seen: dict = {"frames": [], "accept_s": [], "turn_state": []}

    def frame(self, **kw) -> str:
        return json.dumps({**kw, "client_metadata": {"request_id": str(uuid.uuid4()), "ts": time.time()}})

    def connect(self):
        t0 = time.monotonic()
        ws = connect(ws_url(self.base, "/v1/responses"), additional_headers=self.headers, open_timeout=10)
        self.seen["accept_s"].append(time.monotonic() - t0)
        self.seen["turn_state"].append(ws.response.headers.get("x-codex-turn-state"))
        return ws

    def run(self) -> dict:
        pre = self.connect()  # preconnect at start-up, never used
        pre.close()
        with self.connect() as ws:
            ws.send(self.frame(type="response.create", model="sim-1", generate=False, input=[]))
            warm = until_completed(ws)
            ws.send(self.frame(type="response.create", model="sim-1", input="what is the weather in Paris?",
                               previous_response_id=warm[-1]["response"]["id"]))
            tool = until_completed(ws)
            call = tool[-1]["response"]["output"][0]
            assert call["type"] == "function_call"
            ws.send(self.frame(type="response.create", model="sim-1", previous_response_id=tool[-1]["response"]["id"],
                               input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]))
            answer = until_completed(ws)
            self.seen["frames"] = [m["type"] for m in warm + tool + answer]
            self.seen["ids"] = [m["response"]["id"] for m in (warm[-1], tool[-1], answer[-1])]
            self.seen["prev"] = answer[-1]["response"]["previous_response_id"]
        return self.seen


def test_coding_agent_session_replays(upstream, recorder):
    rec = Agent(recorder.url, accept_ms=300).run()
    assert rec["prev"] == rec["ids"][1]  # chained by previous_response_id
    assert min(rec["accept_s"]) >= 0.3
    recorder.stop()
    upstream.stop_thread()
    with Cassette.open(recorder.cassette) as c:
        its = list(c.interactions())
    assert [it.kind for it in its] == [Kind.WEBSOCKET, Kind.WEBSOCKET]
    pre, main = its
    assert pre.frames == [] and pre.close.by is Direction.CLIENT  # the unused preconnect is kept
    assert main.request.header("authorization") == "REDACTED"
    assert main.request.header("openai-beta") == "responses_websockets=2026-02-06"
    assert 0.29 <= main.ttfb < 0.6
    assert [f.direction for f in main.frames].count(Direction.CLIENT) == 3
    assert_clean(recorder.cassette, secrets=[API_KEY])

    with replayer(recorder.cassette) as rp:
        rep = Agent(rp.url).run()  # new session ids, new request ids and timestamps
    assert rep["frames"] == rec["frames"] and rep["ids"] == rec["ids"] and rep["prev"] == rec["prev"]
    assert rep["turn_state"] == rec["turn_state"]  # sticky header on the 101
    for a in rep["accept_s"]:
        assert 0.28 <= a <= 0.45, rep["accept_s"]  # the delayed accept, reproduced


def test_openai_sdk_responses_connect_two_turns(upstream, recorder):
    def run(base: str) -> list:
        client = openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0)
        out = []
        with client.responses.connect() as conn:
            prev = None
            for prompt in ("first", "second"):
                kw = {"previous_response_id": prev} if prev else {}
                conn.response.create(model="sim-1", input=prompt, **kw)
                for ev in conn:
                    out.append((ev.type, getattr(ev, "delta", None)))
                    if ev.type == "response.completed":
                        prev = ev.response.id
                        out.append(("prev", ev.response.previous_response_id))
                        break
        return out

    recorded = run(recorder.url)
    assert [x for x in recorded if x[0] == "prev"][1][1] is not None
    recorder.stop()
    upstream.stop_thread()
    with replayer(recorder.cassette, "--speed", "0") as rp:
        assert run(rp.url) == recorded


def test_refused_upgrade_then_http_fallback_replays(upstream, recorder):
    def run(base: str):
        with pytest.raises(InvalidStatus) as e:
            connect(ws_url(base, "/v1/responses"), additional_headers={**AUTH, "x-sim-refuse-ws": "1"})
        refusal = (e.value.response.status_code, json.loads(e.value.response.body)["error"]["code"])
        r = httpx.post(base + "/v1/responses", json={"model": "sim-1", "input": "fallback", "stream": True}, headers=AUTH)
        return refusal, r.status_code, r.content

    recorded = run(recorder.url)
    assert recorded[0] == (426, "websocket_not_enabled") and b"response.completed" in recorded[2]
    recorder.stop()
    upstream.stop_thread()
    with replayer(recorder.cassette) as rp:
        assert run(rp.url) == recorded


def test_server_close_then_reconnect(upstream, recorder):
    def run(base: str):
        hdrs = {**AUTH, "x-sim-close-after": "1"}
        seen = []
        for _ in range(2):  # the server closes after one turn; the client reconnects
            with connect(ws_url(base, "/v1/responses"), additional_headers=hdrs) as ws:
                ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "hi"}))
                seen.append([m["type"] for m in until_completed(ws)][-1])
                with pytest.raises(ConnectionClosed) as e:
                    ws.recv(timeout=5)
                seen.append((e.value.rcvd.code, e.value.rcvd.reason))
        return seen

    recorded = run(recorder.url)
    assert recorded[1] == (1001, "simulated server close")
    recorder.stop()
    upstream.stop_thread()
    with Cassette.open(recorder.cassette) as c:
        closes = [it.close for it in c.interactions()]
    assert [(x.code, x.by) for x in closes] == [(1001, Direction.SERVER)] * 2
    with replayer(recorder.cassette) as rp:
        assert run(rp.url) == recorded


def test_realtime_subprotocol_and_query(upstream, recorder):
    def run(base: str):
        with connect(ws_url(base, "/v1/realtime?model=sim-realtime"), subprotocols=["realtime"],
                     additional_headers=AUTH) as ws:
            first = json.loads(ws.recv(timeout=5))
            ws.send(json.dumps({"type": "session.update", "session": {"modalities": ["text"]}}))
            upd = json.loads(ws.recv(timeout=5))
            ws.send(json.dumps({"type": "response.create"}))
            msgs = until_completed(ws)
            return ws.subprotocol, first["session"]["model"], upd["type"], [m.get("delta") for m in msgs]

    recorded = run(recorder.url)
    assert recorded[0] == "realtime" and recorded[1] == "sim-realtime"
    recorder.stop()
    upstream.stop_thread()
    with replayer(recorder.cassette) as rp:
        assert run(rp.url) == recorded


def test_frame_timing_reproduced(upstream, recorder):
    def run(base: str) -> list[float]:
        hdrs = {**AUTH, "x-sim-gap-ms": "40", "x-sim-events": "6"}
        with connect(ws_url(base, "/v1/responses"), additional_headers=hdrs) as ws:
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "timing"}))
            t0 = time.monotonic()
            times = []
            while True:
                m = json.loads(ws.recv(timeout=5))
                times.append(time.monotonic() - t0)
                if m["type"] == "response.completed":
                    return times

    recorded = run(recorder.url)
    recorder.stop()
    with replayer(recorder.cassette) as rp:
        replayed = run(rp.url)
    assert len(replayed) == len(recorded) and recorded[-1] > 0.4
    for a, b in zip(recorded, replayed):
        assert abs(a - b) < 0.025, (recorded, replayed)


def test_mismatch_closes_with_4000_and_extra_connection_is_refused(upstream, recorder):
    with connect(ws_url(recorder.url, "/v1/responses"), additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "x"}))
        until_completed(ws)
    recorder.stop()
    with replayer(recorder.cassette) as rp:
        with connect(ws_url(rp.url, "/v1/responses")) as ws:
            ws.send(json.dumps({"type": "session.update"}))
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=5)
        assert e.value.rcvd.code == 4000
        assert "expected type 'response.create', got 'session.update'" in e.value.rcvd.reason
        with pytest.raises(InvalidStatus) as e2:
            connect(ws_url(rp.url, "/v1/responses"))
        assert e2.value.response.status_code == 404
        assert json.loads(e2.value.response.body)["error"]["code"] == "all_used"
        assert httpx.get(rp.url + "/v1/models").status_code == 404  # still serving, clear miss
    assert "websocket mismatch, closing with 4000" in rp.err

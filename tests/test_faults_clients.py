"""Faults layered on real recordings, against real clients: the openai and anthropic SDKs with
their own retries, httpx with a read timeout, the websockets client, a client falling back to HTTP.

One cassette is recorded through `proxy record` from the bundled simulator and a small
Anthropic-shaped test upstream; each test replays it in-process with faults.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import anthropic
import httpx
import openai
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from proxy.headers import read_body
from proxy.replay.faults import FaultConfig
from proxy.serve import ServeConfig, Session
from proxy.sse import event_ends
from proxy.store import Cassette
from proxy.testing import fake_key, simulator
from proxy.timing import Pacer
from proxy.uvicorn_server import UvicornServer

from .conftest import proxy_proc, run_cli

pytest_plugins = ["pytester"]
KEY = fake_key("faults")
AUTH = {"authorization": f"Bearer {KEY}"}
SIM = {"x-sim-gap-ms": "40", "x-sim-events": "6"}
RESPONSES, CHAT, MESSAGE, MESSAGE_STREAM, SESSION = 1, 2, 3, 4, 5  # recording numbers


# -- the recording -------------------------------------------------------------

def _anthropic_events(text: list[str]) -> list[tuple[str, dict]]:
    msg = {"id": "msg_sim1", "type": "message", "role": "assistant", "model": "claude-sim", "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}
    evs = [("message_start", {"type": "message_start", "message": msg}),
           ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
           ("ping", {"type": "ping"})]
    evs += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
            for t in text]
    evs += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": len(text)}}),
            ("message_stop", {"type": "message_stop"})]
    return evs


class Upstream:
    """The simulator, plus POST /v1/messages in Anthropic's shape (test code, not shipped)."""

    def __init__(self) -> None:
        self.sim = simulator.Simulator()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/messages":
            return await self.sim(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return
        doc = json.loads(body)
        text = ["Hello", " from", " the", " test", " upstream"]
        if not doc.get("stream"):
            out = json.dumps({"id": "msg_sim0", "type": "message", "role": "assistant", "model": doc["model"],
                              "content": [{"type": "text", "text": "".join(text)}], "stop_reason": "end_turn",
                              "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 5}}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        pacer = Pacer(1.0)
        for i, (name, data) in enumerate(_anthropic_events(text)):
            await pacer.until(0.03 * i)
            await send({"type": "http.response.body", "more_body": True,
                        "body": f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()})
        await send({"type": "http.response.body", "body": b""})


def _session_frames(base: str) -> list[str]:
    """A Responses-API WebSocket session: 100 ms delayed accept, a warm-up, one answered turn."""
    hdrs = {**AUTH, "x-sim-accept-ms": "100", "x-sim-gap-ms": "40", "x-sim-events": "3"}
    types = []
    with connect(base.replace("http", "ws", 1) + "/v1/responses", additional_headers=hdrs) as ws:
        for frame in ({"type": "response.create", "model": "sim-1", "generate": False},
                      {"type": "response.create", "model": "sim-1", "input": "hello over a socket"}):
            ws.send(json.dumps(frame))
            while True:
                types.append(json.loads(ws.recv(timeout=10))["type"])
                if types[-1] == "response.completed":
                    break
    return types


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The cassette, and what the clients saw while it was recorded."""
    cassette = tmp_path_factory.mktemp("faults") / "rec.db"
    server = UvicornServer(Upstream(), quiet=True).start_in_thread()
    seen = {}
    try:
        with proxy_proc("record", "--upstream", server.url, "--cassette", str(cassette), "--listen", "127.0.0.1:0") as rec:
            oa = openai.OpenAI(base_url=rec.url + "/v1", api_key=KEY, max_retries=0)
            with oa.responses.create(model="sim-1", input="Say hello", stream=True, extra_headers=SIM) as s:
                seen["responses"] = [(e.type, getattr(e, "delta", None)) for e in s]
            seen["chat"] = [c.choices[0].delta.content for c in oa.chat.completions.create(
                model="sim-1", messages=[{"role": "user", "content": "hi"}], stream=True, extra_headers=SIM)]
            an = anthropic.Anthropic(base_url=rec.url, api_key=KEY, max_retries=0)
            seen["message"] = an.messages.create(model="claude-sim", max_tokens=64,
                                                 messages=[{"role": "user", "content": "hi"}]).content[0].text
            with an.messages.stream(model="claude-sim", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
                seen["message_stream"] = list(s.text_stream)
            seen["session"] = _session_frames(rec.url)
            assert rec.stop() == 0, rec.err
    finally:
        server.stop_thread()
    with Cassette.open(cassette) as c:
        its = list(c.interactions())
    assert [(it.seq, it.request.path) for it in its] == [
        (1, "/v1/responses"), (2, "/v1/chat/completions"), (3, "/v1/messages"), (4, "/v1/messages"), (5, "/v1/responses")]
    seen["its"] = {it.seq: it for it in its}
    seen["path"] = cassette
    return seen


class Replay:
    """A replay server with faults, in this process; ``summary`` is set once it stops."""

    def __init__(self, session: Session, url: str):
        self.session, self.url, self.summary = session, url, None

    @property
    def ws(self) -> str:
        return self.url.replace("http", "ws", 1)


@contextmanager
def replaying(recorded, *faults: str, speed: float = 0.0, chaos: int | None = None, rate: float = 0.2):
    config = ServeConfig(recorded["path"], speed=speed, faults=FaultConfig.build(faults, chaos, rate))
    session = Session(config)
    rp = Replay(session, session.start_in_thread())
    try:
        yield rp
    finally:
        rp.summary = session.stop_thread()


def raw_stream(url: str, path: str, body: dict, timeout=None) -> tuple[list[tuple[float, bytes]], Exception | None, float]:
    """POST and read the body as the network delivers it: [(arrival s, bytes)], the error, time to headers."""
    chunks, error = [], None
    with httpx.Client(timeout=timeout or httpx.Timeout(10)) as c:
        t0 = time.perf_counter()
        with c.stream("POST", url + path, json=body, headers=AUTH) as r:
            ttfb = time.perf_counter() - t0
            try:
                for b in r.iter_raw():
                    chunks.append((time.perf_counter() - t0, b))
            except httpx.HTTPError as e:
                error = e
    return chunks, error, ttfb


STREAM = {"model": "sim-1", "input": "Say hello", "stream": True}


def _body(chunks) -> bytes:
    return b"".join(b for _, b in chunks)


# -- HTTP: an error status first, the recording on the retry ---------------------

def test_openai_sdk_retry_survives_429_then_gets_the_recording(recorded):
    with replaying(recorded, "status:429,retry_after=0.05@#1") as rp:
        client = openai.OpenAI(base_url=rp.url + "/v1", api_key=KEY, max_retries=2)
        raw = client.responses.with_raw_response.create(model="sim-1", input="Say hello", stream=True)
        assert raw.retries_taken == 1
        assert [(e.type, getattr(e, "delta", None)) for e in raw.parse()] == recorded["responses"]
    assert rp.summary.used == 1 and [a.line() for a in rp.summary.faults] == [
        "#1 POST /v1/responses <- status:429,retry_after=0.05s (from status:429,retry_after=0.05s@#1)"]
    assert "served 1 of 5 recording(s); 0 miss(es); 1 fault(s) injected" == rp.summary.line()


def test_a_client_that_gives_up_after_the_429_leaves_the_recording_unserved(recorded):
    with replaying(recorded, "status:429@#1") as rp:
        client = openai.OpenAI(base_url=rp.url + "/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:
            client.responses.create(model="sim-1", input="Say hello", stream=True)
        assert e.value.body["code"] == "rate_limit_exceeded" and e.value.body["type"] == "requests"
        headers = e.value.response.headers
        assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "1000"
        assert headers["x-proxy-fault"] == "status:429"
    assert rp.summary.used == 0 and len(rp.summary.faults) == 1  # answered by the fault: not served


def test_anthropic_sdk_retry_survives_529_overloaded(recorded):
    with replaying(recorded, "status:529,retry_after=0.05@/v1/messages") as rp:
        client = anthropic.Anthropic(base_url=rp.url, api_key=KEY, max_retries=2)
        raw = client.messages.with_raw_response.create(model="claude-sim", max_tokens=64,
                                                       messages=[{"role": "user", "content": "hi"}])
        assert raw.retries_taken == 1
        assert raw.parse().content[0].text == recorded["message"]
        no_retry = anthropic.Anthropic(base_url=rp.url, api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.OverloadedError) as e:  # #4, the streamed message, gets its own 529
            no_retry.messages.create(model="claude-sim", max_tokens=64, stream=True,
                                     messages=[{"role": "user", "content": "hi"}])
        assert e.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
        assert e.value.response.headers["request-id"].startswith("req_")
    assert [(a.seq, a.fault) for a in rp.summary.faults] == [(MESSAGE, "status:529,retry_after=0.05s"),
                                                             (MESSAGE_STREAM, "status:529,retry_after=0.05s")]
    assert rp.summary.used == 1


# -- HTTP: stalls, timeouts, pacing ----------------------------------------------

def test_httpx_read_timeout_sees_the_stall_and_its_retry_gets_the_recording(recorded):
    it = recorded["its"][RESPONSES]
    ends = event_ends(it.body)
    with replaying(recorded, "stall:1s,event=3@#1", speed=1) as rp:
        t0 = time.perf_counter()
        chunks, error, _ = raw_stream(rp.url, "/v1/responses", STREAM, httpx.Timeout(5, read=0.3))
        took = time.perf_counter() - t0
        assert isinstance(error, httpx.ReadTimeout)
        assert _body(chunks) == it.body[: ends[1]]  # events 1 and 2, then nothing
        assert took >= 0.3  # the stall outlasted the client's read timeout
        again, error2, _ = raw_stream(rp.url, "/v1/responses", STREAM)  # its retry
        assert error2 is None and _body(again) == it.body
    assert rp.summary.used == 1 and rp.summary.misses == []


def test_a_client_that_leaves_during_a_stall_before_a_cut_leaves_nothing_playing(recorded):
    """A stall with an ending fault (the recording goes back at once): the client's timeout
    ends the exchange, not the stall. Before, the player slept out the stall for no one and
    the stop counted it as an open connection it cut."""
    with replaying(recorded, "stall:5s,event=2@#1", "cut:event=4@#1", "drip:200@#2",
                   "sse-error:event=4@#2", speed=0) as rp:
        _, error, _ = raw_stream(rp.url, "/v1/responses", STREAM, httpx.Timeout(5, read=0.3))
        assert isinstance(error, httpx.ReadTimeout)
        chat = {"model": "sim-1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with httpx.Client() as c, c.stream("POST", rp.url + "/v1/chat/completions", json=chat, headers=AUTH) as r:
            next(r.iter_raw())  # a client that reads a little of the dripped stream and hangs up
        time.sleep(0.2)
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 0.4  # nothing left for the stop to wait out (GRACE is 0.5 s)
    assert rp.summary.cut == 0 and "cut by the stop" not in rp.summary.line()
    assert len(rp.summary.faults) == 4 and rp.summary.used == 0


def test_stall_and_time_to_headers_keep_the_recorded_gaps_around_them(recorded):
    """Timing of injected delays, at recorded pace and at --speed 0 (where they still happen)."""
    it = recorded["its"][RESPONSES]
    ends = event_ends(it.body)
    rec_at = {}  # recorded offset of the chunk that completes each event
    pos = 0
    for c in it.chunks:
        pos += len(c.data)
        rec_at[pos] = c.offset
    with replaying(recorded, "ttfb:0.4s@#1", "stall:0.5s,event=4@#1", speed=1) as rp:
        chunks, error, ttfb = raw_stream(rp.url, "/v1/responses", STREAM)
    assert error is None and _body(chunks) == it.body
    assert abs(ttfb - 0.4) < 0.03, ttfb
    got = {}
    pos = 0
    for t, b in chunks:
        pos += len(b)
        got[pos] = t
    # after the headers every event keeps its recorded gap; event 4 comes 0.5 s late, and so do the rest
    first = ends[0]
    for end in ends[1:]:
        want = rec_at[end] - rec_at[first] + (0.5 if end >= ends[3] else 0.0)
        assert abs((got[end] - got[first]) - want) < 0.03, (end, got[end] - got[first], want)
    with replaying(recorded, "stall:0.5s,event=4@#1", speed=0) as rp:
        chunks, error, _ = raw_stream(rp.url, "/v1/responses", STREAM)
    arrival = {}
    pos = 0
    for t, b in chunks:
        pos += len(b)
        arrival[pos] = t
    assert arrival[ends[2]] < 0.1 and 0.5 <= arrival[ends[3]] < 0.6, arrival


def test_drip_caps_the_byte_rate(recorded):
    it = recorded["its"][RESPONSES]
    with replaying(recorded, "drip:4000@#1") as rp:
        chunks, error, _ = raw_stream(rp.url, "/v1/responses", STREAM)
    assert error is None and _body(chunks) == it.body
    took = chunks[-1][0] - chunks[0][0]
    assert abs(took - len(it.body) / 4000) < 0.1, took
    assert len(chunks) > 3 * len(it.chunks)  # small pieces, not the recorded chunks
    assert rp.summary.used == 1  # delivered whole: served (a client that had left would have given it back)


def test_drip_holds_its_rate_after_a_stall(recorded):
    """The drip's schedule must not bank the stalled time: the bytes after a stall keep the
    rate instead of bursting out until the schedule catches up."""
    it = recorded["its"][RESPONSES]
    ends = event_ends(it.body)
    with replaying(recorded, "drip:4000@#1", "stall:1s,event=2@#1") as rp:
        chunks, error, _ = raw_stream(rp.url, "/v1/responses", STREAM)
    assert error is None and _body(chunks) == it.body
    pos, after = 0, []
    for t, b in chunks:
        if pos >= ends[0]:
            after.append(t)
        pos += len(b)
    rest = len(it.body) - ends[0]
    assert after[0] >= 1.0  # the stall
    assert after[-1] - after[0] >= 0.9 * rest / 4000, (after[-1] - after[0], rest / 4000)


def test_the_summary_names_the_faults_that_hit_nothing(recorded):
    """A fault aimed at a recording that does not exist (a typo in the path, #9 of 5, an HTTP
    fault on a session) tests nothing: the summary says so instead of a quiet "0 injected"."""
    with replaying(recorded, "status:429@#9", "stall:1s,event=2@/v1/response", "cut:event=1@#5",
                   f"status:500@#{CHAT}", "ws-refuse@/v1/realtime", f"status:429@#{RESPONSES}") as rp:
        raw_stream(rp.url, "/v1/responses", STREAM)
    s = rp.summary
    assert [a.fault for a in s.faults] == ["status:429"]
    assert s.not_injected == [
        "status:429@#9: the cassette has no HTTP recording it targets",
        "stall:1s,event=2@/v1/response: the cassette has no HTTP recording it targets",
        "cut:event=1@#5: the cassette has no HTTP recording it targets",
        "status:500@#2: no request reached a recording it targets, or it could not apply (the log says why)",
        "ws-refuse:426@/v1/realtime: no request reached a recording it targets, or it could not apply (the log says why)",
    ]
    assert "  fault never injected: status:429@#9: the cassette has no HTTP recording it targets" in s.lines()
    assert s.to_json()["faults_not_injected"] == s.not_injected


# -- HTTP: cuts and error events -------------------------------------------------

@pytest.mark.parametrize("how, error", [("reset", httpx.ReadError), ("eof", httpx.RemoteProtocolError), ("end", None)])
def test_cut_after_event_n_reset_eof_or_clean_end(recorded, how, error):
    it = recorded["its"][RESPONSES]
    ends = event_ends(it.body)
    with replaying(recorded, f"cut:event=3,how={how}@#1") as rp:
        chunks, err, _ = raw_stream(rp.url, "/v1/responses", STREAM)
        assert _body(chunks) == it.body[: ends[2]]
        assert type(err) is error if error else err is None, repr(err)
        if how == "reset":
            assert isinstance(err.__cause__ or err.__context__, ConnectionResetError) or "reset" in str(err).lower()
        again, err2, _ = raw_stream(rp.url, "/v1/responses", STREAM)  # the client's retry
        assert err2 is None and _body(again) == it.body
    assert rp.summary.used == 1


@pytest.mark.parametrize("how, error", [("reset", httpx.ReadError), ("eof", httpx.RemoteProtocolError)])
def test_connection_dropped_before_the_response_is_retried_by_the_openai_sdk(recorded, how, error):
    chat = {"model": "sim-1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with replaying(recorded, f"cut:headers,how={how},times=2@/v1/chat/completions") as rp:
        with pytest.raises(error):  # nothing of the response arrives
            httpx.post(rp.url + "/v1/chat/completions", json=chat, headers=AUTH)
        client = openai.OpenAI(base_url=rp.url + "/v1", api_key=KEY, max_retries=2)
        raw = client.chat.completions.with_raw_response.create(**chat)
        assert raw.retries_taken == 1
        assert [c.choices[0].delta.content for c in raw.parse()] == recorded["chat"]
    assert rp.summary.used == 1 and len(rp.summary.faults) == 2


def test_sse_error_event_in_each_providers_shape(recorded):
    faults = ("sse-error:event=2@#1", "sse-error:event=3@#2", "sse-error:event=4@#4")
    with replaying(recorded, *faults) as rp:
        client = openai.OpenAI(base_url=rp.url + "/v1", api_key=KEY, max_retries=0)
        with client.responses.create(model="sim-1", input="Say hello", stream=True) as s:
            events = list(s)
        assert [e.type for e in events] == [t for t, _ in recorded["responses"][:2]] + ["error"]
        assert events[-1].code == "server_error" and events[-1].sequence_number == 2
        chat = client.chat.completions.create(model="sim-1", messages=[{"role": "user", "content": "hi"}], stream=True)
        with pytest.raises(openai.APIError) as e:
            list(chat)
        assert e.value.body["type"] == "server_error"
        an = anthropic.Anthropic(base_url=rp.url, api_key=KEY, max_retries=0)
        an.messages.create(model="claude-sim", max_tokens=64, messages=[{"role": "user", "content": "hi"}])  # #3
        with pytest.raises(anthropic.APIStatusError) as e2:
            with an.messages.stream(model="claude-sim", max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
                list(s.text_stream)
        assert e2.value.body["error"]["type"] == "overloaded_error"


# -- WebSocket -------------------------------------------------------------------

def _turns(ws, types=None) -> list[str]:
    """Drive the recorded session's two turns; the types of the frames received (into ``types``)."""
    types = [] if types is None else types
    for frame in ({"type": "response.create", "model": "sim-1", "generate": False},
                  {"type": "response.create", "model": "sim-1", "input": "hello over a socket"}):
        ws.send(json.dumps(frame))
        while True:
            types.append(json.loads(ws.recv(timeout=5))["type"])
            if types[-1] == "response.completed":
                break
    return types


def test_websockets_client_sees_close_code_and_reason_then_reconnects(recorded):
    with replaying(recorded, 'ws-close:1013,frame=3,reason="overloaded, try again"') as rp:
        got: list[str] = []
        with connect(rp.ws + "/v1/responses", additional_headers=AUTH) as ws:
            with pytest.raises(ConnectionClosed) as e:
                _turns(ws, got)
        assert (e.value.rcvd.code, e.value.rcvd.reason) == (1013, "overloaded, try again")
        assert got == recorded["session"][:3]
        with connect(rp.ws + "/v1/responses", additional_headers=AUTH) as ws:  # the reconnect gets the session
            assert _turns(ws) == recorded["session"]
    assert rp.summary.used == 1 and rp.summary.misses == []


def test_ws_drop_after_frame_n_has_no_close_frame(recorded):
    with replaying(recorded, "ws-drop:frame=2@#5") as rp:
        got: list[str] = []
        with connect(rp.ws + "/v1/responses", additional_headers=AUTH) as ws:
            with pytest.raises(ConnectionClosed) as e:
                _turns(ws, got)
        assert e.value.rcvd is None and got == recorded["session"][:2]  # 1006: dropped, no close frame
        with connect(rp.ws + "/v1/responses", additional_headers=AUTH) as ws:
            assert _turns(ws) == recorded["session"]


def test_a_client_gone_during_an_accept_delay_before_a_close_leaves_nothing_waiting(recorded):
    """An accept delay with an ending fault (the session goes back at once): the client's open
    timeout ends it. Before, the player waited out the delay for no one and the stop counted an
    open connection it cut."""
    with replaying(recorded, "ws-accept:5s@#5", "ws-close:1011,frame=1@#5", speed=0) as rp:
        with pytest.raises(TimeoutError):
            connect(rp.ws + "/v1/responses", additional_headers=AUTH, open_timeout=0.2)
        time.sleep(0.2)
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 0.4  # nothing left for the stop to wait out (GRACE is 0.5 s)
    assert rp.summary.cut == 0 and len(rp.summary.faults) == 2 and rp.summary.used == 0


def test_ws_accept_delay_set_and_a_client_that_times_out_reconnects(recorded):
    with replaying(recorded, "ws-accept:0.5s@#5", speed=0) as rp:
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            connect(rp.ws + "/v1/responses", additional_headers=AUTH, open_timeout=0.2)
        assert time.perf_counter() - t0 < 0.45
        time.sleep(0.05)
        t0 = time.perf_counter()
        with connect(rp.ws + "/v1/responses", additional_headers=AUTH, open_timeout=5) as ws:
            accept = time.perf_counter() - t0  # the reconnect gets the session; the fault hit it once
            assert _turns(ws) == recorded["session"]
        assert accept < 0.1, accept
    with replaying(recorded, "ws-accept:0.5s@#5", "ws-stall:0.4s,frame=3", speed=1) as rp:
        t0 = time.perf_counter()
        with connect(rp.ws + "/v1/responses", additional_headers=AUTH) as ws:
            accept = time.perf_counter() - t0
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "generate": False}))
            ws.recv(timeout=5), ws.recv(timeout=5)
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "hello over a socket"}))
            t1 = time.perf_counter()
            ws.recv(timeout=5)  # server frame 3, after the injected stall
            stalled = time.perf_counter() - t1
            ws.recv(timeout=5)
            gap = time.perf_counter() - t1 - stalled
    assert abs(accept - 0.5) < 0.03, accept
    replies = [f for f in recorded["its"][SESSION].frames]
    sent = next(f.offset for f in replies if f.direction.value == "client" and b"hello" in f.payload)
    first, second = [f.offset - sent for f in replies if f.direction.value == "server" and f.offset > sent][:2]
    assert abs(stalled - (first + 0.4)) < 0.03, (stalled, first)
    assert abs(gap - (second - first)) < 0.03, (gap, second - first)


def test_refused_upgrade_falls_back_to_the_recorded_http_exchange(recorded):
    with replaying(recorded, "ws-refuse:426@#5") as rp:
        with pytest.raises(InvalidStatus) as e:
            connect(rp.ws + "/v1/responses", additional_headers=AUTH)
        assert e.value.response.status_code == 426
        assert json.loads(e.value.response.body)["error"]["type"] == "invalid_request_error"
        client = openai.OpenAI(base_url=rp.url + "/v1", api_key=KEY, max_retries=0)  # the fallback
        with client.responses.create(model="sim-1", input="Say hello", stream=True) as s:
            assert [(e.type, getattr(e, "delta", None)) for e in s] == recorded["responses"]
        with connect(rp.ws + "/v1/responses", additional_headers=AUTH) as ws:  # a later try gets the session
            assert _turns(ws) == recorded["session"]
    assert rp.summary.used == 2 and rp.summary.misses == []


def test_refusal_by_path_on_a_cassette_without_sessions(recorded, tmp_path):
    http_only = tmp_path / "http-only.db"
    with Cassette.create(http_only) as c:
        for seq in (RESPONSES, CHAT):
            c.append(recorded["its"][seq])
    config = ServeConfig(http_only, speed=0, faults=FaultConfig.build(["ws-refuse:403@/v1/responses"]))
    session = Session(config)
    url = session.start_in_thread()
    try:
        for _ in range(2):  # every attempt is refused: there is no session to give a retry
            with pytest.raises(InvalidStatus) as e:
                connect(url.replace("http", "ws", 1) + "/v1/responses", additional_headers=AUTH)
            assert e.value.response.status_code == 403
        chunks, error, _ = raw_stream(url, "/v1/responses", STREAM)
        assert error is None and _body(chunks) == recorded["its"][RESPONSES].body
    finally:
        summary = session.stop_thread()
    assert summary.misses == [] and [a.seq for a in summary.faults] == [None, None]


def test_each_cassette_of_a_directory_gets_its_own_faults(recorded, tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.db").write_bytes(recorded["path"].read_bytes())
    config = ServeConfig(None, cassette_dir=tmp_path, speed=0, faults=FaultConfig.build(["status:503@#1"]))
    session = Session(config)
    url = session.start_in_thread()
    try:
        codes = [httpx.post(f"{url}/c/{name}/v1/responses", json=STREAM, headers=AUTH).status_code
                 for name in ("a", "a", "b", "b")]
    finally:
        summary = session.stop_thread()
    assert codes == [503, 200, 503, 200]
    assert summary.line() == "served 2 of 10 recording(s); 0 miss(es); 2 fault(s) injected"


# -- chaos, the CLI and the summary --------------------------------------------------

def _drive(url: str) -> None:
    """Requests for #1, #2 and #5, each tried twice (a faulted first try gives its recording back)."""
    chat = {"model": "sim-1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    for path, body in (("/v1/responses", STREAM), ("/v1/chat/completions", chat)):
        for _ in range(2):
            try:
                raw_stream(url, path, body)
            except httpx.HTTPError:
                pass
    for _ in range(2):
        try:
            with connect(url.replace("http", "ws", 1) + "/v1/responses", additional_headers=AUTH, open_timeout=5) as ws:
                _turns(ws)
        except (ConnectionClosed, InvalidStatus):
            pass


def test_chaos_seed_picks_the_same_faults_every_run(recorded):
    kinds = "status,cut,sse-error,ws-close,ws-drop"
    runs = []
    for seed, as_json in ((3, True), (3, False), (4, True)):
        args = ["replay", "--cassette", str(recorded["path"]), "--listen", "127.0.0.1:0", "--speed", "0",
                "--chaos", str(seed), "--chaos-rate", "1", "--chaos-kinds", kinds] + (["--json"] if as_json else [])
        with proxy_proc(*args) as p:
            _drive(p.url)
            assert p.stop() == 0, p.err
        if as_json:
            summary = json.loads(p.out[p.out.index("{"):])
            runs.append([f"#{f['seq']} {f['request']} <- {f['fault']} ({f['source']})" for f in summary["faults"]])
            assert summary["recordings"] == 5 and summary["misses"] == []
        else:
            assert "served 3 of 5 recording(s); 0 miss(es); 3 fault(s) injected" in p.out
            runs.append([ln.split("fault: ", 1)[1] for ln in p.out.splitlines() if ln.startswith("  fault: ")])
        assert [ln.split("fault: ", 1)[1] for ln in p.err.splitlines() if "proxy.replay: fault: " in ln] == runs[-1]
    assert len(runs[0]) == 3 and all("(chaos 3)" in r for r in runs[0])
    assert runs[0] == runs[1]  # the same seed, the same faults on the same recordings
    assert runs[2] != runs[0]


def test_a_bad_fault_is_one_line_and_exit_2(recorded):
    r = run_cli("replay", "--cassette", str(recorded["path"]), "--fault", "cut:event=three")
    assert r.returncode == 2 and r.stderr.strip() == (
        "proxy: fault 'cut:event=three': event='three': expected a whole number")
    r = run_cli("serve", "--cassette", str(recorded["path"]), "--chaos", "1", "--chaos-kinds", "status,teapot")
    assert r.returncode == 2 and "unknown fault kind 'teapot'" in r.stderr
    # chaos options without --chaos would change nothing: say so rather than run without faults
    r = run_cli("replay", "--cassette", str(recorded["path"]), "--chaos-rate", "0.5", "--chaos-kinds", "cut")
    assert r.returncode == 2 and r.stderr.strip() == "proxy: --chaos-rate and --chaos-kinds need --chaos SEED"


PLUGIN_TESTS = """
import httpx, openai, pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from proxy.testing import fake_key

@pytest.mark.cassette("rec", speed=0, faults=["status:429,retry_after=0.05@#1"])
def test_retry(model_proxy):
    client = openai.OpenAI(base_url=model_proxy.base_url, api_key=fake_key("t"), max_retries=2)
    raw = client.responses.with_raw_response.create(model="sim-1", input="Say hello", stream=True)
    assert raw.retries_taken == 1 and list(raw.parse())[-1].type == "response.completed"
    assert [(a.seq, a.fault) for a in model_proxy.faults] == [(1, "status:429,retry_after=0.05s")]

@pytest.mark.cassette("rec", speed=0, faults="status:429,retry_after=0.05@#1")  # one fault, not in a list
def test_one_fault_as_a_string(model_proxy):
    client = openai.OpenAI(base_url=model_proxy.base_url, api_key=fake_key("t"), max_retries=2)
    raw = client.responses.with_raw_response.create(model="sim-1", input="Say hello", stream=True)
    assert raw.retries_taken == 1

@pytest.mark.cassette("rec", speed=0, chaos=5, chaos_rate=1, chaos_kinds="status")
def test_chaos_listed_in_the_failure(model_proxy):
    r = httpx.post(model_proxy.base_url + "/responses", json={})
    assert r.status_code == 200

@pytest.mark.cassette("rec", speed=0)
def test_suite_wide_fault(model_proxy):
    with pytest.raises(InvalidStatus) as e:
        connect(model_proxy.ws_base_url + "/responses")
    assert e.value.response.status_code == 426

@pytest.mark.cassette("rec", faults=["cut:event=x"])
def test_bad_spec(model_proxy):
    pass
"""


def test_pytest_marker_option_and_chaos(recorded, pytester):
    (pytester.path / "cassettes").mkdir()
    (pytester.path / "cassettes" / "rec.db").write_bytes(recorded["path"].read_bytes())
    pytester.makepyfile(test_suite=PLUGIN_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--proxy-fault", "ws-refuse:426@/v1/responses")
    r.assert_outcomes(passed=3, failed=1, errors=1)
    out = r.stdout.str()
    assert "proxy faults" in out and "#1 POST /v1/responses <- status:" in out and "(chaos 5)" in out
    assert "cassette marker: fault 'cut:event=x': event='x': expected a whole number" in out

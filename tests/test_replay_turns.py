"""The replay decisions that need no socket: HTTP endings, WebSocket endings, and the
WebSocket turn logic (``proxy.replay.turns.Turns``), driven with plain numbers as the clock."""

from __future__ import annotations

import json

import pytest

from proxy.matching import MatchConfig
from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.replay.engine import HOLD_GRACE, Ending, WsEnding, http_script, ws_script
from proxy.replay.turns import CLOSE_MISMATCH, CLOSE_UNEXPECTED, Close as CloseAction, Drop, Fail, Send, Turns


def _after(anchor: float, offset: float) -> float:  # --speed 1
    return anchor + offset


def _http(end: End, response: bool = True, duration: float = 2.0) -> Interaction:
    return Interaction(Kind.HTTP, Request("POST", "/v1/responses"),
                       Response(200, "OK", [("content-type", "text/event-stream")]) if response else None,
                       chunks=[Chunk(0.1, b"data: 1\n\n"), Chunk(0.2, b"data: 2\n\n")] if response else [],
                       ttfb=0.05, duration=duration, end=end, seq=7)


@pytest.mark.parametrize("end, response, ending, until", [
    (End.COMPLETE, True, Ending.COMPLETE, 0.0),
    (End.UPSTREAM_ERROR, True, Ending.COMPLETE, 0.0),
    (End.UPSTREAM_CUT, True, Ending.CUT, 0.0),
    (End.CLIENT_GONE, True, Ending.HOLD, 2.0 + HOLD_GRACE),  # a stream the client cancelled
    (End.CLIENT_GONE, False, Ending.HOLD, 2.0 + HOLD_GRACE),  # the client gave up before the headers
    (End.INCOMPLETE, False, Ending.HOLD, 2.0),  # the recorder died: the client saw a drop then
])
def test_http_endings(end, response, ending, until):
    script = http_script(_http(end, response))
    assert (script.ending, script.until) == (ending, until)
    assert (script.status is None) == (not response)  # no response recorded, none sent


def test_http_no_response_is_never_an_error_page():
    script = http_script(_http(End.INCOMPLETE, response=False, duration=None))
    assert script.status is None and script.chunks == [] and script.until == 0.05


F = Direction


def _ws(frames, close: Close | None, duration: float = 1.0, end: End = End.COMPLETE, ext: str = "") -> Interaction:
    headers = [("upgrade", "websocket")] + ([("sec-websocket-extensions", ext)] if ext else [])
    return Interaction(Kind.WEBSOCKET, Request("GET", "/v1/responses"), Response(101, "Switching Protocols", headers),
                       frames=frames, ttfb=0.01, duration=duration, end=end, close=close, seq=3)


def _t(offset: float, payload: dict | bytes, direction=F.SERVER, text: bool = True) -> Frame:
    data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    return Frame(direction, text, offset, data)


TWO_TURNS = [_t(0.02, {"type": "session.created"}),
             _t(0.10, {"type": "response.create"}, F.CLIENT), _t(0.15, {"type": "a"}), _t(0.30, {"type": "b"}),
             _t(0.50, {"type": "response.create"}, F.CLIENT), _t(0.52, {"type": "c"})]


@pytest.mark.parametrize("close, ending", [
    (Close(1000, "bye", F.SERVER), WsEnding("close", 0.5, 1000, "bye")),
    (Close(1005, "", F.SERVER), WsEnding("close", 0.5, None, "")),  # a close frame without status
    (Close(None, "", F.SERVER), WsEnding("drop", 0.5)),
    (Close(1006, "", F.SERVER), WsEnding("drop", 0.5)),
    (Close(1015, "", None), WsEnding("drop", 0.5)),  # a TLS failure: no close frame either
    (None, WsEnding("drop", 0.5)),  # the recorder died: the client saw the connection go
    (Close(1000, "", F.CLIENT), WsEnding("wait", None)),  # the client closes it again
    (Close(None, "", F.CLIENT), WsEnding("wait", 0.5 + HOLD_GRACE)),  # the client dropped it
])
def test_ws_endings(close, ending):
    assert ws_script(_ws(TWO_TURNS, close), MatchConfig()).ending == ending


def test_deflate_is_replayed_only_when_it_was_negotiated():
    assert ws_script(_ws([], None, ext="permessage-deflate; server_max_window_bits=12"), MatchConfig()).deflate
    assert not ws_script(_ws([], None), MatchConfig()).deflate


def _turns(frames=TWO_TURNS, close=Close(1000, "bye", F.SERVER), config=MatchConfig(), **kw) -> Turns:
    return Turns(ws_script(_ws(frames, close), config), _after, **kw)


def _payloads(actions) -> list:
    return [json.loads(a.frame.payload)["type"] if isinstance(a, Send) else a for a in actions]


def test_a_session_played_turn_by_turn():
    t = _turns()
    t.accepted(10.0)
    assert t.next_due() == pytest.approx(10.02)
    assert t.due(10.01) == [] and _payloads(t.due(10.02)) == ["session.created"]
    assert t.next_due() is None  # nothing until the client speaks
    assert t.client_frame(11.0, b'{"type":"response.create","id":"other"}', True) is None
    assert _payloads(t.due(11.06)) == ["a"] and t.next_due() == pytest.approx(11.2)
    assert t.client_frame(12.0, b'{"type":"response.create"}', True) is None
    # order never slips: b (due 11.2) goes before c (due 12.02), then the close 0 s after c's turn end
    assert _payloads(t.due(20.0)) == ["b", "c", CloseAction(1000, "bye")]
    assert t.over and t.next_due() is None and t.due(30.0) == []


def test_close_without_status_and_drop_are_actions():
    t = _turns(close=Close(1005, "", F.SERVER), frames=[])
    t.accepted(0.0)
    assert t.due(5.0) == [CloseAction(None, "")]
    t = _turns(close=Close(1006, "", F.SERVER), frames=[])
    t.accepted(0.0)
    (drop,) = t.due(5.0)
    assert isinstance(drop, Drop) and "without a close frame" in drop.reason


def test_a_client_that_closes_is_waited_for():
    t = _turns(close=Close(1000, "", F.CLIENT))
    t.accepted(0.0)
    t.client_frame(1.0, b'{"type":"response.create"}', True)
    t.client_frame(2.0, b'{"type":"response.create"}', True)
    assert _payloads(t.due(100.0)) == ["session.created", "a", "b", "c"]
    assert t.next_due() is None and not t.over


def test_binary_never_matches_text():
    t = _turns()
    t.accepted(0.0)
    fail = t.client_frame(1.0, b'{"type":"response.create"}', False)
    assert fail == Fail(CLOSE_MISMATCH, "recording #3: frame 1: expected a text frame, got binary")
    assert t.over and t.due(100.0) == []
    strict = _turns(config=MatchConfig(match_body=True))
    strict.accepted(0.0)
    assert strict.client_frame(1.0, b'{"type":"response.create"}', False).code == CLOSE_MISMATCH


def test_mismatch_and_unexpected_frames_fail():
    t = _turns()
    t.accepted(0.0)
    assert t.client_frame(1.0, b'{"type":"session.update"}', True).reason.endswith(
        "expected type 'response.create', got 'session.update'")
    t = _turns(frames=[_t(0.1, b"\x00\x01", F.CLIENT, text=False)], close=Close(1000, "", F.CLIENT))
    t.accepted(0.0)
    assert t.client_frame(1.0, b"\x00\x01", False) is None
    assert t.client_frame(2.0, b"\x00\x01", False).code == CLOSE_UNEXPECTED
    t = _turns(frames=[_t(0.1, b"\x00\x01", F.CLIENT, text=False)], close=None)
    t.accepted(0.0)
    assert "bytes differ" in t.client_frame(1.0, b"\x00\x02", False).reason


def test_a_rebound_session_drops_what_the_reserved_one_had_queued():
    t = _turns()
    t.accepted(0.0)  # the reserved recording's session.created is due at 0.02
    other = [_t(0.5, {"type": "other.created"}), _t(1.0, {"type": "response.create"}, F.CLIENT),
             _t(1.1, {"type": "z"})]
    t.rebind(ws_script(_ws(other, Close(1000, "", F.SERVER)), MatchConfig()))
    assert t.next_due() is None  # not sent yet, so never sent: the bound recording's turns follow
    assert t.client_frame(5.0, b'{"type":"response.create"}', True) is None
    assert _payloads(t.due(10.0)) == ["z", CloseAction(1000, "")]
    with pytest.raises(ValueError):
        t.rebind(ws_script(_ws(other, None), MatchConfig()))


def test_a_frame_whose_secret_the_recorder_masked_still_matches():
    # the recorder scans a connection's frames as one stream: a key split across two frames
    # is masked in both, and the client sends the key again on replay
    frames = [_t(0.1, b"prefix REDA", F.CLIENT), _t(0.2, b"CTED******** suffix", F.CLIENT)]
    t = _turns(frames=frames, close=Close(1000, "", F.CLIENT))
    t.accepted(0.0)
    assert t.client_frame(1.0, b"prefix sk-p", True) is None
    assert t.client_frame(2.0, b"roj-Ab3dEf9h suffix", True) is None
    t = _turns(frames=frames, close=Close(1000, "", F.CLIENT))
    t.accepted(0.0)
    assert t.client_frame(1.0, b"prefix sk-p", True) is None
    assert t.client_frame(2.0, b"roj-Ab3dEf9h suffiX", True).code == CLOSE_MISMATCH  # outside the marker
    t = _turns(frames=[_t(0.1, b"REDACTED***", F.CLIENT), _t(0.2, b"************ tail", F.CLIENT)],
               close=Close(1000, "", F.CLIENT))
    t.accepted(0.0)
    assert t.client_frame(1.0, b"sk-_D02f5Ir", True) is None
    assert t.client_frame(2.0, b"Ab3dEf9hIjAb tail", True) is None
    assert t.client_frame(3.0, b"x", True).code == CLOSE_UNEXPECTED


def test_instant_replay_has_everything_due_at_once():
    t = Turns(ws_script(_ws(TWO_TURNS, Close(1000, "", F.SERVER)), MatchConfig()), lambda anchor, offset: anchor)
    t.accepted(0.0)
    t.client_frame(0.0, b'{"type":"response.create"}', True)
    assert _payloads(t.due(0.0)) == ["session.created", "a", "b"]

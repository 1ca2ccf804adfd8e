"""Replay edge cases found in review (issue 10), each against a real replay server on
127.0.0.1 port 0 and a real client."""

from __future__ import annotations

import json
import time

from websockets.sync.client import connect

from proxy.model import Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.store import Cassette
from tests.fidelity import adapter

D = Direction


def _frame(direction: Direction, offset: float, doc: dict) -> Frame:
    return Frame(direction, True, offset, json.dumps(doc).encode())


def _ws(frames: list[Frame], duration: float) -> Interaction:
    return Interaction(Kind.WEBSOCKET, Request("GET", "/v1/responses", headers=[("upgrade", "websocket")]),
                       Response(101, "Switching Protocols", [("upgrade", "websocket")]), frames=frames, ttfb=0.0,
                       duration=duration, end=End.COMPLETE, close=Close(1000, "", D.CLIENT))


def _cassette(tmp_path, its: list[Interaction]):
    path = tmp_path / "c.cassette"
    c = Cassette.create(path)
    for it in its:
        c.append(it)
    c.close()
    return path


def test_a_rebound_session_answers_at_the_bound_recordings_pace(tmp_path):
    """The handshake reserves #1, whose first server frame is due at 2 s; the client's first
    frame binds #2, whose answer is due 50 ms after it. The answer must not wait for #1's
    frame that is never sent."""
    first = _ws([_frame(D.SERVER, 2.0, {"type": "a.created"}),
                 _frame(D.CLIENT, 2.1, {"type": "x", "input": "AAAA"}), _frame(D.SERVER, 2.15, {"type": "a.reply"})],
                3.0)
    second = _ws([_frame(D.CLIENT, 0.1, {"type": "x", "input": "BBBB"}), _frame(D.SERVER, 0.15, {"type": "b.reply"})],
                 1.0)
    replay = adapter.start_replay(_cassette(tmp_path, [first, second]))
    try:
        with connect(replay.url.replace("http", "ws", 1) + "/v1/responses", open_timeout=5) as ws:
            t0 = time.monotonic()
            ws.send(json.dumps({"type": "x", "input": "BBBB"}))
            reply = json.loads(ws.recv(timeout=5))
            waited = time.monotonic() - t0
    finally:
        replay.stop()
    assert reply["type"] == "b.reply"
    assert waited < 0.5, f"the answer came {waited:.2f} s after the frame (recorded: 0.05 s)"

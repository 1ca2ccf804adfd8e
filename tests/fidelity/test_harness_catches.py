"""The suite's own checks: a replay that differs is caught. Without these, a harness that
compared nothing would pass every shape."""

from __future__ import annotations

from dataclasses import replace

from . import adapter
from . import shapes as S
from .client import HttpObs, WsObs
from .compare import http_differences, is_timing, ws_differences
from .harness import run_batch

LONG_STREAM = replace(S.openai_responses(gap=0.04, n=30), name="long-stream")  # 1.3 s


def test_instant_replay_is_caught(fidelity_dir):
    (o,) = run_batch([LONG_STREAM], fidelity_dir, record_stats=False, reruns=0,
                     replay=lambda cassette: adapter.start_replay(cassette, speed=0))
    assert o.problems and all(is_timing(p) for p in o.problems), o.report()


def test_drift_of_chained_sleeps_is_caught(fidelity_dir):
    """7 % slow, as chained sleeps drift here: the end of a 1.3 s stream is ~90 ms late."""
    (o,) = run_batch([LONG_STREAM], fidelity_dir, record_stats=False, reruns=0,
                     replay=lambda cassette: adapter.start_replay(cassette, speed=1 / 1.07))
    assert any(p.startswith("timing of body byte") for p in o.problems), o.report()
    assert not [p for p in o.problems if not is_timing(p)], o.report()


def _http(**kw) -> HttpObs:
    base = dict(status=200, headers=[("content-type", "text/event-stream"), ("date", "x")], framing="chunked",
                body=b"ab", chunks=[b"a", b"b"], end="complete", ttfb=0.01, arrivals=[(0.01, 0), (0.05, 1)])
    return HttpObs(**{**base, **kw})


def test_http_differences_seen_and_hop_headers_ignored():
    same = _http(headers=[("content-type", "text/event-stream"), ("date", "x"), ("connection", "close")])
    assert http_differences(_http(), same, []) == []
    assert http_differences(_http(), _http(chunks=[b"ab"]), [])[0].startswith("chunk sizes")
    assert http_differences(_http(), _http(headers=[("content-type", "text/event-stream")]), [])
    assert http_differences(_http(), _http(framing="length", chunks=None), [])[0].startswith("framing")
    assert http_differences(_http(), _http(end="eof"), [])[0].startswith("end")
    assert http_differences(_http(), _http(arrivals=[(0.01, 0), (0.01, 1)]), [])[0].startswith("timing of body byte 1")
    # chunked and close-delimited are the same stream to a client
    assert http_differences(_http(framing="close", chunks=None), _http(), []) == []


def test_ws_differences_seen():
    msgs = [(0.01, "text", b'{"type":"a"}'), (0.02, "binary", b"\x00")]
    base = WsObs(status=101, messages=msgs, close=(1000, ""), end="close", accept_t=0.0, end_t=0.03)
    assert ws_differences(base, replace(base), []) == []
    flipped = [(0.01, "binary", b'{"type":"a"}'), msgs[1]]
    assert ws_differences(base, replace(base, messages=flipped), [])[0].startswith("messages")
    assert ws_differences(base, replace(base, messages=msgs[::-1]), [])
    assert ws_differences(replace(base, close=(1005, "")), replace(base, close=None, end="eof"), [])
    assert ws_differences(base, replace(base, close=(1000, "bye")), [])[0].startswith("close frame")
    assert ws_differences(base, replace(base, extensions=["permessage-deflate"]), [])[0].startswith("extensions")

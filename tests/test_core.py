"""The pure middle: matching, JSON paths, redaction, SSE framing, pacing."""

from __future__ import annotations

import asyncio
import json

import pytest

from proxy.jsonpath import PathError, delete_paths
from proxy.matching import Match, MatchConfig, Matcher, Miss, canonical_body
from proxy.model import Interaction, Kind, Request
from proxy.redaction import REDACTED, Redactor
from proxy.sse import SSEParser, parse, summarize
from proxy.timing import Pacer


def rec(seq, method="POST", path="/v1/responses", query="", body=b""):
    it = Interaction(Kind.HTTP, Request(method, path, query, body=body))
    it.seq = seq
    return it


def test_nth_identical_request_gets_nth_recording_then_all_used():
    m = Matcher([rec(1), rec(2, path="/v1/models", method="GET"), rec(3)])
    assert m.match(Request("POST", "/v1/responses")).interaction.seq == 1
    assert m.match(Request("POST", "/v1/responses")).interaction.seq == 3
    miss = m.match(Request("POST", "/v1/responses"))
    assert isinstance(miss, Miss) and miss.reason == "all_used"
    assert [it.seq for it in m.unused()] == [2]


def test_query_order_does_not_matter_but_values_do():
    m = Matcher([rec(1, query="a=1&b=2")])
    assert isinstance(m.match(Request("POST", "/v1/responses", "b=2&a=1")), Match)
    m = Matcher([rec(1, query="a=1")])
    miss = m.match(Request("POST", "/v1/responses", "a=2"))
    assert isinstance(miss, Miss) and "-query a=1" in miss.diff and "+query a=2" in miss.diff


def test_miss_names_nearest_and_remaining():
    m = Matcher([rec(1, path="/v1/chat/completions"), rec(2, method="GET", path="/v1/models")])
    miss = m.match(Request("POST", "/v1/chat/completion"))
    assert miss.nearest == "#1 POST /v1/chat/completions"
    assert miss.to_json()["error"]["type"] == "proxy_no_recording"


def test_body_matching_with_ignored_paths():
    a = json.dumps({"model": "m", "input": [{"id": "x1", "text": "hi"}], "metadata": {"ts": 1}}).encode()
    b = json.dumps({"metadata": {"ts": 2}, "input": [{"id": "x2", "text": "hi"}], "model": "m"}).encode()
    cfg = MatchConfig(match_body=True, ignore_json_paths=("metadata.ts", "input[*].id"))
    assert isinstance(Matcher([rec(1, body=a)], cfg).match(Request("POST", "/v1/responses", body=b)), Match)
    strict = MatchConfig(match_body=True)
    assert isinstance(Matcher([rec(1, body=a)], strict).match(Request("POST", "/v1/responses", body=b)), Miss)
    # without --match-body bodies are not compared
    assert isinstance(Matcher([rec(1, body=a)]).match(Request("POST", "/v1/responses", body=b"zzz")), Match)


def test_jsonpath_wildcards_and_errors():
    doc = {"a": {"id": 1, "b": [{"id": 2}, {"id": 3, "k": 4}]}, "id": 5}
    assert delete_paths(doc, ["**.id"]) == 4
    assert doc == {"a": {"b": [{}, {"k": 4}]}}
    assert canonical_body(b'{"b":1,"a":2}') == '{"a":2,"b":1}'
    with pytest.raises(PathError):
        MatchConfig(ignore_json_paths=("a..b[",))


def test_redaction_headers_bodies_query_and_json_paths():
    r = Redactor.build(extra_headers=["x-session"], json_paths=["user.email"])
    key = "sk-proj-" + "a1B2" * 8
    assert r.headers([("Authorization", f"Bearer {key}"), ("X-Session", "s"), ("Accept", "*/*")]) == [
        ("Authorization", REDACTED), ("X-Session", REDACTED), ("Accept", "*/*")]
    assert key.encode() not in r.data(f'{{"k":"{key}"}}'.encode())
    assert r.query(f"model=m&api-key={key}") == "model=m&api-key=REDACTED"
    assert json.loads(r.body(b'{"user":{"email":"a@b"},"x":1}')) == {"user": {"email": REDACTED}, "x": 1}
    assert Redactor(enabled=False).data(key.encode()) == key.encode()


def test_sse_parser_joins_split_events_and_handles_crlf():
    p = SSEParser()
    assert p.feed(b"event: a\ndata: {\"delta\":") == []
    (ev,) = p.feed(b'"hi"}\n\n')
    assert ev.event == "a" and ev.json() == {"delta": "hi"}
    evs = parse(b"data: 1\r\ndata: 2\r\n\r\n: comment\n\ndata: [DONE]\n\n")
    assert [e.data for e in evs] == ["1\n2", "[DONE]"]
    assert summarize(evs[1]) == ("message", "[DONE]")


def test_pacer_targets_absolute_times():
    now = [100.0]
    slept = []

    async def sleep(d):
        slept.append(round(d, 6))
        now[0] += d + 0.004  # every sleep oversleeps by 4 ms

    async def go():
        p = Pacer(2.0, clock=lambda: now[0], sleep=sleep)
        for off in (0.1, 0.2, 0.3):
            await p.until(off)

    asyncio.run(go())
    # absolute scheduling absorbs the oversleep instead of accumulating it
    # (each wait stops SPIN short of the target, then yields until it passes)
    assert slept == [0.0488, 0.046, 0.046]

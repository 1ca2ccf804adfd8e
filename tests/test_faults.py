"""Faults as data, without sockets: the spec syntax, which recording gets which fault, seeded
chaos, and the transforms of the engine's scripts (checked on generated chunkings)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.matching import Match, Miss
from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.replay.engine import Engine, Ending, WsEnding, http_script, ws_script
from proxy.replay.faults import (KINDS, Chaos, Cut, Drip, Facts, Fault, FaultConfig, FaultError, SseError, Stall,
                                 Status, Target, Ttfb, WsAccept, WsClose, WsDrop, WsRefuse, WsStall, apply_http,
                                 apply_ws, error_body, parse_fault, sse_error_event)
from proxy.matching import MatchConfig
from proxy.sse import SSEParser, event_ends, parse as parse_sse

# -- the spec syntax ---------------------------------------------------------------

seconds = st.sampled_from([0.0, 0.05, 0.3, 1.0, 1.5, 30.0])
small = st.integers(0, 50)
providers = st.sampled_from([None, "openai", "anthropic", "gemini"])
actions = st.one_of(
    st.builds(Status, st.sampled_from([429, 500, 503, 529, 400]), providers,
              st.sampled_from([-1.0, None, 0.1, 2.0])),
    st.builds(Cut, event=small, how=st.sampled_from(["reset", "eof", "end"])),
    st.builds(Cut, byte=small, how=st.sampled_from(["reset", "eof", "end"])),
    st.builds(Cut, headers=st.just(True), how=st.sampled_from(["reset", "eof"])),
    st.builds(Stall, seconds, event=st.integers(1, 50)),
    st.builds(Stall, seconds, byte=small),
    st.builds(Drip, st.sampled_from([1.0, 200.0, 4096.5])),
    st.builds(Ttfb, seconds=seconds), st.builds(Ttfb, scale=st.sampled_from([0.5, 4.0])),
    st.builds(SseError, small, providers, st.sampled_from([None, "rate_limit_exceeded"]),
              st.sampled_from([None, "busy, try later", 'say "when" @ noon'])),
    st.builds(WsAccept, seconds=seconds), st.builds(WsAccept, scale=st.sampled_from([2.0, 10.0])),
    st.builds(WsRefuse, st.sampled_from([426, 403])),
    st.builds(WsClose, st.sampled_from([1000, 1001, 1011, 1013, 4000]), small, st.sampled_from(["", "going away"])),
    st.builds(WsDrop, small), st.builds(WsStall, seconds, frame=st.integers(1, 50)),
)
targets = st.builds(Target, st.frozensets(st.integers(1, 9), max_size=2),
                    st.sampled_from([None, "/v1/responses", "/v1/*"]), st.sampled_from([None, 1, 3]))


@settings(max_examples=300, deadline=None)
@given(actions, targets, st.integers(1, 3))
def test_every_fault_reads_back_from_its_label(action, target, times):
    fault = Fault(action, target, times)
    assert parse_fault(fault.label()) == fault


def test_spec_forms_and_defaults():
    assert parse_fault("status:529@/v1/messages") == Fault(Status(529), Target(path="/v1/messages"))
    assert parse_fault("status:429").action.retry_after == 1.0
    assert parse_fault("status:500").action.retry_after is None
    assert parse_fault("stall:300ms,event=2").action == Stall(0.3, event=2)
    assert parse_fault("stall:for=2,byte=10").action == Stall(2.0, byte=10)
    assert parse_fault("ttfb:x4").action == Ttfb(scale=4.0) == parse_fault("ttfb:scale=4").action
    assert parse_fault("ws-accept:10s").action == WsAccept(seconds=10.0)
    assert parse_fault("ws-close:1011,frame=12,reason=\"slow down, please\"").action == \
        WsClose(1011, 12, "slow down, please")
    assert parse_fault("cut:event=3@#2,#4,every=2").target == Target(frozenset({2, 4}), None, 2)
    assert parse_fault("ws-refuse").action == WsRefuse(426)


@pytest.mark.parametrize("spec, message", [
    ("teapot:1", "unknown fault kind 'teapot'"),
    ("status", "give the status code, e.g. status:429"),
    ("status:200", "status:200: the status must be 400-599"),
    ("status:429,provider=mistral", "provider='mistral': choose one of openai, anthropic, gemini"),
    ("cut", "give exactly one of event=N or byte=N or headers"),
    ("cut:event=2,byte=4", "give exactly one of"),
    ("cut:event=2,how=slam", "how='slam': choose one of reset, eof, end"),
    ("cut:event=2,speed=3", "cut: unknown parameter 'speed'; it takes event, byte, how, headers, times"),
    ("stall:soon,event=2", "for='soon': expected seconds"),
    ("stall:1s,event=0", "counts from 1"),
    ("ttfb:2s,scale=3", "exactly one of set=SECONDS"),
    ("ws-close:1006", "not a close code a server may send"),
    ("ws-close:1011,reason=" + "x" * 124, "at most 123 bytes"),
    ("status:429,times=0", "times='0': must be >= 1"),
    ("status:429@v1/responses", "target 'v1/responses': expected #N"),
    ("status:429@#1@#2", "more than one @"),
    ('ws-close:1011,reason="open', "unbalanced double quote"),
    ("cut:3", "'3' needs a name"),
    ("drip:inf", "drip:inf: the rate (bytes per second) must be a number > 0"),
    ("drip:1e999", "must be a number > 0"),
    ("cut:event=3,event=5", "cut: event given twice"),
    ("status:429,code=500", "status: code given twice"),
    ("stall:1s,for=2s,event=1", "stall: for given twice"),
    ("status:429@/v1/a,/v1/b", "one path glob per fault"),
    ("status:429@every=2,every=3", "every given twice"),
    ("status:429@#1,times=2", "times=N is a parameter: put it before the @, e.g. status:429,times=2@#1"),
    ("status:429@", "nothing after @"),
    ("status:429@ ", "nothing after @"),
])
def test_bad_specs_name_the_offending_value(spec, message):
    with pytest.raises(FaultError, match=None) as e:
        parse_fault(spec)
    assert message in str(e.value)


def test_config_and_chaos_validation():
    with pytest.raises(FaultError, match="fault 'cut:event=x': event='x'"):
        FaultConfig.build(["status:429", "cut:event=x"])
    with pytest.raises(FaultError, match="chaos: unknown fault kind 'teapot'"):
        FaultConfig.build([], chaos_seed=1, chaos_kinds="status,teapot")
    with pytest.raises(FaultError, match="between 0 and 1"):
        Chaos(1, rate=1.5)
    assert not FaultConfig() and FaultConfig.build([], chaos_seed=0)


# -- recordings for the engine ------------------------------------------------------

def sse_body(n: int) -> bytes:
    return b"".join(b'event: e%d\ndata: {"type":"e%d","sequence_number":%d}\n\n' % (i, i, i) for i in range(n))


def http_it(seq: int, path: str = "/v1/responses", chunks=None, n: int = 5, content_type="text/event-stream") -> Interaction:
    if chunks is None:
        body = sse_body(n)
        ends = [0] + event_ends(body)
        chunks = [Chunk(0.01 * i, body[a:b]) for i, (a, b) in enumerate(zip(ends, ends[1:]))]
    return Interaction(Kind.HTTP, Request("POST", path), Response(200, "OK", [("content-type", content_type)]),
                       chunks, ttfb=0.005, end=End.COMPLETE, seq=seq)


def ws_it(seq: int) -> Interaction:
    def f(d, off, payload):
        return Frame(d, True, off, json.dumps(payload).encode())
    S, C = Direction.SERVER, Direction.CLIENT
    frames = [f(S, 0.11, {"type": "session.created"}),
              f(C, 0.2, {"type": "response.create"}), f(S, 0.25, {"type": "a"}), f(S, 0.3, {"type": "b"}),
              f(C, 0.4, {"type": "response.create"}), f(S, 0.45, {"type": "c"}), f(S, 0.5, {"type": "d"})]
    return Interaction(Kind.WEBSOCKET, Request("GET", "/v1/realtime", headers=[("upgrade", "websocket")]),
                       Response(101, "Switching Protocols"), frames=frames, ttfb=0.1, duration=0.6,
                       end=End.COMPLETE, close=Close(1000, "", Direction.CLIENT), seq=seq)


def engine(its, *faults, chaos=None, rate=0.2, kinds=None, salt="") -> Engine:
    e = Engine(list(its), MatchConfig())
    cfg = FaultConfig.build(faults, chaos, rate, kinds or ("status", "cut", "stall", "sse-error", "ws-close"))
    e.faults = cfg.plan(salt)
    return e


POST = Request("POST", "/v1/responses")
HANDSHAKE = Request("GET", "/v1/realtime", headers=[("upgrade", "websocket")])


def test_an_answering_fault_gives_the_recording_to_the_retry():
    e = engine([http_it(1), http_it(2)], "status:503,times=2@#1")
    first, second, third = e.http(POST), e.http(POST), e.http(POST)
    assert (first.status, second.status, third.status) == (503, 503, 200) and third.seq == 1
    assert [it.seq for it in e.unused()] == [2]  # two requests answered by the fault, #1 served once
    fourth = e.http(POST)
    assert fourth.status == 200 and fourth.seq == 2
    assert [a.fault for a in e.faults.applied] == ["status:503"] * 2


def test_the_retry_gets_the_same_recording_under_body_matching_too():
    def body_it(seq, text):
        it = http_it(seq)
        it.request.body = json.dumps({"input": text}).encode()
        return it

    e = Engine([body_it(1, "a"), body_it(2, "b"), body_it(3, "a")], MatchConfig(match_body=True))
    e.faults = FaultConfig.build(["status:500@#1,#3"]).plan()
    ask = Request("POST", "/v1/responses", body=b'{"input": "a"}')
    got = [(s.seq, s.status) for s in (e.http(ask) for _ in range(4))]
    assert got == [(1, 500), (1, 200), (3, 500), (3, 200)]
    assert [it.seq for it in e.unused()] == [2]


def test_an_ending_fault_releases_a_delaying_fault_serves():
    e = engine([http_it(1), http_it(2)], "cut:event=2@#1", "stall:1s,event=2@#2")
    cut = e.http(POST)
    assert cut.seq == 1 and cut.ending is Ending.RESET and not cut.release_if_gone
    assert [it.seq for it in e.unused()] == [1, 2]
    full = e.http(POST)
    assert full.seq == 1 and full.ending is Ending.COMPLETE and full.faults == ()
    stalled = e.http(POST)
    assert stalled.seq == 2 and stalled.delays == {1: 1.0} and stalled.release_if_gone
    assert e.unused() == []
    e.release(2)  # the player: the client left during the stall
    again = e.http(POST)
    assert again.seq == 2 and again.delays == {}  # the stall hit #2 once


def test_every_nth_counts_recordings_not_retries():
    its = [http_it(i) for i in range(1, 7)]
    e = engine(its, "status:429@/v1/responses,every=2")
    seen = []
    for _ in range(9):
        s = e.http(POST)
        seen.append((s.seq, s.status))
    assert seen == [(1, 200), (2, 429), (2, 200), (3, 200), (4, 429), (4, 200), (5, 200), (6, 429), (6, 200)]


def test_every_nth_is_by_recording_number_whatever_order_requests_arrive_in():
    """Concurrent clients (subagents, parallel tests) reach recordings in any order: every=N
    picks the same recordings each run, as #N does, and counts recordings never requested."""
    def faulted(order):
        e = engine([http_it(i, "/v1/a" if i % 2 else "/v1/b") for i in range(1, 9)], "status:429@/v1/*,every=2",
                   "status:500@/v1/a,every=2")
        for path in order:
            while e.http(Request("POST", path)).status != 200:
                pass  # the retry gets the recording
        return sorted((a.seq, a.fault) for a in e.faults.applied)

    want = [(2, "status:429"), (3, "status:500"), (4, "status:429"), (6, "status:429"), (7, "status:500"),
            (8, "status:429")]
    assert faulted(["/v1/a", "/v1/b"] * 4) == want
    assert faulted(["/v1/b", "/v1/a"] * 4) == want
    assert faulted(["/v1/b"] * 4 + ["/v1/a"] * 4) == want


def test_one_ending_fault_per_request_with_the_delays():
    e = engine([http_it(1)], "ttfb:2s", "cut:event=3,how=end", "sse-error:event=1", "stall:0.5s,event=2")
    s = e.http(POST)
    assert s.faults == ("ttfb:2s", "stall:0.5s,event=2", "cut:event=3,how=end")
    assert s.ending is Ending.COMPLETE and b"".join(d for _, d in s.chunks) == sse_body(5)[: event_ends(sse_body(5))[2]]
    assert s.delays == {-1: 2.0, 1: 0.5}  # the stall before event 2 is before chunk 1
    s2 = e.http(POST)
    assert s2.faults == ("sse-error:event=1",)  # the retry: the next ending fault, once
    assert parse_sse(b"".join(d for _, d in s2.chunks))[-1].event == "error"
    assert e.http(POST).faults == ()


def test_a_delay_past_the_end_an_ending_fault_makes_waits_for_the_retry(caplog):
    """A stall after the point where a cut ends the response never happens: it must not be
    reported as injected nor use up its times, so the retry gets it."""
    e = engine([http_it(1)], "cut:event=2@#1", "stall:1s,event=4@#1", "stall:0.5s,event=2@#1")
    with caplog.at_level("INFO", "proxy.replay"):
        first = e.http(POST)
    assert first.faults == ("stall:0.5s,event=2", "cut:event=2")  # the stall before event 2 lands
    assert "stall:1s,event=4 on #1 waits: the response ends before it" in caplog.text
    retry = e.http(POST)
    assert retry.faults == ("stall:1s,event=4",) and retry.delays == {3: 1.0}
    assert [a.fault for a in e.faults.applied] == ["stall:0.5s,event=2", "cut:event=2", "stall:1s,event=4"]
    ws = engine([ws_it(1)], "ws-close:1011,frame=2@#1", "ws-stall:1s,frame=4@#1")
    m = ws.handshake(HANDSHAKE)
    assert ws.ws_script(m.interaction).faults == ("ws-close:1011,frame=2",)
    m2 = ws.handshake(HANDSHAKE)
    assert ws.ws_script(m2.interaction).faults == ("ws-stall:1s,frame=4",)


def test_a_fault_that_cannot_apply_is_skipped_and_logged(caplog):
    e = engine([http_it(1, n=3)], "cut:event=7@#1", "sse-error:event=1@#1")
    with caplog.at_level("INFO", "proxy.replay"):
        s = e.http(POST)
    assert s.faults == ("sse-error:event=1",)
    assert "fault cut:event=7 not applied to #1: the recording has 3 event(s)" in caplog.text
    json_it = http_it(2, "/v1/models", [Chunk(0.0, b'{"data": []}')], content_type="application/json")
    e2 = engine([json_it], "sse-error:event=0", "stall:1s,event=1", "cut:byte=5,how=eof")
    s2 = e2.http(Request("POST", "/v1/models"))
    assert s2.faults == ("cut:byte=5,how=eof",) and s2.chunks == [(0.0, b'{"dat')] and s2.ending is Ending.CUT


def test_chaos_picks_depend_on_seed_and_recording_only():
    its = [http_it(i) for i in range(1, 21)]

    def picks(order, seed, salt=""):
        e = engine([http_it(i) for i in range(1, 21)], chaos=seed, rate=0.5, salt=salt)
        for seq in order:  # requests arrive in any order: the matcher hands out #seq
            it = its[seq - 1]
            e.faults.http(POST, it, http_script(it))
        return sorted((a.seq, a.fault) for a in e.faults.applied)

    forward = picks(range(1, 21), 7)
    assert forward == picks(reversed(range(1, 21)), 7)  # same seed: same faults, whatever the order
    assert forward != picks(range(1, 21), 8) and forward != picks(range(1, 21), 7, salt="other test")
    assert 4 <= len(forward) <= 16  # about half of 20
    assert {f.split(":")[0] for _, f in forward} <= {"status", "cut", "stall", "sse-error"}
    none = engine(its, chaos=1, rate=0.0)
    assert all(none.faults.http(POST, it, http_script(it))[0].faults == () for it in its)


def test_handshake_faults():
    e = engine([ws_it(1)], "ws-refuse:403@#1")
    refused = e.handshake(HANDSHAKE)
    assert isinstance(refused, Match) and refused.interaction.kind is Kind.HTTP
    assert refused.interaction.response.status == 403 and refused.interaction.seq == 1
    assert json.loads(refused.interaction.body)["error"]["type"] == "invalid_request_error"
    assert [it.seq for it in e.unused()] == [1]  # the session waits for a later handshake
    session = e.handshake(HANDSHAKE)
    assert session.interaction.kind is Kind.WEBSOCKET and e.ws_script(session.interaction).faults == ()
    # no session recorded: a path refusal answers every handshake instead of a miss
    e2 = engine([http_it(1)], "ws-refuse:426@/v1/realtime")
    for _ in range(2):
        r = e2.handshake(HANDSHAKE)
        assert isinstance(r, Match) and r.interaction.response.status == 426
    assert e2.misses == [] and isinstance(engine([http_it(1)]).handshake(HANDSHAKE), Miss)


def test_a_path_refusal_never_hides_a_miss_of_a_used_up_session():
    """The refusal stands in for sessions the cassette does not have, not for a client that
    reconnects more often than recorded: that stays a miss, reported as one."""
    e = engine([ws_it(1)], "ws-refuse:426@/v1/realtime")
    assert e.handshake(HANDSHAKE).interaction.response.status == 426  # #1, given back
    assert e.handshake(HANDSHAKE).interaction.kind is Kind.WEBSOCKET  # #1 itself
    third = e.handshake(HANDSHAKE)
    assert isinstance(third, Miss) and third.reason == "all_used" and e.misses == [third]
    assert [a.seq for a in e.faults.applied] == [1]


def test_ws_close_and_drop_release_the_session_stall_does_not():
    e = engine([ws_it(1)], "ws-close:1013,frame=3,reason=busy@#1", "ws-stall:0.5s,frame=3@#1")
    m = e.handshake(HANDSHAKE)
    s = e.ws_script(m.interaction)
    assert s.faults == ("ws-stall:0.5s,frame=3", "ws-close:1013,frame=3,reason=busy")
    assert [it.seq for it in e.unused()] == [1]
    m2 = e.handshake(HANDSHAKE)
    assert e.ws_script(m2.interaction).faults == () and e.unused() == []


# -- transforms ------------------------------------------------------------------------

@st.composite
def chunked_sse(draw):
    n = draw(st.integers(1, 12))
    body = b"".join(b"data: " + b"x" * draw(st.integers(0, 30)) + (b"\r\n\r\n" if draw(st.booleans()) else b"\n\n")
                    for _ in range(n))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(body) - 1), max_size=10))))
    bounds = [0, *cuts, len(body)]
    chunks = [Chunk(0.01 * i, body[a:b]) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    return body, chunks


def _script(chunks):
    return http_script(Interaction(Kind.HTTP, Request("POST", "/v1/responses"),
                                   Response(200, "OK", [("content-type", "text/event-stream")]), chunks,
                                   ttfb=0.005, end=End.COMPLETE, seq=1))


def _boundaries(chunks) -> set[int]:
    out, pos = set(), 0
    for c in chunks:
        pos += len(c[1] if isinstance(c, tuple) else c.data)
        out.add(pos)
    return out


@settings(max_examples=200, deadline=None)
@given(chunked_sse(), st.data())
def test_cut_stall_and_error_land_on_event_boundaries_whatever_the_chunking(sample, data):
    body, chunks = sample
    ends = event_ends(body)
    facts = Facts("/v1/responses", "openai", body, ends)
    script = _script(chunks)
    n = data.draw(st.integers(0, len(ends)))
    cut = apply_http(script, [Cut(event=n)], facts, "/v1/responses")
    point = ends[n - 1] if n else 0
    assert b"".join(d for _, d in cut.chunks) == body[:point]  # exactly events 1..n
    assert _boundaries(chunks) & set(range(point + 1)) <= _boundaries(cut.chunks) | {0}  # recorded boundaries kept
    k = data.draw(st.integers(1, len(ends)))
    stalled = apply_http(script, [Stall(2.0, event=k)], facts, "/v1/responses")
    assert b"".join(d for _, d in stalled.chunks) == body
    (at,) = stalled.delays
    assert sum(len(d) for _, d in stalled.chunks[:at]) == (ends[k - 2] if k >= 2 else 0)
    err = apply_http(script, [SseError(n)], facts, "/v1/responses")
    events = parse_sse(b"".join(d for _, d in err.chunks))
    assert len(events) == n + 1 and events[-1].event == "error" and err.ending is Ending.COMPLETE


@settings(max_examples=100, deadline=None)
@given(chunked_sse(), st.sampled_from([1.0, 50.0, 999.0, 1e6]))
def test_drip_keeps_the_bytes_in_small_pieces_and_the_stall(sample, rate):
    body, chunks = sample
    facts = Facts("/v1/responses", "openai", body, event_ends(body))
    s = apply_http(_script(chunks), [Stall(1.0, event=1), Drip(rate)], facts, "/v1/responses")
    assert b"".join(d for _, d in s.chunks) == body and s.drip == rate
    assert max(len(d) for _, d in s.chunks) <= max(1, -(-rate // 100))
    assert list(s.delays.values()) == [1.0]


def test_ttfb_set_and_scale_keep_the_gaps_after_the_headers():
    script = _script([Chunk(0.1, b"data: a\n\n"), Chunk(0.3, b"data: b\n\n")])
    script.ttfb = 0.05
    facts = Facts("/v1/responses", "openai", b"", [])
    s = apply_http(script, [Ttfb(seconds=2.0)], facts, "/")
    assert s.ttfb == 0.0 and s.delays == {-1: 2.0} and [o for o, _ in s.chunks] == pytest.approx([0.05, 0.25])
    s = apply_http(script, [Ttfb(scale=4.0)], facts, "/")
    assert s.ttfb == pytest.approx(0.2) and [o for o, _ in s.chunks] == pytest.approx([0.25, 0.45])


def test_ws_transforms():
    base = ws_script(ws_it(1), MatchConfig())
    assert [len(t.replies) for t in base.turns] == [2, 2] and len(base.preamble) == 1
    closed = apply_ws(base, [WsClose(1011, 3, "bye")])
    assert len(closed.turns) == 1 and [f.payload for _, f in closed.turns[0].replies][-1] == b'{"type": "b"}'
    assert closed.ending == WsEnding("close", pytest.approx(0.1), 1011, "bye")
    dropped = apply_ws(base, [WsDrop(1)])
    assert dropped.turns == [] and len(dropped.preamble) == 1 and dropped.ending.kind == "drop"
    at_accept = apply_ws(base, [WsClose(1001, 0)])
    assert at_accept.preamble == [] and at_accept.turns == [] and at_accept.ending.after == pytest.approx(0.1)
    stalled = apply_ws(base, [WsStall(0.5, frame=3)])
    assert stalled.turns[0].lags == [0.0, 0.5] and stalled.turns[1].lags == [] and stalled.end_lag == 0.0
    last = apply_ws(base, [WsStall(0.5, frame=5)])
    assert last.turns[1].lags == [0.0, 0.5] and last.end_lag == 0.5
    accepted = apply_ws(base, [WsAccept(seconds=3.0)])
    assert accepted.accept_delay == 0.0 and accepted.accept_lag == 3.0 and accepted.preamble_lags == [3.0]
    assert accepted.preamble[0][0] == pytest.approx(0.01)  # 10 ms after the accept, as recorded
    scaled = apply_ws(base, [WsAccept(scale=4.0)])
    assert scaled.accept_delay == pytest.approx(0.4) and scaled.preamble[0][0] == pytest.approx(0.41)
    assert base.turns[0].lags == [] and base.ending.kind == "wait"  # the input is not changed


def test_turns_add_the_injected_lags_to_the_recorded_schedule():
    from proxy.replay.turns import Send, Turns

    s = apply_ws(ws_script(ws_it(1), MatchConfig()), [WsAccept(seconds=2.0), WsStall(0.5, frame=3)])
    turns = Turns(s, after=lambda anchor, offset: anchor + offset, check=lambda *a: type("ok", (), {"ok": True})())
    turns.accepted(10.0)
    assert turns.next_due() == pytest.approx(12.01)  # 10 ms after the accept, which came 2 s late
    assert [type(a) for a in turns.due(12.01)] == [Send]
    turns.client_frame(20.0, b'{"type": "response.create"}', True)
    assert turns.next_due() == pytest.approx(20.05)
    turns.due(20.05)
    assert turns.next_due() == pytest.approx(20.1 + 0.5) and turns.unfinished()  # the stalled frame


def test_a_client_that_keeps_sending_still_gets_the_injected_close():
    """A client that streams frames without waiting (audio appends, a pipelined request)
    sends frames the recording has beyond the injected close: they are let through, and the
    client sees the close it was promised, not a 4001 mismatch."""
    from proxy.model import Frame as F
    from proxy.replay.turns import Close as CloseAction, Turns

    ok = type("ok", (), {"ok": True, "weak": False})()
    for fault in (WsClose(1011, frame=2, reason="overloaded"), WsDrop(2)):
        s = apply_ws(ws_script(ws_it(1), MatchConfig()), [WsStall(1.0, frame=2), fault])
        turns = Turns(s, after=lambda anchor, offset: anchor + offset, check=lambda *a: ok)
        turns.accepted(10.0)
        turns.due(10.11)
        assert turns.client_frame(10.2, b'{"type": "response.create"}', True) is None
        # during the stall before frame 2, the client sends its next frame (and one more)
        assert turns.client_frame(10.5, b'{"type": "response.create"}', True) is None
        assert turns.client_frame(10.6, F(Direction.CLIENT, True, 0, b"x").payload, True) is None
        actions = turns.due(11.3)
        assert [type(a).__name__ for a in actions] == ["Send", "Close" if isinstance(fault, WsClose) else "Drop"]
        if isinstance(fault, WsClose):
            assert actions[-1] == CloseAction(1011, "overloaded")
    plain = Turns(ws_script(ws_it(1), MatchConfig()), after=lambda anchor, offset: anchor + offset, check=lambda *a: ok)
    plain.accepted(0.0)
    for _ in range(2):
        plain.client_frame(1.0, b"{}", True)
    assert plain.client_frame(2.0, b"{}", True).code == 4001  # without faults, an extra frame is still one


def _reference_ends(stream: bytes) -> list[int]:
    """Where events end, by the SSE rules written out plainly (a blank line after data or event)."""
    import re
    ends, pending = [], False
    for m in re.finditer(rb"([^\r\n]*)(\r\n|\r|\n)", stream):
        line = m.group(1)
        if m.group(2) == b"\r" and m.end() == len(stream):
            break  # might be the first half of \r\n
        if line == b"":
            if pending:
                ends.append(m.end())
            pending = False
        elif line.startswith((b"data", b"event")):
            pending = True
    return ends


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([b"\n", b"\r\n", b"\r"]), st.sampled_from([b"data: x", b"event: e", b": ping", b""])),
                max_size=30), st.lists(st.integers(1, 40), max_size=10))
def test_event_ends_by_the_sse_rules_whatever_the_line_endings_and_chunking(lines, cuts):
    stream = b"".join(text + nl for nl, text in lines)
    p, pos = SSEParser(), 0
    for cut in cuts:
        p.feed(stream[pos: pos + cut])
        pos += cut
    p.feed(stream[pos:])
    assert p.ends == event_ends(stream) == _reference_ends(stream)


def test_event_ends_is_linear_in_the_stream():
    """Facts for faults parse a recording's whole body under the engine's lock: a long answer
    (20k events, 2.5 MB) took 6.7 s when the parser cut its buffer once per line."""
    import time
    ev = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n'
    t0 = time.process_time()  # CPU time: other processes on the machine do not count
    assert len(event_ends(ev * 20000)) == 20000
    assert time.process_time() - t0 < 1.5


def test_a_recording_no_fault_can_hit_is_not_parsed():
    """The facts (event offsets) are worked out only for a recording a fault may hit: with
    --fault on one recording, a request for a long stream is matched in no time."""
    import time
    long = http_it(1, chunks=[Chunk(0.0, sse_body(40000))])
    for faults in (["status:429@#2"], ["ws-refuse:426", "stall:1s,event=2@/v1/other"]):
        e = engine([long, http_it(2)], *faults)
        t0 = time.process_time()  # CPU time: other processes on the machine do not count
        assert e.http(POST).seq == 1
        assert time.process_time() - t0 < 0.1


# -- provider shapes -------------------------------------------------------------------

def test_error_bodies_in_each_providers_shape():
    assert error_body("openai", 429, "req_1") == {"error": {
        "message": "Rate limit reached for requests. Please try again later.", "type": "requests", "param": None,
        "code": "rate_limit_exceeded"}}
    assert error_body("anthropic", 529, "req_1") == {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": "req_1"}
    assert error_body("gemini", 503, "r") == {"error": {"code": 503, "status": "UNAVAILABLE",
                                                        "message": "The model is overloaded. Please try again later."}}
    assert error_body("gemini", 429, "r")["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert error_body("anthropic", 500, "r")["error"]["type"] == "api_error"


def test_sse_error_events_in_each_providers_shape():
    prefix = b'event: response.created\ndata: {"type":"response.created","sequence_number":4}\n\n'
    (ev,) = parse_sse(sse_error_event(SseError(1), "openai", "/v1/responses", prefix))
    assert ev.event == "error" and ev.json() == {"type": "error", "code": "server_error", "param": None,
                                                 "message": ev.json()["message"], "sequence_number": 5}
    (ev,) = parse_sse(sse_error_event(SseError(1), "openai", "/v1/chat/completions", b"data: {}\n\n"))
    assert ev.event is None and ev.json()["error"]["type"] == "server_error"
    (ev,) = parse_sse(sse_error_event(SseError(1), "anthropic", "/v1/messages", b""))
    assert ev.event == "error" and ev.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    raw = sse_error_event(SseError(1, code="RESOURCE_EXHAUSTED"), "gemini",
                          "/v1beta/models/g:streamGenerateContent", b"data: {}\r\n\r\n")
    assert raw.endswith(b"\r\n\r\n") and json.loads(parse_sse(raw)[0].data)["error"]["code"] == 429




def test_every_kind_is_documented_in_the_module_and_the_readme():
    from proxy.replay import faults

    from .conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Testing failure paths\n", 1)[1].split("\n## ", 1)[0]
    for kind in KINDS:
        assert f"    {kind}:" in faults.__doc__ or f"    {kind} " in faults.__doc__, kind
        assert f"| `{kind}:" in section and f"--fault '{kind}:" in section, kind  # in the table, and an example

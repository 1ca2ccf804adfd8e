"""Property-based tests (hypothesis) over cassette contents and request inputs."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.matching import Match, MatchConfig, Matcher, Miss
from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.replay.engine import Engine, HttpScript, MissReply
from proxy.sse import SSEParser, parse
from proxy.store import Cassette, CassetteError

from .conftest import ROOT

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_name = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
header_value = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
headers = st.lists(st.tuples(header_name, header_value), max_size=6)
offsets = st.floats(min_value=0, max_value=100, allow_nan=False)
path = st.text("abcdefghijklmnopqrstuvwxyz0123456789/-_.", min_size=1, max_size=30).map(lambda p: "/" + p)
query = st.lists(st.tuples(st.text("abcxyz", min_size=1, max_size=4), st.text("0123abc", max_size=4)), max_size=3).map(
    lambda qs: "&".join(f"{k}={v}" for k, v in qs))

interactions = st.builds(
    lambda kind, method, p, q, hdrs, body, status, rhdrs, chunks, frames, end, code: Interaction(
        kind,
        Request(method, p, q, hdrs, body),
        Response(status, "R", rhdrs),
        [Chunk(o, d) for o, d in chunks] if kind is Kind.HTTP else [],
        [Frame(Direction(dr), t, o, d) for dr, t, o, d in frames] if kind is Kind.WEBSOCKET else [],
        ttfb=0.01,
        duration=1.0,
        end=end,
        close=Close(code, "r", Direction.SERVER) if kind is Kind.WEBSOCKET else None,
    ),
    st.sampled_from(list(Kind)),
    st.sampled_from(["GET", "POST", "DELETE"]),
    path,
    query,
    headers,
    st.binary(max_size=300),
    st.integers(100, 599),
    headers,
    st.lists(st.tuples(offsets, st.binary(max_size=200)), max_size=8),
    st.lists(st.tuples(st.sampled_from(["client", "server"]), st.booleans(), offsets, st.binary(max_size=200)), max_size=8),
    st.sampled_from(list(End)),
    st.one_of(st.none(), st.integers(1000, 4999)),
)


@FAST
@given(st.lists(interactions, min_size=1, max_size=5))
def test_cassette_round_trip(its):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.db"
        with Cassette.create(p) as c:
            for it in its:
                c.append(it)
        with Cassette.open(p) as c:
            back = list(c.interactions())
    assert len(back) == len(its)
    for a, b in zip(its, back):
        assert (b.kind, b.request.method, b.request.path, b.request.query) == (a.kind, a.request.method, a.request.path, a.request.query)
        assert b.request.headers == a.request.headers and b.request.body == a.request.body
        assert b.response.headers == a.response.headers and b.response.status == a.response.status
        assert b.chunks == a.chunks and b.frames == a.frames and b.end == a.end
        if a.close:
            assert b.close.code == a.close.code


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_damaged_cassette_is_an_error_never_a_crash(data):
    """Flip random bytes of a real cassette: it opens and reads, or raises CassetteError."""
    raw = bytearray((ROOT / "cassettes" / "example.db").read_bytes())
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 40))):
        i = rnd.randrange(100, len(raw))
        raw[i] = rnd.randrange(256)
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "bad.db"
        p.write_bytes(bytes(raw))
        try:
            with Cassette.open(p) as c:
                c.summaries()
                list(c.interactions())
        except CassetteError as e:
            assert str(p) in str(e) and "\n" not in str(e)


@FAST
@given(st.lists(st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=30), max_size=8),
       st.lists(st.integers(1, 50), max_size=20))
def test_sse_parser_same_events_whatever_the_chunking(datas, cuts):
    stream = b"".join(f"event: e{i}\ndata: {d}\n\n".encode() for i, d in enumerate(datas))
    whole = [(e.event, e.data) for e in parse(stream)]
    p, got, pos = SSEParser(), [], 0
    for cut in cuts:
        got += [(e.event, e.data) for e in p.feed(stream[pos : pos + cut])]
        pos += cut
    got += [(e.event, e.data) for e in p.feed(stream[pos:])]
    assert got == whole and len(whole) == len(datas)


@FAST
@given(st.lists(interactions, max_size=5), st.sampled_from(["GET", "POST", "PUT"]), path, query, st.binary(max_size=100),
       st.booleans())
def test_engine_answers_every_request(its, method, p, q, body, match_body):
    engine = Engine([it for it in its if it.kind is Kind.HTTP], MatchConfig(match_body=match_body))
    for i, it in enumerate(engine.interactions):
        it.seq = i + 1
    req = Request(method, p, q, [("content-type", "application/json"), ("content-encoding", "zstd")], body)
    req.body_encoding = "zstd"  # garbage zstd: compared as the raw bytes, never an exception
    out = engine.http(req)
    assert isinstance(out, (HttpScript, MissReply))
    if isinstance(out, MissReply):
        json.loads(out.body())
    m = Matcher(its).match(Request(method, p, q))
    assert isinstance(m, (Match, Miss))

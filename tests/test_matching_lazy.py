"""A key's recordings are fingerprinted as far as a request needs: the first exact match
on a key with thousands of recordings reads a page, and every answer is the one the full
index gives (``matching._Bucket``)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.matching import Match, MatchConfig, Matcher, Miss, NotIndexed
from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.replay.engine import Engine, HttpScript, NotIndexedYet
from proxy.store import Cassette
from proxy.store.source import SqliteSource

from .conftest import replayer

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def recording(i: int, body: bytes, path: str = "/v1/responses", headers=(), host: str = "api.test.local") -> Interaction:
    return Interaction(Kind.HTTP, Request("POST", path, "", [("content-type", "application/json"), *headers], body,
                                          scheme="https", host=host, port=443),
                       Response(200, "OK", [("content-type", "application/json")]),
                       [Chunk(0.0, json.dumps({"n": i}).encode())], ttfb=0.0, duration=0.0, end=End.COMPLETE)


def turn(i: int) -> bytes:
    return json.dumps({"model": "m", "input": f"turn {i}", "tools": ["read", "write"]}).encode()


class CountingSource(SqliteSource):
    """A cassette's source that counts the interaction rows it reads."""

    def __init__(self, cassette):
        super().__init__(cassette)
        self.read = 0

    def rows(self, *args, **kwargs):
        out = super().rows(*args, **kwargs)
        self.read += len(out)
        return out


def serve(engine: Engine, req: Request):
    """As the replay server asks: inline, and after ``prepare`` when that is not enough."""
    result = engine.http(req, lazy=True)
    if isinstance(result, NotIndexedYet):
        engine.prepare(req)
        result = engine.http(req, again=result)
    return result


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """3,000 recordings on one key: turns 0..999, three times over (a test suite run thrice)."""
    path = tmp_path_factory.mktemp("lazy") / "many.db"
    with Cassette.create(path, upstream="synthetic (test)") as c:
        c.append_many(recording(i, turn(i % 1000)) for i in range(3000))
        c.append(recording(3000, b"{}", path="/v1/other"))
    return path


def test_first_exact_match_on_a_key_of_thousands_reads_a_page(many):
    """It read and fingerprinted all 3,000 before answering (and 250,000 of a million-row
    cassette's one key took 31 s and 600 MB)."""
    c = Cassette.open(many)
    try:
        src = CountingSource(c)
        engine = Engine(src)
        for i in range(40):  # the run's requests in their recorded order
            script = engine.http(Request("POST", "/v1/responses", body=turn(i)), lazy=True)
            assert isinstance(script, HttpScript) and script.seq == i + 1
        assert src.read <= 16 + 32 + 64, src.read
        assert not engine.matcher.prepared(Request("POST", "/v1/responses"))
        # the second run's turn 0 is #1001: an exact match further on is found by reading on
        assert Matcher(CountingSource(c)).match(Request("POST", "/v1/responses", body=turn(0))).seq == 1
    finally:
        c.close()


def test_a_run_that_used_every_recording_hands_the_next_request_to_prepare(many):
    """A replay that scanned the whole key one exact match at a time has no core yet: the
    extra request that finds them all used must not make it on the event loop."""
    c = Cassette.open(many)
    try:
        engine = Engine(c.source())
        assert [serve(engine, Request("POST", "/v1/responses", body=turn(i % 1000))).seq for i in range(3000)] == \
            list(range(1, 3001))
        assert not engine.matcher.prepared(Request("POST", "/v1/responses"))
        again = Request("POST", "/v1/responses", body=turn(0))
        assert isinstance(engine.http(again, lazy=True), NotIndexedYet)
        miss = serve(engine, again).miss
        assert miss.reason == "all_used" and "all 3000 recording(s)" in miss.message
    finally:
        c.close()


def test_a_request_that_needs_the_whole_key_is_handed_to_prepare(many):
    """Beyond the engine's inline budget a match raises NotIndexed having taken nothing; after
    ``prepare`` (a worker thread's job in the server) it gets the full index's answer."""
    c = Cassette.open(many)
    try:
        engine = Engine(c.source())
        near = Request("POST", "/v1/responses", body=turn(5).replace(b'"model": "m"', b'"model": "m2"'))
        assert isinstance(engine.http(near, lazy=True), NotIndexedYet)
        assert engine.matcher.served == 0 and engine.misses == []
        engine.prepare(near)
        got = engine.http(near)
        assert isinstance(got, HttpScript) and got.seq == 6
        m = engine.matcher.matches[-1]
        assert not m.exact and m.weak and m.out_of_order and m.expected_seq == 1
        assert Engine(c.source()).http(near).seq == 6  # without lazy: indexed there, as it always was
        with pytest.raises(NotIndexed):
            Matcher(c.source()).match(near, budget=4096)
    finally:
        c.close()


def test_prepare_in_a_thread_while_identical_requests_are_matched(many):
    """The worker thread indexes the key while the event loop's requests scan it: every
    request still gets its own recording, in recorded order, and the index adopted after
    is the one a fresh full index has (the next near match is the same)."""
    c = Cassette.open(many)
    try:
        engine = Engine(c.source())
        asks = [Request("POST", "/v1/responses", body=turn(k)) for k in range(300)] + \
            [Request("POST", "/v1/responses", body=turn(7))] * 2
        worker = threading.Thread(target=engine.prepare, args=(asks[0],))
        worker.start()
        got = [serve(engine, r) for r in asks]
        worker.join(30)
        assert [g.seq for g in got] == list(range(1, 301)) + [1008, 2008]
        assert engine.matcher.prepared(asks[0])
        near = Request("POST", "/v1/responses", body=turn(9).replace(b'"model": "m"', b'"model": "m2"'))
        full = Engine(c.source())
        full.prepare(near)
        assert [full.http(r).seq for r in asks] == [g.seq for g in got]
        a, b = engine.http(near), full.http(near)
        assert a.seq == b.seq and [m.to_json() for m in engine.matcher.matches[-1:]] == \
            [m.to_json() for m in full.matcher.matches[-1:]]
    finally:
        c.close()


def test_concurrent_identical_requests_through_the_server_get_their_own_recordings(many):
    """Three clients send turn 3 at once: each gets one of its three recordings. Then a
    request that needs the whole key indexed (the server does it in its worker thread)
    gets the nearest: turn 4 with another model."""
    results: list = []

    def send(url: str) -> None:
        results.append(httpx.post(url + "/v1/responses", content=turn(3), timeout=30).json()["n"])

    with replayer(many, "--speed", "0") as rp:
        threads = [threading.Thread(target=send, args=(rp.url,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        near = httpx.post(rp.url + "/v1/responses", content=turn(4).replace(b'"model": "m"', b'"model": "m2"'),
                          timeout=30)
        assert rp.stop() == 0
    assert sorted(results) == [3, 1003, 2003]
    assert near.status_code == 200 and near.json() == {"n": 4}


# -- the same answers as the full index ----------------------------------------------------

HOSTS = ("api.test.local", "other.test.local")
CONFIGS = {
    "default": MatchConfig(),
    "window": MatchConfig(window=2),
    "headers": MatchConfig(match_headers=("x-team",)),
    "origin": MatchConfig(match_origin=True),
    "strict": MatchConfig(strict_match=True),
    "body": MatchConfig(match_body=True),
}


def _body(prompt: int, note: int) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": f"prompt {prompt}"}],
                       "note": f"n{note}"}).encode()


recorded = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 1), st.integers(0, 1)),
                    min_size=0, max_size=24)
# (what, which recording, flip its x-team header, flip its host): mostly exact requests, so
# that the key is still being scanned when the others come
asked = st.lists(st.tuples(st.sampled_from(["same"] * 4 + ["near", "other", "path", "release"]), st.integers(0, 30),
                           st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=30)


def _outcome(m, result) -> tuple:
    if isinstance(result, Match):
        return ("match", result.seq, result.exact, result.weak, result.out_of_order, result.expected_seq,
                [d.to_json() for d in result.differences], result.more_differences)
    return ("miss", result.reason, result.message, result.remaining, result.nearest, result.diff)


def _run(recs, requests, config, mode: str) -> list:
    """Outcomes of ``requests``; mode "full": every key indexed before its first request;
    "lazy": as far as needed; "budget": a tiny budget, with prepare and a retry on NotIndexed."""
    its = []
    for i, (p, note, team, host) in enumerate(recs):
        it = recording(i, _body(p, note), headers=[("x-team", "ab"[team])], host=HOSTS[host])
        it.seq = i + 1
        its.append(it)
    m = Matcher(its, config)
    out, taken = [], []
    for what, k, flip_team, flip_host in requests:
        if what == "release":
            if taken:
                m.release(taken.pop(k % len(taken)))
                out.append(("released", m.served))
            continue
        p, note, team, host = recs[k % len(recs)] if recs else (k % 4, 0, 0, 0)
        team, host = team ^ (flip_team == 3), host ^ (flip_host == 3)
        body = _body(p, note) if what == "same" else _body(p, note).replace(b"prompt", b"prompt!") \
            if what == "near" else _body(p + 10, note)
        r = Request("POST", "/v1/other" if what == "path" else "/v1/responses", "", [("x-team", "ab"[team])], body,
                    scheme="https", host=HOSTS[host], port=443)
        if mode == "full":
            m.prepare(r)
        if mode == "budget":
            try:
                result = m.match(r, budget=2048)
            except NotIndexed:
                m.prepare(r)
                result = m.match(r)
        else:
            result = m.match(r)
        if isinstance(result, Match):
            taken.append(result)
        out.append(_outcome(m, result))
    out.append(m.report())
    return out


@pytest.mark.parametrize("config", sorted(CONFIGS))
@FAST
@given(recs=recorded, requests=asked)
def test_lazy_matching_answers_as_the_full_index_does(recs, requests, config):
    full = _run(recs, requests, CONFIGS[config], "full")
    assert _run(recs, requests, CONFIGS[config], "lazy") == full
    assert _run(recs, requests, CONFIGS[config], "budget") == full


def test_an_engine_in_a_test_process_freezes_nothing():
    """gc.freeze() takes in every object of the process: only the CLI process (FREEZE_INDEXES)
    may call it. Matches that fingerprinted 4,096 recordings froze a test suite's objects."""
    import gc

    from proxy.replay import engine as engine_module

    assert not engine_module.FREEZE_INDEXES
    its = [recording(i, turn(i)) for i in range(engine_module.FREEZE_FIRST + 10)]
    for i, it in enumerate(its):
        it.seq = i + 1
    engine = Engine(its)
    before = gc.get_freeze_count()
    try:
        for i in range(len(its)):
            assert engine.http(Request("POST", "/v1/responses", body=turn(i)), lazy=True).seq == i + 1
        assert engine.matcher.scanned >= engine_module.FREEZE_FIRST
        assert gc.get_freeze_count() == before
    finally:
        if gc.get_freeze_count() != before:
            gc.unfreeze()


def test_the_count_of_fingerprinted_recordings_costs_nothing_per_request():
    """The CLI's engine asks ``Matcher.scanned`` on every request (when to gc.freeze): it
    summed over every key's bucket, so a cassette of 20,000 paths (GET /v1/files/ID) paid
    20,000 steps per request."""
    import time

    its = [Interaction(Kind.HTTP, Request("GET", f"/v1/files/{i}"), Response(200), [Chunk(0.0, b"{}")], ttfb=0.0,
                       duration=0.0, end=End.COMPLETE) for i in range(20_000)]
    m = Matcher(its)
    for i in range(0, 20_000):
        assert m.match(Request("GET", f"/v1/files/{i}")).interaction is its[i]
    assert m.scanned == 20_000
    t0 = time.process_time()
    for _ in range(1000):
        m.scanned
    assert time.process_time() - t0 < 0.1


def test_kept_normalized_requests_are_small_decoded_too():
    """The engine keeps normalized requests of small bodies (NORMALIZED_BODY): small as
    received is not small decoded. A 2 KB gzip body that decodes to 2 MB was kept, with its
    parsed JSON: 512 of them held gigabytes."""
    import gzip

    from proxy.replay import engine as engine_module

    big = json.dumps({"model": "m", "input": "x" * (2 * 2**20)}).encode()
    its = [recording(0, big)]
    its[0].seq = 1
    engine = Engine(its)
    sent = gzip.compress(big)
    assert len(sent) < engine_module.NORMALIZED_BODY
    req = Request("POST", "/v1/responses", headers=[("content-encoding", "gzip")], body=sent, body_encoding="gzip")
    assert engine.http(req).seq == 1
    assert all(len(norm.body) <= engine_module.NORMALIZED_BODY for norm, _, _ in engine._normalized.values())

"""Store: the layout people browse, blobs that are checked, events never reordered, a
dictionary that stays put, explicit and atomic migration, constant-time opening."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from proxy.matching import ListSource, request_key
from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.store import (
    SCHEMA_VERSION,
    Cassette,
    CassetteCorrupt,
    CassetteWriteFailed,
    CassetteWriter,
    OldSchema,
    SqliteSource,
    migrate,
)

from .conftest import ROOT

DATA = ROOT / "tests" / "data"
OLD = {1: DATA / "example-v1.db", 2: DATA / "example-v2.db"}  # written by proxy 0.1.0, schemas 1 and 2


def http(i: int, path: str = "/v1/responses", body: bytes | None = None, chunks: int = 5) -> Interaction:
    body = body if body is not None else json.dumps({"model": "sim-1", "input": f"say {i}"}).encode()
    return Interaction(
        Kind.HTTP, Request("POST", path, "", [("content-type", "application/json"), ("x-n", str(i))], body),
        Response(200, "OK", [("content-type", "text/event-stream")]),
        [Chunk(0.01 * j, b'event: delta\ndata: {"type":"response.output_text.delta","delta":"w%d-%d"}\n\n' % (i, j))
         for j in range(chunks)],
        ttfb=0.004, duration=0.05 + 0.01 * chunks, end=End.COMPLETE, started_at=1_700_000_000.0 + i)


def session(i: int) -> Interaction:
    # a clock step: the server frame is stamped earlier than the client frame it answers
    frames = [Frame(Direction.SERVER, True, 0.010, b'{"type":"session.created"}'),
              Frame(Direction.CLIENT, True, 0.500, b'{"type":"response.create","n":%d}' % i),
              Frame(Direction.SERVER, True, 0.300, b'{"type":"response.completed"}'),
              Frame(Direction.CLIENT, False, 0.200, b"\x00\x01binary")]
    return Interaction(Kind.WEBSOCKET, Request("GET", "/v1/responses", "model=x", [("upgrade", "websocket")]),
                       Response(101, "Switching Protocols", [("upgrade", "websocket")]), frames=frames, ttfb=0.12,
                       duration=0.6, end=End.COMPLETE, close=Close(1000, "bye", Direction.SERVER),
                       started_at=1_700_000_000.0)


def snapshot(it: Interaction) -> dict:
    """Everything an interaction holds, as JSON-able data (the shape of tests/data/*.json)."""
    b64 = lambda x: base64.b64encode(x).decode()  # noqa: E731
    r = it.request
    return {"seq": it.seq, "kind": it.kind.value, "method": r.method, "scheme": r.scheme, "host": r.host,
            "port": r.port, "path": r.path, "query": r.query, "headers": [list(h) for h in r.headers],
            "body": b64(r.body), "body_encoding": r.body_encoding,
            "status": it.response.status if it.response else None,
            "reason": it.response.reason if it.response else None,
            "response_headers": [list(h) for h in it.response.headers] if it.response else None,
            "ttfb": it.ttfb, "duration": it.duration, "end": it.end.value, "end_detail": it.end_detail,
            "started_at": it.started_at,
            "close": [it.close.code, it.close.reason, it.close.by.value if it.close.by else None] if it.close else None,
            "chunks": [[c.offset, b64(c.data)] for c in it.chunks],
            "frames": [[f.direction.value, f.is_text, f.offset, b64(f.payload)] for f in it.frames]}


def read_all(path) -> list[dict]:
    with Cassette.open(path) as c:
        return [snapshot(it) for it in c.interactions()]


def raw(path, sql: str, args=()):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def write(path, sql: str, args=()) -> None:
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def make(path, its) -> None:
    with Cassette.create(path, upstream="http://sim.test") as c:
        for it in its:
            c.append(it)


# -- the layout -----------------------------------------------------------------------


def test_plain_columns_json_headers_and_one_number(tmp_path):
    path = tmp_path / "c.db"
    make(path, [http(1), session(2)])
    rows = raw(path, 'SELECT seq, kind, method, path, query, status, ttfb, "end", event_count, request_headers,'
                     " response_headers, close_code, closed_by FROM interactions ORDER BY seq")
    assert rows[0][:9] == (1, "http", "POST", "/v1/responses", "", 200, 0.004, "complete", 5)
    assert json.loads(rows[0][9]) == [["content-type", "application/json"], ["x-n", "1"]]
    assert json.loads(rows[1][10]) == [["upgrade", "websocket"]] and rows[1][11:] == (1000, "server")
    columns = [r[1] for r in raw(path, "PRAGMA table_info(interactions)")]
    assert "id" not in columns and columns[0] == "seq"  # one counter: the recorded order
    assert not any("codec" in c for t in ("interactions", "events", "request_bodies")
                   for c in [r[1] for r in raw(path, f"PRAGMA table_info({t})")])
    # the index a replay matches from holds request_key(), method and path included
    assert raw(path, "SELECT match_class, match_query FROM interactions") == [("http", ""), ("ws", "model=x")]


def test_round_trip_keeps_every_field_and_the_recorded_order(tmp_path):
    path = tmp_path / "c.db"
    its = [http(1), session(2), http(3, body=b"")]
    its[2].end, its[2].end_detail, its[2].request.body_encoding = End.UPSTREAM_CUT, "upstream cut after 9 bytes", "zstd"
    want = [snapshot(it) for it in its]
    make(path, its)
    got = read_all(path)
    for w, g in zip(want, got):
        w["seq"] = g["seq"]
    assert got == want
    assert [f[2] for f in got[1]["frames"]] == [0.010, 0.500, 0.300, 0.200]  # as recorded, not sorted


def test_clean_close_leaves_one_self_contained_file_in_rollback_mode(tmp_path):
    path = tmp_path / "c.db"
    make(path, [http(1)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db"]  # no -wal, -shm, lock file
    assert path.read_bytes()[18:20] == b"\x01\x01"  # rollback journal: no -shm needed to read it
    before = path.read_bytes()
    with Cassette.open(path) as c:
        list(c.interactions())
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.db"]


# -- blobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["events", "request_bodies"])
@pytest.mark.parametrize("damage", ["flip", "no-checksum", "truncate", "trailing"])
def test_every_blob_is_checked_when_read(tmp_path, table, damage):
    path = tmp_path / "c.db"
    make(path, [http(i) for i in range(1, 4)])
    (blob,) = raw(path, f"SELECT data FROM {table} WHERE seq = 2")[0]
    blob = bytearray(blob)
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x20
    elif damage == "no-checksum":
        blob[4] &= ~0x04  # frame header descriptor: content checksum flag off
    elif damage == "truncate":
        blob = blob[:-3]
    else:
        blob += b"\x00"
    write(path, f"UPDATE {table} SET data = ? WHERE seq = 2", (bytes(blob),))
    with Cassette.open(path) as c:
        assert c.get(1).chunks and c.get(3).chunks  # the others read fine
        with pytest.raises(CassetteCorrupt) as e:
            list(c.interactions())
    assert "interaction 2" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("table", ["events", "request_bodies"])
def test_a_missing_blob_row_is_damage_not_an_empty_body(tmp_path, table):
    # the row counts its events and request bytes: a lost blob row must not replay as empty
    path = tmp_path / "c.db"
    make(path, [http(i) for i in range(1, 4)])
    write(path, f"DELETE FROM {table} WHERE seq = 2")
    with Cassette.open(path) as c:
        assert c.get(1).chunks and c.get(3).request.body
        for read in (lambda: c.get(2), lambda: list(c.interactions()), lambda: c.verify(),
                     lambda: c.source().load_events(c.source().candidates(("http", "POST", "/v1/responses", ""))[1])):
            with pytest.raises(CassetteCorrupt) as e:
                read()
            assert "interaction 2" in str(e.value) and "\n" not in str(e.value)


def test_damaged_headers_are_an_error_not_an_empty_list(tmp_path):
    path = tmp_path / "c.db"
    make(path, [http(1)])
    write(path, "UPDATE interactions SET request_headers = '{\"no\": 1}'")
    with Cassette.open(path) as c, pytest.raises(CassetteCorrupt, match="interaction 1: damaged row"):
        c.get(1)


# -- writing in parts, folding, compaction ------------------------------------------------


def test_in_flight_parts_read_back_and_fold_into_one_in_order(tmp_path):
    path = tmp_path / "c.db"
    w = CassetteWriter(Cassette.create(path))
    it = session(1)
    frames, it.frames = it.frames, []
    seq = w.begin(it)
    w.set_response(seq, it.response, it.ttfb, Kind.WEBSOCKET)
    for f in frames:  # one commit per frame: one part each
        w.add_frame(seq, f)
        w.flush().result(5)
    assert raw(path, "SELECT count(*) FROM events WHERE seq = ?", (seq,)) == [(4,)]
    with Cassette.open(path) as c:  # a reader meanwhile: incomplete, every committed frame, in order
        (live,) = list(c.interactions())
        assert live.end is End.INCOMPLETE and live.frames == frames
        assert list(c.summaries())[0]["event_count"] == 4
    w.finish(seq, End.COMPLETE, duration=0.6, close=it.close)
    w.flush().result(5)
    w.close()
    assert raw(path, "SELECT part FROM events") == [(0,)]
    with Cassette.open(path) as c:
        assert c.get(seq).frames == frames and c.get(seq).close == it.close


def test_writer_calls_run_on_its_thread_in_order_with_the_writes(tmp_path):
    """The recorder redacts on the writer thread (CassetteWriter.call / begin_with): what a
    call writes lands between the writes queued before and after it, in one batch."""
    import threading

    path = tmp_path / "c.db"
    w = CassetteWriter(Cassette.create(path))
    threads = set()

    def build(cassette):
        threads.add(threading.get_ident())
        return http(1, chunks=0)

    def chunk(cassette, seq, i):
        threads.add(threading.get_ident())
        cassette.add_chunk(seq, Chunk(i / 1000, b"call %d\n" % i))

    seq = w.begin_with(build)
    for i in range(200):
        if i % 3:
            w.call(chunk, seq, i)
        else:
            w.add_chunk(seq, Chunk(i / 1000, b"call %d\n" % i))
    w.finish(seq, End.COMPLETE, duration=0.2)
    w.flush().result(5)
    w.close()
    assert threads and threading.get_ident() not in threads
    with Cassette.open(path) as c:
        got = c.get(seq)
    assert got.request.path == "/v1/responses" and got.end is End.COMPLETE
    assert [ch.data for ch in got.chunks] == [b"call %d\n" % i for i in range(200)]


def test_dictionary_is_trained_once_and_never_changes_old_bytes(tmp_path):
    path = tmp_path / "c.db"
    c = Cassette.create(path)
    for i in range(40):
        c.append(session(i) if i % 10 == 0 else http(i, chunks=20))
    want = read_all_open(c)
    before, after = c.compact()
    assert after < before * 0.7, (before, after)
    c.close(compact=True)
    assert read_all(path) == want  # same bytes, same order (session frames included)
    (dictionary,) = raw(path, "SELECT id, data FROM dictionaries")
    old_blobs = raw(path, "SELECT seq, part, data FROM events ORDER BY seq")
    for _ in range(2):  # later runs append with the same dictionary and rewrite nothing
        with Cassette.open(path, write=True) as c:
            c.append(http(99, chunks=20))
            c.close(compact=True)
    assert raw(path, "SELECT id, data FROM dictionaries") == [dictionary]
    assert raw(path, "SELECT seq, part, data FROM events WHERE seq <= 40 ORDER BY seq") == old_blobs
    assert read_all(path)[:40] == want
    # new blobs name the dictionary in their frame header
    import zstandard

    (blob,) = raw(path, "SELECT data FROM events WHERE seq = 42")[0]
    assert zstandard.get_frame_parameters(blob).dict_id == dictionary[0]


def read_all_open(c: Cassette) -> list[dict]:
    return [snapshot(it) for it in c.interactions()]


# -- migration ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_old_schema_is_refused_with_the_command_then_migrated(tmp_path, version):
    path = tmp_path / "old.db"
    shutil.copy(OLD[version], path)
    before = path.read_bytes()
    with pytest.raises(OldSchema) as e:
        Cassette.open(path)
    assert f"run `proxy migrate {path}`" in str(e.value)
    with pytest.raises(OldSchema):
        Cassette.open(path, write=True)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]
    assert migrate(path) == (version, SCHEMA_VERSION)
    want = json.loads((DATA / f"example-v{version}.json").read_text())  # what proxy 0.1.0 read from it
    assert read_all(path) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]
    after = path.read_bytes()
    assert migrate(path) == (SCHEMA_VERSION, SCHEMA_VERSION) and path.read_bytes() == after  # idempotent


def test_migration_that_cannot_fold_its_wal_changes_nothing(tmp_path):
    # the new file is renamed over the old one: with its rows still in PATH.migrating-wal
    # (a full disk at the checkpoint; here a reader of the new file) that lost the cassette
    path = tmp_path / "old.db"
    shutil.copy(OLD[2], path)
    before = path.read_bytes()
    held = []

    def progress(done, total):
        if not held:  # a read transaction on the new file, open until the migration ends
            conn = sqlite3.connect(tmp_path / "old.db.migrating", isolation_level=None)
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM interactions").fetchone()
            held.append(conn)

    try:
        with pytest.raises(CassetteWriteFailed) as e:
            migrate(path, progress)
    finally:
        for conn in held:
            conn.close()
    assert "nothing was changed" in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if ".migrating" in p.name or p.name.endswith(".lock")]


def big_v2(path, copies: int) -> None:
    """A schema-2 cassette of 5 * copies interactions, made from the example's rows."""
    shutil.copy(OLD[2], path)
    conn = sqlite3.connect(path)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(interactions)") if r[1] not in ("id", "seq")]
    names = ", ".join(f'"{c}"' for c in cols)
    for k in range(1, copies):
        conn.execute(f"INSERT INTO interactions (id, seq, {names}) SELECT id + ?, seq + ?, {names} FROM interactions"
                     " WHERE seq <= 5", (5 * k, 5 * k))
    conn.commit()
    conn.close()


def test_migration_killed_mid_way_leaves_the_old_file_as_it_was(tmp_path):
    path = tmp_path / "big.db"
    big_v2(path, 400)  # 2,000 interactions: progress is reported every 500
    before = path.read_bytes()
    code = ("import os, signal, sys\nfrom proxy.store import migrate\n"
            "migrate(sys.argv[1], progress=lambda done, total: os.kill(os.getpid(), signal.SIGKILL))\n")
    p = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert path.read_bytes() == before
    assert (tmp_path / "big.db.migrating").exists()  # killed while writing the new file
    with pytest.raises(OldSchema):
        Cassette.open(path)

    def ctrl_c(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # interrupted in this process: cleaned up, still untouched
        migrate(path, progress=ctrl_c)
    assert path.read_bytes() == before and not (tmp_path / "big.db.migrating").exists()
    assert migrate(path) == (2, SCHEMA_VERSION)
    its = read_all(path)
    assert len(its) == 2000 and [it["seq"] for it in its] == list(range(1, 2001))
    assert raw(path, "SELECT count(*) FROM dictionaries") == [(1,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.db"]


# -- constant-time opening: the CandidateSource ------------------------------------------------


def test_source_agrees_with_the_in_memory_one(tmp_path):
    path = tmp_path / "c.db"
    its = [http(1), http(2, "/v1/chat/completions"), session(3), http(4), http(5, "/v1/models"),
           Interaction(Kind.HTTP, Request("get", "/v1/models", "b=2&a=1"), Response(200)), http(7)]
    make(path, its)
    with Cassette.open(path) as c:
        stored = list(c.interactions(with_events=False))
        mem, src = ListSource(stored), c.source()
        keys = {request_key(it.request, it.kind) for it in stored} | {("http", "GET", "/v1/models", "a=1&b=2"),
                                                                       ("http", "DELETE", "/nope", "")}
        for key in keys:
            assert [it.seq for it in src.candidates(key)] == [it.seq for it in mem.candidates(key)], key
            for limit in (1, 3, 10):
                assert [it.seq for it in src.nearby(key, limit)] == [it.seq for it in mem.nearby(key, limit)], key
        assert len(src) == len(mem) == 7
        first = src.candidates(request_key(its[0].request))[0]
        assert first is src.nearby(request_key(its[0].request), 1)[0]  # one object per recording
        assert src.load_events(first).chunks == its[0].chunks


def test_source_sees_the_cassette_as_it_was_opened(tmp_path):
    path = tmp_path / "c.db"
    make(path, [http(1)])
    with Cassette.open(path) as c:
        src = c.source()
        with Cassette.open(path, write=True) as w:  # new_episodes: a recorder appends meanwhile
            w.append(http(2))
        assert [it.seq for it in src.candidates(request_key(http(1).request))] == [1] and len(src) == 1


def test_a_100k_cassette_opens_lazily(tmp_path):
    path = tmp_path / "big.db"

    def its():
        for i in range(100_000):
            yield Interaction(Kind.HTTP, Request("POST", "/v1/responses" if i % 2 else f"/v1/items/{i}", "",
                                                 [("content-type", "application/json")], b'{"n": %d}' % i),
                              Response(200, "OK", []), [Chunk(0.001, b'{"id": %d}' % i)], end=End.COMPLETE)

    with Cassette.create(path) as c:
        assert c.append_many(its()) == 100_000
    t = time.perf_counter()
    with Cassette.open(path) as c:
        src = c.source()
        key = ("http", "POST", "/v1/responses", "")
        candidates = src.candidates(key)
        first = src.load_events(candidates[0])
        took = time.perf_counter() - t
        assert first.seq == 2 and first.chunks == [Chunk(0.001, b'{"id": 1}')]
        assert len(src._loaded) <= 256  # one page of candidates was read, not the cassette
        assert candidates[300].seq == 602 and len(src._loaded) <= 512
        assert len(candidates) == 50_000 and isinstance(src, SqliteSource)
        assert [it.seq for it in src.nearby(("http", "GET", "/v1/items/10", ""), 2)] == [11, 1]
    assert took < 1.0, took  # about 5 ms here; the bound only catches reading everything


# -- order, whatever the clock and the commits do ------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

frames_st = st.lists(st.tuples(st.sampled_from(list(Direction)), st.booleans(),
                               st.floats(0, 100, allow_nan=False), st.binary(max_size=64)), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_st, st.sets(st.integers(0, 25)))
def test_events_keep_their_order_through_parts_folding_and_compaction(frames, commits):
    import tempfile
    from pathlib import Path

    frames = [Frame(d, t, off, data) for d, t, off, data in frames]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.db"
        w = CassetteWriter(Cassette.create(path))
        for copy in range(10):  # enough interactions for compaction to train its dictionary
            it = session(copy)
            it.frames = []
            seq = w.begin(it)
            w.set_response(seq, it.response, it.ttfb, Kind.WEBSOCKET)
            for i, f in enumerate(frames):
                w.add_frame(seq, f)
                if i in commits:
                    w.flush().result(5)  # a commit: one more part
            w.add_frame(seq, Frame(Direction.SERVER, True, 1.0, b"x" * 3000))  # bytes to train on
            w.finish(seq, End.COMPLETE, duration=1.0)
        w.close(compact=True)
        with Cassette.open(path) as c:
            for it in c.interactions():
                assert it.frames[:-1] == frames


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damage_anywhere_in_a_compacted_cassette_is_an_error_or_harmless(data, tmp_path_factory):
    """Flip bytes of a cassette with a dictionary: it reads, or raises one-line CassetteError."""
    import random

    from proxy.store import CassetteError

    base = tmp_path_factory.getbasetemp() / "compacted.db"
    if not base.exists():
        c = Cassette.create(base)
        for i in range(40):
            c.append(session(i) if i % 10 == 0 else http(i, chunks=20))
        c.close(compact=True)
        assert raw(base, "SELECT count(*) FROM dictionaries") == [(1,)]
    damaged = bytearray(base.read_bytes())
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 20))):
        damaged[rnd.randrange(100, len(damaged))] ^= 1 << rnd.randrange(8)
    path = tmp_path_factory.mktemp("damaged") / "c.db"
    path.write_bytes(bytes(damaged))
    try:
        with Cassette.open(path) as c:
            list(c.summaries())
            c.verify()
            src = c.source()
            for it in src.nearby(("http", "POST", "/v1/responses", ""), 50):
                src.load_events(it)
    except CassetteError as e:
        assert str(path) in str(e) and "\n" not in str(e)


def test_events_read_ahead_are_each_recordings_own_and_damage_waits_until_asked_for(tmp_path):
    # SqliteSource reads the events of the next recordings with the one asked for (one query
    # for many): each must still get its own chunks, and a damaged one among those read
    # ahead fails when it is asked for, not the recording before it.
    path = tmp_path / "c.db"
    make(path, [http(i, chunks=3 + i) for i in range(1, 6)])
    (blob,) = raw(path, "SELECT data FROM events WHERE seq = 4")[0]
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0xFF
    write(path, "UPDATE events SET data = ? WHERE seq = 4", (bytes(damaged),))
    with Cassette.open(path) as c:
        src = c.source()
        its = list(src.candidates(("http", "POST", "/v1/responses", "")))
        for it in its[:3]:
            src.load_events(it)
            assert len(it.chunks) == 3 + it.seq and b"w%d-0" % it.seq in it.chunks[0].data
        with pytest.raises(CassetteCorrupt, match="interaction 4: damaged events"):
            src.load_events(its[3])
        assert len(src.load_events(its[4]).chunks) == 8


def test_small_candidates_come_with_their_events_and_no_query_of_their_own(tmp_path):
    """A candidates page reads a small recording's events with its row (one query per page
    instead of one more per few recordings); a large one's (over ROW_EVENTS events or
    ROW_EVENTS_BYTES bytes) wait until it is matched, as an indexed key keeps every
    candidate; a recording still being written has several parts: the first alone is not
    taken for all of them."""
    from proxy.store.source import ROW_EVENTS, ROW_EVENTS_BYTES
    from proxy.store import CassetteWriter

    path = tmp_path / "c.db"
    big = http(3, chunks=0)
    big.chunks = [Chunk(0.0, b"x" * (ROW_EVENTS_BYTES + 1))]
    make(path, [http(1), http(2, chunks=ROW_EVENTS + 1), big])
    w = CassetteWriter(Cassette.open_or_create(path))
    seq = w.begin(http(4, chunks=0))
    w.add_chunk(seq, Chunk(0.0, b"data: one\n\n"))
    w.flush().result(5)
    w.add_chunk(seq, Chunk(0.1, b"data: two\n\n"))
    w.flush().result(5)  # two parts, the recording not finished
    w.close()
    assert len(raw(path, "SELECT part FROM events WHERE seq = 4")) == 2
    with Cassette.open(path) as c:
        src = c.source()
        its = list(src.candidates(("http", "POST", "/v1/responses", "")))
        assert [len(it.chunks) for it in its] == [5, 0, 0, 0]
        queries = []
        c._conn.set_trace_callback(queries.append)
        assert len(src.load_events(its[0]).chunks) == 5 and queries == []
        assert [len(src.load_events(it).chunks) for it in its[1:]] == [ROW_EVENTS + 1, 1, 2]
        assert src.load_events(its[3]).chunks[1].data == b"data: two\n\n"


def test_candidates_with_large_frames_sent_wait_for_their_match(tmp_path):
    """A candidate's events came with its row when it had few events and few bytes of server
    data; body_bytes counts no client data, so WebSocket sessions of a few large frames sent
    (audio, files) were read whole with every candidates page and kept by the indexed key:
    here 40 MB for 20 sessions never matched. They wait for their match, as large answers do."""
    import os

    path = tmp_path / "c.db"
    its = []
    for i in range(20):
        frames = [Frame(Direction.CLIENT, False, 0.01 * j, os.urandom(2**18)) for j in range(8)]
        frames.append(Frame(Direction.SERVER, True, 0.5, b'{"ok": %d}' % i))
        its.append(Interaction(Kind.WEBSOCKET, Request("GET", "/v1/realtime", "", [("upgrade", "websocket")]),
                               Response(101, "Switching Protocols", []), frames=frames, end=End.COMPLETE,
                               started_at=1_700_000_000.0 + i))
    its.append(session(21))  # a small session still comes with its frames
    make(path, its)
    with Cassette.open(path) as c:
        src = c.source()
        got = list(src.candidates(("ws", "GET", "/v1/realtime", "")))
        assert [len(it.frames) for it in got] == [0] * 20
        assert len(src.load_events(got[3]).frames) == 9 and got[3].frames[-1].payload == b'{"ok": 3}'
        small = list(src.candidates(("ws", "GET", "/v1/responses", "model=x")))
        assert [len(it.frames) for it in small] == [4]


def test_repeated_recordings_share_what_repeats_and_keep_their_own_times(tmp_path):
    """The replay source reads the Nth recording of one exchange as the one before it but for
    its seq and times: request and response shared, chunk lists its own. One that differs
    anywhere else (here a response header) is made whole."""
    path = tmp_path / "c.db"
    its = [http(1), http(1), http(1), http(1)]
    for i, it in enumerate(its):
        it.started_at, it.ttfb, it.duration = 1_700_000_000.0 + i, 0.001 * (i + 1), 0.5 + i
    its[3].response.headers.append(("x-request-id", "other"))
    make(path, its)
    with Cassette.open(path) as c:
        got = list(c.source().candidates(("http", "POST", "/v1/responses", "")))
    assert [it.seq for it in got] == [1, 2, 3, 4]
    assert got[1].request is got[0].request and got[2].response is got[0].response
    assert got[3].response is not got[0].response and got[3].response.headers[-1] == ("x-request-id", "other")
    assert [(it.started_at, it.ttfb, it.duration) for it in got] == [
        (1_700_000_000.0 + i, 0.001 * (i + 1), 0.5 + i) for i in range(4)]
    assert got[1].chunks == got[0].chunks == its[0].chunks and got[1].chunks is not got[0].chunks
    assert [snapshot(it) for it in got] == [snapshot(it) for it in its]


def test_candidates_whose_few_stored_bytes_open_to_megabytes_wait_for_their_match(tmp_path):
    """A candidate's events come with its row when few bytes are stored; a session of large
    client frames of one repeated byte is stored in a few hundred (zstd), and opened with
    every candidates page it was kept by the indexed key: 20 of them held 40 MB unmatched."""
    from proxy.store.reading import SMALL_EVENTS_OPEN

    path = tmp_path / "c.db"
    its = []
    for i in range(1, 4):
        it = session(i)
        it.frames = [Frame(Direction.CLIENT, False, 0.1 * j, b"\0" * 2**20) for j in range(2)]
        its.append(it)
    make(path, its)
    assert max(len(d) for (d,) in raw(path, "SELECT data FROM events")) < 8 * 2**10  # few bytes stored
    with Cassette.open(path) as c:
        src = c.source()
        got = list(src.candidates(("ws", "GET", "/v1/responses", "model=x")))
        assert [len(it.frames) for it in got] == [0, 0, 0]
        assert sum(len(f.payload) for f in src.load_events(got[1]).frames) == 2 * 2**20 > SMALL_EVENTS_OPEN


def test_a_file_older_than_the_http_version_column_is_read_and_appended_to(tmp_path):
    import sqlite3

    from proxy.model import End, Interaction, Kind, Request

    path = tmp_path / "old.db"
    with Cassette.create(path, upstream="x") as c:
        c.append(Interaction(Kind.HTTP, Request("GET", "/a", http_version="HTTP/2.0"), end=End.COMPLETE))
    with Cassette.open(path) as c:
        assert [it.request.http_version for it in c.interactions()] == ["HTTP/2.0"]
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE interactions DROP COLUMN http_version")
    conn.close()
    with Cassette.open_or_create(path) as c:
        c.append(Interaction(Kind.HTTP, Request("GET", "/b", http_version="HTTP/1.1"), end=End.COMPLETE))
    with Cassette.open(path) as c:
        assert [(it.request.path, it.request.http_version) for it in c.interactions()] == [("/a", ""), ("/b", "")]
        assert c.get(2).request.http_version == ""


def test_events_read_ahead_are_few_bytes_not_only_few_events(tmp_path):
    """Read-ahead took every next recording with at most AHEAD_EVENTS events, whatever their
    size: 32 responses of two 1 MB chunks each (a download, a large JSON) were loaded, and
    kept, with the one asked for."""
    import os

    path = tmp_path / "c.db"
    its = []
    for i in range(1, 11):
        it = http(i, chunks=0)
        it.chunks = [Chunk(0.0, os.urandom(2**20)), Chunk(0.01, os.urandom(2**20))]
        its.append(it)
    make(path, its)
    with Cassette.open(path) as c:
        src = c.source()
        got = list(src.candidates(("http", "POST", "/v1/responses", "")))
        assert len(src.load_events(got[0]).chunks) == 2
        assert all(it.chunks == [] for it in got[1:]), "megabytes read ahead"
        assert len(src.load_events(got[1]).chunks) == 2


def test_read_ahead_leaves_the_events_of_loaded_recordings_alone(tmp_path):
    """A recording's events, once loaded, are being played (the WebSocket script is built
    from ``frames`` outside the engine's lock): reading ahead for an earlier recording,
    maybe in a worker thread, replaced them with empty lists and refilled them."""
    path = tmp_path / "c.db"
    make(path, [http(i, chunks=3) for i in range(1, 6)])
    with Cassette.open(path) as c:
        src = c.source()
        its = list(src.candidates(("http", "POST", "/v1/responses", "")))
        playing = src.load_events(its[2]).chunks
        src.load_events(its[0])  # reads ahead over #3
        assert its[2].chunks is playing and len(playing) == 3
        assert len(src.load_events(its[1]).chunks) == 3


def test_small_blobs_kept_open_are_small_once_open_too():
    """Blobs keeps small blobs it opened (a poll repeats its body); a small blob can hold
    a large body (zstd packs 1 MB of a repeated byte into a few dozen), and thousands of
    those, each opened once (inspect, audit, compact), must not stay in memory."""
    import tracemalloc

    from proxy.store.packed import SMALL_BLOB, Blobs

    blobs = Blobs(lambda _: None)
    packed = [blobs.pack(b"%d " % i + b"x" * 2**20) for i in range(64)]
    assert max(map(len, packed)) <= SMALL_BLOB
    tracemalloc.start()
    try:
        for blob in packed:
            assert len(blobs.unpack(blob)) > 2**20
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < 8 * 2**20
    poll = blobs.pack(b'{"status": "queued"}')
    assert blobs.unpack(poll) is blobs.unpack(poll)  # small ones are still kept


def test_events_kept_open_are_small_once_open_too(tmp_path):
    """Reading keeps the chunks of small event parts (recordings of one exchange repeat
    them); a part can be small stored and megabytes open, and reading a cassette of
    those once (inspect, export, audit) must not keep them all."""
    import tracemalloc

    from proxy.store.packed import SMALL_BLOB

    path = tmp_path / "big.db"
    with Cassette.create(path, upstream="synthetic (test)") as c:
        for i in range(40):
            c.append(Interaction(Kind.HTTP, Request("GET", "/v1/x"), Response(200, "OK", []),
                                 [Chunk(0.0, b"%d " % i + b"x" * 2**20)], ttfb=0.0, end=End.COMPLETE))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT max(length(data)) FROM events").fetchone()[0] <= SMALL_BLOB  # the case
    with Cassette.open(path) as c:
        tracemalloc.start()
        try:
            for it in c.interactions():
                assert len(it.chunks[0].data) > 2**20
            kept = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    assert kept < 8 * 2**20, kept

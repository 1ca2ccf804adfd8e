"""Store: schema versions, migration on write only, compaction that changes no byte."""

from __future__ import annotations

import shutil

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import SCHEMA_VERSION, Cassette

from .conftest import ROOT

V1 = ROOT / "tests" / "data" / "example-v1.db"  # written by proxy 0.1.0 with schema version 1


def snapshot(path):
    with Cassette.open(path) as c:
        return [(it.kind, it.request.method, it.request.target, it.request.headers, it.request.body,
                 it.response.status if it.response else None, it.response.headers if it.response else None,
                 [(x.offset, x.data) for x in it.chunks], [(f.direction, f.offset, f.payload) for f in it.frames],
                 it.end, it.close) for it in c.interactions()]


def test_reading_an_old_schema_leaves_the_file_alone(tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(V1, old)
    before = old.read_bytes()
    with Cassette.open(old) as c:
        assert c.schema_version == 1
        its = list(c.interactions())
    assert len(its) == 5 and its[0].chunks and its[4].frames
    assert old.read_bytes() == before


def test_writing_migrates_and_keeps_old_rows_readable(tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(V1, old)
    want = snapshot(old)
    with Cassette.open_or_create(old) as c:
        assert c.schema_version == SCHEMA_VERSION == 2
        c.append(Interaction(Kind.HTTP, Request("GET", "/v1/new"), Response(200, "OK", []), [Chunk(0.1, b"new")],
                             end=End.COMPLETE))
    got = snapshot(old)
    assert got[:5] == want and got[5][2] == "/v1/new"


def test_compaction_changes_no_byte_and_shrinks_similar_traffic(tmp_path):
    path = tmp_path / "c.db"
    shutil.copy(V1, path)
    with Cassette.open_or_create(path) as c:
        src = list(c.interactions())
        for i in range(200):  # many similar streams, as a test suite records them
            it = src[i % 5]
            it.chunks = [Chunk(ch.offset, ch.data.replace(b"resp_", b"resp_%d" % i)) for ch in it.chunks]
            c.append(it)
    want = snapshot(path)
    with Cassette.open(path, write=True) as c:
        before, after = c.compact()
    assert snapshot(path) == want
    assert after < before * 0.5, (before, after)
    with Cassette.open(path) as c:  # compacted again (e.g. after new_episodes): still the same
        c.compact()
    assert snapshot(path) == want

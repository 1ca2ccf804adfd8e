"""Store failures fail loudly: a second writer, read-only locations, a full disk.

Read-only directories and a small disk are real: a read-only bind mount and a tiny
tmpfs (this suite runs as root here, where permission bits stop nothing). Without
mount rights the read-only cases use permission bits (as a user they are real) and
the full disk is SQLite's own size limit on the writer's connection, which fails
the same way a full disk does (SQLITE_FULL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager

import pytest

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import (
    Cassette,
    CassetteLocked,
    CassetteNotWritable,
    CassetteWriteFailed,
    CassetteWriter,
)

from .conftest import ROOT
from .test_store import http, make, raw, read_all


def _umount(directory) -> None:
    if subprocess.run(["umount", str(directory)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(directory)], check=True)
        raise AssertionError(f"a file under {directory} is still open (a leaked descriptor or connection)")


def _mount(*args: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def read_only(directory):
    """``directory`` made read-only for as long as the block runs."""
    if _mount("--bind", str(directory), str(directory)):
        try:
            if not _mount("-o", "remount,bind,ro", str(directory)):
                pytest.skip("cannot remount read-only here")
            yield "mount"
        finally:
            _umount(directory)
    elif os.geteuid() != 0:
        mode = directory.stat().st_mode
        files = {p: p.stat().st_mode for p in directory.iterdir()}
        for p in files:
            p.chmod(0o444)
        directory.chmod(0o555)
        try:
            yield "chmod"
        finally:
            directory.chmod(mode)
            for p, m in files.items():
                p.chmod(m)
    else:
        pytest.skip("root without mount rights: nothing makes a directory read-only")


@contextmanager
def small_disk(directory, size: str = "256k"):
    """A tmpfs of ``size`` at ``directory``, or None where nothing can be mounted."""
    directory.mkdir()
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)):
        yield None
        return
    try:
        yield directory
    finally:
        _umount(directory)


def fill(directory) -> None:
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\xff" * 4096)
                f.flush()
        except OSError:
            pass


# -- two writers ---------------------------------------------------------------------------


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "c.db"
    first = Cassette.create(path)
    for attempt in (lambda: Cassette.open(path, write=True), lambda: Cassette.open_or_create(path),
                    lambda: Cassette.create(path)):
        with pytest.raises(CassetteLocked) as e:
            attempt()
        assert f"already being written by pid {os.getpid()}" in str(e.value) and "\n" not in str(e.value)
    with Cassette.open(path) as reader:  # readers are never refused
        assert reader.count() == 0
    first.append(http(1))
    first.close()
    assert not (tmp_path / "c.db.lock").exists()
    with Cassette.open(path, write=True) as second:
        second.append(http(2))
    assert [it["seq"] for it in read_all(path)] == [1, 2]


def test_writer_in_another_process_is_named_and_a_killed_one_blocks_nobody(tmp_path):
    path = tmp_path / "c.db"
    make(path, [http(1)])
    code = ("import sys, time\nfrom proxy.store import Cassette\n"
            "c = Cassette.open(sys.argv[1], write=True)\nprint('holding', flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(path), "--as-recorder"], cwd=ROOT, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "holding"
        with pytest.raises(CassetteLocked) as e:
            Cassette.open(path, write=True)
        assert f"by pid {p.pid} (-c c.db --as-recorder) since " in str(e.value)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert (tmp_path / "c.db.lock").exists()  # left by the killed process, and held by no one
    with Cassette.open(path, write=True) as c:
        c.append(http(2))
    assert len(read_all(path)) == 2


# -- read-only locations ---------------------------------------------------------------------


def test_read_only_directory_reads_and_refuses_writes_in_one_line(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    path = d / "c.db"
    make(path, [http(1), http(2)])
    # a file an older proxy left in WAL mode (header says WAL, no -wal beside it)
    wal_mode = d / "wal.db"
    make(wal_mode, [http(3)])
    conn = __import__("sqlite3").connect(wal_mode)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    assert wal_mode.read_bytes()[18:20] == b"\x02\x02" and not (d / "wal.db-wal").exists()
    with read_only(d):
        assert [it["seq"] for it in read_all(path)] == [1, 2]
        assert [it["seq"] for it in read_all(wal_mode)] == [1]
        for attempt in (lambda: Cassette.open(path, write=True), lambda: Cassette.create(d / "new.db")):
            with pytest.raises(CassetteNotWritable) as e:
                attempt()
            assert "\n" not in str(e.value) and ("read-only" in str(e.value) or "permission" in str(e.value))
        assert sorted(p.name for p in d.iterdir()) == ["c.db", "wal.db"]


def test_read_only_file_in_a_writable_directory(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files; the read-only mount case covers root")
    path = tmp_path / "c.db"
    make(path, [http(1)])
    path.chmod(0o444)
    with pytest.raises(CassetteNotWritable, match="the file is read-only"):
        Cassette.open(path, write=True)
    assert [it["seq"] for it in read_all(path)] == [1]


# -- a failing disk ------------------------------------------------------------------------------


def test_full_disk_before_recording_is_refused(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        if disk is None:
            pytest.skip("no tmpfs here (the injected size limit below covers the failure mid-write)")
        path = disk / "c.db"
        make(path, [http(1)])
        fill(disk)
        with pytest.raises(CassetteNotWritable, match="the disk is full"):
            Cassette.open(path, write=True)
        with pytest.raises(CassetteNotWritable, match="the disk is full"):
            Cassette.create(disk / "new.db")
        assert [it["seq"] for it in read_all(path)] == [1]


def test_disk_filling_up_mid_recording_fails_every_flush_and_keeps_what_was_committed(tmp_path):
    with small_disk(tmp_path / "disk", "512k") as disk:
        path = (disk or tmp_path) / "c.db"
        cassette = Cassette.create(path)
        if disk is None:  # the same SQLITE_FULL, from SQLite's own limit on this connection
            cassette._conn.execute("PRAGMA max_page_count = 300")
        errors = []
        w = CassetteWriter(cassette, on_error=errors.append)
        done = []
        failed = None
        for i in range(2000):
            it = Interaction(Kind.HTTP, Request("POST", "/v1/upload"), Response(200, "OK", []))
            try:
                seq = w.begin(it)
            except CassetteWriteFailed as e:
                failed = e
                break
            w.add_chunk(seq, Chunk(0.0, os.urandom(8192)))  # incompressible: fills the disk
            w.finish(seq, End.COMPLETE)
            fut = w.flush()
            try:
                fut.result(10)
                done.append(seq)
            except CassetteWriteFailed as e:
                failed = e
                break
        assert failed is not None and done, "the disk never filled"
        assert "disk is full" in str(failed) and str(path) in str(failed) and "\n" not in str(failed)
        assert errors == [failed]  # on_error, once
        with pytest.raises(CassetteWriteFailed):  # never a result after the failure
            w.flush().result(1)
        with pytest.raises(CassetteWriteFailed):
            w.begin(Interaction(Kind.HTTP, Request("GET", "/")))
        with pytest.raises(CassetteWriteFailed):
            w.close()
        assert not (path.parent / "c.db.lock").exists()  # released
        its = read_all(path)  # everything whose flush succeeded is there, intact
        assert [it["seq"] for it in its][: len(done)] == done
        assert all(len(it["chunks"]) == 1 for it in its[: len(done)])
        assert raw(path, "SELECT count(*) FROM interactions")[0][0] == len(done)


def test_a_writer_call_that_raises_fails_the_writer_like_a_failed_write(tmp_path):
    """Redaction runs on the writer thread: a bug there must stop the recording visibly,
    never let the interaction through unrecorded."""
    path = tmp_path / "c.db"
    errors = []
    w = CassetteWriter(Cassette.create(path), on_error=errors.append)
    ok = w.begin(http(1))
    w.finish(ok, End.COMPLETE)
    w.flush().result(5)

    def broken(cassette):
        raise ValueError("redactor bug")

    seq = w.begin(Interaction(Kind.HTTP, Request("POST", "/v1/responses"), Response(200, "OK", [])))
    w.call(broken)
    w.finish(seq, End.COMPLETE)
    with pytest.raises(CassetteWriteFailed, match="redactor bug"):
        w.flush().result(5)
    assert len(errors) == 1
    with pytest.raises(CassetteWriteFailed):
        w.begin_with(lambda c: http(3))
    with pytest.raises(CassetteWriteFailed):
        w.close()
    assert [it["seq"] for it in read_all(path)] == [ok]  # the failed batch rolled back whole


def test_a_flush_given_up_on_before_the_commit_does_not_stop_the_writer(tmp_path):
    """The recorder awaits a flush through asyncio.wrap_future: a hook task cancelled while
    it waits cancels the flush's future. The writer must still commit what was queued,
    resolve the flushes after it, and report nothing missing that is in the file (a
    resolution that raises on the writer thread would end it: every later write lost, the
    later flushes never answered)."""
    import threading
    import time

    path = tmp_path / "c.db"
    w = CassetteWriter(Cassette.create(path))
    started = threading.Event()

    def slow(cassette):
        started.set()
        time.sleep(0.2)

    seq = w.begin(http(1, chunks=0))
    w.call(slow)
    assert started.wait(5)
    given_up = w.flush()
    assert given_up.cancel()  # the writer is inside the batch before it: not yet answered
    w.add_chunk(seq, Chunk(0.1, b"data: after\n\n"))
    w.finish(seq, End.COMPLETE, duration=0.2)
    w.flush().result(5)
    w.close()
    (it,) = read_all(path)
    assert it["end"] == "complete" and len(it["chunks"]) == 1


def test_a_damaged_page_read_ahead_fails_only_the_recording_it_holds(tmp_path, monkeypatch):
    """Reading ahead reads the next recordings' events in the same query: a damaged SQLite
    page of one of them (a broken overflow chain) failed the query, so the recording asked
    for, whose own events are intact, failed with it (and the session stopped)."""
    import os
    import sqlite3

    from proxy.model import Chunk
    from proxy.store import CassetteCorrupt

    from .test_store import http, make

    path = tmp_path / "c.db"
    its = []
    for i in range(1, 6):
        it = http(i, chunks=0)
        it.chunks = [Chunk(0.0, os.urandom(20_000 if i == 3 else 100))]
        its.append(it)
    make(path, its)
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            overflow = [p for (p,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'overflow' ORDER BY pageno")]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat")
    finally:
        conn.close()
    assert len(overflow) > 2  # only #3's events overflow a page
    with open(path, "r+b") as f:
        f.seek((overflow[1] - 1) * page_size)
        f.write((2**31 - 5).to_bytes(4, "big"))  # the next page of the chain: far beyond the file
    from proxy.store import opening

    monkeypatch.setattr(opening, "QUICK_CHECK_MAX_BYTES", 0)  # as a file over 16 MB is opened
    with Cassette.open(path) as c:
        src = c.source()
        got = list(src.candidates(("http", "POST", "/v1/responses", "")))
        assert len(src.load_events(got[0]).chunks) == 1
        assert len(src.load_events(got[1]).chunks) == 1
        with pytest.raises(CassetteCorrupt):
            src.load_events(got[2])
        assert len(src.load_events(got[3]).chunks) == 1


def test_a_damaged_events_page_does_not_fail_the_candidates_read_with_it(tmp_path, monkeypatch):
    """A candidates page reads the small recordings' events with their rows (one join): a
    damaged SQLite page of the events table failed that query, and with it every request
    of the key, where the rows themselves are intact and only the recordings whose events
    are damaged must fail, when they are asked for."""
    import sqlite3

    from proxy.store import CassetteCorrupt, opening

    path = tmp_path / "c.db"
    make(path, [http(i, chunks=2) for i in range(1, 6)])
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            leaves = [p for (p,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf'")]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat")
    finally:
        conn.close()
    assert leaves
    with open(path, "r+b") as f:
        for page in leaves:  # a leaf's header: a page type no b-tree has
            f.seek((page - 1) * page_size + (100 if page == 1 else 0))
            f.write(b"\x07")
    monkeypatch.setattr(opening, "QUICK_CHECK_MAX_BYTES", 0)  # as a file over 16 MB is opened
    with Cassette.open(path) as c:
        src = c.source()
        got = list(src.candidates(("http", "POST", "/v1/responses", "")))
        assert [it.seq for it in got] == [1, 2, 3, 4, 5]
        with pytest.raises(CassetteCorrupt):
            src.load_events(got[0])


def test_a_damaged_table_name_is_a_cassette_error(tmp_path):
    """Damage found by the random-damage property test: a table name in sqlite_master
    turned into a blob made opening raise TypeError (sorting str with bytes) instead of
    saying what the file is."""
    import sqlite3

    from proxy.store import CassetteError

    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a)")
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET name = CAST('t' AS BLOB) WHERE name = 't'")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE u (a)")
    conn.commit()
    conn.close()
    with pytest.raises(CassetteError, match="not a proxy cassette"):
        Cassette.open(path)

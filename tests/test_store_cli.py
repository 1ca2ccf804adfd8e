"""The store's promises seen from the commands: a second recorder, read-only places and
full disks refused in one line before listening; a write failing mid-recording stops the
recorder and fails the client it concerns; `serve --record-mode all` with nothing
recorded keeps the old cassette; damage found while replaying stops replay with exit 2;
`proxy migrate`; `--cassette-dir` keeps serving while a big cassette is opened."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import Cassette

from .conftest import API_KEY, ROOT, proxy_cmd, proxy_proc, run_cli
from .test_bad_input import one_line_error
from .test_store import DATA, http, make, raw, read_all
from .test_store_failures import fill, read_only, small_disk

AUTH = {"authorization": f"Bearer {API_KEY}"}


def record_args(upstream_url: str, cassette) -> list[str]:
    return ["record", "--upstream", upstream_url, "--cassette", str(cassette), "--listen", "127.0.0.1:0"]


def test_second_recorder_is_refused_naming_the_first(upstream, tmp_path):
    cassette = tmp_path / "c.db"
    with proxy_proc(*record_args(upstream.url, cassette)) as first:
        second = run_cli(*record_args(upstream.url, cassette))
        one_line_error(second, str(cassette), f"already being written by pid {first.popen.pid} (proxy record")
        assert "recording to" not in second.stdout  # refused before listening
        assert httpx.get(first.url + "/v1/models", headers=AUTH).status_code == 200
    assert first.popen.returncode == 0 and "recorded 1 interaction(s)" in first.out
    assert len(read_all(cassette)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["c.db"]


def test_serve_all_holds_the_cassette_it_will_replace(upstream, tmp_path):
    # serve --record-mode all records into PATH.recording and replaces PATH at the end:
    # a recorder appending to PATH meanwhile would be thrown away, so each refuses the other.
    cassette = tmp_path / "c.db"
    make(cassette, [http(1), http(2)])
    serve_all = ("serve", "--cassette", str(cassette), "--record-mode", "all", "--upstream", upstream.url,
                 "--listen", "127.0.0.1:0")
    with proxy_proc(*record_args(upstream.url, cassette)) as first:
        one_line_error(run_cli(*serve_all), str(cassette), f"already being written by pid {first.popen.pid}")
    assert first.popen.returncode == 0
    with proxy_proc(*serve_all) as p:
        one_line_error(run_cli(*record_args(upstream.url, cassette)), str(cassette), "already being written by pid")
        assert httpx.get(p.url + "/v1/models", headers=AUTH).status_code == 200
    assert p.popen.returncode == 0, p.err
    assert [it["path"] for it in read_all(cassette)] == ["/v1/models"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.db"]  # the lock went with the run


def test_read_only_directory_and_full_disk_are_refused_before_listening(upstream, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    make(ro / "old.db", [http(1)])
    with read_only(ro):
        for target in (ro / "old.db", ro / "new.db"):
            r = run_cli(*record_args(upstream.url, target))
            one_line_error(r, str(target))
            assert "read-only" in r.stderr or "permission denied" in r.stderr, r.stderr
            assert "recording to" not in r.stdout
        # reading works there, and leaves nothing behind
        assert run_cli("inspect", str(ro / "old.db")).returncode == 0
        with proxy_proc("replay", "--cassette", str(ro / "old.db"), "--listen", "127.0.0.1:0", "--speed", "0") as p:
            assert httpx.post(p.url + "/v1/responses", json={}).status_code == 200
        assert p.stop() == 0
        assert sorted(x.name for x in ro.iterdir()) == ["old.db"]
    with small_disk(tmp_path / "disk") as disk:
        if disk is None:
            return  # no tmpfs here; the store tests cover the size limit
        make(disk / "old.db", [http(1)])
        fill(disk)
        for target in (disk / "old.db", disk / "new.db"):
            r = run_cli(*record_args(upstream.url, target))
            one_line_error(r, str(target), "the disk is full")


def test_disk_filling_up_mid_recording_fails_that_client_and_stops_the_recorder(upstream, tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        if disk is None:
            pytest.skip("no tmpfs here: the store tests inject the same failure on the connection")
        cassette = disk / "c.db"
        with proxy_proc(*record_args(upstream.url, cassette)) as rec:
            outcomes = []
            for i in range(40):
                big = base64.b64encode(os.urandom(48_000)).decode()  # 64 KB that do not compress
                try:
                    with httpx.stream("POST", rec.url + "/v1/responses", headers={**AUTH, "x-sim-events": "3"},
                                      json={"model": "sim-1", "input": big, "stream": True}, timeout=10) as r:
                        body = b"".join(r.iter_raw())
                    outcomes.append(("ok", body))
                except httpx.HTTPError as e:
                    outcomes.append(("failed", e))
                    break
            assert outcomes[-1][0] == "failed", "the disk never filled"
            code = rec.popen.wait(20)  # the recorder stops by itself
        rec.stop()
        assert code == 2, (rec.out, rec.err)
        lines = rec.err.strip().splitlines()
        assert len(lines) == 1 and "the disk is full" in lines[0] and str(cassette) in lines[0], rec.err
        assert "recorded" not in rec.out  # never "recorded N" over a failed write
        stored = read_all(cassette)
        ok = [body for what, body in outcomes if what == "ok"]
        assert [b"".join(base64.b64decode(c[1]) for c in it["chunks"]) for it in stored[: len(ok)]] == ok


def test_serve_all_with_nothing_recorded_keeps_the_old_cassette(upstream, tmp_path):
    cassette = tmp_path / "c.db"
    make(cassette, [http(i) for i in range(1, 21)])
    before = cassette.read_bytes()
    with proxy_proc("serve", "--cassette", str(cassette), "--record-mode", "all", "--upstream", upstream.url,
                    "--listen", "127.0.0.1:0") as p:
        pass
    assert p.popen.returncode == 0, p.err
    assert cassette.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.db"]  # no PATH.recording left either
    with proxy_proc("serve", "--cassette", str(cassette), "--record-mode", "all", "--upstream", upstream.url,
                    "--listen", "127.0.0.1:0") as p:
        assert httpx.get(p.url + "/v1/models", headers=AUTH).status_code == 200
    assert [it["path"] for it in read_all(cassette)] == ["/v1/models"]  # re-recorded: replaced


def test_a_damaged_key_index_stops_replay_with_exit_2(tmp_path):
    # Found by a new user: a flipped byte in the index replay matches by left every blob
    # intact, so replay served other requests' recordings. The background check now runs
    # SQLite's integrity_check, which compares indexes with their tables.
    import sqlite3

    cassette = tmp_path / "c.db"
    make(cassette, [http(i, f"/v1/p{i}") for i in range(1, 9)])
    conn = sqlite3.connect(cassette)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'interactions_by_key'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    data = bytearray(cassette.read_bytes())
    page = data[(root - 1) * page_size: root * page_size]
    at = page.rindex(b"/v1/p5")  # a key in the index's cells, not in the table
    data[(root - 1) * page_size + at + 5] ^= 0x01  # "/v1/p5" -> "/v1/p4"
    cassette.write_bytes(bytes(data))
    p = subprocess.Popen(proxy_cmd("replay", "--cassette", str(cassette), "--listen", "127.0.0.1:0", "--speed", "0"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = p.communicate(timeout=30)  # no request needed: the background check finds it
    assert p.returncode == 2, (out, err)
    assert "damaged" in err and "index" in err, err


def test_damage_met_while_replaying_fails_that_request_and_exits_2(tmp_path):
    cassette = tmp_path / "c.db"
    make(cassette, [http(1), http(2, "/v1/other")])
    (blob,) = raw(cassette, "SELECT data FROM events WHERE seq = 2")[0]
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0xFF
    conn = __import__("sqlite3").connect(cassette)
    conn.execute("UPDATE events SET data = ? WHERE seq = 2", (bytes(damaged),))
    conn.commit()
    conn.close()
    p = subprocess.Popen(proxy_cmd("replay", "--cassette", str(cassette), "--listen", "127.0.0.1:0", "--speed", "0"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = p.communicate(timeout=30)  # the background check finds it: no request needed
    assert p.returncode == 2 and "replaying" in out and "served" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interaction 2: damaged events" in lines[0], err


def test_migrate_command(tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(DATA / "example-v2.db", old)
    one_line_error(run_cli("inspect", str(old)), f"run `proxy migrate {old}`")
    r = run_cli("migrate", str(old), str(tmp_path / "missing.db"))
    assert r.returncode == 2 and f"{old}: schema 2 -> 3" in r.stdout and "missing.db: no such cassette" in r.stderr
    r = run_cli("migrate", str(old))
    assert r.returncode == 0 and r.stdout.strip() == f"{old}: schema 3, up to date"
    assert run_cli("inspect", str(old)).returncode == 0


def test_cassette_dir_keeps_streaming_while_a_big_cassette_opens(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    slow = Interaction(Kind.HTTP, Request("GET", "/v1/slow"), Response(200, "OK", [("transfer-encoding", "chunked")]),
                       [Chunk(0.02 * i, b"tick %d\n" % i) for i in range(1, 41)], end=End.COMPLETE)
    make(d / "small.db", [slow])
    with Cassette.create(d / "big.db") as c:
        c.append_many(Interaction(Kind.HTTP, Request("GET", f"/v1/items/{i}"), Response(200, "OK", []),
                                  [Chunk(0.0, b"%d" % i)], end=End.COMPLETE) for i in range(30_000))

    async def scenario(url):
        async with httpx.AsyncClient(timeout=30) as client:
            async def stream():
                gaps, last = [], None
                async with client.stream("GET", url + "/c/small/v1/slow") as r:
                    async for _ in r.aiter_raw():
                        now = time.perf_counter()
                        if last is not None:
                            gaps.append(now - last)
                        last = now
                return gaps

            task = asyncio.create_task(stream())
            await asyncio.sleep(0.1)
            big = await client.get(url + "/c/big/v1/items/29999")
            return await task, big

    with proxy_proc("replay", "--cassette-dir", str(d), "--listen", "127.0.0.1:0", "--speed", "1") as p:
        gaps, big = asyncio.run(scenario(p.url))
    assert big.status_code == 200 and big.content == b"29999"
    assert max(gaps) < 0.25, max(gaps)  # a stalled loop would hold the stream for the whole open

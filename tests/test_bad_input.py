"""Bad input is a one-line error naming the problem, exit code 2, never a traceback."""

from __future__ import annotations

import os
import socket
import sqlite3

import pytest

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import Cassette, CassetteCorrupt, CassetteMissing, NewerSchema, NotACassette

from .conftest import run_cli


def good(path):
    with Cassette.create(path, upstream="http://sim") as c:
        for i in range(30):
            c.append(Interaction(Kind.HTTP, Request("GET", f"/v1/x{i}"), Response(200, "OK", []),
                                 [Chunk(0.01, b"data: %d\n\n" % i * 20)], end=End.COMPLETE))
    return path


def one_line_error(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0], lines[0]


def bad_files(tmp_path):
    missing = tmp_path / "missing.db"
    rand = tmp_path / "random.db"
    rand.write_bytes(os.urandom(5000))
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("create table users (id integer, name text)")
    con.commit()
    con.close()
    newer = good(tmp_path / "newer.db")
    con = sqlite3.connect(newer)
    con.execute("update meta set value='99' where key='schema_version'")
    con.commit()
    con.close()
    truncated = good(tmp_path / "truncated.db")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    blob = good(tmp_path / "blob.db")
    con = sqlite3.connect(blob)
    con.execute("update events set data = x'28b52ffd00ffff' where seq = 3")
    con.commit()
    con.close()
    return {
        "missing": (missing, CassetteMissing, "no such cassette"),
        "random": (rand, NotACassette, "not a SQLite file"),
        "other": (other, NotACassette, "not a proxy cassette"),
        "newer": (newer, NewerSchema, "newer"),
        "truncated": (truncated, CassetteCorrupt, "damaged"),
        "blob": (blob, CassetteCorrupt, "interaction 3"),
    }


@pytest.mark.parametrize("case", ["missing", "random", "other", "newer", "truncated", "blob"])
def test_bad_cassettes_library_and_cli(tmp_path, case):
    path, exc, words = bad_files(tmp_path)[case]
    with pytest.raises(exc) as e:
        with Cassette.open(path) as c:
            list(c.interactions())
    assert str(path) in str(e.value) and words in str(e.value)
    one_line_error(run_cli("replay", "--cassette", str(path), "--listen", "127.0.0.1:0"), str(path), words)
    if case != "blob":  # the listing does not decode bodies
        one_line_error(run_cli("inspect", str(path)), str(path), words)


def test_other_programs_database_is_left_untouched(tmp_path):
    other = bad_files(tmp_path)["other"][0]
    before = other.read_bytes()
    run_cli("inspect", str(other))
    assert other.read_bytes() == before
    assert not (tmp_path / "other.db-wal").exists()


def test_unknown_flag_and_bad_values():
    r = run_cli("replay", "--cassete", "x.db")
    assert r.returncode == 2 and "No such option" in r.stderr
    r = run_cli("replay", "--cassette", "x.db", "--speed", "-1")
    assert r.returncode == 2 and "--speed" in r.stderr
    r = run_cli("replay", "--cassette", "x.db", "--listen", "nope")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr


def test_inspect_number_out_of_range(tmp_path):
    path = good(tmp_path / "g.db")
    one_line_error(run_cli("inspect", str(path), "31"), "no interaction 31", "has 30")


def test_port_in_use(tmp_path):
    path = good(tmp_path / "g.db")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        one_line_error(run_cli("replay", "--cassette", str(path), "--listen", f"127.0.0.1:{port}"), f"127.0.0.1:{port}")
        one_line_error(run_cli("record", "--upstream", "http://127.0.0.1:9", "--cassette", str(tmp_path / "n.db"),
                               "--listen", f"127.0.0.1:{port}"), f"127.0.0.1:{port}")
    finally:
        s.close()


def test_non_loopback_needs_expose(tmp_path):
    path = good(tmp_path / "g.db")
    one_line_error(run_cli("replay", "--cassette", str(path), "--listen", "0.0.0.0:0"), "--expose")


def test_bad_upstream_url(tmp_path):
    one_line_error(run_cli("record", "--upstream", "ftp://x", "--cassette", str(tmp_path / "n.db"),
                           "--listen", "127.0.0.1:0"), "ftp://x")

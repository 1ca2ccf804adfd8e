"""Ctrl-C (SIGINT) while traffic is open: `proxy replay` and `proxy record` cut what is
open, say so in their one summary line, exit 0 and print no traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import httpx
import pytest

from proxy.model import End
from proxy.store import Cassette

from .conftest import API_KEY, ROOT, replayer

AUTH_HEADER = {"authorization": f"Bearer {API_KEY}"}


def open_stream(client: httpx.Client, url: str, **kw):
    """Start a streamed POST /v1/responses and read its first chunk."""
    r = client.send(client.build_request("POST", url + "/v1/responses", **kw), stream=True)
    chunks = r.iter_raw()
    first = next(chunks)
    return r, chunks, first


def read_rest(chunks) -> tuple[bytes, str]:
    got, error = b"", ""
    try:
        for b in chunks:
            got += b
    except httpx.HTTPError as e:
        error = type(e).__name__
    return got, error


def assert_quiet(err: str) -> None:
    assert "Traceback" not in err and "ERROR" not in err and "Addon error" not in err, err


def test_ctrl_c_during_a_replayed_stream_cuts_it_quietly():
    with replayer(ROOT / "cassettes" / "example.db", "--speed", "0.1") as rp, httpx.Client(timeout=20) as c:
        r, chunks, first = open_stream(c, rp.url, json={"model": "sim-1", "stream": True, "input": "Say hello"})
        assert r.status_code == 200 and first
        assert rp.stop(signal.SIGINT) == 0
        rest, error = read_rest(chunks)
    assert error == "RemoteProtocolError"  # the client sees a cut stream, not a complete one
    assert b"response.completed" not in first + rest
    assert_quiet(rp.err)
    assert rp.out.splitlines()[1:] == ["served 1 of 5 recording(s); 0 miss(es); 1 open connection(s) cut by the stop"]


def test_ctrl_c_during_a_recorded_stream_keeps_it_as_cut(upstream, recorder):
    with httpx.Client(timeout=20, headers=AUTH_HEADER) as c:
        assert c.get(recorder.url + "/v1/models").status_code == 200
        r, chunks, first = open_stream(c, recorder.url, json={"model": "sim-1", "stream": True, "input": "slow"},
                                       headers={"x-sim-gap-ms": "300", "x-sim-events": "30"})
        assert r.status_code == 200
        assert recorder.stop(signal.SIGINT) == 0
        rest, error = read_rest(chunks)
    assert error and b"response.completed" not in first + rest
    assert_quiet(recorder.err)
    assert f"recorded 2 interaction(s) to {recorder.cassette} (1 cut short by the stop)" in recorder.out
    with Cassette.open(recorder.cassette) as cas:
        models, stream = list(cas.interactions())
    assert models.end is End.COMPLETE
    assert stream.end is End.INCOMPLETE and stream.end_detail == "cut short by the stop"
    # the chunks that passed before the stop are kept, as the client got them
    assert stream.body and (first + rest).startswith(stream.body)


SIGNAL_AFTER_BANNER = textwrap.dedent("""
    import os, signal, sys
    import proxy.cli as cli

    say = cli._say

    def say_then_interrupt(line):
        # A client (or a test) may send SIGINT as soon as it reads the address.
        say(line)
        os.kill(os.getpid(), signal.SIGINT)

    cli._say = say_then_interrupt
    sys.argv = ["proxy", *sys.argv[1:]]
    cli.main()
""")


@pytest.mark.parametrize("command", ["replay", "record"])
def test_sigint_right_after_the_address_is_printed_still_stops_cleanly(command, upstream, tmp_path):
    if command == "replay":
        args = ["replay", "--cassette", str(ROOT / "cassettes" / "example.db")]
        summary = "served 0 of 5 recording(s); 0 miss(es)"
    else:
        args = ["record", "--upstream", upstream.url, "--cassette", str(tmp_path / "r.db")]
        summary = "recorded 0 interaction(s)"
    p = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_BANNER, *args, "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert summary in p.stdout
    assert "Traceback" not in p.stderr and "Aborted" not in p.stderr

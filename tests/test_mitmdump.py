"""The record addon runs under mitmproxy's own tools: `mitmdump -s proxy/record/addon.py
--set proxy_cassette=...` (and so mitmweb) records a cassette, with redaction on."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proxy.model import End
from proxy.net import bind
from proxy.store import Cassette

from .conftest import API_KEY, ROOT

MITMDUMP = Path(sys.executable).parent / "mitmdump"
ADDON = ROOT / "proxy" / "record" / "addon.py"


def _free_port() -> int:
    s = bind("127.0.0.1", 0)
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_listening(p: subprocess.Popen, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise AssertionError(f"mitmdump exited with {p.returncode}: {p.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise AssertionError(f"mitmdump did not listen on {port}: {p.communicate()}")


@pytest.mark.skipif(not MITMDUMP.exists(), reason="mitmproxy is not installed in this environment")
def test_mitmdump_with_the_addon_records_a_cassette(upstream, tmp_path):
    cassette, port = tmp_path / "c.db", _free_port()
    p = subprocess.Popen([str(MITMDUMP), "-q", "-s", str(ADDON), "--mode", f"reverse:{upstream.url}",
                          "--listen-host", "127.0.0.1", "--listen-port", str(port),
                          "--set", f"confdir={tmp_path / 'mitmproxy'}", "--set", "connection_strategy=lazy",
                          "--set", f"proxy_cassette={cassette}", "--set", "proxy_redact_header=x-session"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listening(p, port)
        body = {"model": "sim-1", "input": "hello", "stream": True}
        headers = {"authorization": f"Bearer {API_KEY}", "x-session": "s-123", "x-sim-events": "6"}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/responses", json=body, headers=headers,
                          timeout=30) as r:
            received = b"".join(r.iter_raw())
        assert r.status_code == 200 and b"response.completed" in received
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err

    with Cassette.open(cassette) as c:
        assert c.count() == 1
        it = c.get(1)
    assert it.end is End.COMPLETE and it.request.path == "/v1/responses"
    assert it.request.header("authorization") == "REDACTED" and it.request.header("x-session") == "REDACTED"
    assert len(it.chunks) > 5 and it.body == received  # the stream as it arrived, chunk by chunk
    assert API_KEY.encode() not in it.request.body


def test_addon_options_are_checked_in_configure(tmp_path):
    pytest.importorskip("mitmproxy")
    from mitmproxy import exceptions
    from mitmproxy.test import taddons

    from proxy.record.addon import Recorder

    rec = Recorder()
    with taddons.context(rec) as tctx:
        with pytest.raises(exceptions.OptionsError, match="bad redaction option"):
            tctx.configure(rec, proxy_redact_pattern=["("])
        bad = tmp_path / "not-a-cassette.db"
        bad.write_bytes(b"this is no SQLite file" * 100)
        with pytest.raises(exceptions.OptionsError, match="not-a-cassette"):
            tctx.configure(rec, proxy_cassette=str(bad))
        assert rec.cassette is None  # nothing recorded into a file it cannot use
        tctx.configure(rec, proxy_cassette=str(tmp_path / "ok.db"))
        assert rec.cassette is not None
        rec.done()
    assert (tmp_path / "ok.db").exists()


@pytest.mark.skipif(not MITMDUMP.exists(), reason="mitmproxy is not installed in this environment")
def test_mitmdump_without_a_cassette_says_nothing_is_recorded(upstream, tmp_path):
    port = _free_port()
    p = subprocess.Popen([str(MITMDUMP), "-s", str(ADDON), "--mode", f"reverse:{upstream.url}",
                          "--listen-host", "127.0.0.1", "--listen-port", str(port),
                          "--set", f"confdir={tmp_path / 'mitmproxy'}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_listening(p, port)
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    assert "proxy_cassette is not set: nothing is recorded" in out

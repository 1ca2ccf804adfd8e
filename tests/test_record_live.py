"""`proxy record` on a terminal shows a live line as interactions are recorded (count,
bytes, the last one); into a pipe it prints only its start and end lines."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time

import httpx
import websockets.sync.client

from .conftest import ROOT, URL_RE, proxy_cmd, proxy_proc


def _read_until(fd: int, pattern: str, buf: bytearray, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf.decode("utf-8", "replace")):
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} in {buf.decode('utf-8', 'replace')!r}"
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if r:
            try:
                buf += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return buf.decode("utf-8", "replace")


def test_live_line_on_a_terminal(upstream, tmp_path):
    main, child = pty.openpty()
    p = subprocess.Popen(proxy_cmd("record", "--upstream", upstream.url, "--cassette", str(tmp_path / "c.db"),
                                   "--listen", "127.0.0.1:0"), stdout=child, stderr=subprocess.PIPE, cwd=ROOT,
                         env=dict(os.environ, COLUMNS="200"))
    os.close(child)
    buf = bytearray()
    try:
        url = URL_RE.search(_read_until(main, r"recording to .* via http://\S+", buf)).group(1)
        httpx.get(url + "/v1/models")
        _read_until(main, r"recorded 1 · ", buf)
        httpx.post(url + "/v1/responses", json={"model": "sim-1", "input": "hi", "stream": True})
        with websockets.sync.client.connect(url.replace("http", "ws") + "/v1/responses") as ws:
            ws.send('{"type": "response.create", "model": "sim-1", "input": "hi"}')
            while '"response.completed"' not in ws.recv():
                pass
        out = _read_until(main, r"recorded 3 · ", buf)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)
    out = _read_until(main, r"recorded 3 interaction\(s\) to", buf)
    os.close(main)
    lines = re.split(r"\r\x1b\[K", out)
    assert lines[1].startswith("recorded 1 · 103 B · last GET /v1/models 200 (103 B)")
    assert re.match(r"recorded 2 · \d+\.\d KB · last POST /v1/responses 200 \(\d+ B\)", lines[2])
    assert re.match(r"recorded 3 · \d+\.\d KB · last GET /v1/responses 101 \(\d+ frames\)", lines[3])
    assert lines[3].rstrip().endswith("recorded 3 interaction(s) to " + str(tmp_path / "c.db"))


def test_quiet_into_a_pipe(upstream, tmp_path):
    with proxy_proc("record", "--upstream", upstream.url, "--cassette", str(tmp_path / "c.db"),
                    "--listen", "127.0.0.1:0") as p:
        for _ in range(2):  # streamed: each end reaches the client once committed, so the count is settled
            httpx.post(p.url + "/v1/responses", json={"model": "sim-1", "input": "hi", "stream": True})
    assert p.out.splitlines() == [p.first_line.strip(), f"recorded 2 interaction(s) to {tmp_path / 'c.db'}"]
    assert "\r" not in p.out and "\x1b" not in p.out


def test_serve_new_episodes_shows_each_recorded_miss(upstream, tmp_path):
    import shutil

    cassette = tmp_path / "c.db"
    shutil.copy(ROOT / "cassettes" / "example.db", cassette)
    main, child = pty.openpty()
    p = subprocess.Popen(proxy_cmd("serve", "--cassette", str(cassette), "--record-mode", "new_episodes", "--upstream",
                                   upstream.url, "--listen", "127.0.0.1:0", "--speed", "0"), stdout=child,
                         stderr=subprocess.PIPE, cwd=ROOT)
    os.close(child)
    buf = bytearray()
    try:
        url = URL_RE.search(_read_until(main, r"serving .* on http://\S+", buf)).group(1)
        assert httpx.get(url + "/v1/models").status_code == 200  # replayed: no line
        assert httpx.post(url + "/v1/embeddings", json={"input": "x"}).status_code == 404  # a miss, forwarded
        out = _read_until(main, r"recorded 1 · ", buf)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)
    os.close(main)
    assert re.search(r"recorded 1 · \d+ B · last POST /v1/embeddings 404 \(\d+ B\)", out)

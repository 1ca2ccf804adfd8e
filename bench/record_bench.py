"""Recorder overhead: per-event latency through `proxy record` vs a direct connection.

The upstream stamps each event with time.monotonic() when it sends it (CLOCK_MONOTONIC
is system-wide, so the client in another process can subtract it).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import tempfile
import time
from pathlib import Path

from common import mitmdump, pct, proxy, spread

from proxy.uvicorn_server import UvicornServer
from proxy.timing import Pacer


class StampingUpstream:
    def __init__(self, n: int, gap: float):
        self.n, self.gap = n, gap

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]})
        pacer = Pacer(1.0)
        for i in range(self.n):
            await pacer.until(i * self.gap)
            data = json.dumps({"i": i, "t": time.monotonic()})
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def latencies(url: str, connect=None) -> tuple[list[float], float]:
    """Per-event latency (ms) and time to first event (ms), read with a raw socket
    (``connect()``'s, e.g. a TLS tunnel through a forward proxy, when given)."""
    host, port = re.match(r"http://([0-9.]+):(\d+)", url).groups()
    t0 = time.monotonic()
    s = connect() if connect is not None else socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    out, buf, first = [], b"", None
    while True:
        data = s.recv(65536)
        now = time.monotonic()
        if not data:
            break
        buf += data
        for m in re.finditer(rb'"t": ([0-9.]+)', data):
            out.append((now - float(m.group(1))) * 1000)
            if first is None:
                first = (now - t0) * 1000
        if buf.endswith(b"0\r\n\r\n"):
            break
    s.close()
    return out, first or float("nan")


async def _throughput(url: str, streams: int, n: int) -> float:
    """Events/s through the recorder, each stream read to its end by a socket reader thread."""
    t = time.perf_counter()
    await asyncio.gather(*(asyncio.to_thread(latencies, url) for _ in range(streams)))
    return streams * n / (time.perf_counter() - t)


def run(quick: bool = False) -> list[dict]:
    n = 100 if quick else 1000
    runs = 1 if quick else 3
    up = UvicornServer(StampingUpstream(n, 0.002), quiet=True).start_in_thread()
    trials = []  # (direct, bare, via) latency lists, measured back to back in each trial
    try:
        with tempfile.TemporaryDirectory() as d, mitmdump(up.url) as bare_url, \
                proxy("record", "--upstream", up.url, "--cassette", str(Path(d) / "r.db"), "--listen", "127.0.0.1:0") as (url, _):
            latencies(bare_url)  # warm-up: mitmproxy's first flow pays one-off costs
            latencies(url)
            for _ in range(runs):
                direct, ttfe_direct = latencies(up.url)
                bare, ttfe_bare = latencies(bare_url)
                via, ttfe_via = latencies(url)
                trials.append((direct, bare, via, ttfe_direct, ttfe_bare, ttfe_via))
    finally:
        up.stop_thread()
    ratios = [pct(t[2], 50) / pct(t[1], 50) for t in trials]
    direct, bare, via, ttfe_direct, ttfe_bare, ttfe_via = sorted(trials, key=lambda t: pct(t[2], 50) / pct(t[1], 50))[len(trials) // 2]
    added = pct(via, 50) - pct(direct, 50)
    ratio = pct(via, 50) / pct(bare, 50)
    rows = [
        {"bench": f"record overhead, {n}-event SSE stream (median of {runs} trials)",
         "metric": "per-event latency p50: direct / bare mitmproxy / proxy record",
         "value": f"{pct(direct, 50):.3f} / {pct(bare, 50):.3f} / {pct(via, 50):.3f} ms", "target": "", "ok": None},
        {"bench": "record overhead", "metric": "added latency per event p50 (p99) vs direct",
         "value": f"{added:.3f} ms ({pct(via, 99) - pct(direct, 99):.3f} ms)", "target": "<= 1 ms p50", "ok": added <= 1.0},
        {"bench": "record overhead", "metric": "proxy record / bare mitmproxy, per-event latency p50",
         "value": f"{ratio:.2f}x ({spread(ratios)})", "target": "<= 1.2x", "ok": ratio <= 1.2},
        {"bench": "record overhead", "metric": "time to first event: direct / bare mitmproxy / proxy record",
         "value": f"{ttfe_direct:.1f} / {ttfe_bare:.1f} / {ttfe_via:.1f} ms", "target": "", "ok": None},
    ]
    # recording throughput: an upstream with no gaps, 1 and 50 concurrent streams through proxy record
    m = 200 if quick else 2000
    up = UvicornServer(StampingUpstream(m, 0.0), quiet=True).start_in_thread()
    try:
        with tempfile.TemporaryDirectory() as d:
            with proxy("record", "--upstream", up.url, "--cassette", str(Path(d) / "t.db"), "--listen", "127.0.0.1:0") as (url, _):
                latencies(url)
                one = asyncio.run(_throughput(url, 1, m))
                fifty = asyncio.run(_throughput(url, 10 if quick else 50, m))
    finally:
        up.stop_thread()
    rows.append({"bench": "recording throughput (upstream sends without gaps)", "metric": "events/s at 1 / 50 streams",
                 "value": f"{one:,.0f} / {fifty:,.0f}", "target": "", "ok": None})
    return rows

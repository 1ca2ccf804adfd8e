"""Injected faults: how close injected delays land to where they should, at recorded pace and at
--speed 0: a 200 ms stall before SSE event 10, 200 ms to response headers, a 200 ms WebSocket
accept, a 200 ms stall before WebSocket frame 10. Each is scheduled against absolute deadlines
like the recorded timing, so the errors should be the replay's usual ones.

    python bench/run.py --only fault_bench
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

from common import Cassette, pct, proxy, read_stream, sse_cassette
from ws_bench import session, ws_cassette

STALL = 0.200


async def time_to_headers(url: str) -> float:
    host, port = re.match(r"http://([0-9.]+):(\d+)", url).groups()
    reader, writer = await asyncio.open_connection(host, int(port))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    writer.write(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    await reader.readuntil(b"\r\n\r\n")
    took = loop.time() - t0
    await reader.readuntil(b"\r\n0\r\n\r\n")  # the whole body: a client leaving early gives the recording back
    writer.close()
    return took


def _sse(d: str, n: int) -> list[dict]:
    path = Path(d) / "sse.db"
    offsets = sse_cassette(path, 20, gap_ms=(5.0, 15.0), streams=n)
    with Cassette.open(path) as c:
        sizes = [[len(ch.data) for ch in it.chunks] for it in c.interactions()]
    rows = []
    for speed in (1.0, 0.0):
        stall_err, after_err, ttfb_err = [], [], []
        faults = ["--fault", f"stall:{STALL}s,event=10", "--fault", f"ttfb:{STALL}s@every=2"]
        with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0", "--speed", f"{speed:g}",
                   *faults) as (url, _):
            for i in range(n):
                if i % 2:  # every 2nd recording: headers after 200 ms
                    ttfb_err.append(abs(asyncio.run(time_to_headers(url)) - STALL) * 1000)
                    continue
                arr, off = asyncio.run(read_stream(url, sizes[i])), offsets[i]
                gap = (off[9] - off[8]) / speed if speed else 0.0
                stall_err.append(abs((arr[9] - arr[8]) - (gap + STALL)) * 1000)
                if speed:
                    after_err += [abs((arr[j + 1] - arr[j]) - (off[j + 1] - off[j])) * 1000 for j in range(9, 19)]
        label = "recorded pace" if speed else "--speed 0"
        rows.append({"bench": f"HTTP stall 200 ms before event 10, {label}, {len(stall_err)} streams",
                     "metric": "stall error p50 / p99 / max",
                     "value": f"{pct(stall_err, 50):.2f} / {pct(stall_err, 99):.2f} / {max(stall_err):.2f} ms",
                     "target": "p99 <= 5 ms", "ok": pct(stall_err, 99) <= 5})
        if after_err:
            rows.append({"bench": "HTTP gaps after the stall", "metric": "per-gap error p50 / p99",
                         "value": f"{pct(after_err, 50):.2f} / {pct(after_err, 99):.2f} ms", "target": "p99 <= 2 ms",
                         "ok": pct(after_err, 99) <= 2})
        rows.append({"bench": f"HTTP time to headers set to 200 ms, {label}, {len(ttfb_err)} requests",
                     "metric": "error p50 / p99 (includes the request's round trip)",
                     "value": f"{pct(ttfb_err, 50):.2f} / {pct(ttfb_err, 99):.2f} ms", "target": "p99 <= 5 ms",
                     "ok": pct(ttfb_err, 99) <= 5})
    return rows


def _ws(d: str, k: int) -> list[dict]:
    path = Path(d) / "ws.db"
    plans = ws_cassette(path, k, 20, accept_delay=0.0)
    base_path = Path(d) / "ws-base.db"
    ws_cassette(base_path, k, 20, accept_delay=0.0)
    baseline = []
    with proxy("replay", "--cassette", str(base_path), "--listen", "127.0.0.1:0") as (url, _):
        for _ in range(k):
            baseline.append(asyncio.run(session(url.replace("http", "ws"), 20))[0])
    accept_err, stall_err = [], []
    faults = ["--fault", f"ws-accept:{STALL}s", "--fault", f"ws-stall:{STALL}s,frame=10"]
    with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0", *faults) as (url, _):
        for i in range(k):
            accept, times, _, _ = asyncio.run(session(url.replace("http", "ws"), 20))
            accept_err.append(abs(accept - STALL - pct(baseline, 50)) * 1000)
            want = plans[i][9] - plans[i][8] + STALL
            stall_err.append(abs((times[9] - times[8]) - want) * 1000)
    return [
        {"bench": f"WS accept set to 200 ms, {k} sessions", "metric": "error p50 / p99 (handshake baseline subtracted)",
         "value": f"{pct(accept_err, 50):.2f} / {pct(accept_err, 99):.2f} ms", "target": "p99 <= 5 ms",
         "ok": pct(accept_err, 99) <= 5},
        {"bench": f"WS stall 200 ms before frame 10, {k} sessions", "metric": "stall error p50 / p99 / max",
         "value": f"{pct(stall_err, 50):.2f} / {pct(stall_err, 99):.2f} / {max(stall_err):.2f} ms",
         "target": "p99 <= 5 ms", "ok": pct(stall_err, 99) <= 5},
    ]


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        return _sse(d, 2 if quick else 16) + _ws(d, 2 if quick else 10)

"""Forward-mode replay (an HTTPS proxy, `proxy replay --mode forward`) beside base-URL replay.

1. Timing: one cassette (recorded in forward mode, host api.test.local), served by `proxy
   replay` on a base URL and by `proxy replay --mode forward`; streams read alternately from
   each in the same run. The forward client does what an HTTPS_PROXY client does: CONNECT,
   TLS with mitmproxy's CA, HTTP/1.1 inside.
2. What the proxy layer adds per event: the front alone (mitmproxy + the Retarget addon,
   the same ForwardFront) in front of an upstream that stamps each event with
   time.monotonic() as it sends it; per-event latency through the front vs direct.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, pct, proxy, spread

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import Cassette

HOST = "api.test.local"


def forward_cassette(path: Path, streams: int, n_events: int, gap_ms=(0.0, 20.0)) -> list[list[float]]:
    import random

    rnd = random.Random(7)
    offsets = []
    with Cassette.create(path, upstream="(forward proxy)", mode="forward") as c:
        for _ in range(streams):
            t, chunks = 0.002, []
            for i in range(n_events):
                delta = json.dumps({"type": "response.output_text.delta", "sequence_number": i, "delta": f"w{i} "})
                chunks.append(Chunk(t, f"event: response.output_text.delta\ndata: {delta}\n\n".encode()))
                t += rnd.uniform(*gap_ms) / 1000
            offsets.append([ch.offset for ch in chunks])
            c.append(Interaction(Kind.HTTP, Request("POST", "/v1/responses", scheme="https", host=HOST, port=443),
                                 Response(200, "OK", [("content-type", "text/event-stream"),
                                                      ("transfer-encoding", "chunked")]),
                                 chunks, ttfb=0.001, end=End.COMPLETE))
    return offsets


async def _open(url: str, via_proxy: bool, ca: str | None):
    host, port = re.match(r"http://([0-9.]+):(\d+)", url).groups()
    reader, writer = await asyncio.open_connection(host, int(port))
    if via_proxy:
        writer.write(f"CONNECT {HOST}:443 HTTP/1.1\r\nhost: {HOST}:443\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        await writer.start_tls(ssl.create_default_context(cafile=ca), server_hostname=HOST)
    return reader, writer


async def read_events(reader, writer, stamped: bool = False, sizes: list[int] | None = None):
    """POST /v1/responses; (request sent at, [arrival per event]) or with ``stamped``
    [(arrival, stamp)]. Arrival of an event = when the read holding its last byte returned."""
    loop = asyncio.get_running_loop()
    writer.write(f"POST /v1/responses HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: 2\r\n"
                 "accept: text/event-stream\r\n\r\n{}".encode())
    sent = loop.time()
    ends, acc = [], 0
    for sz in sizes or []:
        acc += sz
        ends.append(acc)
    buf, header_done, pending, body, out, i, done = b"", False, b"", b"", [], 0, False
    while not done:
        data = await reader.read(1 << 20)
        now = loop.time()
        if not data:
            break
        if not header_done:
            buf += data
            if b"\r\n\r\n" not in buf:
                continue
            header_done = True
            data = buf.split(b"\r\n\r\n", 1)[1]
        pending += data
        while True:
            nl = pending.find(b"\r\n")
            if nl < 0:
                break
            size = int(pending[:nl].split(b";")[0], 16)
            if len(pending) < nl + 2 + size + 2:
                break
            chunk = pending[nl + 2:nl + 2 + size]
            pending = pending[nl + 2 + size + 2:]
            if size == 0:
                done = True
                break
            if stamped:
                out += [(now, float(m.group(1))) for m in re.finditer(rb'"t": ([0-9.]+)', chunk)]
            body += chunk
        while not stamped and i < len(ends) and len(body) >= ends[i]:
            out.append(now)
            i += 1
    return sent, out


def _stream(url: str, via_proxy: bool, ca: str | None, sizes: list[int]):
    async def go():
        reader, writer = await _open(url, via_proxy, ca)
        try:
            return await read_events(reader, writer, sizes=sizes)
        finally:
            writer.close()
    return asyncio.run(go())


def timing(n_events: int, runs: int, confdir: str, ca: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fwd.db"
        offsets = forward_cassette(path, runs, n_events)
        with Cassette.open(path) as c:
            sizes = [[len(ch.data) for ch in it.chunks] for it in c.interactions()]
        stats = {"base": {"gap": [], "total": [], "first": []}, "forward": {"gap": [], "total": [], "first": []}}
        with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0") as (base, _), \
                proxy("replay", "--mode", "forward", "--confdir", confdir, "--cassette", str(path),
                      "--listen", "127.0.0.1:0") as (front, _):
            for r in range(runs):  # alternate, so both see the same machine
                for name, url in (("base", base), ("forward", front)):
                    sent, arr = _stream(url, name == "forward", ca, sizes[r])
                    off = offsets[r]
                    s = stats[name]
                    s["gap"] += [abs((arr[k + 1] - arr[k]) - (off[k + 1] - off[k])) * 1000 for k in range(len(arr) - 1)]
                    s["total"].append(abs((arr[-1] - arr[0]) - (off[-1] - off[0])) * 1000)
                    s["first"].append((arr[0] - sent - off[0]) * 1000)
    return stats


FRONT = """
import asyncio, sys
from proxy.background import until_signal
from proxy.record.runner import ForwardFront

async def main():
    front = ForwardFront(("127.0.0.1", int(sys.argv[1])), confdir=sys.argv[2])
    await front.start()
    print(front.url, flush=True)
    await until_signal(front.wait, front.request_stop)
    await front.stop()

asyncio.run(main())
"""

STAMPER = """
import asyncio, json, sys, time
from proxy.timing import Pacer
from proxy.uvicorn_server import UvicornServer

N, GAP = int(sys.argv[1]), float(sys.argv[2])

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]})
    pacer = Pacer(1.0)
    for i in range(N):
        await pacer.until(i * GAP)
        data = json.dumps({"i": i, "t": time.monotonic()})
        await send({"type": "http.response.body", "body": f"data: {data}\\n\\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})

async def main():
    server = UvicornServer(app, "127.0.0.1", 0, quiet=True)
    await server.start()
    print(server.url, flush=True)
    await server.run_until_signal()

asyncio.run(main())
"""


def _spawn(code: str, *args: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = p.stdout.readline()
    m = re.search(r"http://[0-9.]+:\d+", line)
    if not m:
        p.kill()
        raise RuntimeError("helper did not start")
    return p, m.group(0)


def _stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGINT)
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()


def hop(n_events: int, trials: int, confdir: str, ca: str) -> dict:
    """Per-event latency (send stamp -> client), direct vs through the front alone."""
    stamper, up = _spawn(STAMPER, str(n_events), "0.002")
    port = up.rsplit(":", 1)[1]
    front, url = _spawn(FRONT, port, confdir)
    lat = {"direct": [], "front": []}
    try:
        for _ in range(trials):
            for name, target, via in (("direct", up, False), ("front", url, True)):
                async def go():
                    reader, writer = await _open(target, via, ca)
                    try:
                        return await read_events(reader, writer, stamped=True)
                    finally:
                        writer.close()
                _, events = asyncio.run(go())
                assert len(events) == n_events, (name, len(events))
                lat[name] += [(now - t) * 1000 for now, t in events]
    finally:
        _stop(front)
        _stop(stamper)
    return lat


def run(quick: bool = False) -> list[dict]:
    n, runs = (50, 1) if quick else (500, 3)
    with tempfile.TemporaryDirectory() as confdir:
        sys.path.insert(0, str(ROOT))
        from proxy.record.runner import ca_path

        ca = ca_path(confdir)
        st = timing(n, runs, confdir, ca)
        lat = hop(100 if quick else 1000, 1 if quick else 3, confdir, ca)
    b, f = st["base"], st["forward"]
    added = pct(lat["front"], 50) - pct(lat["direct"], 50)

    def gaps(s):
        return f"{pct(s['gap'], 50):.2f} / {pct(s['gap'], 99):.2f} / {max(s['gap']):.2f} ms"

    return [
        {"bench": f"replay, same cassette, {runs} x {n} events, gaps 0-20 ms: base URL",
         "metric": "per-gap error p50 / p99 / max", "value": gaps(b), "target": "", "ok": None},
        {"bench": "replay, same cassette, same run: forward proxy (CONNECT + TLS, HTTP/1.1)",
         "metric": "per-gap error p50 / p99 / max", "value": gaps(f), "target": "p99 <= 2 ms",
         "ok": pct(f["gap"], 99) <= 2.0},
        {"bench": "replay, base URL vs forward proxy", "metric": "total-duration error (worst run)",
         "value": f"{max(b['total']):.2f} vs {max(f['total']):.2f} ms", "target": "", "ok": None},
        {"bench": "replay, base URL vs forward proxy",
         "metric": "first event, beyond its recorded offset, after the request p50",
         "value": f"{pct(b['first'], 50):.2f} vs {pct(f['first'], 50):.2f} ms", "target": "", "ok": None},
        {"bench": "forward proxy layer alone (mitmproxy + Retarget), stamped events 2 ms apart",
         "metric": "per-event latency p50 / p99: direct vs through the front",
         "value": f"{pct(lat['direct'], 50):.3f} / {pct(lat['direct'], 99):.3f} vs "
                  f"{pct(lat['front'], 50):.3f} / {pct(lat['front'], 99):.3f} ms",
         "target": "", "ok": None},
        {"bench": "forward proxy layer alone", "metric": "added per event p50",
         "value": f"{added:.3f} ms", "target": "<= 1 ms", "ok": added <= 1.0},
    ]

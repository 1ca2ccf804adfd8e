"""Helpers shared by the benchmarks: spawn proxy, synthetic cassettes, a timestamping upstream, stats."""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.model import Chunk, End, Interaction, Kind, Request, Response  # noqa: E402
from proxy.store import Cassette  # noqa: E402


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def ratio(ours: float, peer: float) -> str:
    """How many times the peer's figure ours is ("1.31x"); for times, lower is better."""
    return f"{ours / peer:.2f}x" if peer else "n/a"


@contextmanager
def spawned(cmd: list[str], timeout: float = 30, what: str = "process"):
    """Spawn ``cmd``; yield (the URL on its first stdout line, seconds from spawn to that line)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=ROOT)
    r, _, _ = select.select([p.stdout], [], [], timeout)
    line = p.stdout.readline() if r else ""
    started = time.perf_counter() - t0
    m = re.search(r"http://[0-9.]+:\d+", line)
    if not m:
        p.kill()
        p.wait()
        raise RuntimeError(f"{what} did not start")
    try:
        yield m.group(0), started
    finally:
        stop(p)


@contextmanager
def proxy(*args, timeout=30):
    with spawned([sys.executable, "-m", "proxy.cli", *args], timeout, f"proxy {args[0]}") as got:
        yield got


# The peer of `proxy replay` start-up: a bare raw-ASGI app on uvicorn (the stack replay
# runs on, with its settings), answering every request with a small JSON body.
BARE_UVICORN = """
import asyncio, socket, uvicorn
BODY = b'{"object":"list","data":[{"id":"sim-1"}]}'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]})
    await send({"type": "http.response.body", "body": BODY})
async def main():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", http="h11", log_level="warning",
                                           server_header=False, date_header=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.001)
    print("listening on http://127.0.0.1:%d" % sock.getsockname()[1], flush=True)
    await task
asyncio.run(main())
"""


def bare_uvicorn():
    """Context manager: (url, seconds from spawn to listening) of the bare uvicorn app."""
    return spawned([sys.executable, "-c", BARE_UVICORN], what="bare uvicorn")


def first_response(url: str, request: bytes, timeout: float = 120) -> bytes:
    """Send one raw HTTP/1.1 request (it should say `connection: close`); the whole answer."""
    host, port = re.match(r"http://([0-9.]+):(\d+)", url).groups()
    import socket

    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def stop(p: subprocess.Popen, timeout: float = 15) -> None:
    """SIGINT (a clean stop: a recorder folds its WAL), then SIGKILL after ``timeout``."""
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def sse_cassette(path: Path, n_events: int, gap_ms=(0.0, 0.0), streams: int = 1, seed: int = 1) -> list[list[float]]:
    """A cassette of `streams` SSE responses to POST /v1/responses with n_events each."""
    rnd = random.Random(seed)
    offsets_all = []
    with Cassette.create(path, upstream="synthetic (bench)") as c:
        for s in range(streams):
            t = 0.002
            chunks = []
            for i in range(n_events):
                delta = json.dumps({"type": "response.output_text.delta", "sequence_number": i, "delta": f"w{i} "})
                chunks.append(Chunk(t, f"event: response.output_text.delta\ndata: {delta}\n\n".encode()))
                t += rnd.uniform(*gap_ms) / 1000
            offsets_all.append([ch.offset for ch in chunks])
            c.append(Interaction(Kind.HTTP, Request("POST", "/v1/responses"),
                                 Response(200, "OK", [("content-type", "text/event-stream"), ("transfer-encoding", "chunked")]),
                                 chunks, ttfb=0.001, end=End.COMPLETE))
    return offsets_all


async def read_stream(url: str, sizes: list[int], opened=None, host: str = "x") -> list[float]:
    """POST, read the raw chunked body; return each event's arrival (loop clock = monotonic).

    Arrival of event i = the moment the read containing its last byte returned, so
    coalesced TCP reads are handled. asyncio, not threads: many streams in one thread
    measure the server, not GIL hand-offs between reader threads. ``opened``: a
    (reader, writer) already connected (a tunnel through a forward proxy, say), with
    ``host`` for the Host header.
    """
    import asyncio

    if opened is None:
        addr, port = re.match(r"http://([0-9.]+):(\d+)", url).groups()
        opened = await asyncio.open_connection(addr, int(port))
    reader, writer = opened
    writer.write(f"POST /v1/responses HTTP/1.1\r\nhost: {host}\r\ncontent-length: 2\r\n"
                 "accept: text/event-stream\r\n\r\n{}".encode())
    ends, acc = [], 0
    for sz in sizes:
        acc += sz
        ends.append(acc)
    buf, header_done, pending, payload_len, arrivals, i = b"", False, b"", 0, [], 0
    loop = asyncio.get_running_loop()
    while i < len(sizes):
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
            payload_len += size
            pending = pending[nl + 2 + size + 2:]
            if size == 0:
                break
        while i < len(sizes) and payload_len >= ends[i]:
            arrivals.append(now)
            i += 1
    writer.close()
    return arrivals


def timing_errors(offsets: list[float], arrivals: list[float], speed: float = 1.0) -> list[float]:
    """|(arrival_i - arrival_0) - (offset_i - offset_0)/speed| in ms, per event."""
    return [abs((a - arrivals[0]) - (o - offsets[0]) / speed) * 1000 for o, a in zip(offsets, arrivals)]




def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextmanager
def mitmdump(upstream: str, *extra: str):
    """Bare mitmproxy (no addon of ours) in reverse mode, streaming every body."""
    import socket

    port = free_port()
    exe = Path(sys.executable).parent / "mitmdump"
    p = subprocess.Popen([str(exe), "--mode", f"reverse:{upstream}", "--listen-host", "127.0.0.1", "--listen-port",
                          str(port), "--set", "stream_large_bodies=1", "--set", "connection_strategy=lazy", "-q", *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(p)


@contextmanager
def simulator_process():
    """The bundled simulator in its own process (so it does not share the GIL with clients)."""
    p = subprocess.Popen([sys.executable, "-m", "proxy.testing.simulator"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = p.stdout.readline()
    try:
        yield re.search(r"http://[0-9.]+:\d+", line).group(0)
    finally:
        stop(p)


def median_run(fn, runs: int, key):
    """Run ``fn`` ``runs`` times; return (the run whose ``key`` is the median, all keys).

    These machines have bursts of host jitter that can spoil one run; the median of
    three says what the code does, the spread says how noisy the machine was."""
    results = [fn() for _ in range(runs)]
    ordered = sorted(results, key=key)
    return ordered[len(ordered) // 2], [key(r) for r in results]


def spread(values, fmt="{:.2f}") -> str:
    return "runs: " + ", ".join(fmt.format(v) for v in values)

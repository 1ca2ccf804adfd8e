"""`make demo`: record one streamed exchange from the bundled simulator, then replay it.

Everything is offline and local: the upstream is proxy's own simulated model API
(proxy.testing.simulator), not a real one. Run: python -m proxy.testing.demo [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from . import simulator
from ..sse import SSEParser, summarize

BODY = {"model": "sim-1", "input": "Explain record and replay in one line", "stream": True}
HEADERS = {"authorization": "Bearer " + simulator.fake_key("demo"), "x-sim-gap-ms": "60", "x-sim-events": "8"}


def start(*args: str) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "proxy.cli", *args], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    r, _, _ = select.select([p.stdout], [], [], 30)
    line = p.stdout.readline() if r else ""
    if not line:
        p.kill()
        sys.exit(f"demo: proxy {args[0]} did not start")
    print(f"  $ proxy {' '.join(args)}\n  {line.strip()}")
    return p, re.search(r"http://[0-9.]+:\d+", line).group(0)


def stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=15)
    for line in out.strip().splitlines():
        print(f"  {line}")


def client(base: str) -> list[tuple[float, bytes]]:
    """Stream the response and print each SSE event the moment it arrives."""
    chunks: list[tuple[float, bytes]] = []
    parser = SSEParser()
    t0 = time.perf_counter()
    with httpx.stream("POST", base + "/v1/responses", json=BODY, headers=HEADERS, timeout=30) as r:
        print(f"  HTTP {r.status_code} {r.headers.get('content-type')}")
        for data in r.iter_raw():
            t = time.perf_counter() - t0
            chunks.append((t, data))
            for ev in parser.feed(data):
                name, text = summarize(ev)
                print(f"  {t * 1000:8.1f} ms  {name:32} {text}")
    return chunks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", help="write the cassette into this directory and keep it")
    args = ap.parse_args(argv)
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="proxy-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cassette = workdir / "demo.db"
    if cassette.exists():
        cassette.unlink()

    sim = simulator.serve()
    print(f"1. A simulated model API (bundled with proxy, not a real endpoint) is at {sim.url}\n")
    print("2. Record: the client talks to proxy record, which forwards to the simulator")
    rec, url = start("record", "--upstream", sim.url, "--cassette", str(cassette), "--listen", "127.0.0.1:0")
    recorded = client(url)
    stop(rec)
    sim.stop_thread()
    print("\n3. The simulator is stopped. Replay: the same client talks to proxy replay")
    rep, url = start("replay", "--cassette", str(cassette), "--listen", "127.0.0.1:0")
    replayed = client(url)
    stop(rep)

    same_bytes = b"".join(c for _, c in recorded) == b"".join(c for _, c in replayed)
    same_chunks = [c for _, c in recorded] == [c for _, c in replayed]
    errs = [abs((b2[0] - a2[0]) - (b1[0] - a1[0])) * 1000
            for (a1, b1), (a2, b2) in zip(zip(recorded, recorded[1:]), zip(replayed, replayed[1:]))]
    print("\n4. Recorded vs replayed, as the client saw them")
    print(f"  bytes identical:           {same_bytes}")
    print(f"  chunk boundaries identical: {same_chunks} ({len(recorded)} chunks)")
    if errs:
        print(f"  gap error p50 / max:        {statistics.median(errs):.2f} ms / {max(errs):.2f} ms")
    print(f"  stream duration:            {recorded[-1][0] * 1000:.0f} ms recorded, {replayed[-1][0] * 1000:.0f} ms replayed")
    print(f"\n5. Look inside: proxy inspect {cassette} 1")
    subprocess.run([sys.executable, "-m", "proxy.cli", "inspect", str(cassette), "1"])
    return 0 if same_bytes and same_chunks else 1


if __name__ == "__main__":
    sys.exit(main())

"""Start-up, spawn -> listening, each beside its bare peer in the same run (spawns alternate):

- `proxy replay` (example cassette) vs a bare raw-ASGI app on uvicorn (common.BARE_UVICORN);
- `proxy record` vs bare `mitmdump` in reverse mode (listening = its port accepts).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, bare_uvicorn, free_port, pct, proxy, ratio, stop


def mitmdump_start() -> float:
    """Seconds from spawning bare mitmdump to its port accepting a connection."""
    port = free_port()
    exe = Path(sys.executable).parent / "mitmdump"
    t0 = time.perf_counter()
    p = subprocess.Popen([str(exe), "--mode", "reverse:http://127.0.0.1:9", "--listen-host", "127.0.0.1",
                          "--listen-port", str(port), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < 30:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return time.perf_counter() - t0
            except OSError:
                time.sleep(0.002)
        raise RuntimeError("mitmdump did not start")
    finally:
        stop(p)


def run(quick: bool = False) -> list[dict]:
    reps = 2 if quick else 5
    replay_t, bare_t, record_t, mitm_t = [], [], [], []
    for _ in range(reps):
        with proxy("replay", "--cassette", str(ROOT / "cassettes" / "example.db"), "--listen", "127.0.0.1:0") as (_, t):
            replay_t.append(t)
        with bare_uvicorn() as (_, t):
            bare_t.append(t)
    with tempfile.TemporaryDirectory() as d:
        for i in range(1 if quick else 3):
            with proxy("record", "--upstream", "http://127.0.0.1:9", "--cassette", str(Path(d) / f"{i}.db"),
                       "--listen", "127.0.0.1:0") as (_, t):
                record_t.append(t)
            mitm_t.append(mitmdump_start())
    r, b, rec, m = (pct(x, 50) for x in (replay_t, bare_t, record_t, mitm_t))
    return [
        {"bench": f"start-up, spawn to listening (p50 of {reps})", "metric": "proxy replay / bare uvicorn app",
         "value": f"{r * 1000:.0f} / {b * 1000:.0f} ms ({ratio(r, b)})", "target": "proxy replay <= 500 ms",
         "ok": r <= 0.5},
        {"bench": f"start-up, spawn to listening (p50 of {len(record_t)})", "metric": "proxy record / bare mitmdump",
         "value": f"{rec * 1000:.0f} / {m * 1000:.0f} ms ({ratio(rec, m)})", "target": "", "ok": None},
    ]

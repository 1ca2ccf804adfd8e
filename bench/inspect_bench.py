"""proxy inspect on a large cassette: listing 10,000 interactions (whole command, output to a
pipe), beside its peer in the same run: a bare Python + sqlite3 script printing the same
columns of the same rows (BARE_LIST), the floor for any listing in Python.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, pct, ratio, sse_cassette

# what `proxy inspect` lists, read and printed with nothing but the standard library
BARE_LIST = """
import sqlite3, sys
limit = int(sys.argv[2]) if len(sys.argv) > 2 else -1
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = conn.execute('SELECT seq, kind, method, path, query, status, event_count, body_bytes, ttfb, duration, "end" '
                    'FROM interactions ORDER BY seq LIMIT ?', (limit,))
out = sys.stdout
for r in rows:
    out.write("%s  %s  %s  %s%s  %s  %s  %s  %.1f ms  %.1f ms  %s\\n" % (
        r[0], r[1], r[2], r[3], "?" + r[4] if r[4] else "", r[5], r[6], r[7], (r[8] or 0) * 1000,
        (r[9] or 0) * 1000, r[10]))
"""


def timed(cmd: list[str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
        assert r.returncode == 0, r.stderr
    return pct(times, 50)


def run(quick: bool = False) -> list[dict]:
    n = 1000 if quick else 10000
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.db"
        sse_cassette(path, 10, streams=n)
        cli = [sys.executable, "-m", "proxy.cli", "inspect", str(path)]
        table, js = timed(cli), timed([*cli, "--json"])
        bare = timed([sys.executable, "-c", BARE_LIST, str(path)])
    return [
        {"bench": f"proxy inspect, {n:,} interactions, whole command (p50 of 3)",
         "metric": "list as table / list --json / bare Python + sqlite3 listing",
         "value": f"{table * 1000:.0f} / {js * 1000:.0f} / {bare * 1000:.0f} ms ({ratio(table, bare)}, "
                  f"{ratio(js, bare)})",
         "target": "< 1 s", "ok": max(table, js) < 1.0},
    ]

"""proxy inspect on a large cassette: listing 10,000 interactions (whole command, output to a pipe)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, pct, sse_cassette


def run(quick: bool = False) -> list[dict]:
    n = 1000 if quick else 10000
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.db"
        sse_cassette(path, 10, streams=n)
        times = {}
        for label, extra in (("table", []), ("--json", ["--json"])):
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "proxy.cli", "inspect", str(path), *extra],
                                   capture_output=True, cwd=ROOT)
                runs.append(time.perf_counter() - t)
                assert r.returncode == 0, r.stderr
            times[label] = pct(runs, 50)
    return [
        {"bench": f"proxy inspect, {n:,} interactions", "metric": "list as table (whole command) p50",
         "value": f"{times['table'] * 1000:.0f} ms", "target": "< 1 s", "ok": times["table"] < 1.0},
        {"bench": f"proxy inspect, {n:,} interactions", "metric": "list --json p50",
         "value": f"{times['--json'] * 1000:.0f} ms", "target": "< 1 s", "ok": times["--json"] < 1.0},
    ]

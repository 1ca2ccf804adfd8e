"""Start-up: spawn -> listening line, for `proxy replay` and `proxy record`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import ROOT, pct, proxy


def run(quick: bool = False) -> list[dict]:
    reps = 3 if quick else 7
    replay_t, record_t = [], []
    for _ in range(reps):
        with proxy("replay", "--cassette", str(ROOT / "cassettes" / "example.db"), "--listen", "127.0.0.1:0") as (_, t):
            replay_t.append(t)
    with tempfile.TemporaryDirectory() as d:
        for i in range(max(2, reps // 2)):
            with proxy("record", "--upstream", "http://127.0.0.1:9", "--cassette", str(Path(d) / f"{i}.db"),
                       "--listen", "127.0.0.1:0") as (_, t):
                record_t.append(t)
    r = pct(replay_t, 50)
    return [
        {"bench": "start-up to listening", "metric": "proxy replay p50", "value": f"{r * 1000:.0f} ms",
         "target": "<= 500 ms", "ok": r <= 0.5},
        {"bench": "start-up to listening", "metric": "proxy record p50", "value": f"{pct(record_t, 50) * 1000:.0f} ms",
         "target": "", "ok": None},
    ]

"""WebSocket replay: accept-delay error, frame timing error, 200 concurrent sessions at --speed 0."""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect

from common import Cassette, pct, proxy, spread

from proxy.model import Close, Direction, End, Frame, Interaction, Kind, Request, Response


def ws_cassette(path: Path, sessions: int, frames: int, accept_delay: float, gap_ms=(0.0, 20.0), seed=2) -> list:
    rnd = random.Random(seed)
    plans = []
    with Cassette.create(path, upstream="synthetic (bench)") as c:
        for s in range(sessions):
            t = accept_delay + 0.001
            fr = [Frame(Direction.CLIENT, True, t, json.dumps({"type": "response.create", "s": s}).encode())]
            offs = []
            for i in range(frames):
                t += rnd.uniform(*gap_ms) / 1000
                offs.append(t - fr[0].offset)
                fr.append(Frame(Direction.SERVER, True, t, json.dumps({"type": "delta", "s": s, "i": i}).encode()))
            c.append(Interaction(Kind.WEBSOCKET, Request("GET", "/v1/responses", headers=[("upgrade", "websocket")]),
                                 Response(101, "Switching Protocols", [("upgrade", "websocket")]), frames=fr,
                                 ttfb=accept_delay, duration=t + 0.001, end=End.COMPLETE,
                                 close=Close(1000, "", Direction.CLIENT)))
            plans.append(offs)
    return plans


async def session(url: str, n: int) -> tuple[float, list[float], list[int], int]:
    t0 = time.monotonic()
    async with connect(url + "/v1/responses", compression=None, open_timeout=60) as ws:
        accept = time.monotonic() - t0
        await ws.send(json.dumps({"type": "response.create"}))
        sent = time.monotonic()
        times, seq, sid = [], [], None
        for _ in range(n):
            m = json.loads(await ws.recv())
            times.append(time.monotonic() - sent)
            seq.append(m["i"])
            sid = m["s"]
    return accept, times, seq, sid


async def many(url: str, sessions: int, n: int):
    return await asyncio.gather(*(session(url, n) for _ in range(sessions)))


def run(quick: bool = False) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        # fidelity: sessions one after another, recorded pace. A handshake takes a
        # round trip even with no delay, so the zero-delay sessions give the baseline.
        k = 5 if quick else 20
        runs = 1 if quick else 3
        trials = [one_trial(d, k, r) for r in range(runs)]
        gap_p99s = [pct(t[1], 99) for t in trials]
        acc_err, gap_err, first_err, baseline = sorted(trials, key=lambda t: pct(t[1], 99))[len(trials) // 2]
        rows += _fidelity_rows(k, runs, acc_err, gap_err, first_err, baseline, gap_p99s)
        # concurrency: 200 sessions at --speed 0
        path = Path(d) / "conc.db"
        n_s = 20 if quick else 200
        ws_cassette(path, n_s, 50, accept_delay=0.0)
        with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0", "--speed", "0") as (url, _):
            t = time.perf_counter()
            res = asyncio.run(many(url.replace("http", "ws"), n_s, 50))
            took = time.perf_counter() - t
        lost = sum(50 - len(r[2]) for r in res)
        reordered = sum(r[2] != list(range(50)) for r in res)
        sids = sorted(r[3] for r in res)
        rows.append({"bench": f"WS {n_s} concurrent sessions x 50 frames, --speed 0", "metric": "lost / reordered / time",
                     "value": f"{lost} / {reordered} / {took:.2f} s ({n_s * 50 / took:,.0f} frames/s)",
                     "target": "0 lost, 0 reordered", "ok": lost == 0 and reordered == 0 and sids == list(range(n_s))})
    return rows


def one_trial(d, k: int, trial: int):
    """One trial: k sessions with no accept delay (the handshake baseline), k with 50 ms."""
    acc_err, gap_err, first_err = [], [], []
    baseline = []
    for delay in (0.0, 0.050):
        path = Path(d) / f"fid{delay}-{trial}.db"
        plans = ws_cassette(path, k, 50, accept_delay=delay)
        with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0") as (url, _):
            wurl = url.replace("http", "ws")
            for i in range(k):
                accept, times, _, _ = asyncio.run(session(wurl, 50))
                if delay == 0:
                    baseline.append(accept)
                    continue
                acc_err.append(abs(accept - delay - pct(baseline, 50)) * 1000)
                first_err.append(abs(times[0] - plans[i][0]) * 1000)
                gap_err += [abs((times[j + 1] - times[j]) - (plans[i][j + 1] - plans[i][j])) * 1000
                            for j in range(len(times) - 1)]
    return acc_err, gap_err, first_err, baseline


def _fidelity_rows(k, runs, acc_err, gap_err, first_err, baseline, gap_p99s) -> list[dict]:
    return [
        {"bench": f"WS accept delay (50 ms recorded), {k} sessions (median of {runs} trials)",
         "metric": f"error p50 / p99 (handshake baseline {pct(baseline, 50) * 1000:.2f} ms subtracted)",
         "value": f"{pct(acc_err, 50):.2f} / {pct(acc_err, 99):.2f} ms", "target": "p99 <= 5 ms",
         "ok": pct(acc_err, 99) <= 5},
        {"bench": f"WS frame timing, {k} x 50 frames, gaps 0-20 ms", "metric": "per-gap error p50 / p99 / max",
         "value": f"{pct(gap_err, 50):.2f} / {pct(gap_err, 99):.2f} / {max(gap_err):.2f} ms (p99 {spread(gap_p99s)})",
         "target": "p99 <= 2 ms", "ok": pct(gap_err, 99) <= 2},
        {"bench": "WS first reply frame", "metric": "error vs client send p50 / p99",
         "value": f"{pct(first_err, 50):.2f} / {pct(first_err, 99):.2f} ms", "target": "", "ok": None},
    ]

"""Replay fidelity and throughput: per-event timing error at --speed 1, events/s at --speed 0."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from common import Cassette, median_run, pct, proxy, read_stream, spread, sse_cassette, timing_errors


def fidelity(streams: int, n_events: int, gap_ms=(0.0, 40.0)) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fid.db"
        offsets = sse_cassette(path, n_events, gap_ms, streams=streams)
        with Cassette.open(path) as c:
            sizes = [[len(ch.data) for ch in it.chunks] for it in c.interactions()]
        errs: list[float] = []
        totals: list[float] = []
        with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0") as (url, _):
            async def all_streams():
                return await asyncio.gather(*(read_stream(url, sizes[i]) for i in range(streams)))

            results = asyncio.run(all_streams())
        for i, arr in enumerate(results):
            e = timing_errors(offsets[i], arr)
            gap_err = [abs((arr[k + 1] - arr[k]) - (offsets[i][k + 1] - offsets[i][k])) * 1000 for k in range(len(arr) - 1)]
            errs += gap_err
            totals.append(e[-1])
    return {"gap_p50_ms": pct(errs, 50), "gap_p99_ms": pct(errs, 99), "gap_max_ms": max(errs),
            "total_err_ms": max(totals), "events": len(errs) + streams}


def throughput(n_events: int, streams: int = 1) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tp.db"
        sse_cassette(path, n_events, streams=streams)
        with Cassette.open(path) as c:
            sizes = [[len(ch.data) for ch in it.chunks] for it in c.interactions()]
        with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0", "--speed", "0") as (url, _):
            async def all_streams():
                await asyncio.gather(*(read_stream(url, sizes[i]) for i in range(streams)))

            t0 = time.perf_counter()
            asyncio.run(all_streams())
            took = time.perf_counter() - t0
    return n_events * streams / took


def json_requests(n: int, conns: int = 8) -> tuple[float, int]:
    """Requests/s for GET /v1/models answered with a small recorded JSON body."""
    import httpx

    from proxy.model import Chunk, End, Interaction, Kind, Request, Response

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "json.db"
        body = b'{"object":"list","data":[{"id":"sim-1","object":"model"}]}'
        with Cassette.create(path) as c:
            for _ in range(n):
                c.append(Interaction(Kind.HTTP, Request("GET", "/v1/models"), Response(
                    200, "OK", [("content-type", "application/json"), ("content-length", str(len(body)))]),
                    [Chunk(0.001, body)], ttfb=0.001, end=End.COMPLETE))
        with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0", "--speed", "0") as (url, _):
            async def worker(client, k):
                for _ in range(k):
                    (await client.get(url + "/v1/models")).raise_for_status()

            async def main():
                async with httpx.AsyncClient(limits=httpx.Limits(max_connections=conns)) as client:
                    await asyncio.gather(*(worker(client, n // conns) for _ in range(conns)))

            t = time.perf_counter()
            asyncio.run(main())
            took = time.perf_counter() - t
    return (n // conns) * conns / took, conns


def run(quick: bool = False) -> list[dict]:
    n = 100 if quick else 1000
    runs = 1 if quick else 3
    rows = []
    f1, p99s = median_run(lambda: fidelity(1, n), runs, key=lambda f: f["gap_p99_ms"])
    rows += [
        {"bench": f"replay fidelity, 1 stream x {n} events, gaps 0-40 ms (median of {runs} runs)",
         "metric": "per-gap error p50 / p99 / max",
         "value": f"{f1['gap_p50_ms']:.2f} / {f1['gap_p99_ms']:.2f} / {f1['gap_max_ms']:.2f} ms (p99 {spread(p99s)})",
         "target": "p99 <= 2 ms", "ok": f1["gap_p99_ms"] <= 2.0},
        {"bench": "replay fidelity, 1 stream", "metric": "total-duration error", "value": f"{f1['total_err_ms']:.2f} ms",
         "target": "", "ok": None},
    ]
    if not quick:
        f50, p99s = median_run(lambda: fidelity(50, 1000), runs, key=lambda f: f["gap_p99_ms"])
        rows.append({"bench": f"replay fidelity, 50 streams x 1000 events, gaps 0-40 ms (median of {runs} runs)",
                     "metric": "per-gap error p50 / p99 / max",
                     "value": f"{f50['gap_p50_ms']:.2f} / {f50['gap_p99_ms']:.2f} / {f50['gap_max_ms']:.2f} ms "
                              f"(p99 {spread(p99s)})",
                     "target": "p99 <= 5 ms", "ok": f50["gap_p99_ms"] <= 5.0})
    eps = throughput(2000 if quick else 20000)
    rows.append({"bench": "replay --speed 0, 1 stream", "metric": "SSE events/s", "value": f"{eps:,.0f}",
                 "target": ">= 20,000", "ok": eps >= 20000})
    if not quick:
        eps50 = throughput(2000, 50)
        rows.append({"bench": "replay --speed 0, 50 streams", "metric": "SSE events/s (sum)", "value": f"{eps50:,.0f}",
                     "target": "", "ok": None})
    rps, conns = json_requests(500 if quick else 5000)
    rows.append({"bench": f"replay --speed 0, small JSON exchanges, {conns} keep-alive connections", "metric": "requests/s",
                 "value": f"{rps:,.0f}", "target": "", "ok": None})
    return rows

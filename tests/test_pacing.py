"""Paced replay: on time, and without burning the CPU while it waits."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import pytest

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import Cassette

from .conftest import replayer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/stat")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cassette(path: Path, streams: int, events: int) -> list[list[float]]:
    rnd = random.Random(5)
    offsets = []
    with Cassette.create(path, upstream="synthetic (test)") as c:
        for s in range(streams):
            t, chunks = 0.01, []
            for i in range(events):
                chunks.append(Chunk(t, b"data: {\"s\": %d, \"i\": %d}\n\n" % (s, i)))
                t += rnd.uniform(0.010, 0.030)
            offsets.append([ch.offset for ch in chunks])
            c.append(Interaction(Kind.HTTP, Request("POST", "/v1/responses", body=json.dumps({"s": s}).encode()),
                                 Response(200, "OK", [("content-type", "text/event-stream")]), chunks, ttfb=0.005,
                                 end=End.COMPLETE))
    return offsets


async def _read(url: str, s: int, n: int) -> list[float]:
    """Each event's arrival (the read that completed it); events are told apart by their bytes."""
    host, port = url.rsplit("/", 1)[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps({"s": s}).encode()
    writer.write(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    seen, arrivals, data = 0, [], b""
    while seen < n:
        got = await reader.read(65536)
        if not got:
            break
        now = time.monotonic()
        data += got
        while b'"i": %d}' % seen in data:
            arrivals.append(now)
            seen += 1
    writer.close()
    return arrivals


def test_paced_streams_are_on_time_without_spinning(tmp_path):
    # 40 streams, each with an event every 10-30 ms: a pacer that spins before each event
    # kept the server busy nearly all the time (some stream was always about to be due).
    streams, events = 40, 40
    offsets = _cassette(tmp_path / "p.db", streams, events)
    with replayer(tmp_path / "p.db") as rp:
        pid = rp.popen.pid
        time.sleep(0.5)  # the background check of the cassette: done

        async def main():
            return await asyncio.gather(*(_read(rp.url, s, events) for s in range(streams)))

        c0, t0 = _cpu(pid), time.monotonic()
        results = asyncio.run(main())
        cpu, wall = _cpu(pid) - c0, time.monotonic() - t0
    errors = sorted(abs((a[k + 1] - a[k]) - (o[k + 1] - o[k])) * 1000
                    for a, o in zip(results, offsets) for k in range(len(a) - 1))
    assert all(len(a) == events for a in results)
    assert errors[len(errors) // 2] < 1.0, errors[len(errors) // 2]  # p50 gap error, ms
    assert cpu < 0.4 * wall, (cpu, wall)


def test_a_paced_wait_in_a_forked_child_wakes():
    """The alarm thread does not survive a fork: a child (multiprocessing's fork start
    method, a test runner forking workers) found one marked started and waited forever."""
    import multiprocessing
    import warnings

    from proxy.timing import Pacer

    async def wait() -> float:
        pacer = Pacer(1.0)
        t0 = time.monotonic()
        await pacer.at(pacer.now() + 0.02)
        return time.monotonic() - t0

    assert asyncio.run(wait()) < 1.0  # the parent's alarm thread runs

    def child(q) -> None:
        q.put(asyncio.run(asyncio.wait_for(wait(), 5)))

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: that is the case
        p = ctx.Process(target=child, args=(q,))
        p.start()
    p.join(10)
    assert p.exitcode == 0, "the child's paced wait never woke"
    assert q.get(timeout=1) < 1.0


def test_waits_wake_on_time_never_early_and_leave_nothing_behind():
    """Paced waits wake on the loop's own timer (a timerfd on Linux): never before the
    target, in target order, a cancelled one stays cancelled, a passed target at once;
    and a loop that ends takes its timer with it (300 loops, no descriptor left open)."""
    from proxy.timing import Pacer

    async def many() -> tuple[list[float], list[int]]:
        pacer, rnd = Pacer(1.0), random.Random(3)
        start = pacer.now() + 0.005
        targets = sorted(start + rnd.uniform(0, 0.2) for _ in range(300))
        order: list[int] = []
        late: list[float] = []

        async def one(i: int, due: float) -> None:
            await pacer.at(due)
            late.append(time.monotonic() - due)
            order.append(i)

        cancelled = asyncio.ensure_future(pacer.at(start + 0.05))
        tasks = [asyncio.ensure_future(one(i, t)) for i, t in enumerate(targets)]
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.gather(*tasks)
        assert cancelled.cancelled()
        t0 = time.monotonic()
        await pacer.at(pacer.now() - 1.0)  # passed: no wait
        assert time.monotonic() - t0 < 0.05
        return late, order

    late, order = asyncio.run(many())
    assert min(late) >= 0, min(late)  # never early
    assert order == sorted(order)  # in target order
    assert sorted(late)[len(late) // 2] < 0.0005, sorted(late)[len(late) // 2]  # p50 (loop timers: ~0.5-1 ms)

    async def short() -> None:
        pacer = Pacer(1.0)
        await pacer.at(pacer.now() + 0.001)

    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(300):
        asyncio.run(short())
    import gc

    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds + 2


def test_a_loop_that_ends_with_a_wait_still_pending_is_freed_with_its_timer():
    """A server stopped in the middle of a paced stream ends its loop with a wait pending
    (asyncio.run cancels it): the loop, and the timer descriptor it owns, are freed all
    the same, not kept by the wait's entry in the loop's timer."""
    import gc
    import weakref

    from proxy.timing import Pacer

    loops: list = []

    async def stopped_mid_stream() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        pacer = Pacer(1.0)
        asyncio.ensure_future(pacer.at(pacer.now() + 60))  # the stream's next event, a minute away
        await asyncio.sleep(0.001)

    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        asyncio.run(stopped_mid_stream())
    gc.collect()
    assert [r for r in loops if r() is not None] == []
    assert len(os.listdir("/proc/self/fd")) <= fds + 2

"""The differential run: record a batch of shapes, stop the upstream, replay, compare.

    outcomes = run_batch(shapes, tmp_path)
    for o in outcomes:
        assert not o.problems, o.report()

One upstream, one recorder and one replay server per batch; the shapes of a batch run
``concurrency`` at a time (each on its own connection, under its own path, so the
replay matches each to its own recording whatever the order). ``STATS`` collects
every outcome for the summary `make fidelity` prints.
"""

from __future__ import annotations

import ssl
import statistics
import tempfile
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import adapter
from .client import http_exchange, ws_exchange
from .compare import against_shape, differences, is_timing
from .shapes import Shape, WsShape
from .upstream import Registry, Upstream


@dataclass
class Outcome:
    shape: Shape
    sid: int
    recorded: object = None
    replayed: object = None
    differences: list[str] = field(default_factory=list)
    not_as_sent: list[str] = field(default_factory=list)  # the recording run itself did not show the shape
    timing: list[float] = field(default_factory=list)  # replayed - recorded, seconds, per compared point
    rerun_after: list[str] = field(default_factory=list)  # timing differences of earlier runs, when re-run

    @property
    def problems(self) -> list[str]:
        return [f"recording run: {d}" for d in self.not_as_sent] + self.differences

    def report(self) -> str:
        lines = [f"shape {self.shape.name} (#{self.sid}, kind {self.shape.kind}):"]
        lines += [f"  - {p}" for p in self.problems]
        if self.rerun_after:
            lines.append(f"  (run again alone after: {'; '.join(self.rerun_after)})")
        return "\n".join(lines)


def exchange(url: str, sid: int, shape: Shape, tls: ssl.SSLContext | None = None):
    u = urlsplit(url)
    if isinstance(shape, WsShape):
        return ws_exchange(u.hostname, u.port, sid, shape)
    return http_exchange(u.hostname, u.port, sid, shape, tls if u.scheme == "https" else None)


def _run_all(url: str, items: list[tuple[int, Shape]], concurrency: int, tls=None) -> list:
    """Heavy shapes (megabytes through the proxy) run alone, so they do not skew the others' timing."""
    light = [(i, it) for i, it in enumerate(items) if not it[1].heavy]
    heavy = [(i, it) for i, it in enumerate(items) if it[1].heavy]
    out: list = [None] * len(items)
    with ThreadPoolExecutor(concurrency) as pool:
        for i, obs in zip([i for i, _ in light], pool.map(lambda it: exchange(url, *it[1], tls), light)):
            out[i] = obs
    for i, (sid, shape) in heavy:
        out[i] = exchange(url, sid, shape, tls)
    return out


def record_then_replay(shapes: list[Shape], workdir: Path, drive, *, upstream=Upstream, recorder=None,
                       recorder_kwargs=None, record_scheme: str = "http", replay=None):
    """Register ``shapes``; ``drive(base_url, [(sid, shape), ...])`` against the recorder; stop
    the recorder and the upstream; ``drive`` again against the replay server.
    Returns (items, recorded result, replayed result, cassette path).

    ``upstream(registry)`` makes the upstream (default: the HTTP/1.1 + WebSocket one);
    ``recorder`` starts the recorder (default ``adapter.start_recorder``; also
    ``adapter.start_recorder_process``, the ``proxy record`` command);
    ``record_scheme="https"`` makes the recording client speak TLS to the recorder;
    ``replay(cassette)`` may stand in for ``adapter.start_replay`` (the suite's own tests
    use it to show that a wrong replay is caught)."""
    registry = Registry()
    items = [(registry.add(s), s) for s in shapes]
    cassette = Path(tempfile.mkdtemp(prefix="batch-", dir=workdir)) / "fidelity.db"
    server = upstream(registry).start()
    try:
        running = (recorder or adapter.start_recorder)(server.url, cassette, **(recorder_kwargs or {}))
        try:
            recorded = drive(running.url.replace("http://", f"{record_scheme}://", 1), items)
        finally:
            running.stop()
    finally:
        server.stop()
    replayer = (replay or adapter.start_replay)(cassette)
    try:
        replayed = drive(replayer.url, items)
    finally:
        replayer.stop()
    return items, recorded, replayed, cassette


def run_batch(shapes: list[Shape], workdir: Path, *, concurrency: int = 2, record_stats: bool = True,
              reruns: int = 2, tls: ssl.SSLContext | None = None, **kw) -> list[Outcome]:
    """Record ``shapes`` through the recorder, stop the upstream, replay them, compare.
    ``tls``: the context for https URLs (see record_then_replay for the other options)."""
    items, recorded, replayed, _ = record_then_replay(
        shapes, workdir, lambda url, items: _run_all(url, items, concurrency, tls), **kw)
    outcomes = []
    for (sid, shape), a, b in zip(items, recorded, replayed):
        o = Outcome(shape, sid, a, b)
        o.not_as_sent = against_shape(shape, a)
        o.differences = differences(shape, a, b, o.timing)
        outcomes.append(o)
    # A timing difference alone may be the load of this shared machine on either run (a
    # process descheduled for 100 ms and more): such shapes are recorded and replayed
    # again, alone, up to ``reruns`` times, and the last run decides. A replay that is
    # really off (a gap ignored, a drift) is off every time.
    late = [i for i, o in enumerate(outcomes) if o.problems and all(is_timing(p) for p in o.problems)]
    if late and reruns:
        again = run_batch([outcomes[i].shape for i in late], workdir, concurrency=1, record_stats=False,
                          reruns=reruns - 1, tls=tls, **kw)
        for i, o in zip(late, again):
            o.rerun_after = outcomes[i].problems + o.rerun_after  # the earlier runs first
            outcomes[i] = o
    if record_stats:
        STATS.add(outcomes)
    return outcomes


class Stats:
    """Every outcome of the session, for the summary line of `make fidelity`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.shapes = 0
        self.with_differences: list[str] = []
        self.reruns = 0
        self.timing: dict[str, list[tuple[str, float]]] = defaultdict(list)  # kind -> (shape, |error|)

    def add(self, outcomes: list[Outcome]) -> None:
        with self.lock:
            for o in outcomes:
                self.shapes += 1
                if o.problems:
                    self.with_differences.append(o.shape.name)
                if o.rerun_after:
                    self.reruns += 1
                self.timing[o.shape.kind] += [(o.shape.name, abs(e)) for e in o.timing]

    def summary(self, known: dict[str, str]) -> list[str]:
        """``known``: shape name -> the issue expected to make it differ (xfail)."""
        expected = [n for n in self.with_differences if n in known]
        unexpected = [n for n in self.with_differences if n not in known]
        lines = [f"{self.shapes} shapes x 2 runs (record, replay): {len(self.with_differences)} with differences, "
                 f"{len(expected)} expected (xfail: {_by_issue(expected, known)}), {len(unexpected)} unexpected"
                 + (f": {', '.join(sorted(set(unexpected)))}" if unexpected else ""),
                 f"{self.reruns} shapes re-run alone after a timing difference (the last run decides)"]
        for kind in sorted(self.timing):  # shapes known to differ are left out
            errs = sorted(e for name, e in self.timing[kind] if name not in known)
            if errs:
                p95 = errs[min(len(errs) - 1, int(len(errs) * 0.95))]
                lines.append(f"timing error, {kind:<12} {len(errs):>5} points: median "
                             f"{statistics.median(errs) * 1000:5.1f} ms, p95 {p95 * 1000:5.1f} ms, "
                             f"max {errs[-1] * 1000:6.1f} ms")
        return lines


def _by_issue(names: list[str], known: dict[str, str]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for n in names:
        counts[known[n].split(":", 1)[0]] += 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


STATS = Stats()

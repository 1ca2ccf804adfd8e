"""Matching cost, and miss latency, beside the old matcher (VCR-style, before issue 12) in the same run.

    python bench/match_bench.py            # full sizes
    python bench/match_bench.py --quick    # small sizes (what the test suite runs)

Rows:
- match cost per request, N recordings on one path with ~50 KB Claude-Code-shaped bodies
  (12 tools, a system text, a prompt, a fresh metadata.user_id per run), requests in
  recorded order and in swapped pairs (two subagents answering out of order). The new
  matcher needs no configuration; the old one either ignored bodies (fast, and wrong for
  swapped pairs) or needed --match-body plus an ignore for the volatile field.
- miss latency with 200 recordings of ~100 KB bodies under --match-body (first miss,
  which builds the index of that path, and a later one), and with an 80 KB query string.
- a stream's timing in `proxy replay` while misses against those recordings are
  diagnosed (in the app's worker thread), beside the same stream without misses.
  The old matcher runs in a child process with a time limit (it ranked with difflib over
  whole bodies: 237 s was measured for 200 x 21 KB).
"""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from proxy.matching import MatchConfig, Matcher, Miss  # noqa: E402
from proxy.model import Interaction, Kind, Request  # noqa: E402

OLD_REV = "0933c01"  # main before issue 12: method + path + query in recorded order, difflib on a miss

TOOLS = json.dumps([
    {"name": f"Tool{i}", "description": ("Runs a step of the agent's work carefully. " * 60)[: 2400],
     "input_schema": {"type": "object", "properties": {
         f"arg{j}": {"type": "string", "description": f"argument {j} of tool {i}: " + "details " * 12}
         for j in range(6)}, "required": ["arg0"]}}
    for i in range(12)]).encode()


def body(i: int, size: int = 50_000, user: str | None = None, prompt: str | None = None) -> bytes:
    """A Claude-Code-shaped request of about ``size`` bytes; ``i`` picks the prompt."""
    user = user or f"user_{uuid.uuid4().hex}_session_{uuid.uuid4()}"
    text = prompt if prompt is not None else f"task {i}: summarise module {i % 97} and list its callers"
    head = (b'{"model":"claude-sonnet-4-5","max_tokens":32000,"stream":true,'
            b'"system":[{"type":"text","text":"You are Claude Code."},'
            b'{"type":"text","text":"<env>\\nWorking directory: /home/dev/proj\\nToday\'s date: 2026-11-23\\n</env>"}],'
            b'"tools":' + TOOLS + b',"messages":[{"role":"user","content":[{"type":"text","text":')
    pad = max(0, size - len(head) - len(text) - 200)
    notes = "".join(f"line {k} of earlier tool output for task {i}\n" for k in range(pad // 40))
    msg = json.dumps(text + "\n" + notes).encode()
    return head + msg + b'}]}],"metadata":{"user_id":"' + user.encode() + b'"}}'


def rec(seq: int, b: bytes, query: str = "") -> Interaction:
    it = Interaction(Kind.HTTP, Request("POST", "/v1/messages", query, [], b))
    it.seq = seq
    return it


def old_matching():
    """The matcher as it was before issue 12, loaded from git history (None without git)."""
    try:
        src = subprocess.run(["git", "show", f"{OLD_REV}:proxy/matching.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("proxy._old_matching")
    mod.__package__ = "proxy"
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{OLD_REV}:proxy/matching.py", "exec"), mod.__dict__)
    return mod


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def per_request(matcher, requests) -> tuple[list[float], list]:
    times, results = [], []
    for r in requests:
        t0 = time.perf_counter()
        results.append(matcher.match(r))
        times.append(time.perf_counter() - t0)
    return times, results


def swapped(n: int) -> list[int]:
    order = list(range(n))
    for k in range(0, n - 1, 2):
        order[k], order[k + 1] = order[k + 1], order[k]
    return order


def wrong(results, order) -> int:
    return sum(1 for r, i in zip(results, order) if getattr(r, "interaction", None) is None
               or r.interaction.seq != i + 1)


def match_rows(n: int, old) -> list[dict]:
    prompts = list(range(n))
    recorded = [rec(i + 1, body(i)) for i in prompts]
    rows = []
    figures = {}
    for name, order in (("recorded order", prompts), ("swapped pairs", swapped(n))):
        requests = [Request("POST", "/v1/messages", "", [], body(i)) for i in order]  # fresh user_id
        m = Matcher(recorded)
        times, results = per_request(m, requests)
        first = times[0]
        figures[name] = (pct(times[1:], 50) * 1e3, pct(times[1:], 99) * 1e3, first * 1e3, wrong(results, order),
                         m.report())
    exact_m = Matcher(recorded)
    exact_req = [Request("POST", "/v1/messages", "", [], it.request.body) for it in recorded]
    times, _ = per_request(exact_m, exact_req)
    exact_p50 = pct(times[1:], 50) * 1e3

    p50, p99, first, bad, report = figures["recorded order"]
    sp50, sp99, _, sbad, sreport = figures["swapped pairs"]
    bench = f"match, {n:,} recordings on one path, ~50 KB bodies"
    rows.append(dict(bench=bench, metric="new, no configuration: per request p50 / p99 (ids differ from the "
                     "recording); first request (indexes the path); identical bodies (exact, by hash) p50",
                     value=f"{p50:.3f} / {p99:.3f} ms; {first:.0f} ms; {exact_p50:.3f} ms", target="p50 <= 1 ms",
                     ok=p50 <= 1.0))
    rows.append(dict(bench=bench, metric="new: swapped pairs p50 / p99; wrong recording; reported out of order, weak",
                     value=f"{sp50:.3f} / {sp99:.3f} ms; {sbad} of {n}; {sreport['out_of_order']}, {sreport['weak']}",
                     target="0 wrong", ok=sbad == 0 and bad == 0))
    if old is None:
        rows.append(dict(bench=bench, metric="old matcher", value="n/a (no git history)", target="", ok=None))
        return rows
    plain = [rec(i + 1, recorded[i].request.body) for i in prompts]
    om = old.Matcher(plain)
    otimes, oresults = per_request(om, [Request("POST", "/v1/messages", "", [], body(i)) for i in swapped(n)])
    rows.append(dict(bench=bench, metric="old, default (bodies ignored): per request p50; swapped pairs: "
                     "wrong recording, reported",
                     value=f"{pct(otimes, 50) * 1e3:.3f} ms; {wrong(oresults, swapped(n))} of {n}, 0 reported",
                     target="", ok=None))
    k = min(n, 1000)  # the old --match-body keeps a pretty-printed copy of every body: 1,000 keeps it in memory
    cfg = old.MatchConfig(match_body=True, ignore_json_paths=("metadata.user_id",))
    t0 = time.perf_counter()
    om = old.Matcher(plain[:k], cfg)
    build = time.perf_counter() - t0
    otimes, oresults = per_request(om, [Request("POST", "/v1/messages", "", [], body(i)) for i in swapped(k)])
    rows.append(dict(bench=bench, metric=f"old, --match-body --ignore-json-path metadata.user_id ({k:,} "
                     "recordings): per request p50; load",
                     value=f"{pct(otimes, 50) * 1e3:.3f} ms; {build * 1e3:.0f} ms", target="", ok=None))
    return rows


def _old_miss(kind: str, size: int, q):
    old = old_matching()
    recorded, request, cfg = miss_case(kind, size, old)
    m = old.Matcher(recorded, cfg)
    t0 = time.perf_counter()
    m.match(request)
    q.put(time.perf_counter() - t0)


def miss_case(kind: str, size: int, mod):
    if kind == "bodies":
        recorded = [rec(i + 1, body(i, size)) for i in range(200)]
        request = Request("POST", "/v1/messages", "", [], body(17, size, prompt="task 17: something else"))
        cfg = mod.MatchConfig(match_body=True)
    else:
        query = "&".join(f"f{i}={'v' * 20}{i}" for i in range(size // 26))
        recorded = [rec(i + 1, body(i, 2000), query=query + f"&n={i}") for i in range(200)]
        request = Request("POST", "/v1/messages", query.replace("f7=", "f7=other") + "&n=17", [], body(17, 2000))
        cfg = mod.MatchConfig()
    return recorded, request, cfg


def old_miss_seconds(kind: str, size: int, limit: float) -> float | None:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_old_miss, args=(kind, size, q))
    p.start()
    p.join(limit)
    if p.is_alive():
        p.kill()
        p.join()
        return None
    return q.get() if not q.empty() else None


def miss_rows(quick: bool, old) -> list[dict]:
    import proxy.matching as new

    rows = []
    limit = 1.0 if quick else 5.0
    for kind, size, bench in (("bodies", 100_000, "miss, 200 recordings of ~100 KB bodies, --match-body"),
                              ("query", 80_000, "miss, 200 recordings, 80 KB query string")):
        recorded, request, cfg = miss_case(kind, size, new)
        new._subtrees.clear()  # cold: nothing of these bodies seen before
        new._subtree_tries.clear()
        m = Matcher(recorded, cfg)
        t0, c0 = time.perf_counter(), time.process_time()
        first = m.match(request)
        cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        warm = []
        for _ in range(5):
            t0 = time.perf_counter()
            again = m.match(request)
            warm.append(time.perf_counter() - t0)
        assert isinstance(first, Miss) and isinstance(again, Miss) and again.nearest.startswith("#18 "), again.nearest
        old_s = old_miss_seconds(kind, size, limit) if old is not None else None
        old_txt = "n/a" if old is None else (f"> {limit:.0f} s (stopped)" if old_s is None else f"{old_s * 1e3:.0f} ms")
        rows.append(dict(bench=bench, metric="answer time: new first miss (its CPU time) / new later miss "
                         "(p50 of 5) / old",
                         value=f"{cold * 1e3:.1f} ({cold_cpu * 1e3:.1f}) / {pct(warm, 50) * 1e3:.1f} ms / {old_txt}",
                         target="<= 50 ms", ok=cold <= 0.050 and pct(warm, 50) <= 0.050))
    return rows


def stream_cassette(path: Path, events: int, gap: float, n: int = 200, size: int = 100_000) -> None:
    """One SSE stream (GET /v1/stream) and ``n`` recordings of ~``size``-byte bodies."""
    from proxy.model import Chunk, End, Response
    from proxy.store import Cassette

    with Cassette.create(path, upstream="synthetic (bench)") as c:
        c.append(Interaction(Kind.HTTP, Request("GET", "/v1/stream"), Response(200),
                             [Chunk(i * gap, f"data: {i}\n\n".encode()) for i in range(events)],
                             ttfb=0.0, duration=events * gap, end=End.COMPLETE))
        for i in range(n):
            c.append(Interaction(Kind.HTTP, Request("POST", "/v1/messages", body=body(i, size)), Response(200),
                                 [Chunk(0.0, b"{}")], ttfb=0.0, duration=0.0, end=End.COMPLETE))


def stream_errors(url: str, events: int, gap: float, misses: int) -> list[float]:
    """Per-chunk lateness of the stream while ``misses`` requests with no recording arrive
    (sent on raw sockets spread over the stream, so no client thread competes for the GIL)."""
    import socket

    import httpx

    raw = body(17, 100_000, prompt="nothing like it")
    request = f"POST /v1/messages HTTP/1.1\r\nhost: b\r\ncontent-length: {len(raw)}\r\n\r\n".encode() + raw
    host, port = url.rsplit("/", 1)[1].split(":")
    socks = [socket.create_connection((host, int(port))) for _ in range(misses)]
    at = {events // 4 + k * (events // 2 // max(misses, 1)): s for k, s in enumerate(socks)}
    arrivals: dict[int, float] = {}  # event number -> arrival (reads may carry several events)
    with httpx.Client(timeout=30) as c, c.stream("GET", url + "/v1/stream") as r:
        t0 = time.perf_counter()
        for data in r.iter_raw():
            now = time.perf_counter() - t0
            for i in map(int, re.findall(rb"data: (\d+)", data)):
                arrivals[i] = now
                if i in at:
                    at[i].sendall(request)
    for s in socks:
        s.settimeout(30)
        assert s.recv(12) == b"HTTP/1.1 404", "expected a miss"
        s.close()
    lag = [arrivals[i] - i * gap for i in sorted(arrivals)]
    return [x - min(lag) for x in lag]  # against the event that came most on time


def timing_rows(quick: bool) -> list[dict]:
    import tempfile

    from common import proxy

    events, gap, misses = (100, 0.005, 4) if quick else (400, 0.005, 8)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stream.db"
        stream_cassette(path, events, gap)
        figures = {}
        for n in (0, misses):
            with proxy("replay", "--cassette", str(path), "--listen", "127.0.0.1:0", "--match-body") as (url, _):
                errs = stream_errors(url, events, gap, n)
            figures[n] = (pct(errs, 99) * 1e3, max(errs) * 1e3)
    (p0, m0), (p1, m1) = figures[0], figures[misses]
    return [dict(bench=f"replay stream, {events} events {gap * 1e3:.0f} ms apart, while misses against 200 x 100 KB "
                       "recordings are diagnosed",
                 metric=f"chunk lateness p99 / max: no misses / {misses} misses",
                 value=f"{p0:.2f} / {m0:.2f} ms / {p1:.2f} / {m1:.2f} ms",
                 target="p99 with misses <= p99 without + 2 ms", ok=p1 <= p0 + 2.0)]


def run(quick: bool = False) -> list[dict]:
    old = old_matching()
    return match_rows(200 if quick else 1_000, old) + miss_rows(quick, old) + timing_rows(quick)


def main() -> int:
    rows = run(quick="--quick" in sys.argv)
    print("| benchmark | metric | value | target | met |\n|---|---|---|---|---|")
    for r in rows:
        met = "" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        print(f"| {r['bench']} | {r['metric']} | {r['value']} | {r['target']} | {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

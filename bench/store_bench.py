"""The cassette store at scale, and in git.

- spawn to first match: `proxy replay` on a cassette of N small interactions, from spawning
  the process to the full response of the first request; resident memory (peak RSS of the
  replay process) once it has answered. N = 10k, 100k, 1M. Budgets 0.5 s and 150 MB.
- `proxy inspect` list of 1M interactions: spawn to the first page (header + 50 rows) on
  its stdout. Budget 0.5 s.

Times are the median of three spawns (the spread is shown: these machines are shared).
- appending one interaction to a 1,000-interaction cassette (recorded, closed, then one more
  run that appends one): bytes and 1 KB pages of the file that differ, lines of
  `proxy inspect --text` (the git textconv view) that differ.

The big cassettes are made once in bench/out/ through the store API (one transaction,
a dictionary trained on the first thousand interactions, as a cassette grown over
recording runs has) and reused while this file's GENERATION stays the same.

    python bench/store_bench.py            # the table rows, full sizes
    python bench/run.py --only store_bench
"""

from __future__ import annotations

import difflib
import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, bare_uvicorn, first_response, ratio, spread
from inspect_bench import BARE_LIST

from proxy.model import Chunk, End, Interaction, Kind, Request, Response
from proxy.store import Cassette

OUT = ROOT / "bench" / "out"
GENERATION = 1  # bump when the generated traffic changes
SPAWN_BUDGET, RSS_BUDGET_MB, INSPECT_BUDGET = 0.5, 150, 0.5


def small(i: int) -> Interaction:
    """Small exchanges of four shapes, like a client test suite's traffic."""
    t0 = 1_700_000_000.0 + i
    json_hdrs = [("content-type", "application/json"), ("x-request-id", f"req_{i:08x}")]
    shape = i % 4
    if shape == 0:
        return Interaction(Kind.HTTP, Request("GET", "/v1/models", "", [("accept", "application/json")]),
                           Response(200, "OK", json_hdrs), [Chunk(0.002, b'{"object":"list","data":[{"id":"sim-1"}]}')],
                           ttfb=0.002, duration=0.003, end=End.COMPLETE, started_at=t0)
    if shape == 1:
        body = json.dumps({"model": "sim-1", "stream": True, "messages": [{"role": "user", "content": f"hi {i}"}]})
        chunks = [Chunk(0.01 * k, f'data: {{"id":"chatcmpl-{i}","choices":[{{"delta":{{"content":"w{k}"}}}}]}}\n\n'
                        .encode()) for k in range(3)] + [Chunk(0.04, b"data: [DONE]\n\n")]
        return Interaction(Kind.HTTP, Request("POST", "/v1/chat/completions", "", json_hdrs, body.encode()),
                           Response(200, "OK", [("content-type", "text/event-stream")]), chunks, ttfb=0.005,
                           duration=0.05, end=End.COMPLETE, started_at=t0)
    if shape == 2:
        body = json.dumps({"model": "sim-1", "stream": True, "input": f"say {i}"})
        chunks = [Chunk(0.01 * k, f'event: response.output_text.delta\ndata: {{"type":"response.output_text.delta",'
                                  f'"item_id":"msg_{i:x}","delta":"w{k} "}}\n\n'.encode()) for k in range(5)]
        return Interaction(Kind.HTTP, Request("POST", "/v1/responses", "", json_hdrs, body.encode()),
                           Response(200, "OK", [("content-type", "text/event-stream")]), chunks, ttfb=0.004,
                           duration=0.06, end=End.COMPLETE, started_at=t0)
    body = json.dumps({"model": "emb-1", "input": f"text {i}"})
    return Interaction(Kind.HTTP, Request("POST", "/v1/embeddings", "", json_hdrs, body.encode()),
                       Response(200, "OK", json_hdrs), [Chunk(0.003, b'{"data":[{"embedding":[0.1,0.2,0.3]}]}')],
                       ttfb=0.003, duration=0.004, end=End.COMPLETE, started_at=t0)


def generate(path: Path, n: int) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    c = Cassette.create(path, upstream="synthetic (bench)")
    first = min(n, 1000)
    c.append_many(small(i) for i in range(first))
    c.compact()  # the dictionary, trained as the first recording run ends
    c.append_many(small(i) for i in range(first, n))
    c.close()


def cassette(n: int) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"store-{n}-g{GENERATION}.db"
    if not path.exists():
        t = time.perf_counter()
        generate(path, n)
        print(f"  made {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
    return path


def _rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn_to_first_match(path: Path) -> tuple[float, float]:
    """(seconds from spawn to the first response's last byte, peak RSS in MB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "proxy.cli", "replay", "--cassette", str(path), "--speed", "0",
                          "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        r, _, _ = select.select([p.stdout], [], [], 120)
        m = re.search(r"http://([0-9.]+):(\d+)", p.stdout.readline() if r else "")
        if not m:
            raise RuntimeError("proxy replay did not start")
        with socket.create_connection((m.group(1), int(m.group(2)))) as s:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\naccept: application/json\r\nconnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        took = time.perf_counter() - t0
        if not data.startswith(b"HTTP/1.1 200") or b"sim-1" not in data:
            raise RuntimeError(f"first match failed: {data[:200]!r}")
        return took, _rss_mb(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def inspect_first_page(path: Path, rows: int = 50, timeout: float = 60) -> float:
    """Seconds from spawning `proxy inspect PATH` to its header and first ``rows`` rows."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "proxy.cli", "inspect", str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=ROOT, env=dict(os.environ, COLUMNS="120"))
    try:
        lines, buf = 0, b""
        while lines < rows + 3:
            r, _, _ = select.select([p.stdout], [], [], max(0.0, timeout - (time.perf_counter() - t0)))
            if not r:
                return float("inf")
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            lines = buf.count(b"\n")
        return time.perf_counter() - t0
    finally:
        p.kill()
        p.wait()


def append_one(n: int = 1000) -> dict:
    """What appending one interaction to an n-interaction cassette changes."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.db"
        with Cassette.create(path, upstream="synthetic (bench)") as c:
            for i in range(n):
                c.append(small(i))
            c.close(compact=True)  # a recording run that ended cleanly
        before = path.read_bytes()
        text_before = _text(path)
        with Cassette.open(path, write=True) as c:  # the next run appends one
            c.append(small(n))
            c.close(compact=True)
        after = path.read_bytes()
        text_after = _text(path)
    page = 1024
    length = max(len(before), len(after))
    a, b = before.ljust(length, b"\0"), after.ljust(length, b"\0")
    changed = sum(x != y for x, y in zip(a, b))
    pages = sum(a[i:i + page] != b[i:i + page] for i in range(0, length, page))
    diff = [ln for ln in difflib.unified_diff(text_before, text_after, lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return {"size": len(after), "bytes": changed, "pages": pages, "lines": len(diff),
            "new_lines": sum(ln.startswith("+") for ln in diff)}


def _text(path: Path) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "inspect", "--text", str(path)], capture_output=True,
                       text=True, cwd=ROOT, check=True)
    return r.stdout.splitlines()


def bare_first_response() -> float:
    """The peer: seconds from spawning the bare uvicorn app to its first full response."""
    t0 = time.perf_counter()
    with bare_uvicorn() as (url, _):
        first_response(url, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        return time.perf_counter() - t0


def bare_first_page(path: Path, rows: int = 50) -> float:
    """The peer of the inspect row: Python + sqlite3 printing the first ``rows`` rows."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_LIST, str(path), str(rows)], check=True, capture_output=True)
    return time.perf_counter() - t0


def run(quick: bool = False) -> list[dict]:
    sizes = [2_000] if quick else [10_000, 100_000, 1_000_000]
    spawns = 1 if quick else 3
    rows = []
    bare = sorted(bare_first_response() for _ in range(spawns))[spawns // 2]
    for n in sizes:
        path = cassette(n)
        # an exact first match reads a page of its key's recordings, whatever the key's size
        runs = [spawn_to_first_match(path) for _ in range(spawns)]
        times = [t for t, _ in runs]
        took = sorted(times)[len(runs) // 2]
        rss = max(m for _, m in runs)
        rows.append({"bench": f"store, {n:,} interactions", "metric": f"spawn to first match, p50 of {len(runs)}: "
                     "proxy replay / bare uvicorn app",
                     "value": f"{took * 1000:.0f} / {bare * 1000:.0f} ms ({ratio(took, bare)}; proxy "
                              f"{spread([t * 1000 for t in times], '{:.0f}')})",
                     "target": f"proxy <= {SPAWN_BUDGET * 1000:.0f} ms", "ok": took <= SPAWN_BUDGET})
        rows.append({"bench": f"store, {n:,} interactions", "metric": "proxy replay: peak resident memory",
                     "value": f"{rss:.0f} MB", "target": f"<= {RSS_BUDGET_MB} MB", "ok": rss <= RSS_BUDGET_MB})
    n = sizes[-1]
    pages = [inspect_first_page(cassette(n)) for _ in range(spawns)]
    first_page = sorted(pages)[len(pages) // 2]
    peer = sorted(bare_first_page(cassette(n)) for _ in range(spawns))[spawns // 2]
    shown = ("> 60 s" if first_page == float("inf")
             else f"{first_page * 1000:.0f} / {peer * 1000:.0f} ms ({ratio(first_page, peer)}; proxy "
                  f"{spread([t * 1000 for t in pages], '{:.0f}')})")
    rows.append({"bench": f"store, {n:,} interactions", "metric": "first page of the list (50 rows): proxy inspect / "
                 "bare Python + sqlite3", "value": shown, "target": f"proxy <= {INSPECT_BUDGET * 1000:.0f} ms",
                 "ok": first_page <= INSPECT_BUDGET})
    a = append_one(200 if quick else 1000)
    rows.append({"bench": f"append 1 to {200 if quick else 1000:,} interactions", "metric": "file bytes changed",
                 "value": f"{a['bytes']:,} B in {a['pages']} page(s) of {a['size']:,} B", "target": "only new pages",
                 "ok": None})
    rows.append({"bench": f"append 1 to {200 if quick else 1000:,} interactions",
                 "metric": "lines changed in proxy inspect --text",
                 "value": f"{a['lines']} ({a['new_lines']} added)", "target": "the new interaction's lines",
                 "ok": None})
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"| {row['bench']} | {row['metric']} | {row['value']} | {row['target']} |")

"""proxy against VCR.py (pytest-recording's engine) and a HAR export, on the same traffic.

The traffic: streamed Responses-API calls made with the openai SDK against the bundled
simulator (not a real API). Each tool records it its own way: proxy record; VCR.py
patching the SDK's HTTP client; bare mitmproxy writing a HAR (hardump).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path

import httpx
import openai
import vcr
import yaml
from vcr.cassette import Cassette as VcrCassette

from common import bare_uvicorn, first_response, mitmdump, proxy, ratio, simulator_process, spread

from proxy.model import Request
from proxy.replay import load_engine
from proxy.testing import fake_key
from proxy.store import Cassette

logging.getLogger("vcr").setLevel(logging.WARNING)
HDRS = {"x-sim-events": "20", "x-sim-gap-ms": "0"}
VS_ROUNDS = 3  # proxy and VCR.py replay in turn: the median round


def sdk_traffic(base: str, n: int) -> int:
    client = openai.OpenAI(base_url=base + "/v1", api_key=fake_key("bench"), max_retries=0)
    events = 0
    for i in range(n):
        with client.responses.create(model="sim-1", input=f"bench {i}", stream=True, extra_headers=HDRS) as s:
            events += sum(1 for _ in s)
    return events


def raw_bytes(path: Path) -> int:
    """Bytes on the wire (request line, headers, body; status line, headers, body), from a cassette."""
    total = 0
    with Cassette.open(path) as c:
        for it in c.interactions():
            r = it.request
            total += len(f"{r.method} {r.target} HTTP/1.1\r\n") + sum(len(k) + len(v) + 4 for k, v in r.headers) + 2
            total += len(r.body)
            if it.response:
                total += 17 + sum(len(k) + len(v) + 4 for k, v in it.response.headers) + 2
            total += len(it.body)
    return total


def header_bytes(path: Path) -> int:
    """Bytes of the headers columns (JSON text, uncompressed by design: browsable)."""
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT sum(length(CAST(request_headers AS BLOB)) + "
                            "coalesce(length(CAST(response_headers AS BLOB)), 0)) FROM interactions").fetchone()[0]


def grow_proxy(src: Path, dst: Path, n: int) -> None:
    with Cassette.open(src) as s:
        its = list(s.interactions())
    with Cassette.create(dst, upstream="bench copy") as d:
        for i in range(n):
            d.append(its[i % len(its)])


def grow_vcr(src: Path, dst: Path, n: int) -> None:
    doc = yaml.load(src.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    base = doc["interactions"]
    # deep copies: shared objects would be written as YAML aliases, smaller than VCR.py writes
    doc["interactions"] = [copy.deepcopy(base[i % len(base)]) for i in range(n)]
    dst.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def boundaries(base_url: str, replay) -> tuple[int, float]:
    """(chunks the client reads, stream duration) for one streamed response."""
    chunks, t0 = [], time.perf_counter()
    with replay():
        with httpx.stream("POST", base_url + "/v1/responses", json={"model": "sim-1", "input": "b", "stream": True},
                          headers={"x-sim-events": "10", "x-sim-gap-ms": "20"}) as r:
            for b in r.iter_raw():
                chunks.append(time.perf_counter() - t0)
    return len(chunks), (chunks[-1] - chunks[0]) * 1000


def run(quick: bool = False) -> list[dict]:
    n = 20 if quick else 100
    sizes = (100,) if quick else (1000,)  # VCR.py takes about a minute to load 10,000 here
    big_n = 300 if quick else 10000
    rows = []
    with simulator_process() as sim, tempfile.TemporaryDirectory() as d:
        d = Path(d)
        pdb, vy, har = d / "p.db", d / "v.yaml", d / "t.har"
        with proxy("record", "--upstream", sim, "--cassette", str(pdb), "--listen", "127.0.0.1:0") as (url, _):
            sdk_traffic(url, n)
        with vcr.use_cassette(str(vy), record_mode="all"):
            sdk_traffic(sim, n)
        with mitmdump(sim, "--set", f"hardump={har}") as url:
            sdk_traffic(url, n)
        raw = raw_bytes(pdb)
        ours, yml, hr = pdb.stat().st_size, vy.stat().st_size, har.stat().st_size
        rows.append({"bench": f"storage, {n} streamed responses ({raw:,} raw bytes)",
                     "metric": "proxy cassette (SQLite) / VCR.py YAML / HAR (mitmproxy hardump), of raw; "
                               "of which proxy's headers (plain JSON)",
                     "value": f"{ours / raw * 100:.0f} / {yml / raw * 100:.0f} / {hr / raw * 100:.0f} % "
                              f"({ours:,} / {yml:,} / {hr:,} bytes); {header_bytes(pdb) / raw * 100:.0f} %",
                     "target": "proxy <= 25 %", "ok": ours / raw <= 0.25})

        # replaying streamed responses through the openai SDK
        m = 30 if quick else 200
        pbig, vbig = d / "pbig.db", d / "vbig.yaml"
        grow_proxy(pdb, pbig, m)
        grow_vcr(vy, vbig, m)
        def vcr_replay():
            with vcr.use_cassette(str(vbig), record_mode="none"):
                sdk_traffic(sim, m)

        # proxy and VCR.py in turn, VS_ROUNDS times: this host's speed drifts over seconds
        pairs = []
        for _ in range(1 if quick else VS_ROUNDS):
            with proxy("replay", "--cassette", str(pbig), "--listen", "127.0.0.1:0", "--speed", "0") as (url, _):
                t_proxy = timed(lambda: sdk_traffic(url, m))
            pairs.append((t_proxy, timed(vcr_replay)))
        t_proxy, t_vcr = sorted(pairs, key=lambda pair: pair[0] / pair[1])[len(pairs) // 2]
        rounds = f"; median of {len(pairs)} rounds in turn, {spread([a / b for a, b in pairs])}" if len(pairs) > 1 else ""
        rows.append({"bench": f"replay {m:,} streamed responses (openai SDK, one client)",
                     "metric": "proxy replay --speed 0 / VCR.py", "value": f"{t_proxy:.2f} / {t_vcr:.2f} s "
                     f"({ratio(t_proxy, t_vcr)}{rounds})", "target": "<= 1x VCR.py", "ok": t_proxy <= t_vcr})

        # a cassette ready to answer its first request: proxy opens the index and indexes the
        # request's path on that request (all recordings share it here: the worst case);
        # VCR.py parses the whole YAML file when the cassette is loaded
        first = Request("POST", "/v1/responses", "", [("content-type", "application/json")], b"{}")
        for size in sizes:
            p, v = d / f"p{size}.db", d / f"v{size}.yaml"
            grow_proxy(pdb, p, size)
            grow_vcr(vy, v, size)
            tp = timed(lambda: load_engine(p).http(first))
            tv = timed(lambda: VcrCassette.load(path=str(v), record_mode="none"))
            rows.append({"bench": f"cassette of {size:,} interactions on one path",
                         "metric": "open + first match: proxy / VCR.py load; size: proxy / VCR.py",
                         "value": f"{tp * 1000:.0f} / {tv * 1000:.0f} ms ({ratio(tp, tv)}); "
                                  f"{p.stat().st_size / 1e6:.1f} / {v.stat().st_size / 1e6:.1f} MB",
                         "target": "", "ok": None})
        big = d / f"p{big_n}.db"
        grow_proxy(pdb, big, big_n)
        request = b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        t0 = time.perf_counter()
        with proxy("replay", "--cassette", str(big), "--listen", "127.0.0.1:0", "--speed", "0") as (url, _):
            answer = first_response(url, request)
            took = time.perf_counter() - t0
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        t0 = time.perf_counter()
        with bare_uvicorn() as (url, _):
            first_response(url, request)
            bare = time.perf_counter() - t0
        rows.append({"bench": f"cassette of {big_n:,} interactions on one path",
                     "metric": "spawn to first match served: proxy replay / bare uvicorn app",
                     "value": f"{took * 1000:.0f} / {bare * 1000:.0f} ms ({ratio(took, bare)})",
                     "target": "proxy <= 1 s", "ok": took <= 1.0 if not quick else None})

        # do chunk boundaries and timing survive?
        one_p, one_v = d / "one.db", d / "one.yaml"
        with proxy("record", "--upstream", sim, "--cassette", str(one_p), "--listen", "127.0.0.1:0") as (url, _):
            rec_chunks, rec_ms = boundaries(url, lambda: _null())
        with vcr.use_cassette(str(one_v), record_mode="all"):
            boundaries(sim, lambda: _null())
        with proxy("replay", "--cassette", str(one_p), "--listen", "127.0.0.1:0") as (url, _):
            p_chunks, p_ms = boundaries(url, lambda: _null())
        v_chunks, v_ms = boundaries(sim, lambda: vcr.use_cassette(str(one_v), record_mode="none"))
        rows.append({"bench": "one stream, 13 events 20 ms apart", "metric": "chunks / duration: recorded, proxy replay, VCR.py replay",
                     "value": f"{rec_chunks} / {rec_ms:.0f} ms, {p_chunks} / {p_ms:.0f} ms, {v_chunks} / {v_ms:.0f} ms",
                     "target": "proxy: the recorded chunks, duration within 20 ms",
                     "ok": p_chunks == rec_chunks and abs(p_ms - rec_ms) <= 20})
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

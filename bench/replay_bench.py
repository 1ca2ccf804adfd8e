"""Replay: per-event timing error at --speed 1, and speed at --speed 0 beside a bare server of the same stack.

Speed rows each carry their peer measured in the same run: a bare raw-ASGI app on uvicorn,
same HTTP implementation and event loop, answering the same bytes (``python
bench/replay_bench.py bare ...`` runs it). Small JSON exchanges are loaded with wrk (Debian's
``wrk``); SSE is read by one asyncio client, whose own ceiling (the whole response written
at once by a raw socket server) is shown beside it. The paced rows give the server's CPU
time (``/proc/PID/stat``) for 200 streams at recorded pace.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common import ROOT, Cassette, median_run, pct, read_stream, spread, sse_cassette, timing_errors

JSON_BODY = b'{"object":"list","data":[{"id":"sim-1","object":"model"}]}'
JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(JSON_BODY))]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]
WRK = ["-t2", "-c8", "-d3s"]


def stacks() -> list[tuple[str, str, str, str]]:
    """(label, uvicorn http, loop, PROXY_HTTP_STACK) for each stack installed, fastest first."""
    out = []
    try:
        import httptools  # noqa: F401
        import uvloop  # noqa: F401

        out.append(("httptools + uvloop", "httptools", "uvloop", ""))
    except ImportError:
        pass
    out.append(("h11 + asyncio", "h11", "asyncio", "h11"))
    return out


# -- processes --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat; Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float = 90.0) -> None:
    """Until the process is idle: replay checks the whole cassette in a background
    thread after opening it, which would compete with the load measured."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cpu_seconds(pid)
        if now - last < 0.03:
            return
        last = now


@contextmanager
def replay(cassette: Path, stack_env: str, *args: str):
    """``proxy replay`` on the stack PROXY_HTTP_STACK names; yields (url, pid)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PROXY_HTTP_STACK=stack_env)
    p = subprocess.Popen([sys.executable, "-m", "proxy.cli", "replay", "--cassette", str(cassette), "--listen",
                          "127.0.0.1:0", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=env, cwd=ROOT)
    line = p.stdout.readline()
    m = re.search(r"http://[0-9.]+:\d+", line)
    try:
        if not m:
            raise RuntimeError(f"proxy replay did not start: {line!r}")
        yield m.group(0), p.pid
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


@contextmanager
def bare(kind: str, http: str, loop: str, *args: str):
    """This file's bare server (``kind``: json, sse N, blob N) in its own process; yields (url, pid)."""
    p = subprocess.Popen([sys.executable, __file__, "bare", kind, http, loop, *args], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT)
    url = p.stdout.readline().strip()
    try:
        yield url, p.pid
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def get(url: str, path: str, timeout: float = 120) -> int:
    import http.client

    host, port = url.rsplit("/", 1)[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


# -- small JSON ---------------------------------------------------------------------------


def wrk(url: str, quick: bool = False) -> tuple[float, int, int]:
    """(requests/s, requests, non-2xx answers) of ``wrk -t2 -c8 -d3s`` (1 s when quick)."""
    args = [*WRK[:-1], "-d1s"] if quick else WRK
    out = subprocess.run(["wrk", *args, url + "/v1/models"], capture_output=True, text=True, timeout=60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, total, int(bad.group(1)) if bad else 0


def json_cassette(path: Path, n: int, varied: bool = False) -> None:
    """``n`` recordings of GET /v1/models answered with JSON_BODY; ``varied``: each answer
    with its own id and request id (same sizes), as a real API's answers differ."""
    from proxy.model import Chunk, End, Interaction, Kind, Request, Response

    def one(i: int) -> Interaction:
        body = JSON_BODY.replace(b"sim-1", b"s%04d" % (i % 10000)) if varied else JSON_BODY
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        if varied:
            headers.append(("x-request-id", f"req_{i:08d}"))
        return Interaction(Kind.HTTP, Request("GET", "/v1/models"), Response(200, "OK", headers),
                           [Chunk(0.0, body)], ttfb=0.0, end=End.COMPLETE)

    with Cassette.create(path, upstream="synthetic (bench)") as c:
        c.append_many(one(i) for i in range(n))


JSON_ROUNDS = 3  # bare, then replay, this many times on the fastest stack: the median ratio


def json_rows(d: Path, quick: bool) -> list[dict]:
    if shutil.which("wrk") is None:
        return [{"bench": "small JSON exchanges (wrk)", "metric": "requests/s",
                 "value": "skipped: wrk is not installed (apt-get install wrk)", "target": "", "ok": None}]
    # every request takes a recording: more than wrk can send in 3 s on the fastest stack
    n = 5000 if quick else 100_000
    path = d / "json.db"
    json_cassette(path, n)
    rows = []
    for label, http, loop, env in stacks()[:1] if quick else stacks():
        fastest = label == stacks()[0][0]
        # This machine's speed drifts over seconds (other tenants): bare and replay take turns,
        # each round's ratio is its own pair's, and the row gives the median round.
        rounds = JSON_ROUNDS if fastest and not quick else 1
        pairs, bad_answers = [], 0
        with bare("json", http, loop) as (b_url, _):
            get(b_url, "/v1/models")
            for _ in range(rounds):
                b_rps, _, _ = wrk(b_url, quick)
                with replay(path, env, "--speed", "0") as (url, pid):  # a fresh server: every recording unused
                    get(url, "/v1/models")  # the first request indexes the recordings
                    wait_idle(pid)
                    r_rps, total, bad = wrk(url, quick)
                pairs.append((r_rps, b_rps))
                bad_answers += bad
        r_rps, b_rps = sorted(pairs, key=lambda pair: pair[0] / pair[1])[len(pairs) // 2]
        ratio = r_rps / b_rps
        ceiling = ""
        if fastest:  # wrk's own ceiling here: canned answers from a raw socket server
            with bare("wire", http, loop) as (url, _):
                get(url, "/v1/models")
                ceiling = f" (wrk's ceiling, a raw asyncio server writing canned answers: {wrk(url, quick)[0]:,.0f})"
        note = "" if not bad_answers else f" ({bad_answers} answers not 2xx: the cassette ran out, figure invalid)"
        turns = f"; {spread([r / b for r, b in pairs], '{:.3f}')}" if rounds > 1 else ""
        rows.append({"bench": f"small JSON, wrk {' '.join(WRK)}, {label}"
                              + (f", {rounds} rounds, bare and replay in turn" if rounds > 1 else ""),
                     "metric": "proxy replay --speed 0 / bare uvicorn raw ASGI (same stack), requests/s"
                               + (" (median round)" if rounds > 1 else ""),
                     "value": f"{r_rps:,.0f} / {b_rps:,.0f} = {ratio:.3f}{turns}{note}{ceiling}",
                     "target": ">= 0.8" if fastest else "",
                     "ok": (ratio >= 0.8 and not bad_answers) if fastest else None})
        if fastest and not quick:
            # the same exchange, each recording's answer its own (ids differ): no two alike
            varied = d / "json-varied.db"
            json_cassette(varied, n, varied=True)
            with replay(varied, env, "--speed", "0") as (url, pid):
                get(url, "/v1/models")
                wait_idle(pid)
                v_rps, total, bad = wrk(url, quick)
            note = "" if not bad else f" ({bad} of {total} answers not 2xx: the cassette ran out, figure invalid)"
            rows.append({"bench": f"small JSON, every answer different, wrk {' '.join(WRK)}, {label}",
                         "metric": "proxy replay --speed 0 / bare uvicorn raw ASGI (same stack), requests/s"
                                   " (bare: its median round)",
                         "value": f"{v_rps:,.0f} / {b_rps:,.0f} = {v_rps / b_rps:.3f}{note}", "target": "",
                         "ok": None})
    return rows


# -- SSE at --speed 0 -----------------------------------------------------------------------


def sse_speed(url: str, sizes: list[list[int]]) -> float:
    async def all_streams():
        await asyncio.gather(*(read_stream(url, s) for s in sizes))

    t0 = time.perf_counter()
    asyncio.run(all_streams())
    return sum(map(len, sizes)) / (time.perf_counter() - t0)


def sse_rows(d: Path, quick: bool) -> list[dict]:
    rows = []
    shapes = [(1, 2000 if quick else 20000)] + ([] if quick else [(50, 1000)])
    for streams, n_events in shapes:
        path = d / f"sse-{streams}.db"
        sse_cassette(path, n_events, streams=streams)
        with Cassette.open(path) as c:
            sizes = [[len(ch.data) for ch in it.chunks] for it in c.interactions()]
        chunks = str(path)
        ceiling = None
        for label, http, loop, env in stacks()[:1] if quick else stacks():
            with bare("sse", http, loop, chunks) as (url, _):
                b_eps = max(sse_speed(url, sizes) for _ in range(2))
            with replay(path, env, "--speed", "0") as (url, pid):
                wait_idle(pid)
                r_eps = sse_speed(url, sizes)
            if ceiling is None:
                with bare("blob", http, loop, chunks) as (url, _):
                    ceiling = max(sse_speed(url, sizes) for _ in range(2))
            ratio = r_eps / b_eps
            fastest = label == stacks()[0][0]
            rows.append({"bench": f"SSE --speed 0, {streams} stream(s) x {n_events} events, {label}",
                         "metric": "proxy replay / bare uvicorn raw ASGI streaming the same chunks, events/s",
                         "value": f"{r_eps:,.0f} / {b_eps:,.0f} = {ratio:.3f} (client ceiling {ceiling:,.0f})",
                         "target": ">= 0.8" if fastest else "", "ok": ratio >= 0.8 if fastest else None})
    return rows


# -- paced -------------------------------------------------------------------------------


def paced_cassette(path: Path, n_events: int, gap_ms, streams: int) -> list[list[float]]:
    """``sse_cassette``'s streams, each recorded for its own request body ``{"s": i}``:
    concurrent requests arrive in any order, and each stream's timing is compared with
    the recording it was given."""
    import json

    from proxy.model import Interaction

    plain = path.with_name(path.stem + "-plain.db")
    offsets = sse_cassette(plain, n_events, gap_ms, streams=streams)
    with Cassette.open(plain) as src, Cassette.create(path, upstream="synthetic (bench)") as c:
        for i, it in enumerate(src.interactions()):
            it.request.body = json.dumps({"s": i}).encode()
            c.append(Interaction(it.kind, it.request, it.response, it.chunks, ttfb=it.ttfb, end=it.end))
    return offsets


async def read_paced(url: str, i: int, sizes: list[int]) -> list[float]:
    """POST ``{"s": i}``; each event's arrival (the read that completed it), on the loop clock."""
    host, port = url.rsplit("/", 1)[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"s": %d}' % i
    writer.write(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n"
                 b"accept: text/event-stream\r\n\r\n%s" % (len(body), body))
    loop = asyncio.get_running_loop()
    ends, acc = [], 0
    for sz in sizes:
        acc += sz + len(b"%x" % sz) + 4  # chunked framing: SIZE CRLF data CRLF
        ends.append(acc)
    head, got, arrivals = b"", 0, []
    while len(arrivals) < len(sizes):
        data = await reader.read(1 << 20)
        now = loop.time()
        if not data:
            break
        if head is not None:
            head += data
            if b"\r\n\r\n" not in head:
                continue
            data, head = head.split(b"\r\n\r\n", 1)[1], None
        got += len(data)
        while len(arrivals) < len(sizes) and got >= ends[len(arrivals)]:
            arrivals.append(now)
    writer.close()
    return arrivals


def fidelity(streams: int, n_events: int, gap_ms=(0.0, 40.0)) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fid.db"
        offsets = paced_cassette(path, n_events, gap_ms, streams)
        with Cassette.open(path) as c:
            sizes = [[len(ch.data) for ch in it.chunks] for it in c.interactions()]
        errs: list[float] = []
        totals: list[float] = []
        with replay(path, "") as (url, pid):
            wait_idle(pid)

            async def all_streams():
                return await asyncio.gather(*(read_paced(url, i, sizes[i]) for i in range(streams)))

            c0, t0 = cpu_seconds(pid), time.perf_counter()
            results = asyncio.run(all_streams())
            used, took = cpu_seconds(pid) - c0, time.perf_counter() - t0
        for i, arr in enumerate(results):
            e = timing_errors(offsets[i], arr)
            errs += [abs((arr[k + 1] - arr[k]) - (offsets[i][k + 1] - offsets[i][k])) * 1000
                     for k in range(len(arr) - 1)]
            totals.append(e[-1])
    return {"gap_p50_ms": pct(errs, 50), "gap_p99_ms": pct(errs, 99), "gap_max_ms": max(errs),
            "total_err_ms": max(totals), "events": len(errs) + streams, "cpu_s": used, "took_s": took}


def paced_rows(quick: bool) -> list[dict]:
    n = 100 if quick else 500
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
        f50, p99s = median_run(lambda: fidelity(50, n), runs, key=lambda f: f["gap_p99_ms"])
        rows.append({"bench": f"replay fidelity, 50 streams x {n} events, gaps 0-40 ms (median of {runs} runs)",
                     "metric": "per-gap error p50 / p99 / max",
                     "value": f"{f50['gap_p50_ms']:.2f} / {f50['gap_p99_ms']:.2f} / {f50['gap_max_ms']:.2f} ms "
                              f"(p99 {spread(p99s)})",
                     "target": "p99 <= 5 ms", "ok": f50["gap_p99_ms"] <= 5.0})
    k = 20 if quick else 200
    f = fidelity(k, 100)
    rows.append({"bench": f"replay, {k} concurrent paced streams x 100 events, gaps 0-40 ms",
                 "metric": "server CPU time / wall time; per-gap error p99",
                 "value": f"{f['cpu_s']:.2f} s / {f['took_s']:.2f} s ({f['cpu_s'] / f['took_s']:.0%} of a core); "
                          f"{f['gap_p99_ms']:.2f} ms", "target": "", "ok": None})
    return rows


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        return paced_rows(quick) + sse_rows(Path(d), quick) + json_rows(Path(d), quick)


# -- the bare peers -------------------------------------------------------------------------


def _bare_main(kind: str, http: str, loop: str, *args: str) -> None:
    """A raw-ASGI app on uvicorn with nothing of proxy's: ``json`` answers JSON_BODY;
    ``sse CASSETTE`` streams the chunks of the cassette's recordings (one per request, in
    turn), one ASGI message each; ``blob CASSETTE`` is no uvicorn at all: a raw asyncio
    server writing each whole chunked response at once (the client's ceiling); ``wire``
    neither: canned JSON answers per request head (wrk's ceiling)."""
    import uvicorn

    chunks: list[list[bytes]] = []
    if kind in ("sse", "blob"):
        with Cassette.open(args[0]) as c:
            chunks = [[ch.data for ch in it.chunks] for it in c.interactions()]
    turn = [0]

    def next_chunks() -> list[bytes]:
        turn[0] += 1
        return chunks[(turn[0] - 1) % len(chunks)]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):  # the request, read as the replay server reads it
            pass
        if kind == "json":
            await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
            await send({"type": "http.response.body", "body": JSON_BODY})
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for data in next_chunks():
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    from proxy.net import bind

    sock = bind("127.0.0.1", 0)  # as the replay server binds: TCP_NODELAY on every connection
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    if kind == "wire":  # canned small JSON answers, one per request head: no HTTP stack at all
        answer = b"HTTP/1.1 200 OK\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in JSON_HEADERS) + b"\r\n" + JSON_BODY

        class Wire(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport, self.buf = transport, b""

            def data_received(self, data):
                self.buf += data
                n = self.buf.count(b"\r\n\r\n")
                if n:
                    self.buf = self.buf.rsplit(b"\r\n\r\n", 1)[1]
                    self.transport.write(answer * n)

        async def wire():
            server = await asyncio.get_running_loop().create_server(Wire, sock=sock)
            await server.serve_forever()

        if loop == "uvloop":
            import uvloop

            uvloop.run(wire())
        else:
            asyncio.run(wire())
        return
    if kind == "blob":
        async def serve():
            async def handle(reader, writer):
                while not reader.at_eof():
                    try:
                        await reader.readuntil(b"\r\n\r\n")
                    except asyncio.IncompleteReadError:
                        return
                    await reader.readexactly(2)  # read_stream's body: {}
                    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in next_chunks())
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
                    await writer.drain()

            server = await asyncio.start_server(handle, sock=sock)
            await server.serve_forever()

        try:
            asyncio.run(serve())
        except KeyboardInterrupt:
            pass
        return
    config = uvicorn.Config(app, http=http, loop=loop, lifespan="off", server_header=False, date_header=False,
                            access_log=False, log_level="error")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1:2] == ["bare"]:
        try:
            _bare_main(*sys.argv[2:])
        except KeyboardInterrupt:  # how the bench stops it
            pass
    else:
        for row in run(quick="--quick" in sys.argv):
            print(row)

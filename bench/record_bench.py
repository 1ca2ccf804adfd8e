"""Recorder overhead: per-event latency and time to first event through `proxy record`,
beside bare mitmproxy and a direct connection, in the same run.

The upstream (its own process) stamps each event with time.monotonic() when it sends it
(CLOCK_MONOTONIC is system-wide, so the client in another process can subtract it).

Peers, each its own process, all reverse proxies to the same upstream:
- direct: no proxy.
- bare mitmproxy: mitmproxy run exactly as `proxy record` runs it (in-process DumpMaster,
  no termlog, no dumper, connection_strategy=lazy), streaming every body
  (stream_large_bodies=1), with no addon of ours. This is the peer the ratio is taken
  against: it is the faster of the two bare ones.
- mitmdump: the `mitmdump` command, quiet, same options (for reference; its default addons
  cost a little).
- proxy record: the `proxy record` command, redaction on.

Trials are interleaved (each trial reads one stream through every peer in turn), so a burst
of load on this shared machine hits them alike; the ratio is computed per trial and
reported as the median with every trial's value.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import parse_qs

from common import ROOT, free_port, pct, spread

from proxy.timing import Pacer
from proxy.uvicorn_server import UvicornServer


class StampingUpstream:
    """SSE: ``n`` events ``gap`` seconds apart, each stamped with its send time;
    ``?n=`` and ``?gap=`` in the request override both."""

    def __init__(self, n: int, gap: float):
        self.n, self.gap = n, gap

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        q = parse_qs(scope.get("query_string", b"").decode())
        n, gap = int(q.get("n", [self.n])[0]), float(q.get("gap", [self.gap])[0])
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked")]})
        pacer = Pacer(1.0)
        for i in range(n):
            await pacer.until(i * gap)
            data = json.dumps({"i": i, "t": time.monotonic()})
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def latencies(url: str, connect=None, target: str = "/v1/responses") -> tuple[list[float], float]:
    """Per-event latency (ms) and time to first event (ms, from before the connect), read
    with a raw socket (``connect()``'s, e.g. a TLS tunnel through a forward proxy, when given)."""
    host, port = re.match(r"http://([0-9.]+):(\d+)", url).groups()
    t0 = time.monotonic()
    s = connect() if connect is not None else socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"POST {target} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}".encode())
    out, buf, first = [], b"", None
    while True:
        data = s.recv(65536)
        now = time.monotonic()
        if not data:
            break
        buf += data
        for m in re.finditer(rb'"t": ([0-9.]+)', data):
            out.append((now - float(m.group(1))) * 1000)
            if first is None:
                first = (now - t0) * 1000
        if buf.endswith(b"0\r\n\r\n"):
            break
    s.close()
    return out, first or float("nan")


async def _throughput(url: str, streams: int, n: int) -> float:
    """Events/s through the recorder, each stream read to its end by a socket reader thread."""
    t = time.perf_counter()
    target = f"/v1/responses?n={n}&gap=0"
    await asyncio.gather(*(asyncio.to_thread(latencies, url, target=target) for _ in range(streams)))
    return streams * n / (time.perf_counter() - t)


# -- the processes ------------------------------------------------------------------

def _serve_upstream() -> None:
    up = UvicornServer(StampingUpstream(10, 0.002), quiet=True).start_in_thread()
    print(up.url, flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    up.stop_thread()


def _serve_bare(upstream: str) -> None:
    """mitmproxy as `proxy record` runs it (record.runner), without the recorder."""
    from proxy.background import until_signal
    from proxy.record.runner import _InProcess

    async def main():
        m = _InProcess()
        await m._start("127.0.0.1", 0, f"reverse:{upstream}", None, [],
                       {"connection_strategy": "lazy", "stream_large_bodies": "1"})
        await until_signal(m.wait, m.request_stop, lambda: print(m.url, flush=True))
        await m._stop()

    asyncio.run(main())


def _cpu(pid: int) -> tuple[float, float]:
    """CPU time (s) a process has used so far: its main thread (mitmproxy's event loop,
    which moves the bytes) and all its threads, with ns resolution."""
    total = main = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            used = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
        total += used
        main += used if task.name == str(pid) else 0
    return main / 1e9, total / 1e9


@contextmanager
def _process(cmd: list[str], port: int | None = None):
    """``cmd`` in its own process; yields (its URL, its pid). The URL is the first one it
    prints, or, with ``port``, that port once it accepts connections."""
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        if port is None:
            m = re.search(r"http://[0-9.]+:\d+", p.stdout.readline())
            if not m:
                raise RuntimeError(f"{cmd[:3]} did not start")
            url = m.group(0)
        else:
            url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or p.poll() is not None:
                        raise RuntimeError(f"{cmd[:3]} did not start") from None
                    time.sleep(0.05)
        yield url, p.pid
    finally:
        p.send_signal(signal.SIGINT)
        p.stdin.close()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def _child(*args: str):
    """This file run as ``args`` in its own process."""
    return _process([sys.executable, __file__, *args])


def _peers(upstream: str, cassette: str, stack: ExitStack) -> dict[str, tuple[str, int]]:
    """(URL, pid) of every peer, started in ``stack``."""
    port = free_port()
    return {
        "direct": (upstream, 0),
        "mitmdump": stack.enter_context(_process(
            [str(Path(sys.executable).parent / "mitmdump"), "--mode", f"reverse:{upstream}", "--listen-host",
             "127.0.0.1", "--listen-port", str(port), "--set", "stream_large_bodies=1", "--set",
             "connection_strategy=lazy", "-q"], port=port)),
        "bare mitmproxy": stack.enter_context(_child("bare", upstream)),
        "proxy record": stack.enter_context(_process(
            [sys.executable, "-m", "proxy.cli", "record", "--upstream", upstream, "--cassette", cassette,
             "--listen", "127.0.0.1:0"])),
    }


# -- the bench ----------------------------------------------------------------------

PEERS = ("direct", "mitmdump", "bare mitmproxy", "proxy record")


def run(quick: bool = False) -> list[dict]:
    n, trials, firsts = (200, 3, 10) if quick else (1000, 11, 80)
    lat = {p: [] for p in PEERS}
    ttfe = {p: [] for p in PEERS}
    cpu = {p: [0.0, 0.0] for p in PEERS}  # event loop thread, whole process
    ratios, ratios99, cpu_ratios, loop_ratios = [], [], [], []
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        up, _ = stack.enter_context(_child("upstream"))
        peers = _peers(up, str(Path(d) / "r.db"), stack)
        for url, _ in peers.values():  # warm-up: mitmproxy's first flows pay one-off costs
            for _ in range(3):
                latencies(url, target="/v1/responses?n=20")
        for _ in range(trials):
            trial, used = {}, {}
            for p in PEERS:
                url, pid = peers[p]
                c0 = _cpu(pid) if pid else (0.0, 0.0)
                trial[p] = latencies(url, target=f"/v1/responses?n={n}&gap=0.002")[0]
                c1 = _cpu(pid) if pid else (0.0, 0.0)
                used[p] = (c1[0] - c0[0], c1[1] - c0[1])
                lat[p] += trial[p]
                cpu[p] = [cpu[p][0] + used[p][0], cpu[p][1] + used[p][1]]
            ratios.append(pct(trial["proxy record"], 50) / pct(trial["bare mitmproxy"], 50))
            ratios99.append(pct(trial["proxy record"], 99) / pct(trial["bare mitmproxy"], 99))
            loop_ratios.append(used["proxy record"][0] / used["bare mitmproxy"][0])
            cpu_ratios.append(used["proxy record"][1] / used["bare mitmproxy"][1])
        # time to first event: many short streams on new connections, interleaved
        for _ in range(firsts):
            for p in PEERS:
                ttfe[p].append(latencies(peers[p][0], target="/v1/responses?n=2&gap=0")[1])
        first_ratio = pct(ttfe["proxy record"], 50) / pct(ttfe["bare mitmproxy"], 50)
        # throughput: an upstream with no gaps, 1 and 50 concurrent streams, bare and record alternately
        m, many = (200, 10) if quick else (2000, 50)
        tput = {p: [] for p in ("bare mitmproxy", "proxy record")}
        for streams, each_n in ((1, m), (many, m // 2)):
            for p in tput:
                tput[p].append(asyncio.run(_throughput(peers[p][0], streams, each_n)))
    ratio = pct(ratios, 50)
    proxies = PEERS[1:]

    def each(values, p, fmt="{:.3f}", peers=PEERS):
        return " / ".join(fmt.format(pct(values[k], p)) for k in peers)

    rows = [
        {"bench": f"record overhead, SSE, {trials} interleaved trials x {n} events 2 ms apart",
         "metric": "per-event latency p50: " + " / ".join(PEERS), "value": each(lat, 50) + " ms", "target": "",
         "ok": None},
        {"bench": "record overhead", "metric": "per-event latency p99: " + " / ".join(PEERS),
         "value": each(lat, 99) + " ms", "target": "", "ok": None},
        {"bench": "record overhead", "metric": "proxy record / bare mitmproxy, per-event latency p50 (median trial)",
         "value": f"{ratio:.2f}x ({spread(ratios)})", "target": "<= 1.1x", "ok": ratio <= 1.1},
        {"bench": "record overhead", "metric": "proxy record / bare mitmproxy, per-event latency p99 (median trial)",
         "value": f"{pct(ratios99, 50):.2f}x ({spread(ratios99)})", "target": "", "ok": None},
        {"bench": "record overhead", "metric": "CPU time per event, event loop thread: " + " / ".join(proxies),
         "value": " / ".join(f"{cpu[p][0] / (trials * n) * 1e6:.0f}" for p in proxies)
                  + f" us; record / bare {pct(loop_ratios, 50):.2f}x ({spread(loop_ratios)})", "target": "", "ok": None},
        {"bench": "record overhead", "metric": "CPU time per event, whole process: " + " / ".join(proxies),
         "value": " / ".join(f"{cpu[p][1] / (trials * n) * 1e6:.0f}" for p in proxies)
                  + f" us; record / bare {pct(cpu_ratios, 50):.2f}x ({spread(cpu_ratios)})", "target": "", "ok": None},
        {"bench": f"record overhead, {firsts} new connections each, interleaved",
         "metric": "time to first event p50: " + " / ".join(PEERS), "value": each(ttfe, 50, "{:.2f}") + " ms",
         "target": "proxy record <= bare mitmproxy", "ok": first_ratio <= 1.0},
    ]
    rows.append({"bench": f"throughput, upstream sends without gaps, 1 x {m} and {many} x {m // 2} events",
                 "metric": f"events/s at 1 / {many} streams: bare mitmproxy; proxy record",
                 "value": "; ".join(f"{t[0]:,.0f} / {t[1]:,.0f}" for t in tput.values())
                          + f" ({tput['proxy record'][0] / tput['bare mitmproxy'][0]:.2f}x,"
                          f" {tput['proxy record'][1] / tput['bare mitmproxy'][1]:.2f}x)", "target": "", "ok": None})
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "upstream":
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends when the bench closes its stdin
        _serve_upstream()
    elif sys.argv[1] == "bare":
        _serve_bare(sys.argv[2])

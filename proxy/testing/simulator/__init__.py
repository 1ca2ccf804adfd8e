"""A small simulated model API, for the demo, the tests and the benchmarks. It is not OpenAI.

It speaks enough of the Responses and Chat Completions APIs for the openai SDK:
streamed SSE and plain JSON, GET /v1/models, zstd/gzip request bodies, and
WebSocket sessions on /v1/responses and /v1/realtime. Ids and timestamps differ
on every run, as a real API's do. Request headers choose the behaviour:

  x-sim-gap-ms: 20        gap between SSE events / reply frames (default 5)
  x-sim-events: 8         number of text deltas (default 5)
  x-sim-fault: split      send one event split across two chunks
               cut        drop the connection after half the events
               429        answer 429 with Retry-After: 7
               500        answer 500
  x-sim-accept-ms: 300    (WebSocket) hold the 101 back this long
  x-sim-refuse-ws: 1      (WebSocket) refuse the upgrade with 426 + JSON
  x-sim-close-after: 1    (WebSocket) server closes after this many turns

Run it alone with ``python -m proxy.testing.simulator [--listen HOST:PORT]``.
"""

from __future__ import annotations

import argparse
import asyncio

from ...uvicorn_server import UvicornServer
from .. import fake_key
from .events import chat_chunks, response_events, sse
from .http import HttpSimulator, SimulatedCut
from .websocket import serve_websocket


class Simulator:
    """The ASGI app. ``requests`` lists what arrived (HTTP and WebSocket), for tests."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._http = HttpSimulator(self.requests)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await serve_websocket(self.requests, scope, receive, send)


def serve(host: str = "127.0.0.1", port: int = 0, certfile: str | None = None, keyfile: str | None = None):
    """Start the simulator in a background thread; returns the server (``.url``, ``.app``, ``.stop_thread()``)."""
    return UvicornServer(Simulator(), host, port, certfile=certfile, keyfile=keyfile, quiet=True).start_in_thread()


def main(argv=None) -> None:
    """Run the simulated API until SIGINT/SIGTERM."""
    ap = argparse.ArgumentParser(description="proxy's simulated model API (not a real endpoint)")
    ap.add_argument("--listen", default="127.0.0.1:0")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")

    async def run() -> None:
        server = UvicornServer(Simulator(), host or "127.0.0.1", int(port), quiet=True)
        await server.start()
        print(f"simulator on {server.url}", flush=True)
        await server.run_until_signal()

    asyncio.run(run())


__all__ = ["Simulator", "SimulatedCut", "chat_chunks", "fake_key", "main", "response_events", "serve", "sse"]

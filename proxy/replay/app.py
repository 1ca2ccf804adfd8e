"""The replay app: a raw ASGI app that sends each request to the HTTP or WebSocket player.

It does no socket work itself; ``proxy.uvicorn_server`` serves it. One port serves
HTTP and WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from .asgi import request_from_parts, send_error
from .engine import NORMALIZED_BODY, NORMALIZED_KEPT, Engine, HttpScript
from .http import instant, off_loop, serve_http
from .websocket import serve_websocket

log = logging.getLogger("proxy.replay")

QUICK_BYTES = 256 * 2**10  # larger bodies go out through ASGI, which waits for a slow client between chunks


class ReplayApp:
    """``engine`` serves one cassette; with ``cassettes`` (a CassetteDir) each request
    names its cassette. ``forwarder`` (record mode new_episodes) relays requests that
    have no recording instead of answering them with a miss."""

    def __init__(self, engine: Engine | None = None, speed: float = 1.0, forwarder=None, cassettes=None):
        # Indexing a path and diagnosing a miss run in one worker thread (``offload``): one,
        # so that a burst of misses queues there instead of crowding the event loop out of
        # the GIL. The worker hands the GIL over between candidates (``Engine.prepare`` /
        # ``diagnose`` pause), and a forced switch happens after 1 ms, not the default 5.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self._worker: ThreadPoolExecutor | None = None
        self.engine = engine
        self.speed = speed
        self.forwarder = forwarder
        self.cassettes = cassettes
        self._seen: dict[tuple, tuple] = {}  # quick: normalized requests by their bytes

    def quick(self, method: str, raw_path: bytes, query: bytes, headers, body: bytes):
        """The server's quick lane (``proxy.net.QUICK_ANSWER``): the engine's answer to a whole
        HTTP request, worked out as it arrives. A response ``play`` would send whole at
        once (``instant``, at most ``QUICK_BYTES``) comes back for the server to write
        itself; anything else goes through ASGI with the answer (the engine's exception,
        if it raised one, for ``serve_http`` to raise as its own). None when this app
        answers the request through ASGI alone: more than one cassette, a forwarder,
        injected faults, a pace (``--speed`` other than 0), or a body to be matched off
        the event loop."""
        engine = self.engine
        if (self.speed != 0 or engine is None or self.cassettes is not None or self.forwarder is not None
                or engine.faults is not None):
            return None
        # A client repeats its requests byte for byte: what the engine matches by (a pure
        # function of the request) is kept by those bytes, and a repeat skips building
        # and normalizing the request (kept only for what passed the checks below).
        seen_key = (method, raw_path, query, tuple(headers), body)
        normalized = self._seen.get(seen_key)
        if normalized is None:
            req = request_from_parts(method, raw_path, query, headers, body)
            if off_loop(engine, req):  # matched in the worker thread, through ASGI
                return None
            normalized = engine.normalized(req)
            if len(body) <= NORMALIZED_BODY and len(normalized[0].body) <= NORMALIZED_BODY:
                if len(self._seen) >= NORMALIZED_KEPT:
                    self._seen.clear()
                self._seen[seen_key] = normalized
        try:
            answer = engine.http(None, True, None, normalized)  # positional: this runs per request
        except Exception as e:  # it may have used a recording: ASGI raises it (uvicorn's 500), matching nothing again
            return None, None, None, e
        if type(answer) is HttpScript and instant(answer):
            parts = [data for _, data in answer.chunks]
            if sum(map(len, parts)) <= QUICK_BYTES:
                return answer.status, answer.headers, parts, answer
        return None, None, None, answer

    async def offload(self, fn, *args):
        """Run slow matching work (indexing, diagnosis) off the event loop."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy-replay-match")
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None

    def engines(self) -> list[Engine]:
        """Every engine this app served from (for the summary)."""
        if self.cassettes is not None:
            return list(self.cassettes.engines.values())
        return [self.engine] if self.engine is not None else []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        engine = self.engine
        if self.cassettes is not None:
            engine, scope, problem = await self.cassettes.resolve(scope)
            if problem is not None:
                log.warning("%s", problem["error"]["message"])
                body = json.dumps(problem, indent=1).encode()
                await send_error(scope, receive, send, 404, [(b"content-type", b"application/json")], body)
                return
        if scope["type"] == "http":
            await serve_http(self, engine, scope, receive, send)
        else:
            await serve_websocket(self, engine, scope, receive, send)


__all__ = ["ReplayApp"]

"""The simulator's HTTP endpoints: POST /v1/responses and /v1/chat/completions (streamed
SSE or plain JSON), GET /v1/models, and the faults chosen by ``x-sim-*`` headers."""

from __future__ import annotations

import asyncio
import json
import time

from ...encoding import decode_body
from ...headers import read_body, scope_header, scope_headers
from ...net import IntendedDrop
from ...timing import Pacer
from .events import chat_chunks, new_id, response_events, sse


class SimulatedCut(IntendedDrop):
    """A simulated upstream reset: the server adapter drops the connection."""


class HttpSimulator:
    """The HTTP endpoints; ``requests`` lists what arrived, for tests."""

    def __init__(self, requests: list[dict]) -> None:
        self.requests = requests

    async def __call__(self, scope, receive, send) -> None:
        body = await read_body(receive)
        if body is None:
            return
        enc = scope_header(scope, "content-encoding")
        raw = decode_body(body, enc) if enc else body
        doc = json.loads(raw) if raw.strip() else {}
        path, method = scope["path"], scope["method"]
        self.requests.append({"method": method, "path": path, "body": doc, "encoding": enc,
                              "headers": dict(scope_headers(scope))})
        fault = scope_header(scope, "x-sim-fault")
        gap = float(scope_header(scope, "x-sim-gap-ms", "5")) / 1000
        n = int(scope_header(scope, "x-sim-events", "5"))
        if fault == "429":
            return await self.json(send, 429, {"error": {"message": "Rate limit reached (simulated)", "type": "requests",
                                                         "code": "rate_limit_exceeded"}},
                                   [(b"retry-after", b"7"), (b"x-ratelimit-remaining-requests", b"0")])
        if fault == "500":
            return await self.json(send, 500, {"error": {"message": "The server had an error (simulated)",
                                                         "type": "server_error"}})
        if method == "GET" and path == "/v1/models":
            return await self.json(send, 200, {"object": "list", "data": [
                {"id": "sim-1", "object": "model", "created": 0, "owned_by": "simulator"}]})
        if method == "POST" and path in ("/v1/responses", "/v1/chat/completions"):
            chat = path.endswith("completions")
            if not doc.get("stream"):
                return await self.json(send, 200, self.complete(doc, n, chat))
            events: list = chat_chunks(doc, n) if chat else response_events(doc, n)
            payloads = [sse(e, named=not chat) for e in events]
            if chat:
                payloads.append(sse("[DONE]", False))
            extra = [(b"x-codex-turn-state", new_id("ts").encode())] if not chat else []
            return await self.stream(send, payloads, gap, fault, extra)
        await self.json(send, 404, {"error": {"message": f"simulator: no route {method} {path}"}})

    def complete(self, doc: dict, n: int, chat: bool) -> dict:
        if chat:
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chat_chunks(doc, n))
            return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                    "model": doc.get("model", "sim-1"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}
        return response_events(doc, n)[-1]["response"]

    async def json(self, send, status: int, doc: dict, extra=()) -> None:
        body = json.dumps(doc).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", new_id("req").encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def stream(self, send, payloads: list[bytes], gap: float, fault: str, extra=()) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"transfer-encoding", b"chunked"), (b"x-request-id", new_id("req").encode()), *extra]})
        pacer = Pacer(1.0)
        chunks: list[bytes] = []
        for i, p in enumerate(payloads):
            if fault == "split" and i == 2:
                cut = len(p) // 2
                chunks += [p[:cut], p[cut:]]
            else:
                chunks.append(p)
        limit = len(chunks) // 2 if fault == "cut" else len(chunks)
        for i, c in enumerate(chunks[:limit]):
            await pacer.until(gap * i)
            await send({"type": "http.response.body", "body": c, "more_body": True})
        if fault == "cut":
            await asyncio.sleep(gap)
            raise SimulatedCut("simulated upstream reset")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

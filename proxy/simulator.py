"""A small simulated model API, for the demo and the tests. It is not OpenAI.

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
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from .codec import decode_body
from .replay.server import IntendedDrop
from .timing import Pacer


class SimulatedCut(IntendedDrop):
    pass


def fake_key(label: str) -> str:
    """An API-key shaped string that is no key, for demos and tests: redaction must
    scrub it. Built here so that no key-shaped literal sits in any tracked file."""
    return "sk-" + label + "-" + "Zq7" * 8


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _words(prompt: str, n: int) -> list[str]:
    base = f"Simulated reply to: {prompt}".split() or ["ok"]
    return [(base[i % len(base)] + " ") for i in range(n)]


def _prompt(doc: dict) -> str:
    inp = doc.get("input") or doc.get("messages") or ""
    if isinstance(inp, list) and inp:
        last = inp[-1]
        if isinstance(last, dict):
            content = last.get("content") or last.get("output") or ""
            if isinstance(content, list):
                content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            return str(content)
        return str(last)
    return str(inp)


def _hdr(scope, name: str, default: str = "") -> str:
    key = name.encode()
    for k, v in scope.get("headers", []):
        if k.lower() == key:
            return v.decode("latin-1")
    return default


def response_events(doc: dict, n: int, model: str = "sim-1") -> list[dict]:
    rid = _id("resp")
    mid = _id("msg")
    created = int(time.time())
    words = _words(_prompt(doc), n)
    base = {"id": rid, "object": "response", "created_at": created, "model": doc.get("model", model),
            "output": [], "status": "in_progress"}
    evs = [
        {"type": "response.created", "response": base},
        {"type": "response.in_progress", "response": base},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": mid, "type": "message", "role": "assistant", "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "item_id": mid, "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
    ]
    evs += [
        {"type": "response.output_text.delta", "item_id": mid, "output_index": 0, "content_index": 0, "delta": w}
        for w in words
    ]
    text = "".join(words)
    item = {"id": mid, "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    evs += [
        {"type": "response.output_text.done", "item_id": mid, "output_index": 0, "content_index": 0, "text": text},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": dict(base, status="completed", output=[item],
                                                        usage={"input_tokens": 5, "output_tokens": n, "total_tokens": 5 + n})},
    ]
    for i, e in enumerate(evs):
        e["sequence_number"] = i
    return evs


def chat_chunks(doc: dict, n: int) -> list[dict]:
    cid = _id("chatcmpl")
    created = int(time.time())
    model = doc.get("model", "sim-1")

    def chunk(delta, finish=None):
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": w}) for w in _words(_prompt(doc), n)]
    out.append(chunk({}, "stop"))
    return out


def sse(event: dict | str, named: bool) -> bytes:
    if isinstance(event, str):
        return f"data: {event}\n\n".encode()
    data = json.dumps(event, separators=(",", ":"))
    if named:
        return f"event: {event['type']}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()


class Simulator:
    """The ASGI app."""

    def __init__(self) -> None:
        self.requests: list[dict] = []  # what arrived, for tests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            from .simulator_ws import websocket

            await websocket(self, scope, receive, send)

    async def http(self, scope, receive, send) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        enc = _hdr(scope, "content-encoding")
        raw = decode_body(body, enc) if enc else body
        doc = json.loads(raw) if raw.strip() else {}
        path, method = scope["path"], scope["method"]
        self.requests.append({"method": method, "path": path, "body": doc, "encoding": enc,
                              "headers": {k.decode(): v.decode() for k, v in scope["headers"]}})
        fault = _hdr(scope, "x-sim-fault")
        gap = float(_hdr(scope, "x-sim-gap-ms", "5")) / 1000
        n = int(_hdr(scope, "x-sim-events", "5"))
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
            extra = [(b"x-codex-turn-state", _id("ts").encode())] if not chat else []
            return await self.stream(send, payloads, gap, fault, extra)
        await self.json(send, 404, {"error": {"message": f"simulator: no route {method} {path}"}})

    def complete(self, doc: dict, n: int, chat: bool) -> dict:
        if chat:
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chat_chunks(doc, n))
            return {"id": _id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                    "model": doc.get("model", "sim-1"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}}
        return response_events(doc, n)[-1]["response"]

    async def json(self, send, status: int, doc: dict, extra=()) -> None:
        body = json.dumps(doc).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", _id("req").encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def stream(self, send, payloads: list[bytes], gap: float, fault: str, extra=()) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"transfer-encoding", b"chunked"), (b"x-request-id", _id("req").encode()), *extra]})
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


def serve(host: str = "127.0.0.1", port: int = 0, certfile: str | None = None, keyfile: str | None = None):
    """Start the simulator in a background thread; returns the server (``.url``, ``.stop_thread()``)."""
    from .replay.server import ReplayServer

    return ReplayServer(Simulator(), host, port, certfile=certfile, keyfile=keyfile, quiet=True).start_in_thread()


def main(argv=None) -> None:
    """python -m proxy.simulator [--listen HOST:PORT]: run the simulated API until Ctrl-C."""
    import argparse
    import asyncio
    import signal

    from .replay.server import ReplayServer

    ap = argparse.ArgumentParser(description="proxy's simulated model API (not a real endpoint)")
    ap.add_argument("--listen", default="127.0.0.1:0")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")

    async def run() -> None:
        server = ReplayServer(Simulator(), host or "127.0.0.1", int(port), quiet=True)
        await server.start()
        print(f"simulator on {server.url}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: setattr(server.server, "should_exit", True))
        await server.wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()

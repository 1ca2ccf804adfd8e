"""The simulator's WebSocket endpoints (the header knobs are listed in the package docstring).

/v1/responses   Responses API over WebSocket: ``response.create`` frames answered with
                the streamed events; ``"generate": false`` is a warm-up answered with an
                empty completed response; a prompt mentioning "weather" gets a function
                call; ``previous_response_id`` is echoed. The 101 carries a sticky
                ``x-codex-turn-state``.
/v1/realtime    realtime-style: needs a subprotocol, sends ``session.created`` first,
                answers ``session.update`` and ``response.create``.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from ...headers import scope_header, scope_headers
from ...timing import Pacer
from .events import new_id, ws_turn


async def serve_websocket(requests: list[dict], scope, receive, send) -> None:
    await receive()  # websocket.connect
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    requests.append({"method": "WS", "path": path, "headers": dict(scope_headers(scope))})
    if scope_header(scope, "x-sim-refuse-ws"):
        body = json.dumps({"error": {"message": "WebSocket mode is not enabled for this key (simulated)",
                                     "code": "websocket_not_enabled"}}).encode()
        await send({"type": "websocket.http.response.start", "status": 426,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    if path not in ("/v1/responses", "/v1/realtime"):
        await send({"type": "websocket.close", "code": 4404})
        return
    gap = float(scope_header(scope, "x-sim-gap-ms", "5")) / 1000
    n = int(scope_header(scope, "x-sim-events", "5"))
    close_after = int(scope_header(scope, "x-sim-close-after", "0"))
    await asyncio.sleep(float(scope_header(scope, "x-sim-accept-ms", "0")) / 1000)
    realtime = path == "/v1/realtime"
    accept: dict = {"type": "websocket.accept",
                    "headers": [(b"x-codex-turn-state", new_id("ts").encode()), (b"x-request-id", new_id("req").encode())]}
    if realtime and scope.get("subprotocols"):
        accept["subprotocol"] = scope["subprotocols"][0]
    await send(accept)

    async def emit(events: list[dict]) -> None:
        pacer = Pacer(1.0)
        for i, e in enumerate(events):
            await pacer.until(gap * i)
            await send({"type": "websocket.send", "text": json.dumps(e, separators=(",", ":"))})

    if realtime:
        model = (query.get("model") or ["sim-realtime"])[0]
        await emit([{"type": "session.created", "event_id": new_id("event"),
                     "session": {"id": new_id("sess"), "model": model, "modalities": ["text"]}}])
    turns = 0
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text") or (msg.get("bytes") or b"").decode("utf-8", "replace")
        try:
            doc = json.loads(text)
        except ValueError:
            await send({"type": "websocket.send", "text": json.dumps({"type": "error", "error": {"message": "bad JSON"}})})
            continue
        kind = doc.get("type")
        if realtime:
            if kind == "session.update":
                await emit([{"type": "session.updated", "event_id": new_id("event"), "session": doc.get("session", {})}])
            elif kind == "response.create":
                rid = new_id("resp")
                words = ["Simulated ", "realtime ", "reply"]
                await emit([{"type": "response.created", "event_id": new_id("event"), "response": {"id": rid}}]
                           + [{"type": "response.output_text.delta", "event_id": new_id("event"), "response_id": rid,
                               "delta": w} for w in words]
                           + [{"type": "response.done", "event_id": new_id("event"),
                               "response": {"id": rid, "status": "completed"}}])
            continue
        if kind == "response.create":
            await emit(ws_turn(doc, n))
            turns += 1
            if close_after and turns >= close_after:
                await send({"type": "websocket.close", "code": 1001, "reason": "simulated server close"})
                return
        else:
            await emit([{"type": "error", "error": {"message": f"unknown event type {kind!r}"}}])

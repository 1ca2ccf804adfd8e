"""The simulator's WebSocket endpoints (see proxy.simulator for the header knobs).

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
import time
from urllib.parse import parse_qs

from .simulator import _hdr, _id, _prompt, response_events
from .timing import Pacer


def _tool_call_events(doc: dict) -> list[dict]:
    rid, fid, call = _id("resp"), _id("fc"), _id("call")
    base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": doc.get("model", "sim-1"),
            "status": "in_progress", "output": [], "previous_response_id": doc.get("previous_response_id")}
    item = {"id": fid, "type": "function_call", "call_id": call, "name": "get_weather", "arguments": ""}
    args = '{"city":"Paris"}'
    done = dict(item, arguments=args, status="completed")
    evs = [
        {"type": "response.created", "response": base},
        {"type": "response.output_item.added", "output_index": 0, "item": dict(item, status="in_progress")},
        {"type": "response.function_call_arguments.delta", "item_id": fid, "output_index": 0, "delta": args[:8]},
        {"type": "response.function_call_arguments.delta", "item_id": fid, "output_index": 0, "delta": args[8:]},
        {"type": "response.function_call_arguments.done", "item_id": fid, "output_index": 0, "arguments": args},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": dict(base, status="completed", output=[done])},
    ]
    for i, e in enumerate(evs):
        e["sequence_number"] = i
    return evs


def _turn(doc: dict, n: int) -> list[dict]:
    if doc.get("generate") is False:
        base = {"id": _id("resp"), "object": "response", "created_at": int(time.time()),
                "model": doc.get("model", "sim-1"), "output": [], "status": "completed"}
        return [{"type": "response.created", "response": dict(base, status="in_progress"), "sequence_number": 0},
                {"type": "response.completed", "response": base, "sequence_number": 1}]
    if "weather" in _prompt(doc).lower():
        return _tool_call_events(doc)
    evs = response_events(doc, n)
    for e in evs:
        if isinstance(e.get("response"), dict):
            e["response"]["previous_response_id"] = doc.get("previous_response_id")
    return evs


async def websocket(sim, scope, receive, send) -> None:
    await receive()  # websocket.connect
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    sim.requests.append({"method": "WS", "path": path, "headers": {k.decode(): v.decode() for k, v in scope["headers"]}})
    if _hdr(scope, "x-sim-refuse-ws"):
        body = json.dumps({"error": {"message": "WebSocket mode is not enabled for this key (simulated)",
                                     "code": "websocket_not_enabled"}}).encode()
        await send({"type": "websocket.http.response.start", "status": 426,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    if path not in ("/v1/responses", "/v1/realtime"):
        await send({"type": "websocket.close", "code": 4404})
        return
    gap = float(_hdr(scope, "x-sim-gap-ms", "5")) / 1000
    n = int(_hdr(scope, "x-sim-events", "5"))
    close_after = int(_hdr(scope, "x-sim-close-after", "0"))
    await asyncio.sleep(float(_hdr(scope, "x-sim-accept-ms", "0")) / 1000)
    realtime = path == "/v1/realtime"
    accept: dict = {"type": "websocket.accept",
                    "headers": [(b"x-codex-turn-state", _id("ts").encode()), (b"x-request-id", _id("req").encode())]}
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
        await emit([{"type": "session.created", "event_id": _id("event"),
                     "session": {"id": _id("sess"), "model": model, "modalities": ["text"]}}])
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
                await emit([{"type": "session.updated", "event_id": _id("event"), "session": doc.get("session", {})}])
            elif kind == "response.create":
                rid = _id("resp")
                words = ["Simulated ", "realtime ", "reply"]
                await emit([{"type": "response.created", "event_id": _id("event"), "response": {"id": rid}}]
                           + [{"type": "response.output_text.delta", "event_id": _id("event"), "response_id": rid,
                               "delta": w} for w in words]
                           + [{"type": "response.done", "event_id": _id("event"),
                               "response": {"id": rid, "status": "completed"}}])
            continue
        if kind == "response.create":
            await emit(_turn(doc, n))
            turns += 1
            if close_after and turns >= close_after:
                await send({"type": "websocket.close", "code": 1001, "reason": "simulated server close"})
                return
        else:
            await emit([{"type": "error", "error": {"message": f"unknown event type {kind!r}"}}])

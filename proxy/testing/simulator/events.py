"""What the simulator says, without any I/O: Responses-API events, Chat Completions chunks,
SSE framing, and the ids and timestamps that differ on every run, as a real API's do."""

from __future__ import annotations

import json
import time
import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def reply_words(prompt: str, n: int) -> list[str]:
    base = f"Simulated reply to: {prompt}".split() or ["ok"]
    return [(base[i % len(base)] + " ") for i in range(n)]


def prompt(doc: dict) -> str:
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


def response_events(doc: dict, n: int, model: str = "sim-1") -> list[dict]:
    rid = new_id("resp")
    mid = new_id("msg")
    created = int(time.time())
    words = reply_words(prompt(doc), n)
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
    cid = new_id("chatcmpl")
    created = int(time.time())
    model = doc.get("model", "sim-1")

    def chunk(delta, finish=None):
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": w}) for w in reply_words(prompt(doc), n)]
    out.append(chunk({}, "stop"))
    return out


def sse(event: dict | str, named: bool) -> bytes:
    if isinstance(event, str):
        return f"data: {event}\n\n".encode()
    data = json.dumps(event, separators=(",", ":"))
    if named:
        return f"event: {event['type']}\ndata: {data}\n\n".encode()
    return f"data: {data}\n\n".encode()


def tool_call_events(doc: dict) -> list[dict]:
    rid, fid, call = new_id("resp"), new_id("fc"), new_id("call")
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


def ws_turn(doc: dict, n: int) -> list[dict]:
    if doc.get("generate") is False:
        base = {"id": new_id("resp"), "object": "response", "created_at": int(time.time()),
                "model": doc.get("model", "sim-1"), "output": [], "status": "completed"}
        return [{"type": "response.created", "response": dict(base, status="in_progress"), "sequence_number": 0},
                {"type": "response.completed", "response": base, "sequence_number": 1}]
    if "weather" in prompt(doc).lower():
        return tool_call_events(doc)
    evs = response_events(doc, n)
    for e in evs:
        if isinstance(e.get("response"), dict):
            e["response"]["previous_response_id"] = doc.get("previous_response_id")
    return evs

"""WebSocket half of the replay app: moves frames between the ASGI socket and a WsScript.

Two tasks per connection: the receiver checks each client frame against the
recording and, when it matches, queues the server frames recorded after it with
absolute due times (arrival + recorded gap / speed); the sender sends queued
frames in order, each at its due time. Frame order is the queue's order, so
timing can slip but order never can.
"""

from __future__ import annotations

import asyncio
import logging

from ..matching import Miss
from ..model import Kind
from ..timing import Pacer
from ..headers import WHOLE_BODY, sendable
from .asgi import RecordedCut, request_from_scope, send_error, send_miss
from .engine import CLOSE_MISMATCH, CLOSE_UNEXPECTED, MissReply, WsScript

log = logging.getLogger("proxy.replay")

_CLOSE = object()
_DROP = object()


def _reason(text: str) -> str:
    # A close reason is at most 123 bytes of UTF-8.
    data = text.encode()[:123]
    return data.decode("utf-8", "ignore")


async def serve_websocket(app, engine, scope, receive, send) -> None:
    pacer = Pacer(app.speed)
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    req = request_from_scope(scope)
    if not engine.prepared(req, "ws"):
        await app.offload(engine.prepare, req, "ws")
    result = engine.handshake(req)
    if isinstance(result, Miss) and app.forwarder is not None:
        log.info("no recording of WebSocket %s: forwarding it upstream and recording it", result.request)
        await app.forwarder.websocket(scope, req, receive, send)
        return
    if isinstance(result, Miss):
        await app.offload(engine.diagnose, result)
        await send_miss(MissReply(result), scope, None, send)
        return
    it = result.interaction
    if it.kind is Kind.HTTP:
        await _refuse(it, scope, pacer, send)
        return
    try:
        await _session(engine, result, pacer, receive, send)
    finally:
        engine.settle(result)


async def _refuse(it, scope, pacer: Pacer, send) -> None:
    """The recording is a refused upgrade (e.g. 426): answer the same refusal."""
    await pacer.until(it.ttfb)
    await send_error(scope, None, send, it.response.status, sendable(it.response.headers, WHOLE_BODY), it.body)


async def _session(engine, match, pacer: Pacer, receive, send) -> None:
    """Replay the reserved session; the first client frame may rebind the connection to
    another session with the same handshake (``Engine.bind``): the 101 and the frames
    sent before it came from the reserved one, everything after from the bound one."""
    scripted = match.interaction
    script: WsScript = engine.ws_script(scripted)
    await pacer.until(script.accept_delay)
    accept = {"type": "websocket.accept", "headers": script.headers}
    if script.subprotocol:
        accept["subprotocol"] = script.subprotocol
    await send(accept)

    queue: asyncio.Queue = asyncio.Queue()
    generation = 0  # bumped on a rebind: what the reserved script queued and did not send yet is dropped
    for offset, frame in script.preamble:
        queue.put_nowait((pacer.due(offset), generation, frame))
    if not script.turns:
        _queue_end(script, pacer, pacer.start, queue, generation)

    async def sender():
        while True:
            due, gen, item = await queue.get()
            if gen != generation:
                continue
            await pacer.at(due)
            if gen != generation:
                continue
            if item is _CLOSE:
                await send({"type": "websocket.close", "code": script.close.code, "reason": script.close.reason})
                return _CLOSE
            if item is _DROP:
                return _DROP
            key = "text" if item.is_text else "bytes"
            await send({"type": "websocket.send", key: item.text() if item.is_text else item.payload})

    sender_task = asyncio.create_task(sender())
    recv_task: asyncio.Task | None = None
    turn = 0
    try:
        while True:
            recv_task = recv_task or asyncio.create_task(receive())
            done, _ = await asyncio.wait({recv_task, sender_task}, return_when=asyncio.FIRST_COMPLETED)
            if sender_task in done:
                if sender_task.result() is _DROP:
                    raise RecordedCut(f"recording #{script.seq} ended without a close frame")
                return  # recorded server close sent
            msg = recv_task.result()
            recv_task = None
            if msg["type"] == "websocket.disconnect":
                return
            arrival = pacer.now()
            is_text = msg.get("text") is not None
            payload = msg["text"].encode() if is_text else (msg.get("bytes") or b"")
            # compared as recorded: the recorder scrubbed key-shaped strings from frames
            payload = engine.redactor.data(payload)
            if turn == 0 and match.tentative:
                # Another connection's bind may have swapped this reservation already.
                match = engine.bind(match, payload)
                if match.interaction is not scripted:
                    log.info("websocket %s: the first frame binds #%s (the 101 came from #%s)",
                             match.request, match.seq, scripted.seq)
                    scripted = match.interaction
                    script = engine.ws_script(scripted)
                    generation += 1
            if turn >= len(script.turns):
                await _fail(engine, send, sender_task, CLOSE_UNEXPECTED,
                            f"unexpected frame {turn + 1}: recording #{script.seq} has {len(script.turns)} client frame(s)")
                return
            check = engine.check_frame(script, turn, payload, is_text)
            if not check.ok:
                await _fail(engine, send, sender_task, CLOSE_MISMATCH, f"recording #{script.seq}: {check.reason}")
                return
            for rel, frame in script.turns[turn].replies:
                queue.put_nowait((pacer.after(arrival, rel), generation, frame))
            turn += 1
            if turn == len(script.turns):
                _queue_end(script, pacer, arrival, queue, generation)
    finally:
        sender_task.cancel()
        if recv_task is not None:
            recv_task.cancel()


def _queue_end(script: WsScript, pacer: Pacer, anchor: float, queue: asyncio.Queue, generation: int) -> None:
    if script.server_closes and script.close.code is not None:
        queue.put_nowait((pacer.after(anchor, script.close_after), generation, _CLOSE))
    elif script.abnormal_end:
        queue.put_nowait((pacer.after(anchor, script.close_after), generation, _DROP))


async def _fail(engine, send, sender_task: asyncio.Task, code: int, reason: str) -> None:
    sender_task.cancel()
    engine.mismatches.append(f"closed with {code}: {reason}")
    log.warning("websocket mismatch, closing with %d: %s", code, reason)
    await send({"type": "websocket.close", "code": code, "reason": _reason(reason)})


__all__ = ["serve_websocket"]

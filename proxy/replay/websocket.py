"""WebSocket half of the replay app: the adapter between the ASGI socket and ``Turns``.

The turn logic (which frame answers which, pending frames, the end of the session,
mismatches) lives in ``turns.Turns`` and does no I/O. Here two tasks move events: the
receiver hands each client frame to it (a mismatch closes the socket at once); the
sender waits until the next queued action is due and performs it. A handshake the
recorded client left before it was answered is held the same way an HTTP request is.
"""

from __future__ import annotations

import asyncio
import logging

from ..headers import sendable
from ..matching import Miss
from ..model import Kind
from ..net import ACCEPT_DEFLATE
from ..timing import Pacer
from .asgi import RecordedCut, hold, request_from_scope, send_miss, unless_gone, when_gone
from .engine import MissReply, NotIndexedYet, WsScript, held_until
from .turns import Close, Drop, Fail, Send, Turns

log = logging.getLogger("proxy.replay")


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
    result = engine.handshake(req, True)
    if isinstance(result, NotIndexedYet):  # it needs all the recordings of its path indexed: off the event loop
        await app.offload(engine.prepare, req, "ws")
        result = engine.handshake(req, again=result)
    if isinstance(result, Miss) and app.forwarder is not None:
        log.info("no recording of WebSocket %s: forwarding it upstream and recording it", result.request)
        await app.forwarder.websocket(scope, req, receive, send)
        return
    if isinstance(result, Miss):
        await app.offload(engine.diagnose, result)
        await send_miss(MissReply(result), scope, None, send)
        return
    it = result.interaction
    try:
        if it.response is None:  # the recorded client left before the upgrade was answered
            await hold(receive, pacer, held_until(it), f"recording #{it.seq} has no answer to this handshake")
        elif it.kind is Kind.HTTP:
            await _refuse(it, pacer, send)
        else:
            await _session(engine, result, pacer, receive, send)
    finally:
        engine.settle(result)


async def _refuse(it, pacer: Pacer, send) -> None:
    """The recording is a refused upgrade (e.g. 426): the same status, headers and body
    chunks, framed as recorded (the server adapter writes a refusal as given)."""
    await pacer.until(it.ttfb)
    await send({"type": "websocket.http.response.start", "status": it.response.status,
                "headers": sendable(it.response.headers)})
    for chunk in it.chunks:
        await pacer.until(chunk.offset)
        await send({"type": "websocket.http.response.body", "body": chunk.data, "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"", "more_body": False})


async def _session(engine, match, pacer: Pacer, receive, send) -> None:
    """Replay the reserved session; the first client frame may rebind the connection to
    another session with the same handshake (``Engine.bind``): the 101 and the frames
    sent before it came from the reserved one, everything after from the bound one."""
    scripted = match.interaction
    script: WsScript = engine.ws_script(scripted)
    # an injected accept delay can outlast the client: stop waiting when it leaves, and give the
    # session back when only delaying faults were to play on it
    gave_up = (lambda: engine.release(script.seq)) if script.release_if_gone else (lambda: None)
    gone = when_gone(receive, gave_up) if script.faults else None
    if not await unless_gone(pacer.at(pacer.due(script.accept_delay) + script.accept_lag), gone):
        return
    if gone is not None:
        gone.cancel()
    accept = {"type": "websocket.accept", "headers": script.headers, ACCEPT_DEFLATE: script.deflate}
    if script.subprotocol:
        accept["subprotocol"] = script.subprotocol
    await send(accept)
    turns = Turns(script, pacer.after, engine.check_frame)
    turns.accepted(pacer.start)
    queued = asyncio.Event()  # set when the queue may have a new head

    async def sender() -> None:
        while not turns.over:
            due = turns.next_due()
            if due is None:
                await queued.wait()
                queued.clear()
                continue
            await pacer.at(due)
            for action in turns.due(pacer.now()):
                await _perform(engine, action, send)

    sender_task = asyncio.create_task(sender())
    recv_task: asyncio.Task | None = None
    try:
        while True:
            recv_task = recv_task or asyncio.create_task(receive())
            done, _ = await asyncio.wait({recv_task, sender_task}, return_when=asyncio.FIRST_COMPLETED)
            if sender_task in done:
                sender_task.result()  # a recorded drop raises RecordedCut here
                return  # the recorded close was sent
            msg = recv_task.result()
            recv_task = None
            if msg["type"] == "websocket.disconnect":
                if script.release_if_gone and turns.unfinished():
                    engine.release(script.seq)  # the client gave up during an injected stall
                return
            is_text = msg.get("text") is not None
            payload = msg["text"].encode() if is_text else (msg.get("bytes") or b"")
            # compared as recorded: the recorder scrubbed key-shaped strings from frames
            payload = engine.redactor.data(payload)
            if turns.turn == 0 and match.tentative:
                # Another connection's bind may have swapped this reservation already.
                match = engine.bind(match, payload)
                if match.interaction is not scripted:
                    log.info("websocket %s: the first frame binds #%s (the 101 came from #%s)",
                             match.request, match.seq, scripted.seq)
                    scripted = match.interaction
                    turns.rebind(engine.ws_script(scripted))
                    # the sender may be sleeping until a frame of the reserved recording
                    # that rebind dropped: start it again on the bound recording's queue
                    sender_task.cancel()
                    sender_task = asyncio.create_task(sender())
            failure = turns.client_frame(pacer.now(), payload, is_text)
            if failure is not None:
                await _perform(engine, failure, send)
                return
            queued.set()
    finally:
        sender_task.cancel()
        if recv_task is not None:
            recv_task.cancel()


async def _perform(engine, action, send) -> None:
    if isinstance(action, Send):
        frame = action.frame
        data = {"text": frame.text()} if frame.is_text else {"bytes": frame.payload}
        await send({"type": "websocket.send", **data})
    elif isinstance(action, Close):
        # code None: a close frame without a status, as recorded (the websockets core sends it so)
        await send({"type": "websocket.close", "code": action.code, "reason": action.reason})
    elif isinstance(action, Drop):
        raise RecordedCut(action.reason)
    elif isinstance(action, Fail):
        engine.mismatches.append(f"closed with {action.code}: {action.reason}")
        log.warning("websocket mismatch, closing with %d: %s", action.code, action.reason)
        await send({"type": "websocket.close", "code": action.code, "reason": _reason(action.reason)})


__all__ = ["serve_websocket"]

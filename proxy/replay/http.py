"""HTTP half of the replay app: reads a request, asks the engine, plays the script.

Every step is scheduled against an absolute target time (request arrival + recorded
offset / speed, plus any real-time delay an injected fault added), see ``proxy.timing``.
"""

from __future__ import annotations

import logging

from ..model import Request
from ..net import BODY_PARTS, QUICK_ANSWER, IntendedReset
from ..timing import Pacer
from .asgi import RecordedCut, hold, request_from_scope, send_miss, unless_gone, when_gone
from .engine import MEDIUM_BODY, Engine, Ending, HttpScript, MissReply, NotIndexedYet, large

log = logging.getLogger("proxy.replay")

def _undelayed(script: HttpScript) -> bool:
    # no real-time delay or byte rate an injected fault added: at --speed 0, nothing to wait for
    return not script.delays and not script.drip


def instant(script: HttpScript) -> bool:
    """Whether ``play`` at --speed 0 would send this script's response whole, without a
    wait or a drop: what a server may write in one go in ``play``'s place."""
    return script.status is not None and script.ending is Ending.COMPLETE and _undelayed(script)


def off_loop(engine: Engine, req: Request) -> bool:
    """Whether matching ``req`` belongs in the worker thread: a large or encoded body is
    decoded, redacted and fingerprinted off the event loop; so is a medium one while its
    path is not fully indexed (a burst of first requests of 100 KB, misses say, would
    otherwise hold up streams for milliseconds each)."""
    return large(req) or (len(req.body) > MEDIUM_BODY and not engine.prepared(req))


async def serve_http(app, engine: Engine, scope, receive, send) -> None:
    pacer = Pacer(app.speed)
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    req = request_from_scope(scope, bytes(body))
    result = scope.pop(QUICK_ANSWER, None)  # the quick lane matched it already (ReplayApp.quick)
    if isinstance(result, Exception):
        raise result  # the engine failed in the quick lane: as it would have here
    if result is None:
        result = await app.offload(engine.http, req, True) if off_loop(engine, req) else engine.http(req, True)
    if isinstance(result, NotIndexedYet):  # it needs all the recordings of its path indexed: off the event loop too
        await app.offload(engine.prepare, req)
        result = engine.http(req, again=result)  # normalized already: the match alone, and indexed
    if isinstance(result, MissReply):
        if app.forwarder is not None:
            log.info("no recording of %s: forwarding it upstream and recording it", result.miss.request)
            await app.forwarder.http(req, bytes(body), send, receive)
            return
        await app.offload(engine.diagnose, result.miss)  # other streams keep their timing
        await send_miss(result, scope, receive, send)
        return
    if not result.faults or result.ending is Ending.HOLD:  # (hold watches the client itself)
        await play(result, pacer, receive, send, (scope.get("extensions") or {}).get(BODY_PARTS))
        return
    # An injected stall or drip can outlast the client by far: stop playing when it leaves
    # (uvicorn's send to a gone client returns silently), and give back a recording that
    # only delaying faults were playing on.
    delivered = False

    def gave_up() -> None:
        if not delivered and result.release_if_gone:  # a completed response also ends receive()
            engine.release(result.seq)

    async def deliver() -> None:
        nonlocal delivered
        await play(result, pacer, receive, send)
        delivered = True  # no await since the last send: set before the watcher can run

    gone = when_gone(receive, gave_up)
    try:
        await unless_gone(deliver(), gone)
    finally:
        gone.cancel()


async def _paced_body(script: HttpScript, pacer: Pacer, lag: float, send) -> None:
    body_start, sent = pacer.now(), 0
    for i, (offset, data) in enumerate(script.chunks):
        lag += script.delays.get(i, 0.0)
        due = pacer.due(offset) + lag
        if script.drip:
            sent += len(data)
            due = max(due, body_start + sent / script.drip)
            # a stall (or a slow recording) must not bank bytes for a burst after it
            body_start = due - sent / script.drip
        await pacer.at(due)
        await send({"type": "http.response.body", "body": data, "more_body": True})


async def play(script: HttpScript, pacer: Pacer, receive, send, parts=None) -> None:
    """Play ``script``; ``parts`` is the server's BODY_PARTS extension, if it has one."""
    lag = script.delays.get(-1, 0.0)  # real seconds injected faults added so far
    if script.status is not None:
        await pacer.at(pacer.due(script.ttfb) + lag)
        await send({"type": "http.response.start", "status": script.status, "headers": script.headers})
        if pacer.speed == 0 and _undelayed(script):
            # instant (the common --speed 0 case): nothing to wait for, and the last chunk
            # goes out with the end of the body, in one write
            if parts is not None and script.ending is Ending.COMPLETE:
                await parts([data for _, data in script.chunks])
                return
            last = len(script.chunks) - 1 if script.ending is Ending.COMPLETE else -1
            for i, (_, data) in enumerate(script.chunks):
                await send({"type": "http.response.body", "body": data, "more_body": i != last})
            if last >= 0:
                return
        else:
            await _paced_body(script, pacer, lag, send)
    else:
        await pacer.at(pacer.due(script.ttfb) + lag)  # nothing of the response: the drop comes then
    if script.ending is Ending.COMPLETE:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif script.ending is Ending.CUT:
        raise RecordedCut(f"recording #{script.seq} was cut here")
    elif script.ending is Ending.RESET:
        raise IntendedReset(f"recording #{script.seq}: reset injected ({', '.join(script.faults)})")
    else:
        await hold(receive, pacer, script.until, f"recording #{script.seq} held until its client left; "
                                                  "this one stayed longer")


__all__ = ["instant", "off_loop", "play", "serve_http"]

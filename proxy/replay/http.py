"""HTTP half of the replay app: reads a request, asks the engine, plays the script.

Every step is scheduled against an absolute target time (request arrival + recorded
offset / speed), see ``proxy.timing``.
"""

from __future__ import annotations

import logging

from ..timing import Pacer
from .asgi import RecordedCut, hold, request_from_scope, send_miss
from .engine import Engine, Ending, HttpScript, MissReply, large

log = logging.getLogger("proxy.replay")


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
    if not engine.prepared(req):  # the first request to this path indexes its recordings
        await app.offload(engine.prepare, req)
    # a large or encoded body is decoded, redacted and fingerprinted off the event loop
    result = await app.offload(engine.http, req) if large(req) else engine.http(req)
    if isinstance(result, MissReply):
        if app.forwarder is not None:
            log.info("no recording of %s: forwarding it upstream and recording it", result.miss.request)
            await app.forwarder.http(req, bytes(body), send, receive)
            return
        await app.offload(engine.diagnose, result.miss)  # other streams keep their timing
        await send_miss(result, scope, receive, send)
        return
    await play(result, pacer, receive, send)


async def play(script: HttpScript, pacer: Pacer, receive, send) -> None:
    if script.status is not None:
        await pacer.until(script.ttfb)
        await send({"type": "http.response.start", "status": script.status, "headers": script.headers})
        for offset, data in script.chunks:
            await pacer.until(offset)
            await send({"type": "http.response.body", "body": data, "more_body": True})
    if script.ending is Ending.COMPLETE:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif script.ending is Ending.CUT:
        raise RecordedCut(f"recording #{script.seq} was cut here")
    else:
        await hold(receive, pacer, script.until, f"recording #{script.seq} held until its client left; "
                                                  "this one stayed longer")


__all__ = ["serve_http", "play"]

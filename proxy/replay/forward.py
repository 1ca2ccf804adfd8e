"""Relay a request the cassette does not have to a recording proxy (record mode new_episodes).

The replay server stays in front; a miss is passed through, byte for byte and chunk by
chunk as it arrives, to ``proxy record``'s listener, which forwards it upstream and
appends it to the cassette. Recording logic lives in one place (the mitmproxy addon).
"""

from __future__ import annotations

import asyncio
import logging

from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..headers import RELAY_REQUEST, WS_HANDSHAKE, from_raw, sendable, without
from ..model import Request

log = logging.getLogger("proxy.replay")

# The relayed response's own connection header is not passed on: this server runs its own.
_CONNECTION = frozenset({"connection"})


class Forwarder:
    def __init__(self, target: str):
        import httpx  # here, not at the top: replay without a relay starts faster (~0.2 s)

        self.target = target.rstrip("/")
        self.client = httpx.AsyncClient(base_url=self.target, timeout=httpx.Timeout(None, connect=10.0))
        self.forwarded = 0

    async def http(self, req: Request, raw_body: bytes, send) -> None:
        self.forwarded += 1
        headers = without(req.headers, RELAY_REQUEST)
        url = req.path + ("?" + req.query if req.query else "")
        async with self.client.stream(req.method, url, headers=headers, content=raw_body) as r:
            out = sendable(from_raw(r.headers.raw), _CONNECTION)
            await send({"type": "http.response.start", "status": r.status_code, "headers": out})
            async for chunk in r.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def websocket(self, scope, req: Request, receive, send) -> None:
        self.forwarded += 1
        url = self.target.replace("http", "ws", 1) + req.path + ("?" + req.query if req.query else "")
        headers = without(req.headers, RELAY_REQUEST)
        from websockets.asyncio.client import connect  # see __init__

        try:
            upstream = await connect(url, additional_headers=headers, subprotocols=scope.get("subprotocols") or None,
                                     compression=None, max_size=None, open_timeout=30, ping_interval=None,
                                     user_agent_header=None)
        except InvalidStatus as e:
            resp = e.response
            await send({"type": "websocket.http.response.start", "status": resp.status_code,
                        "headers": sendable(resp.headers.raw_items(), WS_HANDSHAKE)})
            await send({"type": "websocket.http.response.body", "body": resp.body or b""})
            return
        accept = {"type": "websocket.accept", "headers": sendable(upstream.response.headers.raw_items(), WS_HANDSHAKE)}
        if upstream.subprotocol:
            accept["subprotocol"] = upstream.subprotocol
        await send(accept)

        async def down():
            try:
                async for msg in upstream:
                    key = "text" if isinstance(msg, str) else "bytes"
                    await send({"type": "websocket.send", key: msg})
            except ConnectionClosed:
                pass
            code = upstream.close_code or 1000
            await send({"type": "websocket.close", "code": code if code != 1006 else 1011,
                        "reason": upstream.close_reason or ""})

        task = asyncio.create_task(down())
        try:
            while True:
                recv = asyncio.create_task(receive())
                done, _ = await asyncio.wait({recv, task}, return_when=asyncio.FIRST_COMPLETED)
                if task in done:
                    recv.cancel()
                    return
                msg = recv.result()
                if msg["type"] == "websocket.disconnect":
                    await upstream.close(msg.get("code") or 1000)
                    return
                await upstream.send(msg["text"] if msg.get("text") is not None else msg.get("bytes") or b"")
        finally:
            task.cancel()
            await upstream.close()

    async def aclose(self) -> None:
        await self.client.aclose()

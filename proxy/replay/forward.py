"""Relay a request the cassette does not have to a recording proxy (record mode new_episodes).

The replay server stays in front; a miss is passed through, byte for byte and chunk by
chunk as it arrives, to ``proxy record``'s listener, which forwards it upstream and
appends it to the cassette. Recording logic lives in one place (the mitmproxy addon).

Base-URL mode relays to the recorder as a reverse proxy (``target``). Forward mode
relays through the forward-mode front as an HTTPS proxy (``via``: its URL, the CA to
trust, the header that marks a relay) to the request's own origin. Neither ever uses
the proxies of the environment: a suite that exported HTTPS_PROXY for its clients
must not send the relay into the front again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..headers import RELAY_REQUEST, WS_HANDSHAKE, from_raw, sendable, without
from ..model import Request
from ..net import ACCEPT_DEFLATE, IntendedDrop
from .engine import ABNORMAL_CODES, NO_STATUS

log = logging.getLogger("proxy.replay")

# The relayed response's own connection header is not passed on: this server runs its own.
_CONNECTION = frozenset({"connection"})


@dataclass(frozen=True)
class Via:
    """Relay through the forward-mode front: its URL, its CA (PEM file), the marking header."""

    proxy: str
    ca: str
    header: tuple[str, str]


class Forwarder:
    """Relays misses to ``target`` (the recorder): the client's request headers and no
    others, and each side's end as it happened (a close frame with its code, or none;
    a dropped connection as a drop), so the recording is of what the client did."""

    def __init__(self, target: str | None = None, via: Via | None = None):
        import httpx  # here, not at the top: replay without a relay starts faster (~0.2 s)

        assert (target is None) != (via is None)
        self.target = target.rstrip("/") if target else None
        self.via = via
        self._ssl = ssl.create_default_context(cafile=via.ca) if via else None
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), trust_env=False,
                                        proxy=via.proxy if via else None, verify=self._ssl or True)
        self.forwarded = 0

    def _url(self, req: Request, websocket: bool = False) -> str:
        base = req.origin if self.via else self.target
        if websocket:
            base = base.replace("http", "ws", 1)
        return base + req.target

    def _headers(self, req: Request) -> list[tuple[str, str]]:
        headers = without(req.headers, RELAY_REQUEST)
        return [*headers, self.via.header] if self.via else headers

    async def http(self, req: Request, raw_body: bytes, send, receive=None) -> None:
        """``receive``: the request's, whose body was read; the relay stops (and so the
        recorder sees the client leave) when it reports the client gone. uvicorn's ``send``
        ignores a gone client, so without it the whole upstream stream would be read."""
        if receive is None:
            await self._http(req, raw_body, send)
            return
        relay = asyncio.create_task(self._http(req, raw_body, send))
        leaves = asyncio.create_task(_client_leaves(receive))
        try:
            await asyncio.wait({relay, leaves}, return_when=asyncio.FIRST_COMPLETED)
            if relay.done():
                relay.result()
        finally:
            relay.cancel()  # the upstream response is closed unread: the client left
            leaves.cancel()
            await asyncio.gather(relay, leaves, return_exceptions=True)

    async def _http(self, req: Request, raw_body: bytes, send) -> None:
        import httpx  # see __init__

        self.forwarded += 1
        url = self._url(req)
        # An httpx.Request, not client.stream(): the client would add its own accept,
        # accept-encoding and user-agent to what the client sent (and a client that never
        # asked for compression would get compressed bytes). httpx adds only host and
        # content-length, which belong to this hop.
        request = httpx.Request(req.method, url, headers=self._headers(req), content=raw_body)
        r = await self.client.send(request, stream=True)
        try:
            out = sendable(from_raw(r.headers.raw), _CONNECTION)
            await send({"type": "http.response.start", "status": r.status_code, "headers": out})
            async for chunk in r.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await r.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def websocket(self, scope, req: Request, receive, send) -> None:
        self.forwarded += 1
        url = self._url(req, websocket=True)
        headers = self._headers(req)
        tls = {"ssl": self._ssl} if url.startswith("wss:") else {}
        offered = "permessage-deflate" in (req.header("sec-websocket-extensions") or "").lower()
        from websockets.asyncio.client import connect  # see __init__

        try:
            upstream = await connect(url, additional_headers=headers, subprotocols=scope.get("subprotocols") or None,
                                     compression="deflate" if offered else None, max_size=None, open_timeout=30,
                                     ping_interval=None, user_agent_header=None,
                                     proxy=self.via.proxy if self.via else None, **tls)
        except InvalidStatus as e:
            # A refusal, with the headers it came with (framing and date too: the server
            # adapter writes a refusal as given). The websockets client reads its body
            # whole, so a chunked body goes on as one chunk.
            resp = e.response
            await send({"type": "websocket.http.response.start", "status": resp.status_code,
                        "headers": sendable(resp.headers.raw_items())})
            await send({"type": "websocket.http.response.body", "body": resp.body or b""})
            return
        accept = {"type": "websocket.accept", "headers": sendable(upstream.response.headers.raw_items(), WS_HANDSHAKE),
                  ACCEPT_DEFLATE: bool(upstream.protocol.extensions)}
        if upstream.subprotocol:
            accept["subprotocol"] = upstream.subprotocol
        await send(accept)
        down = asyncio.create_task(self._down(upstream, send))
        try:
            while True:
                recv = asyncio.create_task(receive())
                done, _ = await asyncio.wait({recv, down}, return_when=asyncio.FIRST_COMPLETED)
                if down in done:
                    recv.cancel()
                    down.result()  # the upstream dropped the connection: IntendedDrop
                    return
                msg = recv.result()
                if msg["type"] == "websocket.disconnect":
                    await _client_left(upstream, msg)
                    return
                await upstream.send(msg["text"] if msg.get("text") is not None else msg.get("bytes") or b"")
        finally:
            down.cancel()
            await upstream.close()

    @staticmethod
    async def _down(upstream, send) -> None:
        """Upstream frames to the client, then the upstream's end: its close frame, or a drop."""
        try:
            async for msg in upstream:
                key = "text" if isinstance(msg, str) else "bytes"
                await send({"type": "websocket.send", key: msg})
        except ConnectionClosed:
            pass
        rcvd = upstream.protocol.close_rcvd
        if rcvd is None:
            raise IntendedDrop("the upstream dropped the WebSocket without a close frame")
        code = None if rcvd.code == NO_STATUS else rcvd.code
        await send({"type": "websocket.close", "code": code, "reason": rcvd.reason})

    async def aclose(self) -> None:
        await self.client.aclose()


async def _client_leaves(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _client_left(upstream, msg: dict) -> None:
    """Pass the client's end on: its close frame (with its code, or none), or, when it
    dropped the connection, a dropped connection (the recorder then stores a drop)."""
    code = msg.get("code")
    # uvicorn reports a client's close frame with its reason, a lost connection without one.
    if "reason" not in msg or code in ABNORMAL_CODES:
        upstream.transport.abort()
        return
    await upstream.close(None if code in (None, NO_STATUS) else code, msg.get("reason") or "")

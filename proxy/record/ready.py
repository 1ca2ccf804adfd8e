"""An addon that reports where mitmproxy listens once its ``running`` hook fires (the
hook that means "listening"), for the in-process runner."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import ctx


class Ready:
    """Calls ``callback(host, port)`` with the first bound address; shuts mitmproxy down
    when nothing could be bound (mitmproxy itself would only log it)."""

    def __init__(self, callback: Callable[[str, int], None]):
        self.callback = callback

    def running(self) -> None:
        addrs = ctx.master.addons.get("proxyserver").listen_addrs()
        if addrs:
            host, port = addrs[0][:2]
            self.callback(host, port)
        else:
            ctx.master.shutdown()

"""Start mitmproxy in-process with the record addon.

DumpMaster must be built inside a running loop, and options that addons register
can only be set after construction (see DESIGN.md, measured facts).
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..redaction import Redactor
from ..store import Cassette
from .addon import Recorder


class RecordError(Exception):
    pass


@dataclass
class RecordConfig:
    upstream: str | None
    cassette: str
    host: str = "127.0.0.1"
    port: int = 8080
    upstream_ca: str | None = None
    insecure: bool = False
    mode: str = "reverse"  # reverse | forward
    confdir: str | None = None
    redactor: Redactor | None = None


def check_upstream(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RecordError(f"upstream must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        raise RecordError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    finally:
        s.close()


class _Listening:
    """Reports the bound address once mitmproxy's `running` hook fires."""

    def __init__(self, callback: Callable[[str, int], None]):
        self.callback = callback
        self.addrs: list = []

    def running(self) -> None:
        from mitmproxy import ctx

        self.addrs = ctx.master.addons.get("proxyserver").listen_addrs()
        if self.addrs:
            host, port = self.addrs[0][:2]
            self.callback(host, port)
        else:
            ctx.master.shutdown()


async def record(config: RecordConfig, on_listening: Callable[[str, int], None]) -> int:
    """Run until SIGINT/SIGTERM; returns how many interactions were recorded."""
    from mitmproxy import options
    from mitmproxy.tools.dump import DumpMaster

    if config.mode == "reverse":
        if not config.upstream:
            raise RecordError("reverse mode needs --upstream URL")
        mode = f"reverse:{check_upstream(config.upstream)}"
    else:
        mode = "regular"
    check_port_free(config.host, config.port)
    meta = {"upstream": config.upstream or "(forward proxy)", "mode": config.mode}
    cassette = Cassette.open_or_create(config.cassette, **meta)
    recorder = Recorder(cassette, config.redactor or Redactor())
    listening = _Listening(on_listening)

    opts = options.Options(listen_host=config.host, listen_port=config.port, mode=[mode])
    if config.confdir:
        opts.update(confdir=config.confdir)
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    update = {"connection_strategy": "lazy", "ssl_insecure": config.insecure}
    if config.upstream_ca:
        update["ssl_verify_upstream_trusted_ca"] = config.upstream_ca
    opts.update(**update)
    master.addons.add(recorder, listening)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, master.shutdown)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        await master.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        # Anything still live was cut by the shutdown; it stays marked incomplete.
        cassette.close()
    if not listening.addrs:
        raise RecordError(f"could not listen on {config.host}:{config.port}")
    return recorder.recorded

"""Start mitmproxy in-process with the record addon.

DumpMaster must be built inside a running loop, and options that addons register
can only be set after construction (see DESIGN.md, measured facts).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..net import PortInUse, bind
from ..redaction import Redactor
from ..store import Cassette
from ..store.writer import CassetteWriter
from . import RecordError
from .addon import Recorder


log = logging.getLogger("proxy.record")


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
    """Fail early with a clear message: mitmproxy only logs a port it cannot bind."""
    if port == 0:
        return
    try:
        bind(host, port).close()
    except PortInUse as e:
        raise RecordError(str(e)) from None


def ca_path(confdir: str = "~/.mitmproxy") -> str:
    """The PEM file of mitmproxy's CA in ``confdir``, created if it does not exist yet."""
    import os

    from mitmproxy import certs

    directory = os.path.expanduser(confdir)
    os.makedirs(directory, exist_ok=True)
    certs.CertStore.from_store(directory, "mitmproxy", 2048)
    return os.path.join(directory, "mitmproxy-ca-cert.pem")


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


class RecordingProxy:
    """mitmproxy with the record addon, on the running loop: ``await start()`` returns the
    listening (host, port); ``await stop()`` shuts it down and returns how many
    interactions were recorded. The cassette file is opened (or created) on start."""

    def __init__(self, config: RecordConfig):
        self.config = config
        self.recorder: Recorder | None = None
        self.master = None
        self._task: asyncio.Task | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        from mitmproxy import options
        from mitmproxy.tools.dump import DumpMaster

        config = self.config
        if config.mode == "reverse":
            if not config.upstream:
                raise RecordError("reverse mode needs --upstream URL")
            mode = f"reverse:{check_upstream(config.upstream)}"
        else:
            mode = "regular"
        check_port_free(config.host, config.port)
        meta = {"upstream": config.upstream or "(forward proxy)", "mode": config.mode}
        cassette = Cassette.open_or_create(config.cassette, **meta)
        self.recorder = Recorder(CassetteWriter(cassette), config.redactor or Redactor())
        ready = asyncio.get_running_loop().create_future()

        def on_listening(host: str, port: int) -> None:
            if not ready.done():
                ready.set_result((host, port))

        listening = _Listening(on_listening)
        opts = options.Options(listen_host=config.host, listen_port=config.port, mode=[mode])
        if config.confdir:
            opts.update(confdir=os.path.expanduser(config.confdir))
        self.master = DumpMaster(opts, with_termlog=False, with_dumper=False)
        update = {"connection_strategy": "lazy", "ssl_insecure": config.insecure}
        if config.upstream_ca:
            update["ssl_verify_upstream_trusted_ca"] = config.upstream_ca
        opts.update(**update)
        self.master.addons.add(self.recorder, listening)
        self._task = asyncio.create_task(self.master.run())
        done, _ = await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            self.recorder.cassette.close()
            self._task.result()  # raises what mitmproxy raised, if anything
            raise RecordError(f"could not listen on {config.host}:{config.port}")
        self.address = ready.result()
        return self.address

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def stop(self) -> int:
        if self.master is not None and self._task is not None:
            if not self._task.done():
                self.master.shutdown()
            await self._task
        if self.recorder is not None:
            # Anything still live was cut by the shutdown; it stays marked incomplete.
            sizes = self.recorder.cassette.close(compact=self.recorder.recorded > 0)
            if sizes:
                log.info("compacted %s: %s -> %s bytes", self.config.cassette, f"{sizes[0]:,}", f"{sizes[1]:,}")
            return self.recorder.recorded
        return 0


def install_stop_signals(stop) -> Callable[[], None]:
    """Call ``stop()`` on SIGINT/SIGTERM; returns a function that removes the handlers."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


async def record(config: RecordConfig, on_listening: Callable[[str, int], None]) -> int:
    """Run until SIGINT/SIGTERM; returns how many interactions were recorded."""
    proxy = RecordingProxy(config)
    host, port = await proxy.start()
    on_listening(host, port)
    remove = install_stop_signals(proxy.master.shutdown)
    try:
        await proxy.wait()
    finally:
        remove()
    return await proxy.stop()

"""Start mitmproxy in-process with the record addon.

DumpMaster must be built inside a running loop, and options that addons register
can only be set after construction (see DESIGN.md, measured facts).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from mitmproxy import certs, exceptions, options
from mitmproxy.tools.dump import DumpMaster

from ..background import until_signal
from ..net import PortInUse, bind
from . import RecordConfig, RecordError
from .addon import Recorder
from .ready import Ready

log = logging.getLogger("proxy.record")


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
    directory = os.path.expanduser(confdir)
    os.makedirs(directory, exist_ok=True)
    certs.CertStore.from_store(directory, "mitmproxy", 2048)
    return os.path.join(directory, "mitmproxy-ca-cert.pem")


class RecordingProxy:
    """mitmproxy with the record addon, on the running loop: ``await start()`` returns the
    listening (host, port); ``await stop()`` shuts it down and returns how many
    interactions were recorded. The cassette file is opened (or created) on start."""

    def __init__(self, config: RecordConfig, on_recorded: Callable[[dict], None] | None = None):
        self.config = config
        self.on_recorded = on_recorded  # see Recorder.on_recorded
        self.recorder: Recorder | None = None
        self.master = None
        self._task: asyncio.Task | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        config = self.config
        if config.mode == "reverse":
            if not config.upstream:
                raise RecordError("reverse mode needs --upstream URL")
            mode = f"reverse:{check_upstream(config.upstream)}"
        else:
            mode = "regular"
        check_port_free(config.host, config.port)
        self.recorder = Recorder()
        self.recorder.report_errors = False  # stop() raises it: one line where it is run
        self.recorder.on_recorded = self.on_recorded
        ready = asyncio.get_running_loop().create_future()

        def on_listening(host: str, port: int) -> None:
            if not ready.done():
                ready.set_result((host, port))

        opts = options.Options(listen_host=config.host, listen_port=config.port, mode=[mode])
        if config.confdir:
            opts.update(confdir=os.path.expanduser(config.confdir))
        self.master = DumpMaster(opts, with_termlog=False, with_dumper=False)
        self.master.addons.add(self.recorder, Ready(on_listening))
        # Options that addons declare exist only once the addons are added.
        r = config.redaction
        update = {"connection_strategy": "lazy", "ssl_insecure": config.insecure, "proxy_cassette": str(config.cassette),
                  "proxy_redact": r.enabled, "proxy_redact_header": list(r.headers),
                  "proxy_redact_pattern": list(r.patterns), "proxy_redact_json_path": list(r.json_paths)}
        if config.upstream_ca:
            update["ssl_verify_upstream_trusted_ca"] = config.upstream_ca
        try:
            opts.update(**update)
        except exceptions.OptionsError as e:
            raise RecordError(str(e)) from None
        self._task = asyncio.create_task(self.master.run())
        done, _ = await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            self.recorder.close()
            self._task.result()  # raises what mitmproxy raised, if anything
            raise RecordError(f"could not listen on {config.host}:{config.port}")
        self.address = ready.result()
        return self.address

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    def request_stop(self) -> None:
        if self.master is not None:
            self.master.shutdown()

    async def stop(self) -> int:
        if self.master is not None and self._task is not None:
            if not self._task.done():
                self.master.shutdown()
            await self._task
        if self.recorder is not None:
            self.recorder.close()  # done() closed it, unless mitmproxy never got to running
            if self.recorder.write_error is not None:  # a write failed: the recording stopped there
                raise self.recorder.write_error
            return self.recorder.recorded
        return 0

    @property
    def cut_by_stop(self) -> int:
        """How many of the recorded interactions were still open at the stop (kept, marked incomplete)."""
        return self.recorder.cut_by_stop if self.recorder is not None else 0


async def record(config: RecordConfig, on_listening: Callable[[str, int], None],
                 on_recorded: Callable[[dict], None] | None = None) -> tuple[int, int]:
    """Run until SIGINT/SIGTERM; returns how many interactions were recorded, and how many
    of those the stop cut short. ``on_recorded`` is called as each one is committed."""
    proxy = RecordingProxy(config, on_recorded)
    host, port = await proxy.start()
    await until_signal(proxy.wait, proxy.request_stop, lambda: on_listening(host, port))
    recorded = await proxy.stop()
    return recorded, proxy.cut_by_stop

"""Start mitmproxy in-process: with the record addon (``RecordingProxy``), or as the
forward-mode front of the replay server (``ForwardFront``).

DumpMaster must be built inside a running loop, and options that addons register
can only be set after construction (see DESIGN.md, measured facts).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from mitmproxy import certs, exceptions, options
from mitmproxy.tools.dump import DumpMaster

from ..background import until_signal
from ..net import Listening, PortInUse, bind
from . import RecordConfig, RecordError
from .addon import Recorder
from .connect_to import ConnectTo
from .front import RELAY_HEADER, Retarget, TrustHint
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


DEFAULT_CONFDIR = "~/.mitmproxy"  # mitmproxy's own default


def ca_path(confdir: str = DEFAULT_CONFDIR) -> str:
    """The PEM file of mitmproxy's CA in ``confdir``, created if it does not exist yet;
    RecordError names the directory when it cannot be."""
    directory = os.path.expanduser(confdir)
    try:
        os.makedirs(directory, exist_ok=True)
        certs.CertStore.from_store(directory, "mitmproxy", 2048)
    except OSError as e:
        raise RecordError(f"cannot create mitmproxy's CA in {directory} (--confdir): {e.strerror or e}") from None
    return os.path.join(directory, "mitmproxy-ca-cert.pem")


class _InProcess:
    """mitmproxy (DumpMaster) on the running loop, listening on ``host:port`` with
    ``addons``; ``options`` are set once the addons are added (options that addons
    declare exist only then). ``await start()`` returns the listening (host, port)."""

    def __init__(self) -> None:
        self.master = None
        self._task: asyncio.Task | None = None
        self.address: tuple[str, int] | None = None

    async def _start(self, host: str, port: int, mode: str, confdir: str | None, addons: list,
                     options_: dict) -> tuple[str, int]:
        check_port_free(host, port)
        # mitmproxy would only log that it cannot make its CA, and exit without saying why.
        ca = ca_path(confdir or DEFAULT_CONFDIR)
        ready = asyncio.get_running_loop().create_future()

        def on_listening(h: str, p: int) -> None:
            if not ready.done():
                ready.set_result((h, p))

        opts = options.Options(listen_host=host, listen_port=port, mode=[mode])
        if confdir:
            opts.update(confdir=os.path.expanduser(confdir))
        self.master = DumpMaster(opts, with_termlog=False, with_dumper=False)
        self.master.addons.add(*addons, TrustHint(ca), Ready(on_listening))
        try:
            opts.update(**options_)
        except exceptions.OptionsError as e:
            raise RecordError(str(e)) from None
        self._task = asyncio.create_task(self.master.run())
        done, _ = await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            self._task.result()  # raises what mitmproxy raised, if anything
            raise RecordError(f"could not listen on {host}:{port}")
        self.address = ready.result()
        return self.address

    @property
    def url(self) -> str:
        assert self.address is not None
        return Listening(*self.address).url

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    def request_stop(self) -> None:
        if self.master is not None:
            self.master.shutdown()

    async def _stop(self) -> None:
        if self.master is not None and self._task is not None:
            if not self._task.done():
                self.master.shutdown()
            await self._task


def _recording(config: RecordConfig, on_recorded=None) -> tuple[Recorder, list, dict]:
    """The record addon, the addons it works with, and the mitmproxy options for ``config``."""
    r = config.redaction
    update = {"connection_strategy": "lazy", "ssl_insecure": config.insecure, "proxy_cassette": str(config.cassette),
              "proxy_redact": r.enabled, "proxy_redact_header": list(r.headers),
              "proxy_redact_pattern": list(r.patterns), "proxy_redact_json_path": list(r.json_paths),
              "proxy_connect_to": list(config.connect_to)}
    if config.upstream_ca:
        update["ssl_verify_upstream_trusted_ca"] = config.upstream_ca
    recorder = Recorder()
    recorder.report_errors = False  # stop() raises it: one line where it is run
    recorder.on_recorded = on_recorded
    return recorder, [recorder, ConnectTo()], update


class RecordingProxy(_InProcess):
    """mitmproxy with the record addon, on the running loop: ``await start()`` returns the
    listening (host, port); ``await stop()`` shuts it down and returns how many
    interactions were recorded. The cassette file is opened (or created) on start."""

    def __init__(self, config: RecordConfig, on_recorded: Callable[[dict], None] | None = None):
        super().__init__()
        self.config = config
        self.on_recorded = on_recorded  # see Recorder.on_recorded
        self.recorder: Recorder | None = None

    async def start(self) -> tuple[str, int]:
        config = self.config
        if config.mode == "reverse":
            if not config.upstream:
                raise RecordError("reverse mode needs --upstream URL")
            mode = f"reverse:{check_upstream(config.upstream)}"
        elif config.upstream:  # would be ignored: say so rather than record somewhere else
            raise RecordError("forward mode takes no --upstream: each request goes to the host it names "
                              "(--connect-to HOST:PORT:HOST2:PORT2 sends a host elsewhere)")
        else:
            mode = "regular"
        self.recorder, addons, update = _recording(config, self.on_recorded)
        try:
            return await self._start(config.host, config.port, mode, config.confdir, addons, update)
        except BaseException:
            self.recorder.close()
            raise

    async def stop(self) -> int:
        await self._stop()
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


class ForwardFront(RecordingProxy):
    """Forward-mode replay: mitmproxy as an HTTPS proxy (regular mode) on ``host:port``
    whose every request goes to the replay server at ``target`` (see ``front``). Clients
    set HTTPS_PROXY to ``url`` and trust ``ca_path(confdir)``.

    With ``record`` (record mode new_episodes) the same mitmproxy also records: the replay
    server relays a request it has no recording of back through this proxy, marked with
    ``relay_header`` (a secret of this run), and such a request goes to its real host and
    into the cassette. mitmproxy keeps its options in process-wide globals (``ctx``), so
    one process runs one mitmproxy, never a front and a recorder side by side."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0, confdir: str | None = None,
                 record: RecordConfig | None = None, on_recorded: Callable[[dict], None] | None = None):
        super().__init__(record, on_recorded)  # type: ignore[arg-type]
        self.target, self.host, self.port, self.confdir = target, host, port, confdir
        self.relay_header: tuple[str, str] | None = None

    async def start(self) -> tuple[str, int]:
        # lazy + no upstream certificate: mitmproxy never contacts the host a client names.
        # rawtcp: a replayed WebSocket session passes as bytes after its 101 (Retarget.response).
        addons, update = [], {"connection_strategy": "lazy", "upstream_cert": False, "rawtcp": True}
        if self.config is not None:
            self.relay_header = (RELAY_HEADER, secrets.token_hex(16))
            self.recorder, addons, record_update = _recording(self.config, self.on_recorded)
            update = {**record_update, **update}
        retarget = Retarget(self.target, self.relay_header[1] if self.relay_header else None)
        try:
            # Retarget first: a request it sends to the replay server is marked before the recorder sees it.
            return await self._start(self.host, self.port, "regular", self.confdir, [retarget, *addons], update)
        except BaseException:
            if self.recorder is not None:
                self.recorder.close()
            raise


async def record(config: RecordConfig, on_listening: Callable[[str, int], None],
                 on_recorded: Callable[[dict], None] | None = None) -> tuple[int, int]:
    """Run until SIGINT/SIGTERM; returns how many interactions were recorded, and how many
    of those the stop cut short. ``on_recorded`` is called as each one is committed."""
    proxy = RecordingProxy(config, on_recorded)
    host, port = await proxy.start()
    await until_signal(proxy.wait, proxy.request_stop, lambda: on_listening(host, port))
    recorded = await proxy.stop()
    return recorded, proxy.cut_by_stop

"""Record modes (VCR.py's names) over one cassette: what `proxy serve` and the pytest plugin run.

  none          replay only; a request with no recording is an error (the CI default)
  once          record if the cassette does not exist, else replay
  new_episodes  replay what matches; forward what does not to the upstream and append it
  all           forward and re-record everything into a fresh cassette, which replaces
                the old one only when the run ends cleanly

`proxy record` is `all` without the replacement (it appends); `proxy replay` is `none`.
A Session starts the right pieces (replay server, recorder, or both) and stops them.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path

from .matching import MatchConfig
from .redaction import Redactor


class RecordMode(str, enum.Enum):
    NONE = "none"
    ONCE = "once"
    NEW_EPISODES = "new_episodes"
    ALL = "all"

    @classmethod
    def parse(cls, value: "str | RecordMode") -> "RecordMode":
        if isinstance(value, RecordMode):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown record mode {value!r}; choose one of {names}") from None


class ServeError(Exception):
    pass


@dataclass
class ServeConfig:
    cassette: Path
    mode: RecordMode = RecordMode.NONE
    upstream: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    speed: float = 1.0
    match: MatchConfig = field(default_factory=MatchConfig)
    redactor: Redactor = field(default_factory=Redactor)
    upstream_ca: str | None = None
    insecure: bool = False


@dataclass
class Summary:
    action: str
    recorded: int = 0
    recordings: int = 0
    used: int = 0
    forwarded: int = 0
    misses: list = field(default_factory=list)  # matching.Miss
    unused: list = field(default_factory=list)  # model.Interaction


class Session:
    """One cassette in one record mode. ``await start()`` returns the base URL."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.config.cassette = Path(config.cassette)
        self.config.mode = RecordMode.parse(config.mode)
        self.action = self._choose()
        self.url: str | None = None
        self.engine = None
        self._server = None
        self._recorder = None
        self._forwarder = None
        self._fresh: Path | None = None
        self._background = None

    def _choose(self) -> str:
        mode, exists = self.config.mode, self.config.cassette.exists()
        if mode is RecordMode.NONE or (mode is RecordMode.ONCE and exists):
            return "replay"
        if not self.config.upstream:
            raise ServeError(f"record mode {mode.value} needs an upstream URL (--upstream / PROXY_UPSTREAM)")
        if mode is RecordMode.ALL:
            return "record-fresh"
        if mode is RecordMode.NEW_EPISODES and exists:
            return "replay+record"
        return "record"

    def _record_config(self, cassette: Path, host: str, port: int):
        from .record.runner import RecordConfig

        c = self.config
        return RecordConfig(upstream=c.upstream, cassette=str(cassette), host=host, port=port,
                            upstream_ca=c.upstream_ca, insecure=c.insecure, redactor=c.redactor)

    async def start(self) -> str:
        from .replay import load_engine
        from .replay.server import ReplayApp, ReplayServer

        c = self.config
        if self.action == "replay":
            self.engine = load_engine(c.cassette, c.match, c.redactor)
            self._server = ReplayServer(ReplayApp(self.engine, c.speed), c.host, c.port)
            await self._server.start()
            self.url = self._server.url
        elif self.action in ("record", "record-fresh"):
            from .record.runner import RecordingProxy

            target = c.cassette
            if self.action == "record-fresh":
                self._fresh = target = c.cassette.with_name(c.cassette.name + ".recording")
                _remove_db(target)
            self._recorder = RecordingProxy(self._record_config(target, c.host, c.port))
            host, port = await self._recorder.start()
            self.url = f"http://{host}:{port}"
        else:  # replay+record: replay in front, misses relayed to a recorder appending to the cassette
            from .record.runner import RecordingProxy
            from .replay.forward import Forwarder

            self.engine = load_engine(c.cassette, c.match, c.redactor)
            self._recorder = RecordingProxy(self._record_config(c.cassette, "127.0.0.1", 0))
            host, port = await self._recorder.start()
            self._forwarder = Forwarder(f"http://{host}:{port}")
            self._server = ReplayServer(ReplayApp(self.engine, c.speed, self._forwarder), c.host, c.port)
            await self._server.start()
            self.url = self._server.url
        return self.url

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait()
        elif self._recorder is not None:
            await self._recorder.wait()

    def request_stop(self) -> None:
        if self._server is not None:
            self._server.server.should_exit = True
        if self._recorder is not None and self._recorder.master is not None:
            self._recorder.master.shutdown()

    async def stop(self, clean: bool = True) -> Summary:
        s = Summary(self.action)
        if self._server is not None:
            await self._server.stop()
        if self._forwarder is not None:
            s.forwarded = self._forwarder.forwarded
            await self._forwarder.aclose()
        if self._recorder is not None:
            s.recorded = await self._recorder.stop()
        if self._fresh is not None and clean:
            _remove_db(self.config.cassette)
            os.replace(self._fresh, self.config.cassette)
        if self.engine is not None:
            self.engine.close()
            s.recordings = len(self.engine.interactions)
            s.unused = self.engine.unused()
            s.used = s.recordings - len(s.unused)
            s.misses = list(self.engine.misses)
            if self._forwarder is not None:
                s.misses = []  # forwarded and recorded, not errors
        return s

    # -- for synchronous callers (the pytest plugin) ---------------------------

    def start_in_thread(self) -> str:
        from .background import BackgroundLoop

        self._background = BackgroundLoop("proxy-serve", self.start, self.stop)
        self._background.start()
        return self.url

    def stop_thread(self) -> Summary:
        if self._background is None:
            return Summary(self.action)
        return self._background.stop() or Summary(self.action)


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)

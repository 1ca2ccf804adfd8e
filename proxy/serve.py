"""Record modes (VCR.py's names) over one cassette: what `proxy serve`, `proxy replay`
and the pytest plugin run.

  none          replay only; a request with no recording is an error (the CI default)
  once          record if the cassette does not exist, else replay
  new_episodes  replay what matches; forward what does not to the upstream and append it
  all           forward and re-record everything into a fresh cassette, which replaces
                the old one only when the run ends cleanly

`proxy record` is `all` without the replacement (it appends); `proxy replay` is `none`
(and may serve a directory of cassettes). A Session starts the right pieces (replay
server, recorder, or both), stops them and sums up what happened.

Proxy modes: ``reverse`` (the default) serves a base URL. ``forward`` is an HTTPS proxy
for clients that cannot change their base URL (``Session.env`` is what such a client
needs): mitmproxy in front of the same replay server (``proxy.record.front``; needs the
``record`` extra), or, when recording, the recorder in forward mode.
"""

from __future__ import annotations

import asyncio
import enum
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .background import BackgroundLoop, until_signal
from .matching import MatchConfig
from .model import RecordMode  # noqa: F401  (kept importable from here: proxy.serve.RecordMode)
from .record import RecordConfig, RedactionOptions
from .redaction import Redactor
from .replay import load_engine, verify
from .replay.app import ReplayApp
from .replay.cassettes import CassetteDir
from .replay.faults import FaultConfig
from .replay.forward import Forwarder, Via
from .store import CassetteError, WriterLock
from .uvicorn_server import UvicornServer


class Action(str, enum.Enum):
    """What a Session does, decided from the record mode and whether the cassette exists."""

    REPLAY = "replay"
    RECORD = "record"  # append to the cassette
    RECORD_FRESH = "record-fresh"  # record into PATH.recording, replace the cassette on a clean end
    REPLAY_AND_RECORD = "replay+record"  # replay in front, misses relayed to a recorder that appends

    @property
    def replays(self) -> bool:
        return self in (Action.REPLAY, Action.REPLAY_AND_RECORD)

    @property
    def records(self) -> bool:
        return self is not Action.REPLAY


class ServeError(Exception):
    pass


@dataclass
class ServeConfig:
    cassette: Path | None  # None with cassette_dir
    mode: RecordMode = RecordMode.NONE
    upstream: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    speed: float = 1.0
    match: MatchConfig = field(default_factory=MatchConfig)
    redaction: RedactionOptions = field(default_factory=RedactionOptions)
    upstream_ca: str | None = None
    insecure: bool = False
    cassette_dir: Path | None = None  # replay only: every DIR/NAME.db, the request names one
    proxy_mode: str = "reverse"  # reverse: a base URL; forward: an HTTPS proxy (HTTPS_PROXY)
    confdir: str | None = None  # forward: mitmproxy's directory for its CA (default ~/.mitmproxy)
    connect_to: tuple[str, ...] = ()  # when recording: HOST:PORT:HOST2:PORT2 (curl's --connect-to)
    faults: FaultConfig = field(default_factory=FaultConfig)  # injected into replayed recordings
    fault_salt: str = ""  # mixed into chaos picks (the pytest plugin: the test's id)


PROXY_MODES = ("reverse", "forward")


def proxy_env(url: str, ca: str) -> dict[str, str]:
    """The environment a subprocess client needs to go through the forward-mode proxy at
    ``url`` and trust its CA: Python (httpx, requests, the SDKs), curl (which reads only
    the lower-case http_proxy, and CURL_CA_BUNDLE), Node 22.21+/24+ (fetch).

    ``NO_PROXY`` and ``no_proxy`` are set, empty: merged over an inherited environment
    (``{**os.environ, **env}``), a host the parent exempts would otherwise go straight to
    the network. httpx, requests (urllib), curl and undici all read an empty value as
    "no exemptions"."""
    return {"HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
            "NO_PROXY": "", "no_proxy": "",
            "SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca, "CURL_CA_BUNDLE": ca, "NODE_EXTRA_CA_CERTS": ca,
            "NODE_USE_ENV_PROXY": "1"}


@dataclass
class Summary:
    action: Action
    recorded: int = 0
    recordings: int = 0
    used: int = 0
    forwarded: int = 0
    cut: int = 0  # requests and sessions still open when the server stopped, cut short
    recorded_cut: int = 0  # of `recorded`, those still open when the recorder stopped
    misses: list = field(default_factory=list)  # matching.Miss
    refused: int = 0  # --cassette-dir: 404s for requests that named no usable cassette
    out_of_order: int = 0  # served although an earlier recording of the same request was unused
    weak: int = 0  # served although the request's content differs (not only ids / dates / times)
    notes: list = field(default_factory=list)  # one line per such match, and per weak WebSocket frame
    unused: list = field(default_factory=list)  # model.Interaction, only when the Session collects them
    faults: list = field(default_factory=list)  # replay.faults.Applied, in the order injected
    faulting: bool = False  # faults were configured (the line says how many were injected, even 0)
    not_injected: list = field(default_factory=list)  # "SPEC: why" of each given fault that hit nothing

    @property
    def served(self) -> int:
        """Recordings that answered a request."""
        return self.used

    def line(self) -> str:
        """What `proxy replay` and `proxy serve` print when they stop (first line)."""
        parts = []
        if self.action.replays:
            misses = f"{len(self.misses) + self.refused} miss(es)"
            if self.refused:
                misses += f" ({self.refused} naming no usable cassette)"
            parts.append(f"served {self.used} of {self.recordings} recording(s); {misses}")
            if self.out_of_order or self.weak:
                parts.append(f"{self.out_of_order} out of recorded order; {self.weak} weak")
            if self.faulting:
                parts.append(f"{len(self.faults)} fault(s) injected")
            if self.cut:
                parts.append(f"{self.cut} open connection(s) cut by the stop")
        if self.action.records:
            parts.append(f"recorded {self.recorded} new interaction(s)"
                         + (f" ({self.recorded_cut} cut short by the stop)" if self.recorded_cut else ""))
        return "; ".join(parts)

    def lines(self, limit: int = 20) -> list[str]:
        """The first line, then one line per weak or out-of-order match (at most ``limit``),
        then one per injected fault."""
        out = [self.line()] + [f"  {n}" for n in self.notes[:limit]]
        if len(self.notes) > limit:
            out.append(f"  ... and {len(self.notes) - limit} more")
        out += [f"  fault: {a.line()}" for a in self.faults]  # every one: they are what the run tested
        return out + [f"  fault never injected: {n}" for n in self.not_injected]  # a test that tested nothing

    def to_json(self) -> dict:
        return {
            "action": self.action.value,
            "recordings": self.recordings,
            "served": self.used,
            "misses": [m.to_json()["error"] for m in self.misses],
            "out_of_order": self.out_of_order,
            "weak": self.weak,
            "notes": list(self.notes),
            "refused": self.refused,
            "cut": self.cut,
            "recorded": self.recorded,
            "forwarded": self.forwarded,
            "faults": [a.to_json() for a in self.faults],
            "faults_not_injected": list(self.not_injected),
        }


class Session:
    """One cassette (or a directory of them, replay only) in one record mode.
    ``await start()`` returns the base URL."""

    def __init__(self, config: ServeConfig, on_recorded=None):
        self.config = config
        self.on_recorded = on_recorded  # called per interaction the recorder commits (proxy serve's live line)
        if config.cassette is not None:
            self.config.cassette = Path(config.cassette)
        self.config.mode = RecordMode.parse(config.mode)
        if (config.cassette is None) == (config.cassette_dir is None):
            raise ServeError("give exactly one of a cassette or a cassette directory")
        if config.cassette_dir is not None and self.config.mode is not RecordMode.NONE:
            raise ServeError("a cassette directory is served in record mode none only")
        if config.proxy_mode not in PROXY_MODES:
            raise ServeError(f"unknown proxy mode {config.proxy_mode!r}; choose one of {', '.join(PROXY_MODES)}")
        if config.cassette_dir is not None and self.forward:
            raise ServeError("forward mode serves one cassette, not a cassette directory")
        self.action = self._choose()
        self.redactor: Redactor = config.redaction.redactor()
        self.url: str | None = None
        self.engine = None
        self.app: ReplayApp | None = None
        self._server: UvicornServer | None = None
        self._recorder = None
        self._forwarder: Forwarder | None = None
        self._fresh: Path | None = None
        self._lock = None  # the writer's lock on the cassette a fresh recording replaces
        self._background: BackgroundLoop | None = None
        self.failure: CassetteError | None = None  # a damaged cassette or a failed write: exit 2
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_check = threading.Event()
        self._check: threading.Thread | None = None
        self._clean = True  # how stop_thread() ends a record mode all run
        # Listing the recordings never used reads the whole cassette: only for callers
        # that report them (the API), not for a CLI run over a million interactions.
        self.collect_unused = False
        self._front = None  # forward mode: mitmproxy in front of the replay server
        self.ca: str | None = None  # forward mode: the CA file clients must trust

    @property
    def forward(self) -> bool:
        return self.config.proxy_mode == "forward"

    @property
    def env(self) -> dict[str, str]:
        """Forward mode: the environment a subprocess client needs (HTTPS_PROXY, the CA, ...)."""
        if not self.forward or self.url is None or self.ca is None:
            raise ServeError("env is for a started session in forward mode (proxy_mode='forward')")
        return proxy_env(self.url, self.ca)

    def _choose(self) -> Action:
        mode = self.config.mode
        exists = self.config.cassette is None or self.config.cassette.exists()
        if mode is RecordMode.NONE or (mode is RecordMode.ONCE and exists):
            return Action.REPLAY
        if not self.config.upstream and not self.forward:  # forward: the client names the host
            raise ServeError(f"record mode {mode.value} needs an upstream URL (--upstream / PROXY_UPSTREAM)")
        if mode is RecordMode.ALL:
            return Action.RECORD_FRESH
        if mode is RecordMode.NEW_EPISODES and exists:
            return Action.REPLAY_AND_RECORD
        return Action.RECORD

    def _record_config(self, cassette: Path, host: str, port: int) -> RecordConfig:
        c = self.config
        return RecordConfig(upstream=c.upstream, cassette=str(cassette), host=host, port=port,
                            upstream_ca=c.upstream_ca, insecure=c.insecure, mode=c.proxy_mode, confdir=c.confdir,
                            connect_to=c.connect_to, redaction=c.redaction)

    def _recording_proxy(self, cassette: Path, host: str, port: int):
        # Imported here: mitmproxy is an optional dependency, needed only to record.
        from .record.runner import RecordingProxy

        return RecordingProxy(self._record_config(cassette, host, port), self.on_recorded)

    async def start(self) -> str:
        try:
            return await self._start()
        except BaseException:
            # Half started (the port taken, the recorder refused): close what was opened
            # (the cassette, its check thread, the match worker, a recorder), nothing served.
            try:
                await self.stop(clean=False)
            except Exception:  # the start's own error is the one to report
                pass
            raise

    async def _start(self) -> str:
        c = self.config
        self._loop = asyncio.get_running_loop()
        if self.action is Action.REPLAY:
            if c.cassette_dir is not None:
                cassettes = CassetteDir(c.cassette_dir, c.match, self.redactor, c.faults, c.fault_salt)
                self.app = ReplayApp(cassettes=cassettes, speed=c.speed)
            else:
                self.engine = self._engine()
                self.app = ReplayApp(self.engine, c.speed)
            if self.forward:
                await self._start_forward()
            else:
                self._server = UvicornServer(self.app, c.host, c.port)
                await self._server.start()
                self.url = self._server.url
        elif self.action in (Action.RECORD, Action.RECORD_FRESH):
            target = c.cassette
            if self.action is Action.RECORD_FRESH:
                # The cassette this run will replace is held for the whole run: another
                # writer on it would be thrown away by the replacement at the end.
                self._lock = WriterLock.acquire(c.cassette)
                self._fresh = target = c.cassette.with_name(c.cassette.name + ".recording")
                _remove_db(target)
            try:
                self._recorder = self._recording_proxy(target, c.host, c.port)
                host, port = await self._recorder.start()
            except BaseException:
                if self._lock is not None:
                    self._lock.release()
                    self._lock = None
                raise
            self.url = f"http://{host}:{port}"
            if self.forward:
                self.ca = self._ca()
        elif self.forward:
            self.engine = self._engine()
            self.app = ReplayApp(self.engine, c.speed)
            await self._start_forward(record=self._record_config(c.cassette, "127.0.0.1", 0))
        else:
            self.engine = self._engine()
            self._recorder = self._recording_proxy(c.cassette, "127.0.0.1", 0)
            host, port = await self._recorder.start()
            self._forwarder = Forwarder(f"http://{host}:{port}")
            self.app = ReplayApp(self.engine, c.speed, self._forwarder)
            self._server = UvicornServer(self.app, c.host, c.port)
            await self._server.start()
            self.url = self._server.url
        return self.url

    def _engine(self):
        """The cassette's engine (opened in constant time), and its full check started
        beside serving: damage stops the session (``failure``; the CLI exits 2)."""
        c = self.config
        engine = load_engine(c.cassette, c.match, self.redactor, forward=self.forward)
        if c.faults:
            engine.faults = c.faults.plan(c.fault_salt or c.cassette.stem)
        engine.on_failure = self._failed
        self._check = threading.Thread(target=self._check_cassette, args=(engine, c.cassette),
                                       name="proxy-check", daemon=True)
        self._check.start()
        return engine

    def _check_cassette(self, engine, path: Path) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)  # serving comes first (Linux: per thread)
        except (AttributeError, OSError):
            pass
        try:
            verify(path, self._stop_check)
        except CassetteError as e:
            engine.failed(e)

    def _failed(self, error: CassetteError) -> None:
        """From any thread: remember the first failure and stop serving."""
        if self.failure is None:
            self.failure = error  # reported by whoever runs the session (the CLI: one line, exit 2)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.request_stop)

    def _ca(self) -> str:
        from .record.runner import DEFAULT_CONFDIR, ca_path

        return ca_path(self.config.confdir or DEFAULT_CONFDIR)

    async def _start_forward(self, record: RecordConfig | None = None) -> None:
        """The replay server on loopback behind mitmproxy as an HTTPS proxy on the
        configured address; with ``record`` (new_episodes) misses are relayed back through
        the same mitmproxy, which records them."""
        from .record.runner import ForwardFront

        c = self.config
        self.ca = self._ca()
        self._server = UvicornServer(self.app, "127.0.0.1", 0)  # bound now, serving from start()
        front = ForwardFront((self._server.address.host, self._server.address.port), c.host, c.port, c.confdir,
                             record, self.on_recorded)
        try:
            await front.start()
        except BaseException:
            self._server.sock.close()  # bound, never served
            self._server = None
            raise
        self._front = front
        if record is not None:
            self._recorder = front
            self._forwarder = self.app.forwarder = Forwarder(via=Via(front.url, self.ca, front.relay_header))
        await self._server.start()
        self.url = front.url

    async def wait(self) -> None:
        if self._front is not None:
            await self._front.wait()
        elif self._server is not None:
            await self._server.wait()
        elif self._recorder is not None:
            await self._recorder.wait()

    def request_stop(self) -> None:
        if self._server is not None:
            self._server.request_stop()
        if self._recorder is not None:
            self._recorder.request_stop()
        if self._front is not None:
            self._front.request_stop()

    async def run_until_signal(self, announce=None) -> Summary:
        """Serve until SIGINT/SIGTERM, then stop cleanly. ``announce()`` runs once the
        signal handlers are installed."""
        await until_signal(self.wait, self.request_stop, announce)
        return await self.stop(clean=True)

    async def stop(self, clean: bool = True) -> Summary:
        s = Summary(self.action, faulting=bool(self.config.faults))
        if self._server is not None:
            await self._server.stop()
            s.cut = self._server.cut
        if self._forwarder is not None:
            s.forwarded = self._forwarder.forwarded
            await self._forwarder.aclose()
        self._stop_check.set()
        if self._check is not None:
            await asyncio.to_thread(self._check.join)
        if self.app is not None and self.app.cassettes is not None:
            await asyncio.to_thread(self.app.cassettes.close)
            s.refused = self.app.cassettes.refused
        if self.app is not None:
            self.app.close()
        engines = self.app.engines() if self.app is not None else []
        given = self.config.faults.faults if self.action.replays else ()
        never = set(range(len(given)))  # the given faults no cassette's plan applied
        reasons: dict[int, str] = {}
        for engine in engines:  # closed before the recorder, whose last step needs the file to itself
            try:
                s.recordings += len(engine.source)
            except CassetteError as e:
                self.failure = self.failure or e
            s.used += engine.served
            s.misses += engine.misses
            report = engine.report()
            s.out_of_order += report["out_of_order"]
            s.weak += report["weak"] + len(report["weak_frames"])
            s.notes += report["notes"] + report["weak_frames"]
            if self.collect_unused:
                try:
                    s.unused += engine.unused()
                except CassetteError as e:
                    self.failure = self.failure or e
            if engine.faults is not None:
                s.faults += engine.faults.applied
                never &= engine.faults.never_applied()
                if len(engines) == 1 and never:
                    try:
                        reasons = {i: engine.faults.why_never(i, engine.source) for i in never}
                    except CassetteError as e:
                        self.failure = self.failure or e
            engine.close()
        s.not_injected = [f"{given[i].label()}: {reasons.get(i, 'no request reached a recording it targets')}"
                          for i in sorted(never)]
        if self._forwarder is not None:
            s.misses = []  # forwarded and recorded, not errors
        if self._recorder is not None:
            try:
                s.recorded = await self._recorder.stop()  # the forward-mode front too, when it records
                s.recorded_cut = self._recorder.cut_by_stop
            except CassetteError as e:  # a write failed: the old cassette (mode all) stays
                self.failure = self.failure or e
                clean = False
        elif self._front is not None:
            await self._front.stop()
        if self._fresh is not None:
            if clean and s.recorded:
                # os.replace is atomic: at every instant the path holds the old cassette or
                # the new one. Only the old one's WAL side files go (the new file is folded).
                _remove_db(self.config.cassette, keep_main=True)
                os.replace(self._fresh, self.config.cassette)
            else:  # nothing recorded, or the block/test failed or a write did: the old one stays
                _remove_db(self._fresh)  # and no PATH.recording is left behind (only a crash leaves one)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        return s

    # -- for synchronous callers (the pytest plugin) ---------------------------

    def start_in_thread(self) -> str:
        self._background = BackgroundLoop("proxy-serve", self.start, lambda: self.stop(self._clean))
        self._background.start()
        return self.url

    def stop_thread(self, clean: bool = True) -> Summary:
        if self._background is None:
            return Summary(self.action)
        self._clean = clean
        return self._background.stop() or Summary(self.action)


def _remove_db(path: Path, keep_main: bool = False) -> None:
    for suffix in ("-wal", "-shm") if keep_main else ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)

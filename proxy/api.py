"""The public API (``import proxy``): a cassette served for the length of a ``with`` block.

    with proxy.replaying("tests/cassettes/chat.db", speed=0) as p:
        client = OpenAI(base_url=p.base_url, api_key="sk-test")
        ...
    p.summary.served, p.summary.misses, p.summary.unused

``replaying`` serves a cassette (record mode none), ``recording`` forwards to an upstream and
records (mode all by default: a fresh cassette that replaces the old one when the block
ends cleanly), ``use_cassette`` takes any record mode and reads ``PROXY_RECORD_MODE`` /
``PROXY_UPSTREAM`` when they are not given (what the pytest plugin runs). Each returns a
``ModelProxy``, usable as ``with`` (the server runs on a thread of its own, so blocking
clients work) or ``async with`` (the server runs on the caller's event loop, for async
clients), or with ``start()`` / ``stop()`` (unittest's setUp / tearDown).

When the block ends, ``summary`` holds what happened and ``errors`` the problems: requests
with no recording (with the nearest recording and a diff), WebSocket frames that did not
match, and with ``strict=True`` recordings never used. With ``check=True`` (the default)
they raise ``CassetteMismatch`` at the end of a block that raised nothing; when the block
raised, they are added to that exception as a note, so the reason for an SDK's
``NotFoundError`` is in the traceback.

``proxy_mode="forward"`` serves the cassette as an HTTPS proxy instead of a base URL, for a
client in a subprocess that keeps its URLs: ``env`` is the environment it needs.

Faults (README "Testing failure paths") are options too: ``faults=["status:429@#1"]``,
``chaos=SEED`` (with ``chaos_rate``, ``chaos_kinds``); ``faults`` on the ModelProxy lists
what was injected, and so does ``summary.faults``.

Everything runs over ``serve.Session``, the same code as ``proxy replay`` and ``proxy serve``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .matching import MatchConfig
from .record import RedactionOptions
from .replay.faults import DEFAULT_CHAOS_KINDS, FaultConfig
from .serve import Action, RecordMode, ServeConfig, ServeError, Session, Summary
from .store import CassetteError

__all__ = ["CassetteError", "CassetteMismatch", "ModelProxy", "RecordMode", "ServeError", "Summary", "recording",
           "replaying", "use_cassette"]


class CassetteMismatch(AssertionError):
    """The client's traffic did not match the cassette (an AssertionError, so unittest and
    pytest report it as a test failure). The message lists every problem."""


class ModelProxy:
    """A cassette served on 127.0.0.1 (port 0 by default) while the block runs."""

    def __init__(self, cassette: str | os.PathLike, mode: str | RecordMode = RecordMode.NONE,
                 upstream: str | None = None, *, speed: float = 1.0, match_body: bool = False,
                 ignore_json_paths=(), match_headers=(), strict_match: bool = False, presets=(),
                 strict: bool = False, check: bool = True, redaction: RedactionOptions | None = None,
                 host: str = "127.0.0.1", port: int = 0, proxy_mode: str = "reverse", faults=(),
                 chaos: int | None = None, chaos_rate: float = 0.2, chaos_kinds=DEFAULT_CHAOS_KINDS,
                 fault_salt: str = ""):
        self.cassette = Path(cassette)
        self.mode = RecordMode.parse(mode)
        self.strict = strict
        self.check = check
        match = MatchConfig(match_body, tuple(ignore_json_paths), tuple(match_headers), strict_match, tuple(presets))
        config = ServeConfig(self.cassette, self.mode, upstream, host, port, speed, match,
                             redaction or RedactionOptions(), proxy_mode=proxy_mode,
                             faults=FaultConfig.build(faults, chaos, chaos_rate, chaos_kinds),  # FaultError: a ValueError
                             fault_salt=fault_salt)
        self.session = self._session(config)  # raises ServeError: e.g. a record mode without upstream
        self.url: str | None = None
        self.summary: Summary | None = None
        self._threaded = False

    @staticmethod
    def _session(config: ServeConfig) -> Session:
        session = Session(config)
        session.collect_unused = True  # the summary lists them
        return session

    def _begin(self) -> None:
        """Before a start: refuse a second one while running; after a stop, a new Session
        (a Session runs once), so a proxy may be started and stopped again (each run
        serves the whole cassette and has a summary of its own)."""
        if self.url is not None and self.summary is None:
            raise RuntimeError(f"{self!r} is already running: stop it first, or use another proxy")
        if self.summary is not None:
            self.session = self._session(self.session.config)
            self.url = self.summary = None

    @property
    def action(self) -> Action:
        return self.session.action

    @property
    def base_url(self) -> str:
        """For SDK clients: http://127.0.0.1:PORT/v1"""
        return self._started() + "/v1"

    @property
    def ws_base_url(self) -> str:
        """ws://127.0.0.1:PORT/v1"""
        return self._started().replace("http://", "ws://", 1) + "/v1"

    @property
    def env(self) -> dict[str, str]:
        """``proxy_mode="forward"``: the environment a subprocess client needs to go through
        this HTTPS proxy (HTTPS_PROXY, HTTP_PROXY, SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
        NODE_EXTRA_CA_CERTS, NODE_USE_ENV_PROXY=1, and curl's names; NO_PROXY and no_proxy
        empty, so an inherited exemption cannot send a host past the proxy)."""
        self._started()
        return self.session.env

    @property
    def faults(self) -> list:
        """Every fault injected so far (``replay.faults.Applied``: seq, request, fault, source)."""
        if self.summary is not None:
            return list(self.summary.faults)
        engine = self.session.engine
        return list(engine.faults.applied) if engine is not None and engine.faults is not None else []

    def _started(self) -> str:
        if self.url is None:
            raise RuntimeError("the proxy is not running: use it inside its with block (or call start())")
        return self.url

    # -- what went wrong -----------------------------------------------------

    @property
    def errors(self) -> list[str]:
        """One line per problem (a miss is followed by its diff), readable while the proxy
        runs and after it stopped; empty when the traffic matched the cassette."""
        out = []
        if self.session.failure is not None:  # a damaged cassette or a failed write stopped the session
            out.append(str(self.session.failure))
        engine = self.session.engine
        if engine is None or self.action is Action.REPLAY_AND_RECORD:  # misses were recorded
            return out
        if engine.misses:
            out.append(f"the client made {len(engine.misses)} request(s) with no recording in {self.cassette}:")
            for m in engine.misses:
                out.append(f"  {m.message}")
                out += ["    " + ln for ln in m.diff.splitlines()]
        if engine.mismatches:
            out.append(f"{len(engine.mismatches)} WebSocket frame(s) did not match {self.cassette}:")
            out += [f"  {m}" for m in engine.mismatches]
        if self.strict:
            # Once stopped, the cassette is closed: the summary holds what was never used.
            unused = self.summary.unused if self.summary is not None else engine.unused()
            if unused:
                out.append(f"strict: {len(unused)} recorded interaction(s) in {self.cassette} were never used:")
                out += [f"  #{it.seq} {it.request.method} {it.request.target}" for it in unused]
        report = engine.report()
        weak = report["weak"] + len(report["weak_frames"])
        if self.strict and weak:
            out.append(f"strict: {weak} recording(s) in {self.cassette} served for a request whose content differs")
        if out and (report["notes"] or report["weak_frames"]):
            out.append(f"matches served out of recorded order: {report['out_of_order']}; weak: {weak}")
            out += [f"  {n}" for n in (report["notes"] + report["weak_frames"])[:20]]
        return out

    def annotate(self, exc: BaseException) -> None:
        """Add the errors to an exception the client code raised, as a note (shown in its traceback)."""
        errors = self.errors
        if errors and isinstance(exc, Exception):
            exc.add_note("proxy: " + "\n".join(errors))

    def _finish(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.annotate(exc)
        elif self.check and self.errors:
            raise CassetteMismatch("\n".join(self.errors))

    # -- synchronous: the server on a thread of its own ---------------------

    def start(self) -> "ModelProxy":
        self._begin()
        self.url = self.session.start_in_thread()
        self._threaded = True
        return self

    def stop(self, clean: bool = True) -> Summary:
        """Stop serving; ``clean=False`` (the block raised) keeps the old cassette in mode all."""
        if self.summary is None:
            self.summary = self.session.stop_thread(clean)
        return self.summary

    def __enter__(self) -> "ModelProxy":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop(clean=exc is None)
        self._finish(exc)

    # -- asynchronous: the server on the caller's event loop -----------------

    async def astart(self) -> "ModelProxy":
        self._begin()
        self.url = await self.session.start()
        return self

    async def astop(self, clean: bool = True) -> Summary:
        if self.summary is None:
            self.summary = await self.session.stop(clean)
        return self.summary

    async def __aenter__(self) -> "ModelProxy":
        return await self.astart()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.astop(clean=exc is None)
        self._finish(exc)

    def __repr__(self) -> str:
        return f"<ModelProxy {self.cassette} {self.mode.value} on {self.url or '(not running)'}>"


def replaying(cassette: str | os.PathLike, **options) -> ModelProxy:
    """Serve ``cassette`` (record mode none): a request with no recording is a miss.
    Options: speed (1 recorded pace, 0 instant), match_body, ignore_json_paths,
    match_headers, strict_match, presets, strict, check, redaction, host, port, and the
    faults of README's "Testing failure paths": faults, chaos, chaos_rate, chaos_kinds."""
    return ModelProxy(cassette, RecordMode.NONE, None, **options)


def recording(cassette: str | os.PathLike, upstream: str, mode: str | RecordMode = RecordMode.ALL,
           **options) -> ModelProxy:
    """Forward to ``upstream`` and record into ``cassette`` (needs the ``record`` extra).
    Mode all (default) records into a fresh cassette that replaces the old one only when
    the block ends without an exception; once and new_episodes as in VCR.py."""
    return ModelProxy(cassette, mode, upstream, **options)


def use_cassette(cassette: str | os.PathLike, mode: str | RecordMode | None = None, upstream: str | None = None,
                 **options) -> ModelProxy:
    """Any record mode; ``mode`` and ``upstream`` default to the environment variables
    ``PROXY_RECORD_MODE`` (else none) and ``PROXY_UPSTREAM``, as in the pytest plugin."""
    mode = mode or os.environ.get("PROXY_RECORD_MODE") or RecordMode.NONE
    upstream = upstream or os.environ.get("PROXY_UPSTREAM") or None
    return ModelProxy(cassette, mode, upstream, **options)

"""Many cassettes on one port (``proxy replay --cassette-dir DIR``).

A request names its cassette with the header ``x-proxy-cassette: NAME`` or the path
prefix ``/c/NAME/`` (stripped before matching): ``DIR/NAME.db``. Each cassette is
opened on first use, in a worker thread (other clients are served meanwhile; requests
for the same cassette wait for the one opening), and keeps its own consumed-recordings
state. Each is then checked in full in a background thread; a damaged one answers every
later request with a 404 naming the damage, and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path

from ..headers import scope_header
from ..matching import MatchConfig
from ..redaction import Redactor
from ..store import CassetteError
from . import load_engine, verify
from .engine import Engine

log = logging.getLogger("proxy.replay")

HEADER = "x-proxy-cassette"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME = 200  # NAME.db must fit in a file name (255 bytes on most file systems)


def _problem(code: str, message: str) -> dict:
    return {"error": {"type": "proxy_no_cassette", "code": code, "message": message}}


class CassetteDir:
    def __init__(self, directory, config: MatchConfig, redactor: Redactor, faults=None, fault_salt: str = ""):
        self.directory = Path(directory)
        self.config = config
        self.redactor = redactor
        self.faults = faults  # a faults.FaultConfig: each cassette gets its own plan
        self.fault_salt = fault_salt
        self.engines: dict[str, Engine] = {}
        self.refused = 0  # requests answered 404 because they named no usable cassette
        self._opening: dict[str, asyncio.Future] = {}
        self._stop = threading.Event()
        self._checks: list[threading.Thread] = []

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.db"))

    async def resolve(self, scope) -> tuple[Engine | None, dict, dict | None]:
        """(engine, scope with the prefix stripped, None) or (None, scope, problem)."""
        engine, scope, problem = await self._resolve(scope)
        if problem is not None:
            self.refused += 1  # on the event loop: no lock needed
        return engine, scope, problem

    def _available(self) -> str:
        return f"(available: {', '.join(self.names()) or 'none'})"

    async def _resolve(self, scope) -> tuple[Engine | None, dict, dict | None]:
        """The prefix is cut from the raw path, so what is matched is the path exactly as the
        client sent it, percent-escapes and all, as in header mode. A name that cannot be a
        cassette (not [A-Za-z0-9._-], too long for a file name) is a problem, not an error."""
        name = scope_header(scope, HEADER)
        raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8")
        if name is None and raw.startswith(b"/c/"):
            raw_name, _, rest = raw[3:].partition(b"/")
            name = raw_name.decode("latin-1")
            if _NAME.match(name):  # then the decoded path starts with the same bytes
                scope = dict(scope, path="/" + scope["path"][4 + len(name):], raw_path=b"/" + rest)
        if not name:
            return None, scope, _problem(
                "no_cassette_named",
                f"name a cassette with the header x-proxy-cassette: NAME or the path prefix /c/NAME/ "
                f"{self._available()}")
        if name.endswith(".db"):
            name = name[:-3]
        if not _NAME.match(name) or len(name) > MAX_NAME:
            shown = name if len(name) <= 60 else name[:60] + f"... ({len(name)} characters)"
            return None, scope, _problem("bad_cassette_name", f"bad cassette name {shown!r}")
        engine = self.engines.get(name)
        if engine is None:
            if not (self.directory / f"{name}.db").is_file():
                return None, scope, _problem(
                    "no_such_cassette", f"no such cassette {name!r} in {self.directory} {self._available()}")
            opening = self._opening.get(name)
            if opening is None:
                opening = self._opening[name] = asyncio.ensure_future(asyncio.to_thread(self._open, name))
            try:
                engine = await asyncio.shield(opening)
            except (CassetteError, OSError) as e:
                return None, scope, _problem("cassette_unusable", str(e))
            finally:
                if opening.done():
                    self._opening.pop(name, None)
            engine = self.engines.setdefault(name, engine)
        if engine.failure is not None:
            return None, scope, _problem("cassette_unusable", str(engine.failure))
        return engine, scope, None

    def _open(self, name: str) -> Engine:
        """In a worker thread: open the cassette (constant time), start its full check."""
        path = self.directory / f"{name}.db"
        engine = load_engine(path, self.config, self.redactor)
        if self.faults:
            engine.faults = self.faults.plan(self.fault_salt or name)
        check = threading.Thread(target=self._check, args=(engine, path), name=f"proxy-check-{name}", daemon=True)
        self._checks.append(check)
        check.start()
        return engine

    def _check(self, engine: Engine, path: Path) -> None:
        try:
            verify(path, self._stop)
        except CassetteError as e:
            log.error("%s", e)
            engine.failed(e)

    def close(self) -> None:
        """Stop the checks still running (the cassettes are closed with their engines)."""
        self._stop.set()
        for check in self._checks:
            check.join()

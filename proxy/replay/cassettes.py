"""Many cassettes on one port (``proxy replay --cassette-dir DIR``).

A request names its cassette with the header ``x-proxy-cassette: NAME`` or the path
prefix ``/c/NAME/`` (stripped before matching): ``DIR/NAME.db``. Each cassette is
loaded on first use and keeps its own consumed-recordings state.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from ..headers import scope_header
from ..matching import MatchConfig
from ..redaction import Redactor
from ..store import CassetteError
from . import load_engine
from .engine import Engine

HEADER = "x-proxy-cassette"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _problem(code: str, message: str) -> dict:
    return {"error": {"type": "proxy_no_cassette", "code": code, "message": message}}


class CassetteDir:
    def __init__(self, directory, config: MatchConfig, redactor: Redactor):
        self.directory = Path(directory)
        self.config = config
        self.redactor = redactor
        self.engines: dict[str, Engine] = {}
        self.refused = 0  # requests answered 404 because they named no usable cassette
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.db"))

    def resolve(self, scope) -> tuple[Engine | None, dict, dict | None]:
        """(engine, scope with the prefix stripped, None) or (None, scope, problem)."""
        engine, scope, problem = self._resolve(scope)
        if problem is not None:
            with self._lock:
                self.refused += 1
        return engine, scope, problem

    def _available(self) -> str:
        return f"(available: {', '.join(self.names()) or 'none'})"

    def _resolve(self, scope) -> tuple[Engine | None, dict, dict | None]:
        name = scope_header(scope, HEADER)
        path = scope.get("path", "")
        if name is None and path.startswith("/c/"):
            name, _, rest = path[3:].partition("/")
            scope = dict(scope, path="/" + rest, raw_path=("/" + rest).encode("latin-1"))
        if not name:
            return None, scope, _problem(
                "no_cassette_named",
                f"name a cassette with the header x-proxy-cassette: NAME or the path prefix /c/NAME/ "
                f"{self._available()}")
        if name.endswith(".db"):
            name = name[:-3]
        if not _NAME.match(name):
            return None, scope, _problem("bad_cassette_name", f"bad cassette name {name!r}")
        with self._lock:
            engine = self.engines.get(name)
            if engine is None:
                path = self.directory / f"{name}.db"
                if not path.is_file():
                    return None, scope, _problem(
                        "no_such_cassette", f"no such cassette {name!r} in {self.directory} {self._available()}")
                try:
                    engine = load_engine(path, self.config, self.redactor)
                except CassetteError as e:
                    return None, scope, _problem("cassette_unusable", str(e))
                self.engines[name] = engine
        return engine, scope, None

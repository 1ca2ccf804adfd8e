"""pytest plugin (entry point ``pytest11``): a replay server per test, from a cassette.

    @pytest.mark.cassette("chat")                 # tests/cassettes/chat.db beside the test file
    def test_chat(model_proxy):
        client = OpenAI(base_url=model_proxy.base_url, api_key="sk-test")
        ...

Options: ``--record-mode none|once|new_episodes|all`` (env ``PROXY_RECORD_MODE``, default
none) and ``--proxy-upstream URL`` (env ``PROXY_UPSTREAM``) to record. The test fails if
the client made a request that has no recording (the diagnostic is in the failure), or
a WebSocket frame that did not match, and with ``strict=True`` also if recorded
interactions were never used or were served for a request whose content differs (a weak
match). A failure also lists the matches served out of recorded order and the weak ones,
with the JSON paths that differed. ``strict_match=True`` makes weak matches misses;
``presets=["claude-code"]`` ignores a client's volatile fields. Each test gets its own server on port 0, so pytest-xdist
workers never share one. Works without mitmproxy installed in record mode none.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from .matching import MatchConfig
from .serve import Action, RecordMode, ServeConfig, ServeError, Session
from .store import CassetteError


def pytest_addoption(parser) -> None:
    group = parser.getgroup("proxy", "record and replay model traffic (proxy)")
    group.addoption("--record-mode", action="store", default=None, choices=[m.value for m in RecordMode],
                    help="proxy cassettes: none (replay only, default), once, new_episodes, all. "
                         "Env PROXY_RECORD_MODE.")
    group.addoption("--proxy-upstream", action="store", default=None, metavar="URL",
                    help="proxy cassettes: the real API to record from. Env PROXY_UPSTREAM.")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "cassette(name, strict=False, speed=1.0, match_body=False, ignore_json_paths=(), match_headers=(), "
        "strict_match=False, presets=()): "
        "serve cassettes/NAME.db (beside the test file) to the model_proxy fixture",
    )


@dataclass
class ModelProxy:
    """What a test gets: where the replay (or recording) server listens."""

    url: str  # http://127.0.0.1:PORT
    cassette: Path
    mode: RecordMode
    action: Action
    session: Session

    @property
    def base_url(self) -> str:
        """For SDK clients: http://127.0.0.1:PORT/v1"""
        return self.url + "/v1"

    @property
    def ws_base_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/v1"

    def problems(self, strict: bool) -> list[str]:
        engine = self.session.engine
        if engine is None or self.session._forwarder is not None:
            return []
        out = []
        if self.session.failure is not None:  # a damaged cassette: replay stopped
            out.append(str(self.session.failure))
        if engine.misses:
            out.append(f"the client made {len(engine.misses)} request(s) with no recording in {self.cassette}:")
            for m in engine.misses:
                out.append(f"  {m.message}")
                out += ["    " + ln for ln in m.diff.splitlines()]
        if engine.mismatches:
            out.append(f"{len(engine.mismatches)} WebSocket frame(s) did not match {self.cassette}:")
            out += [f"  {m}" for m in engine.mismatches]
        if strict and engine.unused():
            unused = engine.unused()
            out.append(f"strict: {len(unused)} recorded interaction(s) in {self.cassette} were never used:")
            out += [f"  #{it.seq} {it.request.method} {it.request.target}" for it in unused]
        report = engine.report()
        weak = report["weak"] + len(report["weak_frames"])
        if strict and weak:
            out.append(f"strict: {weak} recording(s) in {self.cassette} served for a request whose content differs")
        if out and (report["notes"] or report["weak_frames"]):
            out.append(f"matches served out of recorded order: {report['out_of_order']}; weak: {weak}")
            out += [f"  {n}" for n in (report["notes"] + report["weak_frames"])[:20]]
        return out


def _cassette_path(request, name: str | None) -> Path:
    if name is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", request.node.name)
    p = Path(name)
    if p.is_absolute():
        return p
    if p.suffix != ".db":
        p = p.with_name(p.name + ".db")
    return Path(request.node.fspath).parent / "cassettes" / p


@pytest.fixture
def model_proxy(request):
    marker = request.node.get_closest_marker("cassette")
    kwargs = dict(marker.kwargs) if marker else {}
    name = marker.args[0] if marker and marker.args else None
    path = _cassette_path(request, name)
    mode_value = request.config.getoption("record_mode") or os.environ.get("PROXY_RECORD_MODE") or "none"
    try:
        mode = RecordMode.parse(mode_value)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    upstream = request.config.getoption("proxy_upstream") or os.environ.get("PROXY_UPSTREAM")
    try:
        match = MatchConfig(bool(kwargs.get("match_body", False)), tuple(kwargs.get("ignore_json_paths", ())),
                            tuple(kwargs.get("match_headers", ())), bool(kwargs.get("strict_match", False)),
                            tuple(kwargs.get("presets", ())))
    except ValueError as e:  # a bad JSON path or an unknown preset
        raise pytest.UsageError(f"cassette marker: {e}") from None
    config = ServeConfig(path, mode, upstream, speed=float(kwargs.get("speed", 1.0)), match=match)
    try:
        session = Session(config)
        url = session.start_in_thread()
    except CassetteError as e:
        hint = ""
        if mode is RecordMode.NONE and not path.exists():
            hint = " (record it with --record-mode once --proxy-upstream URL)"
        pytest.fail(f"{e}{hint}", pytrace=False)
    except ServeError as e:
        pytest.fail(str(e), pytrace=False)
    mp = ModelProxy(url, path, mode, session.action, session)
    request.node._proxy_strict = bool(kwargs.get("strict", False))
    yield mp
    session.stop_thread()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    mp = getattr(item, "funcargs", {}).get("model_proxy")
    if isinstance(mp, ModelProxy):
        problems = mp.problems(getattr(item, "_proxy_strict", False))
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)
    return result

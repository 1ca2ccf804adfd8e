"""pytest plugin (entry point ``pytest11``): a replay server per test, from a cassette.

    @pytest.mark.cassette("chat")                 # tests/cassettes/chat.db beside the test file
    def test_chat(model_proxy):
        client = OpenAI(base_url=model_proxy.base_url, api_key="sk-test")
        ...

    @pytest.mark.cassette                          # tests/cassettes/test_module/test_name.db
    async def test_async(model_proxy): ...         # (pytest-recording's naming, with .db)

    @pytest.mark.cassette("agent", proxy_mode="forward")  # an HTTPS proxy, for clients in a subprocess
    def test_agent(model_proxy):
        subprocess.run(["my-agent"], env={**os.environ, **model_proxy.env}, check=True)

Options: ``--proxy-record-mode none|once|new_episodes|all`` (env ``PROXY_RECORD_MODE``,
default none) and ``--proxy-upstream URL`` (env ``PROXY_UPSTREAM``) to record. Every
option is prefixed ``--proxy-``, so the plugin loads beside pytest-recording (whose
``--record-mode`` is VCR.py's). The fixture is ``proxy.use_cassette`` (``proxy.api``).

The test fails if the client made a request that has no recording, or sent a WebSocket
frame that did not match, and with ``strict=True`` also if recorded interactions were
never used or were served for a request whose content differs (a weak match); a failure
also lists the matches served out of recorded order and the weak ones.
``strict_match=True`` makes weak matches misses; ``presets=["claude-code"]`` ignores a
client's volatile fields. The diagnostic (nearest recording, diff) is the failure, or, when the test
itself raised (an SDK's ``NotFoundError`` on a miss), a note on that exception. Each test
gets its own server on port 0, so pytest-xdist workers never share one. Works without
mitmproxy installed in record mode none.

Faults (README "Testing failure paths"): the marker's ``faults=["status:429@#1", ...]`` for
one test, ``--proxy-fault SPEC`` for every test, and ``--proxy-chaos SEED`` (with
``--proxy-chaos-rate`` / ``--proxy-chaos-kinds``, or the marker's ``chaos=SEED``) for seeded
faults across the suite; a test's chaos picks depend on the seed and the test's id only.
``model_proxy.faults`` lists what was injected; a failing test's report lists it too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import proxy

from .model import RecordMode
from .net import reachable_through_guard
from .replay.faults import DEFAULT_CHAOS_KINDS, FaultError, parse_fault, parse_kinds

# The server, the store and the API load when a test asks for ``model_proxy`` (through
# ``proxy``'s lazy names): the plugin loads in every pytest run of a project that installed
# proxy, and importing them here cost every such run 0.38 s.

# Set when the test's call raised or failed: record mode all then keeps the old cassette
# (as ``proxy.recording`` does for a block that raised), not the partial recording.
_FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser) -> None:
    group = parser.getgroup("proxy", "record and replay model traffic (proxy)")
    group.addoption("--proxy-record-mode", action="store", default=None, choices=[m.value for m in RecordMode],
                    help="proxy cassettes: none (replay only, default), once, new_episodes, all. "
                         "Env PROXY_RECORD_MODE.")
    group.addoption("--proxy-upstream", action="store", default=None, metavar="URL",
                    help="proxy cassettes: the real API to record from. Env PROXY_UPSTREAM.")
    group.addoption("--proxy-fault", action="append", default=[], metavar="SPEC",
                    help="proxy cassettes: inject this fault in every test, e.g. status:429@#1 (repeatable).")
    group.addoption("--proxy-chaos", action="store", type=int, default=None, metavar="SEED",
                    help="proxy cassettes: seeded faults across the suite (the same seed, the same faults).")
    group.addoption("--proxy-chaos-rate", action="store", type=float, default=0.2, metavar="RATE",
                    help="proxy cassettes: with --proxy-chaos, the share of recordings that get a fault (0.2).")
    group.addoption("--proxy-chaos-kinds", action="store", default=",".join(DEFAULT_CHAOS_KINDS), metavar="KINDS",
                    help="proxy cassettes: with --proxy-chaos, the fault kinds to pick from.")


def _listed(value) -> list:
    """A marker option that takes a list also takes one item (``faults="status:429@#1"``):
    a string is not spread into its characters."""
    return [value] if isinstance(value, str) else list(value)


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "cassette(name=None, strict=False, speed=1.0, match_body=False, ignore_json_paths=(), match_headers=(), "
        "strict_match=False, presets=(), proxy_mode='reverse', faults=(), chaos=None, chaos_rate=0.2, "
        "chaos_kinds=...): "
        "serve cassettes/NAME.db (beside the test file; default cassettes/MODULE/TEST.db) to the model_proxy fixture; "
        "proxy_mode='forward' serves it as an HTTPS proxy (model_proxy.env)",
    )
    # A bad command-line fault is one usage error now, naming its option, not an error per test.
    try:
        for spec in config.getoption("proxy_fault"):
            parse_fault(spec)
        parse_kinds(config.getoption("proxy_chaos_kinds"))
    except FaultError as e:
        raise pytest.UsageError(f"--proxy-fault / --proxy-chaos-kinds: {e}") from None
    rate = config.getoption("proxy_chaos_rate")
    if not 0 <= rate <= 1:
        raise pytest.UsageError(f"--proxy-chaos-rate {rate}: a share between 0 and 1")


def default_cassette_name(request) -> str:
    """``[Class.]test_name`` with characters a file name cannot hold replaced, as pytest-recording names them."""
    name = f"{request.cls.__name__}.{request.node.name}" if request.cls else request.node.name
    for ch in "<>?%*:|\"'/\\":
        name = name.replace(ch, "-")
    return name


def cassette_path(request, name: str | None) -> Path:
    here = Path(request.node.fspath)
    if name is None:
        return here.parent / "cassettes" / here.stem / (default_cassette_name(request) + ".db")
    p = Path(name)
    if p.is_absolute():
        return p
    if p.suffix != ".db":
        p = p.with_name(p.name + ".db")
    return here.parent / "cassettes" / p


@pytest.fixture
def model_proxy(request):
    CassetteError, ServeError, use_cassette = proxy.CassetteError, proxy.ServeError, proxy.use_cassette
    if "block_network" in request.fixturenames:  # pytest-recording's guard first, so it is seen below
        request.getfixturevalue("block_network")
    marker = request.node.get_closest_marker("cassette")
    kwargs = dict(marker.kwargs) if marker else {}
    name = marker.args[0] if marker and marker.args else kwargs.pop("name", None)
    path = cassette_path(request, name)
    opt = request.config.getoption
    try:  # options first, then PROXY_RECORD_MODE / PROXY_UPSTREAM
        mp = use_cassette(path, request.config.getoption("proxy_record_mode"),
                          request.config.getoption("proxy_upstream"), speed=float(kwargs.get("speed", 1.0)),
                          match_body=bool(kwargs.get("match_body", False)),
                          ignore_json_paths=kwargs.get("ignore_json_paths", ()),
                          match_headers=kwargs.get("match_headers", ()),
                          strict_match=bool(kwargs.get("strict_match", False)), presets=kwargs.get("presets", ()),
                          strict=bool(kwargs.get("strict", False)), check=False,
                          proxy_mode=str(kwargs.get("proxy_mode", "reverse")),
                          faults=[*opt("proxy_fault"), *_listed(kwargs.get("faults", ()))],
                          chaos=kwargs.get("chaos", opt("proxy_chaos")),
                          chaos_rate=kwargs.get("chaos_rate", opt("proxy_chaos_rate")),
                          chaos_kinds=kwargs.get("chaos_kinds", opt("proxy_chaos_kinds")), fault_salt=request.node.nodeid)
    except ValueError as e:  # an unknown record mode, a bad JSON path, an unknown preset, a bad fault
        raise pytest.UsageError(f"cassette marker: {e}") from None
    except ServeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        mp.start()
    except CassetteError as e:
        hint = ""
        if mp.mode is RecordMode.NONE and not path.exists():
            hint = " (record it with --proxy-record-mode once --proxy-upstream URL)"
        pytest.fail(f"{e}{hint}", pytrace=False)
    except ServeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        # pytest-recording's --block-network (and its block_network marker) replace
        # socket.connect with a guard that refuses every host not allowed, loopback included.
        with reachable_through_guard(mp.url):
            yield mp
    finally:
        mp.stop(clean=not request.node.stash.get(_FAILED, False))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    mp = getattr(item, "funcargs", {}).get("model_proxy")
    if mp is not None and not isinstance(mp, proxy.ModelProxy):  # loaded already: the fixture made it
        mp = None
    try:
        result = yield
    except BaseException as e:  # pytest.fail and pytest.skip are BaseExceptions
        item.stash[_FAILED] = True
        # The test raised (often because of the miss itself: the SDK's NotFoundError);
        # the reason goes with its traceback.
        if mp is not None and isinstance(e, Exception):
            mp.annotate(e)
        raise
    finally:
        if mp is not None and mp.faults:  # shown with a failure (and with -rP)
            item.add_report_section("call", "proxy faults", "\n".join(a.line() for a in mp.faults))
    if mp is not None and mp.errors:
        item.stash[_FAILED] = True
        pytest.fail("\n".join(mp.errors), pytrace=False)
    return result

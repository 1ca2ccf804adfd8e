"""The one place the fidelity suite reaches into proxy's internals.

Everything else in tests/fidelity/ talks HTTP and WebSocket to the URLs these return;
when the package is restructured, only this module changes.

  start_recorder(upstream_url, cassette) -> Running   the mitmproxy recorder, in-process
  start_recorder_process(...) -> Running              the same, as the `proxy record` command
  recorder_ca(confdir) -> path                        its CA, for clients speaking TLS to it
  start_replay(cassette, speed) -> Running            the replay server, in-process
  start_new_episodes(upstream_url, cassette)          replay that relays misses to a recorder
  Running.stop()                                      stop it (the recorder compacts the cassette)
  record_addon(cassette) -> context of the addon      the bare mitmproxy addon in taddons, for hook tests
  interactions(cassette) -> list                      what a cassette holds, decoded
  redacted(data) -> bytes                             data as default redaction stores it

Each server runs on an event loop of its own in a daemon thread, as the pytest plugin
runs them, so the client's blocking reads never stall it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from proxy.background import BackgroundLoop


@dataclass
class Running:
    url: str
    stop: Callable[[], object]


def start_recorder(upstream_url: str, cassette: Path, *, upstream_ca: str | None = None,
                   confdir: str | None = None) -> Running:
    """``confdir`` holds mitmproxy's CA, for clients that speak TLS to the recorder."""
    from proxy.record import RecordConfig
    from proxy.record.runner import RecordingProxy

    proxy = RecordingProxy(RecordConfig(upstream=upstream_url, cassette=str(cassette), port=0,
                                        upstream_ca=upstream_ca, confdir=confdir))
    address: list = []

    async def setup() -> None:
        address.extend(await proxy.start())

    loop = BackgroundLoop("fidelity-recorder", setup, proxy.stop)
    loop.start()
    return Running(f"http://{address[0]}:{address[1]}", loop.stop)


def start_replay(cassette: Path, speed: float = 1.0) -> Running:
    """What ``proxy replay --cassette CASSETTE --speed SPEED`` runs."""
    from proxy.serve import ServeConfig, Session

    session = Session(ServeConfig(cassette=cassette, speed=speed))
    url = session.start_in_thread()
    return Running(url, session.stop_thread)


def start_new_episodes(upstream_url: str, cassette: Path) -> Running:
    """What ``proxy serve --record-mode new_episodes`` runs: replay in front, misses relayed
    to an in-process recorder appending to ``cassette`` (created empty if missing)."""
    from proxy.serve import ServeConfig, Session
    from proxy.store import Cassette

    if not Path(cassette).exists():
        Cassette.create(cassette).close()
    session = Session(ServeConfig(cassette=cassette, mode="new_episodes", upstream=upstream_url))
    url = session.start_in_thread()
    return Running(url, session.stop_thread)


def recorder_ca(confdir: str) -> str:
    """The PEM of the recorder's CA in ``confdir`` (created if needed)."""
    from proxy.record.runner import ca_path

    return ca_path(confdir)


@contextmanager
def record_addon(cassette: Path):
    """The bare record addon in a ``mitmproxy.test.taddons`` context, recording into
    ``cassette``; closed (committed) on exit. Enter it inside a running event loop."""
    from mitmproxy.test import taddons

    from proxy.record.addon import Recorder

    addon = Recorder()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, proxy_cassette=str(cassette))
        try:
            yield addon
        finally:
            addon.done()


def redacted(data: bytes) -> bytes:
    """``data`` as the recorder's default redaction stores it (unchanged when it holds no secret)."""
    from proxy.redaction import Redactor

    return Redactor().data(data)


def interactions(cassette: Path) -> list:
    from proxy.store import Cassette

    with Cassette.open(cassette) as c:
        return list(c.interactions())


def start_recorder_process(upstream_url: str, cassette: Path, *, upstream_ca: str | None = None,
                           confdir: str | None = None) -> Running:
    """The same recorder as ``proxy record`` on the command line, in a process of its own."""
    import os
    import re
    import signal
    import subprocess
    import sys

    args = [sys.executable, "-m", "proxy.cli", "record", "--upstream", upstream_url, "--cassette", str(cassette),
            "--listen", "127.0.0.1:0"]
    if upstream_ca:
        args += ["--upstream-ca", upstream_ca]
    if confdir:
        args += ["--confdir", confdir]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = p.stdout.readline()
    m = re.search(r"(http://[0-9.]+:\d+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"proxy record did not start: {line}{p.communicate()[1]}")

    def stop() -> None:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=30)

    return Running(m.group(1), stop)

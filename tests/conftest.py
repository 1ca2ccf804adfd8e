"""Shared fixtures: a simulated upstream, and the real `proxy` CLI run as a subprocess."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from proxy.testing import simulator

API_KEY = simulator.fake_key("test")  # fake, key-shaped: redaction must scrub it
ROOT = Path(__file__).resolve().parent.parent
URL_RE = re.compile(r"(https?://[\[\]0-9a-f.:]+:\d+)")


@pytest.fixture
def upstream():
    server = simulator.serve()
    yield server
    server.stop_thread()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return d


@pytest.fixture
def tls_upstream(tls_files):
    server = simulator.serve(certfile=str(tls_files / "cert.pem"), keyfile=str(tls_files / "key.pem"))
    yield server
    server.stop_thread()


class Proc:
    def __init__(self, popen: subprocess.Popen, first_line: str):
        self.popen = popen
        self.first_line = first_line
        m = URL_RE.search(first_line)
        self.url = m.group(1) if m else None
        self.out = ""
        self.err = ""

    def stop(self, sig=signal.SIGINT, timeout=15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        out, err = self.popen.communicate(timeout=timeout)
        self.out, self.err = self.first_line + out, err
        return self.popen.returncode


def proxy_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy.cli", *args]


def run_cli(*args: str, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(proxy_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@contextmanager
def proxy_proc(*args: str, startup_timeout: float = 30):
    """Run `proxy ARGS` until it prints its listening line; stop it with SIGINT afterwards."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(proxy_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + startup_timeout
    line = ""
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], 0.1)
        if r:
            line = p.stdout.readline()
            break
        if p.poll() is not None:
            break
    if not line:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"proxy {' '.join(args)} did not start: rc={p.returncode}\n{out}\n{err}")
    proc = Proc(p, line)
    try:
        yield proc
    finally:
        if p.poll() is None:
            proc.stop()


@pytest.fixture
def recorder(upstream, tmp_path):
    """A `proxy record` subprocess in front of the simulator."""
    cassette = tmp_path / "rec.db"
    with proxy_proc("record", "--upstream", upstream.url, "--cassette", str(cassette), "--listen", "127.0.0.1:0", "-v") as p:
        p.cassette = cassette
        yield p


@contextmanager
def replayer(cassette, *extra: str):
    with proxy_proc("replay", "--cassette", str(cassette), "--listen", "127.0.0.1:0", *extra) as p:
        yield p


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", help="run the long load / crash variants")

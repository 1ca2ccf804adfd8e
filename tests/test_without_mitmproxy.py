"""Replay, inspect and the pytest plugin work where mitmproxy is not installed (no `record` extra)."""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

BLOCK = "import sys; sys.modules['mitmproxy'] = None\n"  # `import mitmproxy` now raises ImportError

SCRIPT = BLOCK + '''
import httpx
from proxy.serve import RecordMode, ServeConfig, Session
from proxy.cli import main
import proxy.pytest_plugin  # noqa: F401  (the plugin loads too)

session = Session(ServeConfig(sys.argv[1], RecordMode.NONE, speed=0))
url = session.start_in_thread()
r = httpx.get(url + "/v1/models")
summary = session.stop_thread()
assert r.status_code == 200 and r.json()["data"][0]["id"] == "sim-1", r.text
assert summary.used == 1 and not summary.misses
assert not any(m == "mitmproxy" or m.startswith("mitmproxy.") for m in sys.modules if sys.modules[m] is not None)
sys.argv = ["proxy", "inspect", sys.argv[1]]
main()
'''


def test_replay_and_inspect_without_mitmproxy():
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "cassettes" / "example.db")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "5 interaction(s)" in r.stdout and "websocket" in r.stdout


def test_record_without_mitmproxy_says_what_to_install(tmp_path):
    code = BLOCK + "import sys; from proxy.cli import main; sys.argv = sys.argv[1:]; main()"
    r = subprocess.run([sys.executable, "-c", code, "proxy", "record", "--upstream", "http://127.0.0.1:9",
                        "--cassette", str(tmp_path / "c.db")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "pip install -e '.[record]'" in r.stderr and "Traceback" not in r.stderr


def test_forward_replay_without_mitmproxy_says_what_to_install():
    code = BLOCK + "import sys; from proxy.cli import main; sys.argv = sys.argv[1:]; main()"
    r = subprocess.run([sys.executable, "-c", code, "proxy", "replay", "--mode", "forward", "--cassette",
                        str(ROOT / "cassettes" / "example.db"), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "forward mode needs mitmproxy" in r.stderr and "pip install -e '.[record]'" in r.stderr

"""Re-create cassettes/example.db by recording the bundled simulator (not a real API).

    .venv/bin/python scripts/record_example.py
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import openai

from proxy.testing import simulator

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "cassettes" / "example.db"


def record_websocket(url: str) -> None:
    """A Responses-API WebSocket session: 120 ms delayed accept, a warm-up, one turn."""
    import json

    from websockets.sync.client import connect

    hdrs = {"authorization": "Bearer " + simulator.fake_key("example"), "x-sim-accept-ms": "120",
            "x-sim-gap-ms": "25", "openai-beta": "responses_websockets=2026-02-06"}
    with connect(url.replace("http", "ws") + "/v1/responses", additional_headers=hdrs) as ws:
        for frame in ({"type": "response.create", "model": "sim-1", "generate": False},
                      {"type": "response.create", "model": "sim-1", "input": "Say hello over a socket"}):
            ws.send(json.dumps(frame))
            while json.loads(ws.recv())["type"] != "response.completed":
                pass


def main() -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(OUT) + suffix).unlink(missing_ok=True)
    sim = simulator.serve()
    p = subprocess.Popen([sys.executable, "-m", "proxy.cli", "record", "--upstream", sim.url, "--cassette", str(OUT),
                          "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    select.select([p.stdout], [], [], 30)
    url = re.search(r"http://[0-9.]+:\d+", p.stdout.readline()).group(0)
    client = openai.OpenAI(base_url=url + "/v1", api_key=simulator.fake_key("example"), max_retries=0)
    hdrs = {"x-sim-gap-ms": "25", "x-sim-events": "6"}
    with client.responses.create(model="sim-1", input="Say hello", stream=True, extra_headers=hdrs) as s:
        for _ in s:
            pass
    for _ in client.chat.completions.create(model="sim-1", messages=[{"role": "user", "content": "Say hello"}],
                                            stream=True, extra_headers=hdrs):
        pass
    client.models.list()
    try:
        client.responses.create(model="sim-1", input="again", extra_headers={"x-sim-fault": "429"})
    except openai.RateLimitError:
        pass
    record_websocket(url)
    p.send_signal(signal.SIGINT)
    print(p.communicate(timeout=15)[0].strip())
    sim.stop_thread()


if __name__ == "__main__":
    main()

"""The bundled cassettes/example.db (recorded from proxy's simulator) replays with the openai SDK."""

from __future__ import annotations

import openai

from proxy.testing import fake_key
from proxy.store import Cassette

from .conftest import ROOT, replayer
from .fake_secrets import assert_clean

EXAMPLE = ROOT / "cassettes" / "example.db"


def test_example_cassette_replays_with_openai_sdk():
    with replayer(EXAMPLE, "--speed", "0") as rp:
        client = openai.OpenAI(base_url=rp.url + "/v1", api_key=fake_key("anything"), max_retries=0)
        with client.responses.create(model="sim-1", input="Say hello", stream=True) as s:
            events = list(s)
        assert events[-1].type == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == events[-1].response.output_text and text.startswith("Simulated reply")
        chunks = list(client.chat.completions.create(model="sim-1", messages=[{"role": "user", "content": "x"}], stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert [m.id for m in client.models.list()] == ["sim-1"]
        try:
            client.responses.create(model="sim-1", input="again")
        except openai.RateLimitError as e:
            assert e.response.headers["retry-after"] == "7"
        else:
            raise AssertionError("the recorded 429 was not replayed")


def test_example_cassette_holds_no_key():
    assert_clean(EXAMPLE, secrets=[fake_key("example")])
    with Cassette.open(EXAMPLE) as c:
        for it in c.interactions():
            assert it.request.header("authorization") == "REDACTED"


def test_example_cassette_websocket_session():
    with replayer(EXAMPLE) as rp:
        client = openai.OpenAI(base_url=rp.url + "/v1", api_key=fake_key("anything"), max_retries=0)
        types = []
        with client.responses.connect() as conn:
            conn.response.create(model="sim-1", generate=False)
            for prompt in (None, "Say hello over a socket"):
                if prompt:
                    conn.response.create(model="sim-1", input=prompt)
                for ev in conn:
                    types.append(ev.type)
                    if ev.type == "response.completed":
                        break
    assert types.count("response.completed") == 2 and "response.output_text.delta" in types

"""The model SDKs, pointed at the recorder and then at replay, parse the same things.

The byte-level clients check bytes and timing; these check that what the SDKs make of
those bytes (events, deltas, errors, retries they decide on) is the same, for the openai,
anthropic and google-genai Python SDKs. Each call gets its own shape (its own base URL).
"""

from __future__ import annotations

import json

import anthropic
import openai
from google import genai
from google.genai import types

from . import shapes as S
from .harness import record_then_replay

API_KEY = "fidelity-not-a-key"


def _base(url: str, sid: int) -> str:
    return f"{url}/f/{sid}"


def _error(e: Exception) -> tuple:
    return type(e).__name__, getattr(e, "status_code", None), str(getattr(e, "body", "") or e)[:200]


class Clients:
    """SDK clients made during one drive, closed at its end (an open keep-alive connection
    would outlive the recorder it points at)."""

    def __init__(self, make):
        self.make, self.made = make, []

    def __call__(self, sid: int):
        self.made.append(self.make(sid))
        return self.made[-1]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for c in self.made:
            c.close()


def _check(result, expect_items: int):
    items, recorded, replayed, _ = result
    assert len(recorded) == expect_items
    assert replayed == recorded
    return recorded


def test_openai_sdk(fidelity_dir):
    shapes = [S.openai_responses(), S.openai_chat(), S.models_get(), S.json_body("length"), S.rate_limited()]

    def drive(url, items):
        (r, _), (c, _), (m, _), (j, _), (limited, _) = items
        with Clients(lambda sid: openai.OpenAI(base_url=_base(url, sid) + "/v1", api_key=API_KEY,
                                               max_retries=0)) as client:
            return _openai_calls(client, r, c, m, j, limited)

    recorded = _check(record_then_replay(shapes, fidelity_dir, drive), 5)
    assert recorded[0][-1][0] == "response.completed" and recorded[1][-1][1] is None
    assert recorded[4][1] == "7"


def _openai_calls(client, r, c, m, j, limited) -> list:
    out = []
    with client(r).responses.create(model="gpt-4.1-mini", input="hi", stream=True) as stream:
        out.append([(e.type, getattr(e, "delta", None)) for e in stream])
    chat = client(c).chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}],
                                             stream=True)
    out.append([(ch.id, ch.choices[0].delta.content if ch.choices else None) for ch in chat])
    out.append([m.id for m in client(m).models.list()])
    out.append(client(j).responses.create(model="gpt-4.1-mini", input="x").id)
    try:
        client(limited).responses.create(model="gpt-4.1-mini", input="x")
    except openai.RateLimitError as e:
        out.append((_error(e), e.response.headers.get("retry-after")))
    return out


def test_anthropic_sdk(fidelity_dir):
    shapes = [S.anthropic_messages(), S.anthropic_messages(error_at=3), S.anthropic_529()]

    def drive(url, items):
        ask = dict(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        out = []
        with Clients(lambda sid: anthropic.Anthropic(base_url=_base(url, sid), api_key=API_KEY,
                                                     max_retries=0)) as client:
            for sid, _ in items:
                seen = []
                try:
                    with client(sid).messages.stream(**ask) as stream:
                        for event in stream:
                            seen.append((event.type, getattr(getattr(event, "delta", None), "text", None)))
                        seen.append(stream.get_final_message().content[0].text)
                except anthropic.APIError as e:
                    seen.append(_error(e))
                out.append(seen)
        return out

    ok, mid, overloaded = _check(record_then_replay(shapes, fidelity_dir, drive), 3)
    assert ok[-1].strip() and ok[0] == ("message_start", None)  # the SDK skips the ping events
    assert mid[-1][0] in ("APIStatusError", "OverloadedError", "InternalServerError") and "overloaded" in mid[-1][2]
    assert overloaded[-1][1] == 529


def test_google_genai_sdk(fidelity_dir):
    answer = json.dumps(S.gemini_chunk("hello", True)).encode()
    generate = S.HttpShape("gemini-generate", "json", path="/v1beta/models/gemini-2.5-flash:generateContent",
                        headers=(("content-type", "application/json; charset=UTF-8"), S.DATE), framing="length",
                        ttfb=0.01, parts=(S.Part(0.01, answer),))

    def drive(url, items):
        (stream_sid, _), (plain_sid, _) = items
        with Clients(lambda sid: genai.Client(api_key=API_KEY, http_options=types.HttpOptions(
                base_url=_base(url, sid) + "/", api_version="v1beta"))) as client:
            streaming, plain = client(stream_sid), client(plain_sid)  # held: a collected client closes its pool
            chunks = [c.text for c in streaming.models.generate_content_stream(model="gemini-2.5-flash",
                                                                               contents="hi")]
            return [chunks, plain.models.generate_content(model="gemini-2.5-flash", contents="hi").text]

    streamed, plain_text = _check(record_then_replay([S.gemini_sse(), generate], fidelity_dir, drive), 2)
    assert len(streamed) == 5 and plain_text == "hello"

"""The named shapes every run checks, and the ones known to differ today.

``KNOWN`` maps a shape name to the issue whose bug makes its replay differ; those cases
are ``xfail(strict=True)``, so the fix that removes the difference turns them into
failures until the entry here is deleted. Generated shapes (shapes.http_shapes /
ws_shapes) leave out what is listed here.
"""

from __future__ import annotations

import pytest

from . import shapes as S

KNOWN: dict[str, str] = {}


def named() -> list[S.Shape]:
    return [
        # SSE from the model APIs
        S.openai_responses(), S.openai_chat(), S.anthropic_messages(), S.anthropic_messages(error_at=3),
        S.gemini_sse(), S.bedrock_stream(),
        # JSON, errors, streamed JSON arrays
        S.json_body("length"), S.json_body("chunked"), S.models_get(), S.anthropic_529(), S.rate_limited(),
        S.gemini_json_array(),
        # content encodings, streamed (a flush per event) and whole
        *[S.encoded(enc, streamed, framing) for enc in ("gzip", "br", "zstd", "deflate")
          for streamed, framing in ((True, "chunked"), (False, "chunked"), (False, "length"))],
        # bytes redaction must leave alone, big bodies, writes over 64 KB
        S.keylike_words("length"), S.keylike_words("chunked"), S.big_token(200_000, False),
        S.big_token(200_000, True), S.big_token(4_000_000, True, "chunked"), S.big_chunks(),
        S.secret("chunked"), S.secret("length"),
        # cut streams
        S.cut("eof", "chunked"), S.cut("eof", "length"), S.cut("reset", "chunked"), S.cut("reset", "length"),
        # what the client does
        S.client_cancels_mid_stream(), S.client_timeout_before_headers(), S.upstream_never_answers(),
        # WebSocket
        S.ws_basic(), S.ws_binary(), S.ws_big_frame(), S.ws_push(), S.ws_pipelined(), S.gemini_live(),
        S.ws_deflate(True, True), S.ws_deflate(True, False), S.ws_deflate(False, False),
        S.ws_close(1000), S.ws_close(1001, "going away"), S.ws_close(None), S.ws_close(1011, "internal error"),
        S.ws_close(4123, "custom reason"), S.ws_close(1000, by="client"), S.ws_close(4001, "bye", by="client"),
        S.ws_drop("drop"), S.ws_drop("reset"), S.ws_drop("client_drop"), S.ws_delayed_accept(),
        S.ws_refused("length"), S.ws_refused("chunked"), S.ws_client_leaves_during_accept(),
    ]


def marks(name: str) -> list:
    reason = KNOWN.get(name)
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


def params(shapes: list[S.Shape]) -> list:
    return [pytest.param(s.name, marks=marks(s.name), id=s.name) for s in shapes]

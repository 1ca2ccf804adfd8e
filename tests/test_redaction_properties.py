"""Redaction properties (hypothesis). More examples: PROXY_HYPOTHESIS_EXAMPLES=2000."""

from __future__ import annotations

import base64
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.redaction import Redactor, marker

from .fake_secrets import STANDALONE, fake
from .test_redaction import KEYLIKE_WORDS

EXAMPLES = int(os.environ.get("PROXY_HYPOTHESIS_EXAMPLES", "60"))
PROP = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
R = Redactor.build(environ={"RECORDER_API_KEY": "Zq7" + "Env0Secret9Value"})

words = st.one_of(
    st.sampled_from(KEYLIKE_WORDS),
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    # base64url blobs of any size (the Responses API's encrypted_content is one)
    st.binary(max_size=3000).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
    st.integers(0, 10**12).map(str),
)
separators = st.sampled_from([" ", "\n", "-", "_", ".", "/", ",", '"', ":", "=", "&", "\n\n"])
PREFIXES = ("sk-", "ek_", "AIza", "eyJ", "AKIA", "ghp_", "xox")
# a key prefix inside a token is no key: "task-", "xsk-<blob>", "peek_<hex>"
infix = st.tuples(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=5),
                  st.sampled_from(["sk-", "sk-proj-", "ek_", "AIza", "eyJ", "AKIA", "ghp_", "xoxb-1-"]),
                  words).map("".join)


def _join(pairs) -> str:
    # A word that starts with a key prefix ends its token: "-" or "_" after it would
    # glue the next word on and could make a string of the key's very format.
    return "".join(w + (" " if w.startswith(PREFIXES) and s in "-_" else s) for w, s in pairs)


keyless = st.lists(st.tuples(st.one_of(words, infix), separators), max_size=30).map(_join)


@PROP
@given(keyless)
def test_redaction_is_the_identity_on_text_without_keys(text):
    data = text.encode()
    assert R.data(data) is data
    assert R.text(text) == text
    assert R.path("/" + text) == "/" + text
    assert R.body(json.dumps({"input": text}).encode()) == json.dumps({"input": text}).encode()
    assert b"".join(c for _, c in _stream(R, data, [7, 100, 3])) == data


@PROP
@given(keyless, st.sampled_from(STANDALONE), st.integers(0, 5), keyless)
def test_a_key_between_separators_is_always_masked_and_nothing_else_changes(before, kind, seed, after):
    key = fake(kind, seed)
    for left, right in ((" ", " "), ('"', '"'), ("\n", "\n"), ("=", "&"), (".", ",")):
        text = f"{before}{left}{key}{right}{after}"
        out = R.text(text)
        assert key not in out
        assert len(out) == len(text)
        assert out == text.replace(key, marker(len(key)).decode())


def _stream(r: Redactor, data: bytes, cuts: list[int]):
    s, out, pos = r.stream(), [], 0
    for i, cut in enumerate(cuts):
        out += s.feed(data[pos : pos + cut], i)
        pos += cut
    out += s.feed(data[pos:], len(cuts))
    return out + s.finish()


@PROP
@given(keyless, st.sampled_from(STANDALONE + ("env",)), keyless, st.lists(st.integers(0, 400), max_size=12))
def test_streamed_redaction_equals_whole_redaction_and_keeps_every_chunk(before, kind, after, cuts):
    secret = "Zq7Env0Secret9Value" if kind == "env" else fake(kind)
    data = f"data: {before} {secret} {after}\n\n".encode()
    out = _stream(R, data, cuts)
    assert [t for t, _ in out] == list(range(len(cuts) + 1))
    sizes = [len(c) for _, c in out]
    expected_sizes = []
    pos = 0
    for cut in cuts + [len(data)]:
        expected_sizes.append(len(data[pos : pos + cut]))
        pos += cut
    assert sizes == expected_sizes
    joined = b"".join(c for _, c in out)
    assert secret.encode() not in joined
    assert joined == _plain(data)


def _plain(data: bytes) -> bytes:
    """Whole-body redaction without the base64 step (streams do not decode base64)."""
    buf = bytearray(data)
    for h in R.detector.find(data):
        buf[h.start : h.end] = marker(h.end - h.start)
    return bytes(buf)


# The faster searches of issue 15 (one anchor pass, base64 runs without a look-behind)
# must find what the plain ones did; these plain forms are the reference.
_B64_ALPHABET = "ABCxyz019+/_-="


def _reference_find(detector, data: bytes, start: int, final: bool):
    """Detector.find with every rule tried at every anchor (no one-pass pre-check)."""
    import re

    from proxy.redaction import Detector

    plain = Detector.__new__(Detector)
    plain.__dict__.update(detector.__dict__)
    plain._any_anchor = re.compile(b"")  # matches everywhere: every rule is tried
    return plain.find(data, start, final)


@PROP
@given(st.lists(st.one_of(st.text(_B64_ALPHABET, max_size=40), st.text(max_size=6),
                          st.sampled_from(["sk-", "AKIA", "ccess_key=", "ession_token: ", "eyJ", "%3D", "\\n"]),
                          st.sampled_from(STANDALONE).map(fake),
                          st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())), max_size=12),
       st.integers(0, 300), st.booleans())
def test_the_faster_searches_find_what_the_plain_ones_did(pieces, start, final):
    from proxy.redaction import _B64_RUN, _b64_matches

    data = "".join(pieces).encode("utf-8", "surrogateescape")
    assert [m.span() for m in _b64_matches(data)] == [m.span() for m in _B64_RUN.finditer(data)]
    start = min(start, len(data))
    d = R.detector
    assert d.find(data, start, final) == _reference_find(d, data, start, final)

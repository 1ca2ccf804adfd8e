"""proxy.redaction: what is found, where, and what is never touched."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
import zlib
from urllib.parse import quote

import pytest

from proxy.encoding import Encoder, decode_body, encode_body
from proxy.model import Direction
from proxy.redaction import (
    BREAKERS,
    REDACTED,
    RULES,
    SECRET_HEADERS,
    Detector,
    Redactor,
    env_secrets,
    marker,
    undecodable_marker,
)

from .fake_secrets import REPORTED, STANDALONE, fake

# Words that hold "sk-", "ek_", "AIza", "eyJ", "AKIA" ... and were once rewritten. Hyphenated
# ones are joined at run time, so that no tracked line holds "sk-" and 20 key characters.
KEYLIKE_WORDS = ["-".join(w.split()) for w in (
    "task specific instructions", "ask the user before running", "risk based authentication flow",
    "sk learn compatible estimators", "sk Learn Compatible Estimators", "disk usage monitoring dashboard",
    "xoxb is a slack prefix", "sk " + "x" * 30,
)] + [
    "peek_at_the_next_token_in_stream", "seek_position_for_the_next_frame", "AIzaSomethingButOnlyWordsHereOk",
    "eyJustWantToTalkAboutTheseTokens", "AKIAFRIENDLYREMINDERS", "ghp_is_how_github_tokens_start_ok",
    "session_token_lifetime_in_seconds", "secret_access_key_rotation_policy", "MonkeyPatchingTheKeyboardLayout",
]
TASK_WORDS = KEYLIKE_WORDS[0]


def test_every_format_is_found_and_masked_to_the_same_length():
    r = Redactor()
    for kind in STANDALONE:
        key = fake(kind)
        for before, after in (('{"k":"', '"}'), ("Bearer ", "\n"), ("", ""), ("key=", "&x=1"), ("(", ")")):
            data = f"{before}{key}{after}".encode()
            out = r.data(data)
            assert len(out) == len(data), kind
            assert key.encode() not in out, (kind, before)
            assert out == f"{before}{marker(len(key)).decode()}{after}".encode(), (kind, before)
        (hit,) = r.detector.find(key.encode())
        assert hit.kind == REPORTED[kind]


def test_aws_secret_keys_and_session_tokens_in_their_contexts():
    r = Redactor()
    secret, token = fake("aws-secret-key"), fake("aws-session-token")
    token_plain = token.replace("IQoJ", "Zz9Q", 1)  # not the STS prefix: found only by its name
    for text in (f"aws_secret_access_key = {secret}\n", f'"SecretAccessKey": "{secret}"',
                 f"<SecretAccessKey>{secret}</SecretAccessKey>", f"AWS_SECRET_ACCESS_KEY={secret}",
                 f'{{"SessionToken":"{token_plain}"}}', f"aws_session_token={token_plain}", f"x {token} y"):
        out = r.text(text)
        assert secret not in out and token not in out and token_plain not in out, text
        assert len(out) == len(text)
        assert out.startswith(text.split(secret)[0].split(token)[0].split(token_plain)[0])  # the name stays
    assert r.text(f"just forty chars: {secret}") == f"just forty chars: {secret}"  # no name: not a key


def test_words_uuids_and_blobs_are_never_touched():
    r = Redactor()
    for w in KEYLIKE_WORDS + [str(uuid.uuid4()) for _ in range(20)] + [uuid.uuid4().hex * 2]:
        for text in (w, f'{{"text":"{w}"}}', f"data: {w}\n\n", f"Bearer {w}"):
            assert r.text(text) == text
            assert r.data(text.encode()) == text.encode()
        assert r.path(f"/v1/files/{w}") == f"/v1/files/{w}"
        assert r.query(f"q={w}&n=1") == f"q={w}&n=1"
    jwt_like = "eyJub3QiOiJhIGp3dCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefgh"  # header without alg/typ
    assert r.text(jwt_like) == jwt_like


def test_a_4mb_base64url_token_is_returned_as_is_and_fast():
    """The case that once deleted 4 MB: sk- inside a base64url token is no key."""
    r = Redactor()
    blob = base64.urlsafe_b64encode(os.urandom(3_000_000)).rstrip(b"=")
    blob = blob[:1000] + b"sk-" + blob[1000:2_000_000] + b"-sk-" + blob[2_000_000:]
    body = b'{"encrypted_content":"' + blob + b'","note":"' + TASK_WORDS.encode() + b'"}'
    t = time.perf_counter()
    assert r.data(body) is body
    elapsed = time.perf_counter() - t
    assert elapsed < 3.0, elapsed  # ~0.1-0.2 s here; generous for a loaded machine
    key = fake("openai-project-key").encode()
    with_key = body.replace(b'"note":"', b'"note":"' + key + b" ")
    out = r.data(with_key)
    assert len(out) == len(with_key) and key not in out
    assert out.replace(marker(len(key)), key) == with_key


def test_base64_inside_json_is_decoded_scrubbed_and_re_encoded():
    r = Redactor()
    key = fake("anthropic-key")
    for b64 in (base64.b64encode, base64.urlsafe_b64encode):
        inner = json.dumps({"headers": {"x-api-key": key}}).encode()
        frame = json.dumps({"type": "input", "audio": b64(inner).decode()}).encode()
        out = r.data(frame)
        assert len(out) == len(frame)
        decoded = (base64.b64decode if b64 is base64.b64encode else base64.urlsafe_b64decode)(json.loads(out)["audio"])
        assert key.encode() not in decoded and b"REDACTED" in decoded
    audio = base64.b64encode(os.urandom(30_000)).decode()
    frame = json.dumps({"type": "input_audio_buffer.append", "audio": audio}).encode()
    assert r.data(frame) is frame


def test_headers_every_secret_name_and_every_authorization_scheme():
    r = Redactor()
    key = fake("openai-key")
    names = sorted(SECRET_HEADERS) + ["X-Goog-Api-Key", "x-ms-authorization-auxiliary", "X-Amz-Security-Token"]
    out = r.headers([(n, "anything at all") for n in names])
    assert all(v == REDACTED for _, v in out)
    for scheme in ("Bearer", "Basic", "AWS4-HMAC-SHA256 Credential=x", "Token", "Digest"):
        assert r.headers([("Authorization", f"{scheme} {key}")]) == [("Authorization", REDACTED)]
    # keys in other headers are masked in place: the realtime subprotocol carries one
    proto = f"realtime, openai-insecure-api-key.{key}, openai-beta.realtime-v1"
    ((_, v),) = r.headers([("Sec-WebSocket-Protocol", proto)])
    assert key not in v and v.startswith("realtime, openai-insecure-api-key.REDACTED") and len(v) == len(proto)
    kept = [("x-codex-turn-state", "abc"), ("x-claude-code-session-id", str(uuid.uuid4())), ("idempotency-key", "k1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]
    assert r.headers(kept) == kept


def test_query_values_are_replaced_in_place_and_paths_masked():
    r = Redactor()
    key = fake("google-api-key")
    q = f"alt=sse&key={key}&q=a%20b+c&empty=&flag"
    assert r.query(q) == f"alt=sse&key={REDACTED}&q=a%20b+c&empty=&flag"  # nothing else re-encoded
    assert r.query(f"X-Amz-Security-Token={quote(fake('aws-session-token'), safe='')}&x=1") == \
        f"X-Amz-Security-Token={REDACTED}&x=1"
    assert r.query(f"model=gpt&other={key}") == f"model=gpt&other={marker(len(key)).decode()}"
    assert r.query("model=gpt-realtime") == "model=gpt-realtime"
    path = f"/v1beta/models/gemini:streamGenerateContent/{key}/x"
    assert r.path(path) == path.replace(key, marker(len(key)).decode())
    assert r.target(f"/ws?key={key}&v=1") == f"/ws?key={REDACTED}&v=1"  # Gemini Live's handshake URL


def test_env_secrets_are_named_and_valued_conservatively():
    value = "Zq7" + "a1B2c3D4e5F6g7H8"
    env = {
        "OPENAI_API_KEY": value + "1", "GH_TOKEN": value + "2", "MY_SECRET": value + "3", "DB_PASSWORD": value + "4",
        "APIKEY": value + "5", "AWS_SECRET_ACCESS_KEY": value + "6",
        # not secrets
        "TOKENIZERS_PARALLELISM": "false", "KEYBOARD_LAYOUT": value, "SSH_KEY_PATH": "/home/u/.ssh/id_ed25519",
        "OAUTH_TOKEN_URL": "https://example.com/oauth/token", "SORT_KEY": "created_at_desc_order",
        "SHORT_TOKEN": "Ab1", "API_KEY_FILE": value, "HOME": value, "PWD": value, "SPACED_SECRET": "Ab1 " * 5,
    }
    found = dict(env_secrets(env))
    assert found == {k: env[k] for k in ("OPENAI_API_KEY", "GH_TOKEN", "MY_SECRET", "DB_PASSWORD", "APIKEY",
                                         "AWS_SECRET_ACCESS_KEY")}


def test_env_secret_values_are_scrubbed_raw_json_escaped_and_percent_encoded():
    value = "pa$$/Word+" + "Zq7" * 4 + "\u00e9"
    r = Redactor.build(environ={"SERVICE_PASSWORD": value})
    for form in (value, json.dumps(value)[1:-1], quote(value, safe="")):
        text = f'{{"x":"{form}"}}'
        out = r.text(text)
        assert form not in out and len(out.encode()) == len(text.encode()), form
    assert r.query(f"p={quote(value, safe='')}") == f"p={marker(len(quote(value, safe=''))).decode()}"
    (hit,) = r.detector.find(value.encode())
    assert hit.kind == "env:SERVICE_PASSWORD"


def test_user_patterns_and_json_paths_still_apply():
    r = Redactor.build(extra_patterns=[r"tok_live_\w+"], json_paths=["user.email"])
    assert r.text("a tok_live_123abc b") == "a REDACTED******* b"
    assert json.loads(r.body(b'{"user":{"email":"a@b"},"x":1}')) == {"user": {"email": REDACTED}, "x": 1}
    assert Redactor(enabled=False).data(fake("openai-key").encode()) == fake("openai-key").encode()


def test_rules_are_bounded_and_their_bytes_exclude_the_breakers():
    """max_len bounds every match, and no built-in match holds a breaker byte (what
    lets a stream release a chunk that ends on one)."""
    r = Redactor()
    for kind in STANDALONE:
        key = fake(kind).encode()
        assert not set(key) & BREAKERS
        (hit,) = r.detector.find(key)
        rule = next(x for x in RULES if x.kind == hit.kind)
        assert hit.end - hit.start <= rule.max_len
    assert {b"\n"[0], b"}"[0], b","[0], 0, 255} <= BREAKERS


# -- streams --------------------------------------------------------------------


def _stream(r: Redactor, chunks: list[bytes]) -> list[tuple[object, bytes]]:
    s = r.stream()
    out = []
    for i, c in enumerate(chunks):
        out += s.feed(c, i)
    return out + s.finish()


def test_a_key_split_across_chunks_at_every_position_is_masked_and_boundaries_kept():
    r = Redactor()
    for kind in ("openai-project-key", "jwt", "aws-access-key-id", "google-api-key"):
        key = fake(kind)
        data = f'data: {{"type":"x","secret":"{key}"}}\n\n'.encode()
        expect = r.data(data)
        assert key.encode() not in expect
        for cut in range(1, len(data)):
            out = _stream(r, [data[:cut], data[cut:]])
            assert [t for t, _ in out] == [0, 1]
            assert [len(c) for _, c in out] == [cut, len(data) - cut]
            assert b"".join(c for _, c in out) == expect, (kind, cut)


def test_a_key_split_three_ways_and_an_env_literal_split():
    key = fake("anthropic-key")
    value = "Zq7" + "x9Y8w7V6u5T4"
    r = Redactor.build(environ={"UPSTREAM_TOKEN": value})
    data = f"{key}|{value}|end".encode()
    for a in range(1, len(data) - 1, 7):
        for b in range(a + 1, len(data), 11):
            out = _stream(r, [data[:a], data[a:b], data[b:]])
            joined = b"".join(c for _, c in out)
            assert [len(c) for _, c in out] == [a, b - a, len(data) - b]
            assert key.encode() not in joined and value.encode() not in joined


def test_chunks_ending_on_a_breaker_are_released_at_once_others_when_decided():
    r = Redactor()
    s = r.stream()
    assert s.feed(b'data: {"a":1}\n\n', "e1") == [("e1", b'data: {"a":1}\n\n')]
    assert s.feed(b'data: {"text":"to', "e2") == []  # could be the start of a key: held
    assert s.feed(b'day"}\n\n', "e3") == [("e2", b'data: {"text":"to'), ("e3", b'day"}\n\n')]
    assert s.finish() == []
    # a base64 run in progress is held until it ends (to be decoded whole), up to B64_HOLD
    s = r.stream()
    blob = base64.urlsafe_b64encode(os.urandom(1_000_000))
    step, released = 65_536, 0
    for i in range(0, len(blob), step):
        released += sum(len(c) for _, c in s.feed(blob[i : i + step], i))
        held = min(i + step, len(blob)) - released
        assert held <= s.B64_HOLD + r.detector.max_len + step
    assert 0 < released < len(blob)  # past B64_HOLD the run is released behind the key lookahead
    assert released + sum(len(c) for _, c in s.finish()) == len(blob)
    s = r.stream()
    assert s.feed(b'{"audio":"' + blob[:1000], 1) == [] and s.feed(blob[1000:2000] + b'"}', 2) != []


def test_disabled_redaction_streams_through():
    s = Redactor(enabled=False).stream()
    key = fake("openai-key").encode()
    assert s.feed(key[:10], 1) == [(1, key[:10])] and s.feed(key[10:], 2) == [(2, key[10:])]


def test_detector_literals_and_patterns_together():
    d = Detector(patterns=[r"cust_[0-9]{6}"], literals=[("X_TOKEN", "Zq7" + "abcdefghij")])
    hits = d.find(b"a cust_123456 b Zq7abcdefghij c")
    assert [h.kind for h in hits] == ["pattern", "env:X_TOKEN"]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 40])
def test_marker_has_the_length_of_the_secret(n):
    assert len(marker(n)) == n and marker(n).startswith(b"REDACTED"[: min(n, 8)])


# -- request bodies, compressed responses, WebSocket messages -------------------------


def test_request_bodies_are_decoded_by_the_shared_codec_then_scrubbed():
    r = Redactor()
    key = fake("openai-key")
    body = json.dumps({"input": f"my key {key}"}).encode()
    for enc in (None, "gzip", "x-gzip", "deflate", "br", "zstd", "gzip, gzip", "identity, gzip", "br, zstd"):
        stored, problem = r.request_body(encode_body(body, enc) if enc else body, enc)
        assert problem is None and stored == r.data(body) and key.encode() not in stored, enc
    for raw, enc in ((b"not gzip " + key.encode(), "gzip"), (b"x", "compress"),
                     (encode_body(bytes(2_000_000), "zstd"), "zstd")):
        stored, problem = r.request_body(raw, enc, limit=1_000_000)
        assert stored == undecodable_marker(enc) and problem, enc  # never the bytes as sent
    assert Redactor(enabled=False).request_body(encode_body(body, "br"), "br") == (body, None)


def _response(r: Redactor, encoding, chunks):
    s = r.response_body(encoding)
    out = []
    for i, c in enumerate(chunks):
        out += s.feed(c, i)
    return s, out + s.finish()


def test_a_compressed_response_is_stored_as_it_came_or_re_encoded_chunk_by_chunk():
    r = Redactor()
    key = fake("anthropic-key")
    sse = b"".join(f'data: {{"i":{i},"text":"{key if i == 7 else "word"}"}}\n\n'.encode() for i in range(20))
    for enc in ("gzip", "deflate", "br", "zstd", "gzip, br"):
        e = Encoder(enc)
        chunks = [e.feed(sse[i : i + 97]) for i in range(0, len(sse), 97)] + [e.finish()]
        s, out = _response(r, enc, chunks)
        assert [t for t, _ in out] == list(range(len(chunks))) and s.length_changed
        body = decode_body(b"".join(c for _, c in out), enc)
        assert body == r.data(sse) and key.encode() not in body
        clean = Encoder(enc)
        plain = [clean.feed(b"data: {}\n\n"), clean.finish()]
        s, out = _response(r, enc, plain)
        assert [c for _, c in out] == plain and not s.length_changed  # no secret: the bytes as they came
    # a body that does not decode as declared is scrubbed as the bytes it is
    s, out = _response(r, "gzip", [b"plain " + key.encode()[:40], key.encode()[40:] + b" text"])
    assert s.warning and [len(c) for _, c in out] == [46, len(key) - 40 + 5]
    assert key.encode() not in b"".join(c for _, c in out)


def test_websocket_messages_keep_their_order_and_a_key_split_across_two_is_caught():
    r = Redactor()
    key = fake("openai-project-key").encode()
    f = r.frames()
    out = f.feed(Direction.CLIENT, b'{"a":"' + key[:50], "c1")
    assert out == []  # could be the start of a key: held, and what follows with it
    out += f.feed(Direction.SERVER, b'{"type":"ping"}', "s1")
    out += f.feed(Direction.CLIENT, key[50:] + b'"}', "c2")
    out += f.feed(Direction.SERVER, json.dumps({"b64": base64.b64encode(key).decode()}).encode(), "s2")
    out += f.finish()
    assert [t for t, _ in out] == ["c1", "s1", "c2", "s2"]
    assert out[0][1] == b'{"a":"' + marker(len(key))[:50] and out[2][1] == marker(len(key))[50:] + b'"}'
    assert key not in base64.b64decode(json.loads(out[3][1])["b64"])
    # past MAX_HELD the oldest side is flushed: memory stays bounded
    f = r.frames()
    assert f.feed(Direction.CLIENT, b"abc", 0) == []
    released = []
    for i in range(1, 40):
        released += f.feed(Direction.SERVER, b"\x00" * 50_000, i)
    assert released and released[0] == (0, b"abc")


def test_a_key_right_after_a_json_or_percent_escape_is_found_whole_and_streamed():
    # "\n" before a key in a JSON string, "%3D" before one in a query: the escape's last
    # character is a key character, and the key was stored as sent
    r = Redactor()
    for kind in STANDALONE:
        key = fake(kind)
        for data in (f'{{"content":"my key:\\n{key}"}}', f'{{"c":"\\t{key}\\u0022{key}"}}',
                     f"next=%2Fv1%3Fkey%3D{key}%26a%3D1", f"q=a%20{key}"):
            data = data.encode()
            out = r.data(data)
            assert key.encode() not in out and len(out) == len(data), (kind, data[:12])
            for cut in range(1, len(data), 5):
                assert b"".join(c for _, c in _stream(r, [data[:cut], data[cut:]])) == out, (kind, cut)


def test_a_compressed_response_that_decodes_in_part_does_not_keep_the_key_in_its_wire_bytes():
    # a gzip body then bytes that are no gzip: the wire bytes gunzip to the key
    r = Redactor()
    key = fake("openai-project-key").encode()
    sse = b'data: {"k":"' + key + b'"}\n\n'
    gz = encode_body(sse, "gzip")
    for chunks in ([gz + b"XYZ"], [gz[:20], gz[20:] + b"XYZ"], [gz, b"XYZ"], [gz + gz + b"\x01junk"]):
        s, out = _response(r, "gzip", chunks)
        stored = b"".join(c for _, c in out)
        d = zlib.decompressobj(31)
        decoded = d.decompress(stored)
        assert key not in stored and key not in decoded and decoded.startswith(r.data(sse)), chunks
        assert s.warning and s.length_changed
    # what decodes holds no key: the bytes as they came
    clean = encode_body(b"data: {}\n\n", "gzip") + b"XYZ"
    s, out = _response(r, "gzip", [clean])
    assert [c for _, c in out] == [clean] and s.warning


def test_a_key_alone_in_a_message_between_messages_of_key_characters_is_masked():
    # joined per direction, "hello" + key + "abc" is one long token that no rule takes
    r = Redactor()
    for kind in ("google-api-key", "openai-key", "aws-access-key-id", "github-token"):
        key = fake(kind).encode()
        f = r.frames()
        out = f.feed(Direction.CLIENT, b"hello", 1) + f.feed(Direction.CLIENT, key, 2)
        out += f.feed(Direction.CLIENT, b"abc", 3) + f.finish()
        assert out == [(1, b"hello"), (2, marker(len(key))), (3, b"abc")], kind


def test_a_request_body_nested_too_deep_for_json_is_scrubbed_as_bytes_not_an_error():
    """With --redact-json-path the body is parsed first; a body nested deeper than the
    parser's recursion limit (200 KB of "[") is not JSON to us. Raising instead stopped the
    recorder: the request body is redacted on the writer thread, where any exception is a
    failed write."""
    r = Redactor.build(json_paths=["$.metadata.user_id"], environ={})
    body = b"[" * 200_000
    assert r.request_body(body, None) == (body, None)

"""proxy.audit: a key planted anywhere in a cassette is found, fully decoded; a clean
cassette has no finding."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
from pathlib import Path

import pytest

from proxy.audit import Auditor, Finding, audit
from proxy.encoding import encode_body
from proxy.model import Chunk, Close, Direction, End, Frame, Interaction, Kind, Request, Response
from proxy.redaction import REDACTED, Redactor, marker
from proxy.store import Cassette, CassetteError

from .conftest import ROOT
from .fake_secrets import fake
from .test_redaction import KEYLIKE_WORDS

ENV_SECRET = "Zq7" + "AuditEnv0Value9"
AUDITOR = Auditor(Redactor.build(environ={"UPSTREAM_API_KEY": ENV_SECRET}))


def _http(path="/v1/responses", query="", headers=(), body=b"", encoding=None, rheaders=(), chunks=(), **kw):
    return Interaction(
        Kind.HTTP,
        Request("POST", path, query, list(headers), body, encoding, host="api.example.com"),
        Response(200, "OK", list(rheaders)),
        [Chunk(i * 0.01, c) for i, c in enumerate(chunks)],
        end=kw.pop("end", End.COMPLETE),
        **kw,
    )


def _split(data: bytes, at: bytes) -> list[bytes]:
    i = data.index(at) + len(at) // 2
    return [data[:i], data[i:]]


def planted() -> list[tuple[Interaction, str, str]]:
    """(interaction, location, kind) with one secret each, in every place a key travels."""
    oa, goog, jwt, ant = fake("openai-project-key"), fake("google-api-key"), fake("jwt"), fake("anthropic-key")
    gh, ek, aws = fake("github-token"), fake("openai-ephemeral-key"), fake("aws-access-key-id")
    sse = f'data: {{"type":"x","echo":"{oa}"}}\n\n'.encode()
    out = [
        (_http(path=f"/v1/keys/{oa}"), "request.path", "openai-key"),
        (_http(query=f"alt=sse&key={goog}"), "request.query[key]", "secret-param"),
        (_http(query=f"alt=sse&key={goog}"), "request.query", "google-api-key"),
        (_http(headers=[("x-goog-api-key", goog)]), "request.header[x-goog-api-key]", "secret-header"),
        (_http(headers=[("x-trace", f"Bearer {jwt}")]), "request.header[x-trace]", "jwt"),
        (_http(body=json.dumps({"k": ant.replace("s", "\\u0073", 1)}).encode().replace(b"\\\\", b"\\")),
         "request.body.json", "anthropic-key"),
        (_http(body=json.dumps({"blob": base64.b64encode(json.dumps({"t": gh}).encode()).decode()}).encode()),
         "request.body.base64", "github-token"),
        (_http(body=gzip.compress(json.dumps({"k": oa}).encode()), encoding="gzip"),
         "request.body.decoded(gzip)", "openai-key"),
        (_http(rheaders=[("set-cookie", "session=abc123")]), "response.header[set-cookie]", "secret-header"),
        (_http(chunks=_split(sse, oa.encode())), "response.body", "openai-key"),
        (_http(end=End.UPSTREAM_CUT, end_detail=f"upstream cut: https://x/?u={aws}"), "end_detail",
         "aws-access-key-id"),
        (_http(body=f"token {ENV_SECRET}".encode()), "request.body", "env:UPSTREAM_API_KEY"),
    ]
    for enc in ("gzip", "br", "zstd", "deflate", "gzip, br"):
        encoded = encode_body(sse * 20, enc)
        half = len(encoded) // 2
        out.append((_http(rheaders=[("content-encoding", enc)], chunks=[encoded[:half], encoded[half:]]),
                    f"response.body.decoded({enc})", "openai-key"))
    ws = Interaction(
        Kind.WEBSOCKET,
        Request("GET", "/v1/realtime", "model=gpt-realtime", [("authorization", REDACTED)]),
        Response(101, "Switching Protocols", []),
        frames=[
            Frame(Direction.SERVER, True, 0.1, json.dumps({"client_secret": {"value": ek}}).encode()),
            Frame(Direction.CLIENT, False, 0.2, b"\x00\x01" + goog.encode() + b"\xff"),
            Frame(Direction.CLIENT, True, 0.3, json.dumps(
                {"audio": base64.b64encode(f"say {jwt} now".encode()).decode()}).encode()),
            Frame(Direction.CLIENT, True, 0.4, b'{"part":"' + ant.encode()[:30]),
            Frame(Direction.CLIENT, True, 0.5, ant.encode()[30:] + b'"}'),
        ],
        end=End.COMPLETE,
        close=Close(4000, f"bad key {gh}", Direction.SERVER),
    )
    out += [
        (ws, "frame[1].server.text", "openai-ephemeral-key"),
        (ws, "frame[2].client.binary", "google-api-key"),
        (ws, "frame[3].client.text.base64", "jwt"),
        (ws, "frames.client(split)", "anthropic-key"),
        (ws, "close.reason", "github-token"),
    ]
    return out


def _write(path: Path, its, **meta) -> Path:
    with Cassette.create(path, upstream=meta.get("upstream", "https://api.example.com")) as c:
        for it in its:
            c.append(it)
    return path


def test_a_key_planted_in_each_place_is_found_there(tmp_path):
    cases = planted()
    its = list({id(it): it for it, _, _ in cases}.values())
    path = _write(tmp_path / "planted.db", its)
    findings = AUDITOR.file(path)
    got = {(f.interaction, f.location, f.kind) for f in findings}
    for it, location, kind in cases:
        seq = its.index(it) + 1
        assert (seq, location, kind) in got, (seq, location, kind, sorted(x for x in got if x[0] == seq))
    # one line per finding, the value masked
    secrets = [fake(k) for k in ("openai-project-key", "google-api-key", "jwt", "anthropic-key", "github-token",
                                 "openai-ephemeral-key", "aws-access-key-id")] + [ENV_SECRET]
    for f in findings:
        line = str(f)
        assert "\n" not in line and line.startswith(f"{path} #")
        assert not any(s in line or s[4:20] in line for s in secrets), line


def test_meta_values_are_audited(tmp_path):
    goog = fake("google-api-key")
    path = _write(tmp_path / "m.db", [_http()], upstream=f"https://generativelanguage.example/?key={goog}")
    assert [(f.interaction, f.location, f.kind) for f in AUDITOR.file(path)] == [(None, "meta.upstream",
                                                                                  "google-api-key")]


def test_a_clean_cassette_and_markers_have_no_finding(tmp_path):
    key = fake("openai-key")
    clean = [
        _http(path="/v1/files/" + marker(len(key)).decode(), query=f"key={REDACTED}&q={KEYLIKE_WORDS[0]}",
              headers=[("authorization", REDACTED), ("x-goog-api-key", REDACTED), ("x-request-id", "req_123")],
              body=json.dumps({"input": KEYLIKE_WORDS[1], "k": marker(60).decode()}).encode(),
              rheaders=[("content-encoding", "gzip"), ("set-cookie", REDACTED)],
              chunks=[gzip.compress(b"data: {\"type\":\"done\"}\n\n")]),
        _http(body=json.dumps({"encrypted_content": base64.urlsafe_b64encode(bytes(range(256)) * 400).decode()})
              .encode()),
    ]
    path = _write(tmp_path / "clean.db", clean)
    assert AUDITOR.file(path) == []
    assert audit([ROOT / "cassettes" / "example.db"]) == []


def test_the_wal_and_rows_no_longer_live_are_audited(tmp_path):
    """A key committed to the WAL but not checkpointed, and one in the page image a change
    left in the -wal, are both found."""
    oa, gh = fake("openai-key"), fake("github-token")
    path = tmp_path / "live.db"
    c = Cassette.create(path)
    try:
        c.append(_http(body=json.dumps({"k": oa}).encode()))
        assert Path(str(path) + "-wal").stat().st_size > 0
        found = AUDITOR.file(path)  # the recorder still has it open: the row is only in the WAL
        assert [(f.interaction, f.location, f.kind) for f in found] == [(1, "request.body", "openai-key")]
    finally:
        c.close()
    # a value changed in WAL mode: the page before the change stays in the -wal
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    with db:
        db.execute("UPDATE interactions SET end_detail=? WHERE seq=1", (f"token {gh} " + "x" * 200,))
    with db:
        db.execute("UPDATE interactions SET end_detail='' WHERE seq=1")
    found = AUDITOR.file(path)
    db.close()
    assert {(f.interaction, f.location.split("@")[0], f.kind) for f in found} == {
        (1, "request.body", "openai-key"), (None, "wal", "github-token")}


def test_the_audited_file_is_not_changed(tmp_path):
    path = _write(tmp_path / "x.db", [_http(body=fake("openai-key").encode())])
    before = path.read_bytes()
    assert len(AUDITOR.file(path)) == 1
    assert path.read_bytes() == before and not Path(str(path) + "-wal").exists()


def test_a_file_that_is_no_cassette_is_an_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite at all")
    with pytest.raises(CassetteError, match="not a SQLite file"):
        AUDITOR.file(bad)
    with pytest.raises(CassetteError):
        AUDITOR.file(tmp_path / "missing.db")


def test_an_old_cassette_is_audited_through_a_migrated_copy_and_left_unchanged(tmp_path):
    # committed cassettes of an older schema must be auditable (a pre-commit hook runs on
    # them) without migrating the user's file: the audit migrates its own copy
    for version in (1, 2):
        old = tmp_path / f"old-v{version}.db"
        before = (ROOT / "tests" / "data" / f"example-v{version}.db").read_bytes()
        old.write_bytes(before)
        assert AUDITOR.file(old) == []
        assert old.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(old.name)) == [old.name]


def test_finding_is_one_line_of_data():
    f = Finding("c.db", 3, "request.header[x-goog-api-key]", "secret-header", "[39 bytes]")
    assert str(f) == "c.db #3 request.header[x-goog-api-key] secret-header [39 bytes]"
    assert str(Finding("c.db", None, "wal@4096", "jwt", "eyJh…[141 bytes]")).startswith("c.db #- wal@4096 jwt")

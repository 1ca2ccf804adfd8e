"""Record modes (proxy serve), forward-proxy recording, proxy ca, the multi-cassette server."""

from __future__ import annotations

import json
import shutil
import signal
import ssl

import httpx
import pytest
from websockets.sync.client import connect

from proxy.model import Kind
from proxy.store import Cassette

from .conftest import API_KEY, ROOT, proxy_proc, run_cli
from .fake_secrets import assert_clean

AUTH = {"authorization": f"Bearer {API_KEY}"}
STREAM = {"model": "sim-1", "input": "modes", "stream": True}


def serve(cassette, mode, upstream=None, *extra):
    args = ["serve", "--cassette", str(cassette), "--record-mode", mode, "--listen", "127.0.0.1:0", "--speed", "0", *extra]
    if upstream:
        args += ["--upstream", upstream]
    return proxy_proc(*args)


def count(path) -> int:
    with Cassette.open(path) as c:
        return c.count()


def test_once_records_then_replays(upstream, tmp_path):
    c = tmp_path / "once.db"
    with serve(c, "once", upstream.url) as p:
        assert "record mode once: record" in p.first_line
        first = httpx.post(p.url + "/v1/responses", json=STREAM, headers=AUTH).content
    seen = len(upstream.app.requests)
    with serve(c, "once", upstream.url) as p:
        assert "record mode once: replay" in p.first_line
        assert httpx.post(p.url + "/v1/responses", json=STREAM, headers=AUTH).content == first
    assert len(upstream.app.requests) == seen  # replayed, not forwarded


def test_new_episodes_replays_matches_and_appends_the_rest(upstream, tmp_path):
    c = tmp_path / "ne.db"
    with serve(c, "once", upstream.url) as p:
        a = httpx.post(p.url + "/v1/responses", json=STREAM, headers=AUTH).content
    assert count(c) == 1
    with serve(c, "new_episodes", upstream.url) as p:
        assert "replay+record" in p.first_line
        before = len(upstream.app.requests)
        assert httpx.post(p.url + "/v1/responses", json=STREAM, headers=AUTH).content == a  # from the cassette
        assert len(upstream.app.requests) == before
        with httpx.stream("POST", p.url + "/v1/chat/completions", headers={**AUTH, "x-sim-gap-ms": "30"},
                          json={"model": "sim-1", "stream": True, "messages": [{"role": "user", "content": "new"}]}) as r:
            chunks = list(r.iter_raw())  # forwarded upstream, streamed through as it arrives
        assert len(chunks) >= 5 and b"[DONE]" in chunks[-1]
        with connect(p.url.replace("http", "ws") + "/v1/responses", additional_headers=AUTH) as ws:
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "ws episode"}))
            while json.loads(ws.recv(timeout=5))["type"] != "response.completed":
                pass
        assert len(upstream.app.requests) == before + 2
        p.stop()
    assert "recorded 2 new interaction(s)" in p.out
    with Cassette.open(c) as cas:
        its = list(cas.interactions())
    assert [(it.kind, it.request.path) for it in its] == [
        (Kind.HTTP, "/v1/responses"), (Kind.HTTP, "/v1/chat/completions"), (Kind.WEBSOCKET, "/v1/responses")]
    assert [c.data for c in its[1].chunks] == chunks  # recorded with its chunk boundaries
    upstream.stop_thread()
    with serve(c, "none") as p:
        assert httpx.post(p.url + "/v1/chat/completions", json={}).content == b"".join(chunks)


def test_all_replaces_only_on_a_clean_end(upstream, tmp_path):
    c = tmp_path / "all.db"
    with serve(c, "once", upstream.url) as p:
        httpx.get(p.url + "/v1/models", headers=AUTH)
    with serve(c, "all", upstream.url) as p:
        httpx.post(p.url + "/v1/responses", json=STREAM, headers=AUTH)
        httpx.post(p.url + "/v1/responses", json=STREAM, headers=AUTH)
        with Cassette.open(c) as cas:  # the old cassette is untouched while recording
            assert [it.request.path for it in cas.interactions()] == ["/v1/models"]
    with Cassette.open(c) as cas:
        assert [it.request.path for it in cas.interactions()] == ["/v1/responses", "/v1/responses"]
    # a crash (SIGKILL) leaves the old cassette as it was
    with serve(c, "all", upstream.url) as p:
        httpx.get(p.url + "/v1/models", headers=AUTH)
        p.stop(signal.SIGKILL)
    assert count(c) == 2
    assert (tmp_path / "all.db.recording").exists()


def test_mode_errors(tmp_path):
    r = run_cli("serve", "--cassette", str(tmp_path / "missing.db"), "--listen", "127.0.0.1:0")
    assert r.returncode == 2 and "no such cassette" in r.stderr
    r = run_cli("serve", "--cassette", str(tmp_path / "x.db"), "--record-mode", "once", "--listen", "127.0.0.1:0")
    assert r.returncode == 2 and "needs an upstream" in r.stderr
    r = run_cli("serve", "--cassette", "x.db", "--record-mode", "new-episodes")
    assert r.returncode == 2 and "'new-episodes' is not one of" in r.stderr


def test_forward_proxy_recording_with_https_upstream(tls_upstream, tls_files, tmp_path):
    confdir = tmp_path / "mitm"
    ca = run_cli("ca", "--confdir", str(confdir))
    assert ca.returncode == 0
    ca_file = ca.stdout.strip()
    assert ca_file.endswith("mitmproxy-ca-cert.pem") and "BEGIN CERTIFICATE" in open(ca_file).read()
    assert run_cli("ca", "--confdir", str(confdir)).stdout.strip() == ca_file  # made already: the fast path
    c = tmp_path / "fwd.db"
    with proxy_proc("record", "--mode", "forward", "--cassette", str(c), "--listen", "127.0.0.1:0",
                    "--confdir", str(confdir), "--upstream-ca", str(tls_files / "ca.pem")) as p:
        assert "forward proxy" in p.first_line
        with httpx.Client(proxy=p.url, verify=ssl.create_default_context(cafile=ca_file)) as client:  # HTTPS_PROXY + trust mitmproxy's CA
            r = client.post(tls_upstream.url + "/v1/responses", json=STREAM, headers=AUTH)
        assert r.status_code == 200 and b"response.completed" in r.content
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA is refused
            httpx.get(tls_upstream.url + "/v1/models", proxy=p.url)
    with Cassette.open(c) as cas:
        (it,) = [i for i in cas.interactions() if i.request.path == "/v1/responses"]
    assert it.request.scheme == "https" and it.request.host == "127.0.0.1"
    assert it.body == r.content and len(it.chunks) > 5
    assert_clean(c, secrets=[API_KEY])


def test_cassette_dir_by_header_and_by_prefix(tmp_path):
    d = tmp_path / "cassettes"
    d.mkdir()
    shutil.copy(ROOT / "cassettes" / "example.db", d / "alpha.db")
    shutil.copy(ROOT / "cassettes" / "example.db", d / "beta.db")
    with proxy_proc("replay", "--cassette-dir", str(d), "--listen", "127.0.0.1:0", "--speed", "0") as p:
        assert "2 cassette(s)" in p.first_line
        a = httpx.get(p.url + "/v1/models", headers={"x-proxy-cassette": "alpha"})
        b = httpx.get(p.url + "/c/beta/v1/models")
        assert a.status_code == b.status_code == 200 and a.content == b.content
        again = httpx.get(p.url + "/c/alpha/v1/models")  # alpha's one recording is used up
        assert again.status_code == 404 and again.json()["error"]["code"] == "all_used"
        none = httpx.get(p.url + "/v1/models")
        assert none.status_code == 404 and "alpha, beta" in none.json()["error"]["message"]
        missing = httpx.get(p.url + "/c/gamma/v1/models")
        assert missing.status_code == 404 and "no such cassette" in missing.json()["error"]["message"]
        bad = httpx.get(p.url + "/v1/models", headers={"x-proxy-cassette": "../etc/passwd"})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "bad_cassette_name"
        with connect(p.url.replace("http", "ws") + "/c/beta/v1/responses") as ws:
            ws.send(json.dumps({"type": "response.create", "model": "sim-1", "generate": False}))
            assert json.loads(ws.recv(timeout=5))["type"] == "response.created"


def test_new_episodes_relays_the_request_headers_the_client_sent(upstream, tmp_path):
    # The relay drops only the client's connection and handshake headers; a Date header
    # (sent by some signing clients) is part of the message and reaches the upstream.
    c = tmp_path / "hdr.db"
    with serve(c, "once", upstream.url) as p:
        httpx.get(p.url + "/v1/models", headers=AUTH)
    date = "Tue, 01 Jul 2025 10:00:00 GMT"
    with serve(c, "new_episodes", upstream.url) as p:
        r = httpx.post(p.url + "/v1/responses", json={"model": "sim-1", "input": "dated"},
                       headers={**AUTH, "date": date, "x-sim-events": "2"})
        assert r.status_code == 200
    assert upstream.app.requests[-1]["headers"].get("date") == date
    with Cassette.open(c) as cas:
        assert cas.get(2).request.header("date") == date

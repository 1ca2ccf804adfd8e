"""HTTP and SSE end to end: simulator <- proxy record <- real clients; then proxy replay alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
import zstandard

from proxy.model import End
from proxy.testing import fake_key
from proxy.sse import parse
from proxy.store import Cassette

from .conftest import API_KEY, replayer
from .fake_secrets import assert_clean

AUTH = {"authorization": f"Bearer {API_KEY}"}


def raw_stream(base: str, path: str, body: dict, headers: dict) -> tuple[int, dict, list[tuple[float, bytes]], str]:
    """POST and read the raw body as the network delivers it: [(arrival s, bytes)], error."""
    chunks: list[tuple[float, bytes]] = []
    error = ""
    t0 = time.perf_counter()
    with httpx.Client(timeout=20) as c:
        with c.stream("POST", base + path, json=body, headers={**AUTH, **headers}) as r:
            try:
                for b in r.iter_raw():
                    chunks.append((time.perf_counter() - t0, b))
            except httpx.HTTPError as e:
                error = type(e).__name__
            return r.status_code, dict(r.headers), chunks, error


def gaps(chunks):
    return [b[0] - a[0] for a, b in zip(chunks, chunks[1:])]


def test_sse_stream_replays_same_bytes_boundaries_and_timing(upstream, recorder):
    hdrs = {"x-sim-gap-ms": "40", "x-sim-events": "6", "x-sim-fault": "split"}
    body = {"model": "sim-1", "input": "hello there", "stream": True}
    status, rh, rec_chunks, err = raw_stream(recorder.url, "/v1/responses", body, hdrs)
    assert status == 200 and not err
    assert recorder.stop() == 0
    assert "recorded 1 interaction(s)" in recorder.out

    with Cassette.open(recorder.cassette) as c:
        (it,) = list(c.interactions())
    # The cassette holds the chunks exactly as the client received them.
    assert [c.data for c in it.chunks] == [b for _, b in rec_chunks]
    assert it.end is End.COMPLETE and it.response.status == 200
    events = parse(it.body)
    assert events[0].event == "response.created" and events[-1].event == "response.completed"
    # one event was split across two chunks upstream, and stays split
    assert any(not c.data.endswith(b"\n\n") for c in it.chunks)

    upstream.stop_thread()  # no upstream from here on
    with replayer(recorder.cassette) as rp:
        status2, rh2, rep_chunks, err2 = raw_stream(rp.url, "/v1/responses", body, hdrs)
    assert status2 == 200 and not err2
    assert [b for _, b in rep_chunks] == [b for _, b in rec_chunks]  # same bytes, same boundaries
    assert rh2 == rh  # same headers, nothing added (no server/date)
    # timing: every gap within 20 ms of the recorded one, on a noisy 2-core machine
    for g_rec, g_rep in zip(gaps(rec_chunks), gaps(rep_chunks)):
        assert abs(g_rep - g_rec) < 0.020, (gaps(rec_chunks), gaps(rep_chunks))
    total_rec = rec_chunks[-1][0] - rec_chunks[0][0]
    total_rep = rep_chunks[-1][0] - rep_chunks[0][0]
    assert total_rec > 0.3 and abs(total_rep - total_rec) < 0.05


def test_openai_sdk_responses_and_chat_streams(upstream, recorder):
    client = openai.OpenAI(base_url=recorder.url + "/v1", api_key=API_KEY, max_retries=0)

    def run(client):
        out = {}
        with client.responses.create(model="sim-1", input="tell me", stream=True) as s:
            out["responses"] = [(e.type, getattr(e, "delta", None)) for e in s]
        chat = client.chat.completions.create(
            model="sim-1", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        out["chat"] = [(c.id, c.choices[0].delta.content) for c in chat]
        out["models"] = [m.id for m in client.models.list()]
        out["plain"] = client.responses.create(model="sim-1", input="no stream").output_text
        return out

    recorded = run(client)
    assert recorded["responses"][0][0] == "response.created"
    assert recorded["responses"][-1][0] == "response.completed"
    assert recorded["models"] == ["sim-1"]
    recorder.stop()
    upstream.stop_thread()
    with replayer(recorder.cassette, "--speed", "0") as rp:
        replayed = run(openai.OpenAI(base_url=rp.url + "/v1", api_key=fake_key("replay"), max_retries=0))
    assert replayed == recorded  # same ids, same deltas, same order


def test_zstd_body_decoded_and_matched_with_ignored_paths(upstream, recorder):
    def post(base, rid):
        doc = {"model": "sim-1", "input": "compress me", "stream": False, "metadata": {"run": rid}}
        data = zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
        r = httpx.post(base + "/v1/responses", content=data,
                       headers={**AUTH, "content-encoding": "zstd", "content-type": "application/json"})
        return r

    r = post(recorder.url, "run-1")
    assert r.status_code == 200
    assert upstream.app.requests[-1]["encoding"] == "zstd"
    recorder.stop()
    with Cassette.open(recorder.cassette) as c:
        (it,) = list(c.interactions())
    assert it.request.body_encoding == "zstd"
    assert json.loads(it.request.body)["metadata"] == {"run": "run-1"}  # stored decoded

    with replayer(recorder.cassette, "--match-body") as rp:
        miss = post(rp.url, "run-2")  # volatile field differs: no match without ignoring it
        assert miss.status_code == 404
        err = miss.json()["error"]
        assert err["code"] == "no_recording" and "run-2" in err["diff"] and "run-1" in err["diff"]
    with replayer(recorder.cassette, "--match-body", "--ignore-json-path", "metadata.run") as rp:
        hit = post(rp.url, "run-2")
        assert hit.status_code == 200 and hit.json() == r.json()


def test_429_with_retry_after_replays(upstream, recorder):
    def call(base):
        client = openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as e:
            client.responses.create(model="sim-1", input="x", extra_headers={"x-sim-fault": "429"})
        return e.value.response.status_code, e.value.response.headers.get("retry-after"), e.value.body

    recorded = call(recorder.url)
    assert recorded[:2] == (429, "7")
    recorder.stop()
    upstream.stop_thread()
    with replayer(recorder.cassette) as rp:
        assert call(rp.url) == recorded


def test_stream_cut_by_upstream_replays_as_cut(upstream, recorder):
    hdrs = {"x-sim-gap-ms": "10", "x-sim-events": "8", "x-sim-fault": "cut"}
    body = {"model": "sim-1", "input": "cut me", "stream": True}
    _, _, rec_chunks, err = raw_stream(recorder.url, "/v1/responses", body, hdrs)
    assert err  # the client saw the cut
    recorder.stop()
    with Cassette.open(recorder.cassette) as c:
        (it,) = list(c.interactions())
    assert it.end is End.UPSTREAM_CUT
    got = b"".join(b for _, b in rec_chunks)
    assert it.body == got and f"after {len(got)} bytes" in it.end_detail
    assert b"response.completed" not in got
    with replayer(recorder.cassette) as rp:
        _, _, rep_chunks, err2 = raw_stream(rp.url, "/v1/responses", body, hdrs)
    assert err2 and b"".join(b for _, b in rep_chunks) == got


def test_api_key_never_stored(upstream, recorder):
    client = openai.OpenAI(base_url=recorder.url + "/v1", api_key=API_KEY, max_retries=0)
    client.responses.create(model="sim-1", input=f"my key is {API_KEY}", extra_headers={"api-key": API_KEY})
    httpx.get(recorder.url + "/v1/models", params={"api-key": API_KEY}, headers={"x-api-key": API_KEY})
    assert Path(str(recorder.cassette) + "-wal").exists()  # audited while the WAL is live
    assert_clean(recorder.cassette, secrets=[API_KEY])
    recorder.stop()
    assert API_KEY not in recorder.out + recorder.err  # nor in the recorder's log
    assert_clean(recorder.cassette, secrets=[API_KEY])
    with Cassette.open(recorder.cassette) as c:
        its = list(c.interactions())
    assert its[0].request.header("authorization") == "REDACTED"
    assert its[0].request.header("api-key") == "REDACTED"
    assert "api-key=REDACTED" in its[1].request.query


def test_miss_is_a_clear_error_and_server_keeps_serving(upstream, recorder):
    httpx.get(recorder.url + "/v1/models", headers=AUTH)
    recorder.stop()
    with replayer(recorder.cassette) as rp:
        r = httpx.post(rp.url + "/v1/chat/completions", json={"model": "x"})
        assert r.status_code == 404 and r.headers["x-proxy-miss"] == "no_recording"
        err = r.json()["error"]
        assert err["request"] == "POST /v1/chat/completions" and err["nearest"] == "#1 GET /v1/models"
        assert httpx.get(rp.url + "/v1/models").status_code == 200  # still serving
        again = httpx.get(rp.url + "/v1/models")
        assert again.status_code == 404 and again.json()["error"]["code"] == "all_used"
    assert "miss: POST /v1/chat/completions" in rp.err


def test_unreachable_upstream_is_recorded_as_502(tmp_path):
    from .conftest import proxy_proc

    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()  # nothing listens there now
    cassette = tmp_path / "dead.db"
    with proxy_proc("record", "--upstream", f"http://127.0.0.1:{dead}", "--cassette", str(cassette),
                    "--listen", "127.0.0.1:0") as rec:
        r1 = httpx.get(rec.url + "/v1/models")
        assert r1.status_code == 502
    with Cassette.open(cassette) as c:
        (it,) = list(c.interactions())
    assert it.end is End.UPSTREAM_ERROR and it.response.status == 502
    with replayer(cassette) as rp:
        r2 = httpx.get(rp.url + "/v1/models")
    assert (r2.status_code, r2.content) == (502, r1.content)
    # the headers the client got, `Server: mitmproxy <version>` included
    assert r2.headers.raw == r1.headers.raw and r1.headers["server"].startswith("mitmproxy ")


def test_https_upstream_needs_its_ca(tls_upstream, tls_files, tmp_path):
    from .conftest import proxy_proc

    good, bad = tmp_path / "good.db", tmp_path / "bad.db"
    with proxy_proc("record", "--upstream", tls_upstream.url, "--cassette", str(good), "--listen", "127.0.0.1:0",
                    "--upstream-ca", str(tls_files / "ca.pem")) as rec:
        r = httpx.post(rec.url + "/v1/responses", json={"model": "sim-1", "input": "tls", "stream": True})
        assert r.status_code == 200 and b"response.completed" in r.content
    # certificate checks stay on by default: without the CA the upstream is refused
    with proxy_proc("record", "--upstream", tls_upstream.url, "--cassette", str(bad), "--listen", "127.0.0.1:0") as rec:
        assert httpx.get(rec.url + "/v1/models").status_code == 502
    with Cassette.open(bad) as c:
        (it,) = list(c.interactions())
    assert it.end is End.UPSTREAM_ERROR and "certificate" in it.end_detail.lower()
    with replayer(bad) as rp:  # the TLS failure replays as what the client saw
        r_bad = httpx.get(rp.url + "/v1/models")
        assert r_bad.status_code == 502 and b"certificate" in r_bad.content.lower()
    with replayer(good) as rp:
        assert httpx.post(rp.url + "/v1/responses", json={}).content == r.content


def test_speed_scales_and_zero_is_instant(tmp_path):
    from proxy.model import Chunk, Interaction, Kind, Request, Response

    path = tmp_path / "s.db"
    with Cassette.create(path) as c:
        c.append(Interaction(Kind.HTTP, Request("GET", "/slow"), Response(200, "OK", [("transfer-encoding", "chunked")]),
                             [Chunk(0.1 * i, b"x%d\n" % i) for i in range(1, 5)], ttfb=0.05, end=End.COMPLETE))
    # The last chunk is due at 0.4 s / speed. Upper bounds leave room for a loaded 2-core
    # machine (connect, the first request indexing its path) yet stay below the next
    # speed's lower bound, so a speed that is ignored still fails.
    for speed, low, high in (("1", 0.38, 0.6), ("2", 0.18, 0.37), ("0", 0.0, 0.1)):
        with replayer(path, "--speed", speed) as rp:
            t = time.perf_counter()
            r = httpx.get(rp.url + "/slow")
            took = time.perf_counter() - t
        assert r.content == b"x1\nx2\nx3\nx4\n"
        assert low <= took <= high, (speed, took)

"""Forward-mode replay end to end: clients that keep their URLs and only set HTTPS_PROXY.

Two simulated APIs under names the clients use as-is: ``https://api.test.local`` (a
trustme certificate) and ``http://tools.test.local``. Nothing resolves those names but
the recorder (``--connect-to``): every client reaches them only through the proxy. Real
clients (the openai SDK in a subprocess with only its base URL's host changed, httpx
with HTTP/2, curl, node fetch, a websockets client) record through ``proxy record --mode
forward``; the APIs stop; ``proxy replay --mode forward`` then gives each client the
same stream again, with the recorded timing.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from websockets.sync.client import connect

from proxy.sse import parse
from proxy.store import Cassette
from proxy.testing import fake_key, simulator

from .conftest import ROOT, proxy_proc, run_cli

pytest.importorskip("mitmproxy")
trustme = pytest.importorskip("trustme")

pytest_plugins = ["pytester"]

KEY = fake_key("forward")
AUTH = {"authorization": f"Bearer {KEY}"}
API, TOOLS = "https://api.test.local", "http://tools.test.local"
GAP = {"x-sim-gap-ms": "20"}  # 20 ms between events: chunk boundaries survive any TCP read
ACCEPT_MS = 300

SDK = """
import json, sys, openai
client = openai.OpenAI(base_url="https://api.test.local/v1", api_key=sys.argv[1])  # only the host changed
with client.responses.create(model="sim-1", input="from the openai sdk", stream=True,
                             extra_headers={"x-sim-gap-ms": "20"}) as stream:
    print(json.dumps([e.model_dump(mode="json") for e in stream]))
"""

NODE = """
const [major, minor] = process.versions.node.split(".").map(Number);
if (!(major >= 24 || (major === 22 && minor >= 21))) {
  // Before 22.21 / 24, Node ignores NODE_USE_ENV_PROXY; its bundled undici has the same
  // EnvHttpProxyAgent (HTTPS_PROXY, NO_PROXY), reachable with --expose-internals.
  const undici = require("internal/deps/undici/undici");
  undici.setGlobalDispatcher(new undici.EnvHttpProxyAgent());
}
(async () => {
  const r = await fetch("https://api.test.local/v1/responses", {
    method: "POST",
    headers: {"content-type": "application/json", "x-sim-gap-ms": "20", authorization: "Bearer " + process.argv[2]},
    body: JSON.stringify({model: "sim-1", input: "from node fetch", stream: true}),
  });
  const chunks = [];
  for await (const c of r.body) chunks.push(Buffer.from(c).toString("base64"));
  console.log(JSON.stringify({status: r.status, chunks}));
})().catch((e) => { console.error(e, e.cause); process.exit(1); });
"""


def node_cmd() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    major, minor = (int(x) for x in subprocess.run([node, "--version"], capture_output=True, text=True)
                    .stdout.strip().lstrip("v").split(".")[:2])
    old = not (major >= 24 or (major == 22 and minor >= 21))
    return [node, *(["--expose-internals"] if old else []), "-e", NODE]


# -- clients: each returns what it received --------------------------------------------


def sdk_client(env: dict) -> list[dict]:
    r = subprocess.run([sys.executable, "-c", SDK, KEY], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env}, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def httpx_client(env: dict, body: dict, http2: bool = True):
    """(http version, status, headers, [(arrival s, chunk)]) through the proxy named by env."""
    verify = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=verify, http2=http2, timeout=30) as c:
        t0 = time.perf_counter()
        with c.stream("POST", API + "/v1/responses", json=body, headers={**AUTH, **GAP}) as r:
            chunks = [(time.perf_counter() - t0, b) for b in r.iter_raw()]
        return r.http_version, r.status_code, r.headers, chunks


def curl_client(env: dict) -> tuple[str, bytes]:
    """(HTTP version and status, body): curl configured by the environment alone."""
    curl = shutil.which("curl") or pytest.skip("curl is not installed")
    body = json.dumps({"model": "sim-1", "stream": True, "messages": [{"role": "user", "content": "from curl"}]})
    r = subprocess.run([curl, "-sS", "-N", "-w", "\n%{http_version} %{http_code}", API + "/v1/chat/completions",
                        "-H", "content-type: application/json", "-H", f"authorization: Bearer {KEY}",
                        "-H", "x-sim-gap-ms: 20", "-d", body],
                       capture_output=True, timeout=30, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    out, _, status = r.stdout.rpartition(b"\n")
    return status.decode(), out


def node_client(env: dict) -> dict:
    r = subprocess.run([*node_cmd(), KEY], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ws_client(env: dict) -> tuple[float, list[str], dict]:
    """(seconds until the 101, frames received until response.completed, 101 headers)."""
    ctx = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    t0 = time.perf_counter()
    with connect("wss://api.test.local/v1/responses", proxy=env["HTTPS_PROXY"], ssl=ctx,
                 additional_headers={**AUTH, "x-sim-accept-ms": str(ACCEPT_MS)}) as ws:
        opened = time.perf_counter() - t0
        ws.send(json.dumps({"type": "response.create", "model": "sim-1", "input": "over a socket"}))
        frames = []
        while not frames or json.loads(frames[-1])["type"] != "response.completed":
            frames.append(ws.recv(timeout=10))
        return opened, frames, dict(ws.response.headers)


def models(env: dict, base: str) -> httpx.Response:
    verify = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=verify) as c:
        return c.get(base + "/v1/models", headers=AUTH)


def clients(env: dict) -> dict:
    return {
        "tools": models(env, TOOLS),  # recorded before api's: matching by origin, not by order
        "api": models(env, API),
        "sdk": sdk_client(env),
        "httpx": httpx_client(env, {"model": "sim-1", "input": "from httpx", "stream": True}),
        "curl": curl_client(env),
        "node": node_client(env),
        "ws": ws_client(env),
    }


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    """A private CA and a certificate for api.test.local (the simulated API's)."""
    d = tmp_path_factory.mktemp("names")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert = ca.issue_cert("api.test.local", "tools.test.local")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return d


@pytest.fixture(scope="module")
def confdir(tmp_path_factory):
    """mitmproxy's directory with its CA: what `proxy ca --confdir` prints."""
    d = tmp_path_factory.mktemp("mitm")
    r = run_cli("ca", "--confdir", str(d))
    assert r.returncode == 0, r.stderr
    return d


def env_for(url: str, confdir) -> dict:
    from proxy.serve import proxy_env

    return proxy_env(url, str(confdir / "mitmproxy-ca-cert.pem"))


def serve_apis(names):
    api = simulator.serve(certfile=str(names / "cert.pem"), keyfile=str(names / "key.pem"))
    tools = simulator.serve()
    routes = ("--connect-to", f"api.test.local:443:127.0.0.1:{api.address.port}",
              "--connect-to", f"tools.test.local:80:127.0.0.1:{tools.address.port}")
    return api, tools, routes


@pytest.fixture(scope="module")
def recorded(names, confdir, tmp_path_factory):
    """Every client once through `proxy record --mode forward`; then the APIs stop."""
    cassette = tmp_path_factory.mktemp("fwd") / "agent.db"
    api, tools, routes = serve_apis(names)
    try:
        with proxy_proc("record", "--mode", "forward", "--cassette", str(cassette), "--listen", "127.0.0.1:0",
                        "--confdir", str(confdir), "--upstream-ca", str(names / "ca.pem"), *routes) as p:
            got = clients(env_for(p.url, confdir))
        assert p.popen.returncode == 0, p.err
    finally:
        api.stop_thread()
        tools.stop_thread()
    got["cassette"] = cassette
    return got


@pytest.fixture(scope="module")
def replay(recorded, confdir):
    """`proxy replay --mode forward` at recorded pace; the APIs are gone."""
    with proxy_proc("replay", "--mode", "forward", "--cassette", str(recorded["cassette"]), "--listen", "127.0.0.1:0",
                    "--confdir", str(confdir), "--match-body") as p:
        assert "HTTPS_PROXY=" + p.url in p.first_line
        p.env = env_for(p.url, confdir)
        yield p


# -- tests ----------------------------------------------------------------------------------


def test_the_cassette_keeps_scheme_and_host(recorded):
    with Cassette.open(recorded["cassette"]) as c:
        assert c.meta["mode"] == "forward"
        origins = {(it.request.scheme, it.request.host, it.request.port) for it in c.interactions()}
    assert origins == {("https", "api.test.local", 443), ("http", "tools.test.local", 80)}


def test_openai_sdk_gets_the_same_events(recorded, replay):
    events = sdk_client(replay.env)
    assert events == recorded["sdk"] and events[-1]["type"] == "response.completed"


def test_httpx_http2_same_chunks_at_the_recorded_pace(recorded, replay):
    version, status, headers, chunks = httpx_client(replay.env, {"model": "sim-1", "input": "from httpx",
                                                                  "stream": True})
    r_version, r_status, r_headers, r_chunks = recorded["httpx"]
    assert version == "HTTP/2" and status == r_status == 200
    assert headers["x-request-id"] == r_headers["x-request-id"]
    assert [b for _, b in chunks] == [b for _, b in r_chunks]  # same bytes, same boundaries
    with Cassette.open(recorded["cassette"]) as c:
        (it,) = [i for i in c.interactions() if b"from httpx" in i.request.body]
    late = [t - chunks[0][0] - (c.offset - it.chunks[0].offset) for (t, _), c in zip(chunks, it.chunks)]
    assert max(abs(x) for x in late) < 0.1, late  # paced, not instant: 12 events 20 ms apart


def test_curl_same_stream_over_http2(recorded, replay):
    status, body = curl_client(replay.env)
    assert status == "2 200" and body == recorded["curl"][1]
    assert parse(body)[-1].data == "[DONE]"


def test_node_fetch_same_chunks(recorded, replay):
    got = node_client(replay.env)
    assert got == recorded["node"] and got["status"] == 200
    assert b"response.completed" in base64.b64decode(got["chunks"][-1])


def test_websocket_session_with_its_accept_delay(recorded, replay):
    opened, frames, headers = ws_client(replay.env)
    r_opened, r_frames, r_headers = recorded["ws"]
    assert frames == r_frames
    assert headers["x-codex-turn-state"] == r_headers["x-codex-turn-state"]
    assert ACCEPT_MS / 1000 * 0.95 <= opened < r_opened + 0.25, (opened, r_opened)


def test_two_hosts_same_path_each_its_own(recorded, replay):
    api, tools = models(replay.env, API), models(replay.env, TOOLS)  # the other order than recorded
    assert api.status_code == tools.status_code == 200
    assert api.headers["x-request-id"] == recorded["api"].headers["x-request-id"]
    assert tools.headers["x-request-id"] == recorded["tools"].headers["x-request-id"]


def test_unrecorded_host_or_path_is_a_miss_and_nothing_leaves(replay):
    outside = socket.socket()
    outside.bind(("127.0.0.1", 0))
    outside.listen(8)
    port = outside.getsockname()[1]
    try:
        r = models(replay.env, "https://unknown.test.local")
        assert r.status_code == 404 and r.headers["x-proxy-miss"] == "no_recording"
        err = r.json()["error"]
        assert err["request"] == "GET https://unknown.test.local/v1/models"
        assert "-origin: https://api.test.local" in err["diff"] or "-origin: http://tools.test.local" in err["diff"]
        assert models(replay.env, API + "/v2").status_code == 404  # a recorded host, an unrecorded path
        for base in (f"http://127.0.0.1:{port}", f"https://127.0.0.1:{port}"):
            assert models(replay.env, base).status_code == 404
        # A tunnel that is neither TLS nor HTTP would be relayed as raw TCP: it is refused instead.
        host, _, proxy_port = replay.url.rpartition(":")
        with socket.create_connection(("127.0.0.1", int(proxy_port)), timeout=5) as s:
            s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert s.recv(1024).startswith(b"HTTP/1.1 200")
            s.sendall(b"\x00\x01 not tls, not http\r\n\r\n")
            s.settimeout(2)
            try:
                s.recv(1024)
            except (TimeoutError, ConnectionError):
                pass
        ready, _, _ = select.select([outside], [], [], 0.3)
        assert not ready, "the forward proxy connected to an address it has no recording for"
    finally:
        outside.close()


def test_serve_forward_in_every_record_mode(names, confdir, tmp_path):
    """all records (no --upstream: the client names the host); new_episodes replays what it
    has and relays the rest, HTTP and WebSocket, back through the same proxy into the
    cassette; once finds the cassette and replays everything with the APIs gone.

    What each run records is a chunked stream: its last chunk reaches the client only once
    the recording is committed, so a stop right after it finds the recording counted."""
    c = tmp_path / "serve.db"
    api, tools, routes = serve_apis(names)
    common = ("--mode", "forward", "--cassette", str(c), "--listen", "127.0.0.1:0", "--confdir", str(confdir),
              "--upstream-ca", str(names / "ca.pem"), "--speed", "0", *routes)
    body = {"model": "sim-1", "input": "first", "stream": True}
    try:
        with proxy_proc("serve", *common, "--record-mode", "all") as p:
            assert "record-fresh" in p.first_line and "HTTPS_PROXY=" in p.first_line
            *_, first, first_chunks = httpx_client(env_for(p.url, confdir), body)
        assert p.popen.returncode == 0 and "recorded 1 new interaction(s)" in p.out, p.out + p.err
        with proxy_proc("serve", *common, "--record-mode", "new_episodes") as p:
            env = env_for(p.url, confdir)
            *_, again, _ = httpx_client(env, body)  # replayed
            relayed = models(env, TOOLS)  # relayed to tools.test.local and recorded
            opened, frames, _ = ws_client(env)
        assert p.popen.returncode == 0 and "served 1 of 1" in p.out, p.out + p.err
        assert again["x-request-id"] == first["x-request-id"]
        assert len(api.app.requests) == 2 and len(tools.app.requests) == 1  # api: the first POST, the socket
        assert opened >= ACCEPT_MS / 1000 * 0.95
    finally:
        api.stop_thread()
        tools.stop_thread()
    with proxy_proc("serve", *common, "--record-mode", "once") as p:
        env = env_for(p.url, confdir)
        assert models(env, TOOLS).headers["x-request-id"] == relayed.headers["x-request-id"]
        assert [b for _, b in httpx_client(env, body)[3]] == [b for _, b in first_chunks]
        assert ws_client(env)[1] == frames
    with Cassette.open(c) as cas:
        assert [(it.kind.value, it.request.host) for it in cas.interactions()] == [
            ("http", "api.test.local"), ("http", "tools.test.local"), ("websocket", "api.test.local")]
        names = {h[0].lower() for it in cas.interactions() for h in it.request.headers}
        assert not names & {"x-proxy-relay", "x-proxy-origin"}  # our own plumbing is never recorded


def test_the_relay_of_new_episodes_ignores_proxy_variables(upstream, tmp_path, monkeypatch):
    # A suite that exports the forward proxy's environment must not send the base-URL
    # relay (replay server -> recorder on loopback) to that proxy.
    c = tmp_path / "env.db"
    with proxy_proc("serve", "--cassette", str(c), "--record-mode", "once", "--upstream", upstream.url,
                    "--listen", "127.0.0.1:0") as p:
        httpx.get(p.url + "/v1/models", headers=AUTH)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with proxy_proc("serve", "--cassette", str(c), "--record-mode", "new_episodes", "--upstream", upstream.url,
                    "--listen", "127.0.0.1:0") as p:
        with httpx.Client(trust_env=False) as client:
            r = client.post(p.url + "/v1/responses", json={"model": "sim-1", "input": "relayed"}, headers=AUTH)
            assert r.status_code == 200 and r.json()["status"] == "completed"
            with connect(p.url.replace("http", "ws", 1) + "/v1/responses", proxy=None) as ws:
                ws.send(json.dumps({"type": "response.create", "model": "sim-1", "generate": False}))
                assert json.loads(ws.recv(timeout=5))["type"] == "response.created"


PLUGIN_TESTS = '''
import json, os, shutil, subprocess, pytest

def curl(env, url):
    r = subprocess.run([shutil.which("curl"), "-sS", url], env={**os.environ, **env}, capture_output=True, timeout=30)
    return json.loads(r.stdout)

@pytest.mark.cassette("agent", proxy_mode="forward", speed=0)
def test_forward(model_proxy):
    env = model_proxy.env
    assert {"HTTPS_PROXY", "HTTP_PROXY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} <= set(env)
    assert env["NODE_USE_ENV_PROXY"] == "1" and env["HTTPS_PROXY"] == model_proxy.url
    assert open(env["SSL_CERT_FILE"]).read().startswith("-----BEGIN CERTIFICATE-----")
    assert curl(env, "https://api.test.local/v1/models")["data"]

@pytest.mark.cassette("agent", proxy_mode="forward", speed=0)
def test_forward_miss_fails(model_proxy):
    assert curl(model_proxy.env, "https://nowhere.test.local/v1/models")["error"]["code"] == "no_recording"

@pytest.mark.cassette("agent", speed=0)
def test_env_is_for_forward_mode(model_proxy):
    with pytest.raises(Exception, match="forward"):
        model_proxy.env
'''


def test_pytest_plugin_forward_mode(recorded, pytester, monkeypatch, tmp_path):
    shutil.which("curl") or pytest.skip("curl is not installed")
    monkeypatch.setenv("HOME", str(tmp_path))  # the plugin's CA goes to ~/.mitmproxy
    monkeypatch.delenv("PROXY_RECORD_MODE", raising=False)
    (pytester.path / "cassettes").mkdir()
    shutil.copy(recorded["cassette"], pytester.path / "cassettes" / "agent.db")
    pytester.makepyfile(test_fwd=PLUGIN_TESTS)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=2, failed=1)
    out = r.stdout.str()
    assert "test_forward_miss_fails" in out and "GET https://nowhere.test.local/v1/models" in out
    assert (tmp_path / ".mitmproxy" / "mitmproxy-ca-cert.pem").exists()


def test_bad_connect_to_and_forward_with_a_cassette_dir_are_one_line_errors(tmp_path):
    r = run_cli("record", "--mode", "forward", "--cassette", str(tmp_path / "c.db"), "--listen", "127.0.0.1:0",
                "--connect-to", "api.test.local:443")
    assert r.returncode == 2 and "--connect-to" in r.stderr and "HOST:PORT:HOST2:PORT2" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("replay", "--mode", "forward", "--cassette-dir", str(tmp_path), "--listen", "127.0.0.1:0")
    assert r.returncode == 2 and "forward mode serves one cassette" in r.stderr, r.stderr
    r = run_cli("record", "--mode", "forward", "--upstream", "http://127.0.0.1:9", "--cassette", str(tmp_path / "c.db"),
                "--listen", "127.0.0.1:0")  # would be ignored: each request names its host
    assert r.returncode == 2 and "forward mode takes no --upstream" in r.stderr, r.stderr


def test_the_python_api_serves_forward_mode_and_its_env(recorded, confdir, monkeypatch, tmp_path):
    import proxy

    monkeypatch.setenv("HOME", str(tmp_path))  # the CA goes to ~/.mitmproxy
    with proxy.replaying(recorded["cassette"], speed=0, proxy_mode="forward") as p:
        assert p.env["HTTPS_PROXY"] == p.url and p.env["NODE_USE_ENV_PROXY"] == "1"
        status, body = curl_client(p.env)
    assert status == "2 200" and body == recorded["curl"][1]
    assert p.summary.served == 1


NO_PROXY_CLIENTS = """
import json, sys, httpx, requests
url = "https://api.test.local/v1/not-recorded"
print(json.dumps({"httpx": httpx.get(url, timeout=30).json(), "requests": requests.get(url, timeout=30).json()}))
"""


def test_env_overrides_an_inherited_no_proxy(recorded, monkeypatch, tmp_path):
    # {**os.environ, **model_proxy.env}: a host in the parent's NO_PROXY must still go through
    # the front (here a miss, 404 no_recording), never straight to the network.
    import proxy

    monkeypatch.setenv("HOME", str(tmp_path))  # the CA goes to ~/.mitmproxy
    monkeypatch.setenv("NO_PROXY", "api.test.local")
    monkeypatch.setenv("no_proxy", "localhost,.test.local")
    with proxy.replaying(recorded["cassette"], speed=0, proxy_mode="forward", check=False) as p:
        env = {**os.environ, **p.env}
        assert env["NO_PROXY"] == env["no_proxy"] == ""
        r = subprocess.run([sys.executable, "-c", NO_PROXY_CLIENTS], capture_output=True, text=True, timeout=60,
                           env=env)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["httpx"]["error"]["code"] == got["requests"]["error"]["code"] == "no_recording"
        if shutil.which("curl"):
            r = subprocess.run(["curl", "-sS", "https://api.test.local/v1/not-recorded"], capture_output=True,
                               timeout=30, env=env)
            assert json.loads(r.stdout)["error"]["code"] == "no_recording", r.stderr
        if shutil.which("node"):
            script = NODE.replace("/v1/responses", "/v1/not-recorded")
            r = subprocess.run([*node_cmd()[:-1], script, KEY], capture_output=True, text=True, timeout=60, env=env)
            assert r.returncode == 0 and json.loads(r.stdout)["status"] == 404, r.stderr


def test_har_round_trip_of_a_forward_cassette_is_identical_and_keeps_http2(recorded, tmp_path):
    har, again = tmp_path / "f.har", tmp_path / "again.db"
    assert run_cli("export", str(recorded["cassette"]), "--har", str(har)).returncode == 0
    r = run_cli("import", str(har), "--cassette", str(again))
    assert r.returncode == 0, r.stderr
    one, two = (run_cli("inspect", "--text", str(p)).stdout for p in (recorded["cassette"], again))
    assert one == two
    assert one.startswith("# proxy cassette, schema 3, upstream (forward proxy),")
    entries = json.loads(har.read_text())["log"]["entries"]
    # curl offers h2 first and got HTTP/2 from the recorder (httpx lists http/1.1 first), the
    # others HTTP/1.1: the export says which.
    versions = {e["request"]["httpVersion"] for e in entries}
    assert versions == {"HTTP/2.0", "HTTP/1.1"}, versions
    h2 = [e for e in entries if e["request"]["httpVersion"] == "HTTP/2.0"]
    assert all(e["response"]["httpVersion"] == "HTTP/2.0" for e in h2)
    assert [e["request"]["url"] for e in h2] == [API + "/v1/chat/completions"]  # curl's


UNTRUSTING_SDK = """
import openai, sys
client = openai.OpenAI(base_url="https://api.test.local/v1", api_key=sys.argv[1], max_retries=2)
try:
    client.models.list()
except openai.APIConnectionError as e:
    print(type(e).__name__)
"""


def test_a_client_that_does_not_trust_the_ca_is_told_once_per_host(recorded, confdir):
    # The SDK's own message is only "Connection error."; the proxy says why, once per host
    # however many connections (the SDK retries twice), and what to trust.
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    with proxy_proc("replay", "--mode", "forward", "--cassette", str(recorded["cassette"]), "--listen", "127.0.0.1:0",
                    "--confdir", str(confdir)) as p:
        env.update(HTTPS_PROXY=p.url, https_proxy=p.url, NO_PROXY="", no_proxy="")
        r = subprocess.run([sys.executable, "-c", UNTRUSTING_SDK, KEY], capture_output=True, text=True, timeout=60,
                           env=env, cwd=ROOT)
        assert r.stdout.strip() == "APIConnectionError", r.stderr
        if shutil.which("curl"):
            assert subprocess.run(["curl", "-sS", "https://api.test.local/v1/models"], env=env, capture_output=True,
                                  timeout=30).returncode != 0
    lines = [ln for ln in p.err.splitlines() if "certificate" in ln]
    assert len(lines) == 1, p.err
    ca = str(confdir / "mitmproxy-ca-cert.pem")
    assert "a client at 127.0.0.1:" in lines[0] and "rejected the proxy's certificate for api.test.local" in lines[0]
    assert f"make it trust {ca}" in lines[0]


def _ws_endings_cassette(path) -> None:
    """One WebSocket session per host, each ending another way: the server drops the
    connection (no close frame), closes with no status, closes with a code and reason."""
    from proxy.model import Close, Direction, End, Frame, Interaction, Kind, Request, Response

    c = Cassette.create(path, mode="forward")
    for host, close in [("drop.test.local", Close(None)), ("nostatus.test.local", Close(1005, "", Direction.SERVER)),
                        ("code.test.local", Close(4001, "bye", Direction.SERVER))]:
        req = Request("GET", "/v1/responses", headers=[("upgrade", "websocket")], scheme="https", host=host, port=443)
        frames = [Frame(Direction.CLIENT, True, 0.01, b"hi"), Frame(Direction.SERVER, True, 0.02, b"reply")]
        c.append(Interaction(Kind.WEBSOCKET, req, Response(101, "Switching Protocols", [("upgrade", "websocket")]),
                             frames=frames, ttfb=0.0, duration=0.05, end=End.COMPLETE, close=close))
    c.close()


def _ws_ending(url: str, **kw) -> tuple[str, int | None, str | None]:
    """(reply, the close frame's code and reason as the client received it, or None: no close frame)."""
    from websockets.exceptions import ConnectionClosed

    with connect(url, open_timeout=10, **kw) as ws:
        ws.send("hi")
        reply = ws.recv(timeout=10)
        try:
            ws.recv(timeout=10)
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        return reply, None if rcvd is None else rcvd.code, None if rcvd is None else rcvd.reason


def test_websocket_endings_reach_the_client_as_in_base_url_replay(confdir, tmp_path):
    """A recorded drop stays a drop through the front: mitmproxy's WebSocket layer would
    answer the replay server's dropped connection with a close frame 1000 of its own."""
    c = tmp_path / "endings.db"
    _ws_endings_cassette(c)
    hosts = ("drop.test.local", "nostatus.test.local", "code.test.local")
    with proxy_proc("replay", "--cassette", str(c), "--listen", "127.0.0.1:0", "--speed", "0") as p:
        base = [_ws_ending(p.url.replace("http", "ws", 1) + "/v1/responses") for _ in hosts]
    assert base == [("reply", None, None), ("reply", 1005, ""), ("reply", 4001, "bye")]  # in recorded order
    with proxy_proc("replay", "--mode", "forward", "--cassette", str(c), "--listen", "127.0.0.1:0", "--speed", "0",
                    "--confdir", str(confdir)) as p:
        env = env_for(p.url, confdir)
        ctx = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
        forward = [_ws_ending(f"wss://{h}/v1/responses", proxy=p.url, ssl=ctx) for h in hosts]
    assert forward == base


def test_the_replay_server_sees_the_host_header_the_client_sent(confdir, tmp_path):
    """The front hands the request on without rewriting Host to the replay server's
    address: a recording matched on its Host header (--match-header host) is served."""
    from proxy.model import Chunk, End, Interaction, Kind, Request, Response

    path = tmp_path / "host.db"
    c = Cassette.create(path, mode="forward")
    sent = [(API, True), (API, False), ("http://tools.test.local:8080", False)]  # (origin, HTTP/2)
    for base, _ in sent:
        url = httpx.URL(base)
        req = Request("GET", "/v1/models", headers=[("host", url.netloc.decode())], scheme=url.scheme, host=url.host,
                      port=url.port or {"http": 80, "https": 443}[url.scheme])
        c.append(Interaction(Kind.HTTP, req, Response(200, "OK", [("content-type", "application/json")]),
                             chunks=[Chunk(0.0, b"{}")], ttfb=0.0, duration=0.0, end=End.COMPLETE))
    c.close()
    with proxy_proc("replay", "--mode", "forward", "--cassette", str(path), "--listen", "127.0.0.1:0", "--speed", "0",
                    "--confdir", str(confdir), "--match-header", "host") as p:
        verify = ssl.create_default_context(cafile=env_for(p.url, confdir)["SSL_CERT_FILE"])
        for base, http2 in sent:
            with httpx.Client(proxy=p.url, verify=verify, http2=http2) as client:
                r = client.get(base + "/v1/models")
            assert r.status_code == 200, r.text


def test_a_connection_cut_before_the_headers_stays_a_cut_not_a_502(confdir, tmp_path):
    """The replay server closes the connection without a response (here ``--fault
    cut:headers``): through the front the client loses its connection (HTTP/1.1) or its
    stream (HTTP/2), as on a base URL, instead of mitmproxy's own 502 page."""
    from proxy.model import Chunk, End, Interaction, Kind, Request, Response

    path = tmp_path / "cut.db"
    c = Cassette.create(path, mode="forward")
    for _ in range(3):
        req = Request("GET", "/v1/models", scheme="https", host="api.test.local", port=443)
        c.append(Interaction(Kind.HTTP, req, Response(200, "OK", [("content-type", "application/json")]),
                             chunks=[Chunk(0.0, b"{}")], ttfb=0.0, duration=0.0, end=End.COMPLETE))
    c.close()
    with proxy_proc("replay", "--cassette", str(path), "--listen", "127.0.0.1:0", "--speed", "0",
                    "--fault", "cut:headers,times=3") as p:
        with pytest.raises(httpx.TransportError):
            httpx.get(p.url + "/v1/models")
    with proxy_proc("replay", "--mode", "forward", "--cassette", str(path), "--listen", "127.0.0.1:0", "--speed", "0",
                    "--confdir", str(confdir), "--fault", "cut:headers,times=3") as p:
        verify = ssl.create_default_context(cafile=env_for(p.url, confdir)["SSL_CERT_FILE"])
        for http2 in (False, True):
            with httpx.Client(proxy=p.url, verify=verify, http2=http2) as client:
                with pytest.raises(httpx.TransportError):
                    r = client.get(API + "/v1/models")
                    print(r.status_code, r.headers, r.text)  # what came instead


def test_a_confdir_where_the_ca_cannot_be_made_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    bad = str(tmp_path / "file" / "mitm")  # under a regular file: not creatable, even as root
    cassette = tmp_path / "c.db"
    Cassette.create(cassette, mode="forward").close()
    for args in (("ca",),
                 ("replay", "--mode", "forward", "--cassette", str(cassette)),
                 ("record", "--mode", "forward", "--cassette", str(tmp_path / "r.db"))):
        r = run_cli(*args, "--confdir", bad, *(("--listen", "127.0.0.1:0") if args[0] != "ca" else ()), timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
        assert f"cannot create mitmproxy's CA in {bad} (--confdir)" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and "recording to" not in r.stdout

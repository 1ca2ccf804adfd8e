"""The pytest plugin, driven with pytester in a subprocess (as a user's suite would run it)."""

from __future__ import annotations

import shutil

import pytest

from proxy.store import Cassette
from proxy.testing import fake_key

from .conftest import ROOT
from .fake_secrets import assert_clean

pytest_plugins = ["pytester"]

REPLAY_TESTS = '''
import openai, pytest
from proxy.testing import fake_key

@pytest.mark.cassette("example", speed=0)
def test_replays(model_proxy):
    client = openai.OpenAI(base_url=model_proxy.base_url, api_key=fake_key("test"))
    with client.responses.create(model="sim-1", input="Say hello", stream=True) as s:
        assert [e.type for e in s][-1] == "response.completed"

@pytest.mark.cassette("example", speed=0)
def test_unrecorded_request_fails(model_proxy):
    import httpx
    httpx.post(model_proxy.base_url + "/embeddings", json={"input": "x"})

@pytest.mark.cassette("example", speed=0)
def test_sdk_raises_on_miss(model_proxy):
    client = openai.OpenAI(base_url=model_proxy.base_url, api_key=fake_key("test"), max_retries=0)
    client.embeddings.create(model="sim-1", input="x")

@pytest.mark.cassette("example", speed=0, strict=True)
def test_strict_unused_fails(model_proxy):
    import httpx
    assert httpx.get(model_proxy.base_url + "/models").status_code == 200

@pytest.mark.cassette("nothing-here")
def test_missing_cassette(model_proxy):
    pass
'''


@pytest.fixture
def suite(pytester):
    (pytester.path / "cassettes").mkdir()
    shutil.copy(ROOT / "cassettes" / "example.db", pytester.path / "cassettes" / "example.db")
    return pytester


def test_replay_miss_strict_and_missing(suite, monkeypatch):
    monkeypatch.delenv("PROXY_RECORD_MODE", raising=False)
    suite.makepyfile(test_suite=REPLAY_TESTS)
    r = suite.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=3, errors=1)  # a missing cassette fails the set-up
    out = r.stdout.str()
    assert "request(s) with no recording" in out and "POST /v1/embeddings" in out
    assert "strict: 4 recorded interaction(s)" in out and "#1 POST /v1/responses" in out
    assert "nothing-here.db: no such cassette file" in out and "--proxy-record-mode once" in out
    # The SDK raised on the 404 before the plugin could fail the test: the diagnostic rides on its exception.
    raised = out.split("test_sdk_raises_on_miss", 1)[1].split("test_strict_unused_fails", 1)[0]
    assert "openai.NotFoundError" in raised
    assert "proxy: the client made 1 request(s) with no recording" in raised and "POST /v1/embeddings" in raised


RECORD_TESTS = '''
import httpx, pytest
from proxy.testing import fake_key

@pytest.mark.cassette("recorded")
def test_models(model_proxy):
    r = httpx.get(model_proxy.base_url + "/models", headers={"authorization": "Bearer " + fake_key("plugin-key")})
    assert r.json()["data"][0]["id"] == "sim-1"
'''


def test_record_once_then_replay_without_upstream(suite, upstream):
    suite.makepyfile(test_rec=RECORD_TESTS)
    r = suite.runpytest_subprocess("--proxy-record-mode", "once", "--proxy-upstream", upstream.url)
    r.assert_outcomes(passed=1)
    cassette = suite.path / "cassettes" / "recorded.db"
    with Cassette.open(cassette) as c:
        assert c.count() == 1
    assert_clean(cassette, secrets=[fake_key("plugin-key")])
    upstream.stop_thread()
    r = suite.runpytest_subprocess()  # mode none: replay only
    r.assert_outcomes(passed=1)


def test_env_vars_and_bad_mode(suite, upstream, monkeypatch):
    suite.makepyfile(test_rec=RECORD_TESTS)
    monkeypatch.setenv("PROXY_RECORD_MODE", "all")
    monkeypatch.setenv("PROXY_UPSTREAM", upstream.url)
    suite.runpytest_subprocess().assert_outcomes(passed=1)
    monkeypatch.setenv("PROXY_RECORD_MODE", "sometimes")
    r = suite.runpytest_subprocess()
    assert r.ret != 0 and "unknown record mode 'sometimes'" in r.stderr.str() + r.stdout.str()


def test_a_bad_fault_option_is_one_usage_error_not_an_error_per_test(suite):
    suite.makepyfile(test_suite=REPLAY_TESTS)
    for args, said in ((("--proxy-fault", "bogus:1"), "unknown fault kind 'bogus'"),
                       (("--proxy-chaos", "1", "--proxy-chaos-rate", "3"), "--proxy-chaos-rate 3.0")):
        r = suite.runpytest_subprocess(*args)
        err = r.stderr.str()
        assert r.ret == pytest.ExitCode.USAGE_ERROR and said in err, err
        assert "test_replays" not in r.stdout.str()  # no test ran to report it again


BOTH_TESTS = '''
import os, httpx, openai, pytest
from proxy.testing import fake_key

SIM = os.environ["SIM_URL"]

@pytest.mark.vcr                     # pytest-recording: cassettes/test_both/test_vcr_side.yaml
def test_vcr_side():
    assert httpx.get(SIM + "/v1/models").json()["data"][0]["id"] == "sim-1"

@pytest.mark.cassette                # proxy: cassettes/test_both/test_proxy_side.db
def test_proxy_side(model_proxy):
    assert httpx.get(model_proxy.base_url + "/models").json()["data"][0]["id"] == "sim-1"

class TestGroup:
    @pytest.mark.cassette(speed=0)   # cassettes/test_both/TestGroup.test_in_class.db
    def test_in_class(self, model_proxy):
        client = openai.OpenAI(base_url=model_proxy.base_url, api_key=fake_key("t"), max_retries=0)
        with client.responses.create(model="sim-1", input="hi", stream=True) as s:
            assert [e.type for e in s][-1] == "response.completed"

@pytest.mark.asyncio
@pytest.mark.cassette(speed=0)
async def test_async(model_proxy):
    async with openai.AsyncOpenAI(base_url=model_proxy.base_url, api_key=fake_key("t"), max_retries=0) as client:
        stream = await client.responses.create(model="sim-1", input="hi", stream=True)
        assert [e.type async for e in stream][-1] == "response.completed"
'''


def test_beside_pytest_recording_default_names_async_and_xdist(pytester, upstream, monkeypatch):
    """pytest-recording is installed (dev extra) and loads in the same run: both plugins'
    options on one command line, both kinds of cassette side by side under the same default
    names; then replay with no upstream, async test included, on two xdist workers."""
    monkeypatch.setenv("SIM_URL", upstream.url)
    monkeypatch.delenv("PROXY_RECORD_MODE", raising=False)
    pytester.makepyfile(test_both=BOTH_TESTS)
    r = pytester.runpytest_subprocess("--record-mode", "once", "--proxy-record-mode", "once",
                                      "--proxy-upstream", upstream.url)
    r.assert_outcomes(passed=4)
    plugins = next(ln for ln in r.stdout.lines if ln.startswith("plugins:"))
    assert "recording-" in plugins and "asyncio-" in plugins
    d = pytester.path / "cassettes" / "test_both"
    assert sorted(p.name for p in d.iterdir()) == ["TestGroup.test_in_class.db", "test_async.db",
                                                   "test_proxy_side.db", "test_vcr_side.yaml"]
    upstream.stop_thread()
    r = pytester.runpytest_subprocess("-n", "2")  # both in mode none: the upstream is gone
    r.assert_outcomes(passed=4)
    assert "2 workers" in r.stdout.str()


FAILING_RECORD_TESTS = '''
import httpx, pytest

@pytest.mark.cassette("recorded")
def test_models(model_proxy):
    httpx.get(model_proxy.base_url + "/models")
    httpx.get(model_proxy.base_url + "/models")
    assert False, "the client broke half-way"
'''


def test_record_mode_all_keeps_the_old_cassette_when_the_test_fails(suite, upstream):
    """As ``proxy.recording``: mode all replaces a cassette only after a test that passed,
    so a test that failed half-way does not leave its partial recording in its place."""
    suite.makepyfile(test_rec=RECORD_TESTS)
    suite.runpytest_subprocess("--proxy-record-mode", "all", "--proxy-upstream", upstream.url).assert_outcomes(passed=1)
    cassette = suite.path / "cassettes" / "recorded.db"
    suite.makepyfile(test_rec=FAILING_RECORD_TESTS)
    r = suite.runpytest_subprocess("--proxy-record-mode", "all", "--proxy-upstream", upstream.url)
    r.assert_outcomes(failed=1)
    with Cassette.open(cassette) as c:
        assert c.count() == 1


BLOCKED_TESTS = '''
import socket, httpx, pytest

@pytest.mark.cassette("example", speed=0)
def test_models(model_proxy):
    assert httpx.get(model_proxy.base_url + "/models").json()["data"][0]["id"] == "sim-1"
    with pytest.raises(RuntimeError, match="Network is disabled"):  # everything else stays blocked
        socket.create_connection(("192.0.2.1", 443), timeout=1)
'''


def test_runs_under_pytest_recordings_block_network(suite, monkeypatch):
    """pytest-recording's --block-network (its CI setting) blocks every connect, loopback
    included: the client's connection to this test's own proxy is let through, nothing else."""
    monkeypatch.delenv("PROXY_RECORD_MODE", raising=False)
    suite.makepyfile(test_blocked=BLOCKED_TESTS)
    r = suite.runpytest_subprocess("-p", "no:cacheprovider", "--block-network")
    r.assert_outcomes(passed=1)

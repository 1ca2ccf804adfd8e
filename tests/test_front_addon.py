"""The mitmproxy addons of forward mode, their hooks called directly (no network):
``Retarget`` (the front of forward-mode replay) and ``ConnectTo`` (curl's --connect-to)."""

from __future__ import annotations

import pytest

pytest.importorskip("mitmproxy")

from mitmproxy import exceptions  # noqa: E402
from mitmproxy.connection import Server  # noqa: E402
from mitmproxy.flow import Error  # noqa: E402
from mitmproxy.proxy.server_hooks import ServerConnectionHookData  # noqa: E402
from mitmproxy.test import taddons, tflow  # noqa: E402

from proxy.headers import ORIGIN_HEADER  # noqa: E402
from proxy.record.connect_to import ConnectTo, parse  # noqa: E402
from proxy.record.front import RELAY_HEADER, REPLAYED, Retarget  # noqa: E402

REPLAY = ("127.0.0.1", 40001)


def flow(url: str = "https://api.test.local/v1/responses", **headers):
    f = tflow.tflow()
    f.request.url = url
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    return f


def test_every_request_goes_to_the_replay_server_with_its_origin():
    addon = Retarget(REPLAY)
    for url, origin in [("https://api.test.local/v1/responses", "https://api.test.local"),
                        ("http://tools.test.local:8080/x?y=1", "http://tools.test.local:8080")]:
        f = flow(url, x_proxy_origin="https://forged.example")  # a client's own header never counts
        host = f.request.headers["host"] = url.split("/")[2]
        addon.requestheaders(f)
        r = f.request
        assert (r.scheme, r.host, r.port) == ("http", *REPLAY)
        assert r.headers["host"] == host  # as the client sent it
        assert r.headers.get_all(ORIGIN_HEADER) == [origin]
        assert f.metadata[REPLAYED] is True


def test_only_the_runs_relay_token_passes_to_the_real_host():
    addon = Retarget(REPLAY, relay_token="s3cret")
    f = flow(**{RELAY_HEADER: "s3cret"})
    addon.requestheaders(f)
    assert (f.request.host, f.request.port) == ("api.test.local", 443) and RELAY_HEADER not in f.request.headers
    assert REPLAYED not in f.metadata
    relay_client = f.client_conn
    guessed = flow(**{RELAY_HEADER: "guess"})
    addon.requestheaders(guessed)
    assert guessed.request.host == REPLAY[0] and RELAY_HEADER not in guessed.request.headers
    # Connections: the replay server always; elsewhere only for the relay's client connection.
    other = tflow.tflow().client_conn
    out = ServerConnectionHookData(server=Server(address=("api.test.local", 443)), client=relay_client)
    addon.server_connect(out)
    assert out.server.error is None
    refused = ServerConnectionHookData(server=Server(address=("api.test.local", 443)), client=other)
    addon.server_connect(refused)
    assert "nothing but its replay server" in refused.server.error
    ok = ServerConnectionHookData(server=Server(address=REPLAY), client=other)
    addon.server_connect(ok)
    assert ok.server.error is None
    addon.client_disconnected(relay_client)
    again = ServerConnectionHookData(server=Server(address=("api.test.local", 443)), client=relay_client)
    addon.server_connect(again)
    assert again.server.error is not None


def test_without_a_relay_token_nothing_passes():
    addon = Retarget(REPLAY)
    f = flow(**{RELAY_HEADER: ""})
    addon.requestheaders(f)
    assert f.request.host == REPLAY[0]
    data = ServerConnectionHookData(server=Server(address=("93.184.216.34", 443)), client=f.client_conn)
    addon.server_connect(data)
    assert data.server.error


def test_responses_stream_except_the_101():
    addon = Retarget(REPLAY)
    f = tflow.tflow(resp=True)
    addon.responseheaders(f)
    assert f.response.stream is True
    ws = tflow.twebsocketflow()
    ws.response.stream = False
    addon.responseheaders(ws)
    assert ws.response.stream is False


def test_a_replayed_websocket_passes_as_bytes_a_relayed_one_is_recorded():
    addon = Retarget(REPLAY, relay_token="s3cret")
    replayed, relayed = tflow.twebsocketflow(), tflow.twebsocketflow()
    replayed.metadata[REPLAYED] = True
    for f in (replayed, relayed):
        addon.response(f)
    assert replayed.websocket is None  # mitmproxy's TCP layer then: the replay server's bytes and end
    assert relayed.websocket is not None  # the WebSocket layer, which the record addon needs


def test_connect_to_parses_like_curl():
    assert parse("API.test.local:443:127.0.0.1:8443") == (("api.test.local", 443), ("127.0.0.1", 8443))
    assert parse("[::1]:443:[::1]:9") == (("::1", 443), ("::1", 9))
    for bad in ("api.test.local:443", "a:b:c:d", ":443:127.0.0.1:1", "a:443::1"):
        with pytest.raises(ValueError, match="HOST:PORT:HOST2:PORT2"):
            parse(bad)
    for bad in ("api.test.local:443:127.0.0.1:99999", "api.test.local:0:127.0.0.1:8443", "a:443:b:0"):
        with pytest.raises(ValueError, match="port"):  # accepted, it would fail only when a client connects
            parse(bad)


def test_connect_to_moves_the_connection_and_keeps_the_name_for_tls():
    addon = ConnectTo()
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="proxy_connect_to"):
            tctx.configure(addon, proxy_connect_to=["nonsense"])
        tctx.configure(addon, proxy_connect_to=["api.test.local:443:127.0.0.1:8443"])
        data = ServerConnectionHookData(server=Server(address=("API.test.local", 443)), client=tflow.tclient_conn())
        addon.server_connect(data)
        assert data.server.address == ("127.0.0.1", 8443) and data.server.sni == "API.test.local"
        other = ServerConnectionHookData(server=Server(address=("api.test.local", 80)), client=tflow.tclient_conn())
        addon.server_connect(other)
        assert other.server.address == ("api.test.local", 80) and other.server.sni is None


def test_a_cut_before_the_response_is_killed_an_unreachable_replay_server_is_a_502():
    addon = Retarget(REPLAY)
    cut, unreachable, relay = tflow.tflow(err=True), tflow.tflow(err=True), tflow.tflow(err=True)
    cut.metadata[REPLAYED] = unreachable.metadata[REPLAYED] = True
    unreachable.server_conn.timestamp_tcp_setup = None
    for f in (cut, unreachable, relay):
        f.live = True
        addon.error(f)
    assert cut.error.msg == Error.KILLED_MESSAGE  # closed without mitmproxy's 502 page
    assert Error.KILLED_MESSAGE not in (unreachable.error.msg, relay.error.msg)

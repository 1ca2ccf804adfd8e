"""Forward-mode matching, without sockets: the origin a request went to (scheme, host,
port) is compared only for a forward-mode replay of a cassette recorded in forward mode."""

from __future__ import annotations

from proxy.headers import ORIGIN_HEADER
from proxy.matching import Match, MatchConfig, Matcher, Miss
from proxy.model import Chunk, Direction, End, Frame, Interaction, Kind, Request, Response, origin
from proxy.replay import load_engine
from proxy.replay.engine import MissReply
from proxy.replay.asgi import request_from_scope
from proxy.store import Cassette

FORWARD = MatchConfig(match_origin=True)


def rec(seq, scheme="https", host="api.test.local", port=443, method="GET", path="/v1/models"):
    it = Interaction(Kind.HTTP, Request(method, path, scheme=scheme, host=host, port=port))
    it.seq = seq
    return it


def req(scheme="https", host="api.test.local", port=443, method="GET", path="/v1/models"):
    return Request(method, path, scheme=scheme, host=host, port=port)


def test_origin_is_one_spelling():
    assert origin("https", "API.test.local", 443) == "https://api.test.local"
    assert origin("http", "api.test.local", 80) == "http://api.test.local"
    assert origin("https", "api.test.local", 8443) == "https://api.test.local:8443"
    assert origin("http", "::1", 8080) == "http://[::1]:8080"
    assert origin("https", "api.test.local", 0) == "https://api.test.local"


def test_two_hosts_same_path_each_gets_its_own():
    m = Matcher([rec(1), rec(2, host="tools.test.local"), rec(3, scheme="http", port=80)], FORWARD)
    assert m.match(req(host="tools.test.local")).interaction.seq == 2
    assert m.match(req(scheme="http", port=80)).interaction.seq == 3
    assert m.match(req()).interaction.seq == 1


def test_unrecorded_host_port_or_scheme_is_a_miss_with_the_origin_in_the_diff():
    for other in (req(host="other.test.local"), req(port=8443), req(scheme="http", port=443)):
        miss = Matcher([rec(1)], FORWARD).match(other)
        assert isinstance(miss, Miss), other
        assert miss.request == f"GET {other.origin}/v1/models"
        assert "-origin: https://api.test.local" in miss.diff and f"+origin: {other.origin}" in miss.diff


def test_without_match_origin_the_host_is_not_compared():
    # Base-URL replay, and forward replay of a cassette recorded as a reverse proxy.
    assert isinstance(Matcher([rec(1)]).match(req(host="other.test.local")), Match)


def scope(headers):
    return {"type": "http", "method": "GET", "path": "/v1/models", "raw_path": b"/v1/models", "query_string": b"",
            "headers": headers}


def test_the_front_origin_header_becomes_scheme_host_port_and_is_not_a_header():
    r = request_from_scope(scope([(b"accept", b"*/*"), (ORIGIN_HEADER.encode(), b"https://API.test.local:8443")]))
    assert (r.scheme, r.host, r.port) == ("https", "api.test.local", 8443)
    assert r.headers == [("accept", "*/*")]
    r = request_from_scope(scope([(ORIGIN_HEADER.encode(), b"http://tools.test.local")]))
    assert (r.scheme, r.host, r.port, r.origin) == ("http", "tools.test.local", 80, "http://tools.test.local")


def test_an_origin_header_that_is_not_the_fronts_is_dropped_not_a_crash():
    # Base-URL replay has no front: whatever a client sends under that name arrives as is.
    for bad in (b"http://[::1", b"http://api.test.local:99999", b"http://api.test.local:port"):
        r = request_from_scope(scope([(b"accept", b"*/*"), (ORIGIN_HEADER.encode(), bad)]))
        assert (r.scheme, r.host, r.port) == ("http", "", 0) and r.headers == [("accept", "*/*")]


def test_load_engine_matches_origin_only_for_forward_replay_of_a_forward_cassette(tmp_path):
    for mode in ("forward", "reverse"):
        with Cassette.create(tmp_path / f"{mode}.db", upstream="x", mode=mode) as c:
            it = rec(None)
            it.response = Response(200, "OK", [("content-type", "application/json")])
            it.chunks = [Chunk(0.001, b"{}")]
            it.end = End.COMPLETE
            c.append(it)
        for forward in (True, False):
            engine = load_engine(tmp_path / f"{mode}.db", forward=forward)
            assert engine.config.match_origin is (forward and mode == "forward")
            engine.close()
    engine = load_engine(tmp_path / "forward.db", forward=True)
    assert isinstance(engine.http(req(host="other.test.local")), MissReply)
    assert engine.http(req()).seq == 1
    engine.close()


def answered(it):
    it.response = Response(200, "OK", [("content-type", "application/json")])
    it.chunks = [Chunk(0.001, b"{}")]
    it.end = End.COMPLETE
    return it


def test_the_engine_serves_each_host_its_own_and_names_the_origin_of_a_miss():
    from proxy.replay.engine import Engine

    engine = Engine([answered(rec(1)), answered(rec(2, host="tools.test.local"))], FORWARD)
    assert engine.http(req(host="tools.test.local")).seq == 2
    assert engine.http(req()).seq == 1
    miss = engine.http(req(host="other.test.local"))
    assert isinstance(miss, MissReply)
    assert miss.miss.request == "GET https://other.test.local/v1/models"
    engine.diagnose(miss.miss)
    assert "+origin: https://other.test.local" in miss.miss.diff


def test_all_used_counts_the_recordings_of_that_origin_only():
    m = Matcher([rec(1), rec(2, host="tools.test.local"), rec(3, host="tools.test.local")], FORWARD)
    assert isinstance(m.match(req()), Match)
    miss = m.match(req())
    assert miss.reason == "all_used" and "all 1 recording(s)" in miss.message


def ws(seq, host, frame):
    it = Interaction(Kind.WEBSOCKET, Request("GET", "/v1/responses", headers=[("upgrade", "websocket")],
                                             scheme="https", host=host, port=443),
                     Response(101, "Switching Protocols"))
    it.frames = [Frame(Direction.CLIENT, True, 0.01, frame)]
    it.seq = seq
    return it


def test_a_websocket_session_binds_only_to_a_recording_of_its_own_origin():
    # The first client frame picks the closest session among those reserved or unused,
    # but never one recorded for another host, however close its frame.
    m = Matcher([ws(1, "api.test.local", b'{"type":"response.create","input":"a"}'),
                 ws(2, "tools.test.local", b'{"type":"response.create","input":"b"}')], FORWARD)
    handshake = Request("GET", "/v1/responses", headers=[("upgrade", "websocket")], scheme="https",
                        host="tools.test.local", port=443)
    reserved = m.match(handshake, "ws")
    assert reserved.interaction.seq == 2
    bound = m.bind(reserved, b'{"type":"response.create","input":"a"}')
    assert bound.interaction.seq == 2


def test_an_unrecorded_path_is_named_as_such_not_as_an_origin():
    miss = Matcher([rec(1)], FORWARD).match(req(path="/v2/models"))
    assert miss.reason == "no_recording" and "no recording for" not in miss.message
    assert miss.request == "GET https://api.test.local/v2/models"


def test_order_and_the_nearest_of_a_miss_are_per_origin():
    # #1 and #4 are the same request to two hosts: the first request to tools.test.local
    # takes #4 in order (#1 is another host's), and a miss on api.test.local once its one
    # recording is used names its own #1, not tools.test.local's.
    m = Matcher([rec(1), rec(2, path="/v1/other"), rec(3, path="/v1/other"), rec(4, host="tools.test.local")],
                FORWARD)
    got = m.match(req(host="tools.test.local"))
    assert got.seq == 4 and not got.out_of_order and got.note() is None
    assert m.report()["out_of_order"] == 0
    assert m.match(req()).seq == 1
    miss = m.diagnose(m.match(req()))
    assert miss.reason == "all_used" and "all 1 recording(s)" in miss.message
    assert miss.nearest == "#1 GET /v1/models" and "origin" not in miss.diff


def test_out_of_order_within_one_origin_is_still_reported():
    one, other, three = rec(1), rec(2, host="tools.test.local"), rec(3)
    one.request.body, three.request.body = b'{"x": 1}', b'{"x": 3}'
    r = req()
    r.body = b'{"x": 3}'
    got = Matcher([one, other, three], FORWARD).match(r)
    assert got.seq == 3 and got.out_of_order and got.expected_seq == 1

"""Matching without sockets: concurrency, similarity, reports, presets, misses, WebSocket binding."""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.jsonpath import PathError
from proxy.matching import (ListSource, Match, MatchConfig, Matcher, Miss, compare_frame, diff_bodies,
                            fingerprint, request_key)
from proxy.model import Direction, Frame, Interaction, Kind, Request, Response
from proxy.presets import PRESETS, UnknownPreset

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rec(seq, body=b"", method="POST", path="/v1/messages", query="", headers=()):
    it = Interaction(Kind.HTTP, Request(method, path, query, list(headers), body))
    it.seq = seq
    return it


def req(body=b"", method="POST", path="/v1/messages", query="", headers=()):
    return Request(method, path, query, list(headers), body)


def ws(seq, first: bytes | None, path="/v1/responses"):
    it = Interaction(Kind.WEBSOCKET, Request("GET", path, headers=[("upgrade", "websocket")]), Response(101))
    if first is not None:
        it.frames = [Frame(Direction.CLIENT, True, 0.01, first), Frame(Direction.SERVER, True, 0.02, b'{"type":"ok"}')]
    it.seq = seq
    return it


def agent_body(prompt: str, run: str = "run-1", turns: int = 1) -> bytes:
    """A Claude-Code-shaped request: tools, a system text with an <env> block, metadata."""
    doc = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": f"Be brief.\n<env>\nWorking directory: /home/{run}/proj\n"
                                     f"Is directory a git repo: Yes\nPlatform: linux\n"
                                     f"Today's date: 2026-11-{23 if run == 'run-1' else 25}\n</env>\n"
                                     "Answer in English."},
        ],
        "tools": [{"name": f"Tool{i}", "description": "does things " * 20,
                   "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}
                  for i in range(12)],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "metadata": {"user_id": f"user_{uuid.uuid4().hex}_session_{uuid.uuid4()}"},
    }
    for t in range(1, turns):
        doc["messages"].append({"role": "assistant", "content": [{"type": "text", "text": f"answer {t}"}]})
        doc["messages"].append({"role": "user", "content": [{"type": "text", "text": f"follow-up {t}"}]})
    return json.dumps(doc).encode()


# -- default matching under concurrency ---------------------------------------------------------

def test_swapped_concurrent_requests_each_get_their_own_recording():
    a, b = agent_body("subagent A: list files"), agent_body("subagent B: read README")
    m = Matcher([rec(1, a), rec(2, b)])
    first = m.match(req(agent_body("subagent B: read README")))  # ids differ from the recording
    second = m.match(req(agent_body("subagent A: list files")))
    assert (first.seq, second.seq) == (2, 1)
    assert first.out_of_order and first.expected_seq == 1 and not second.out_of_order
    assert not first.weak and not first.exact  # metadata.user_id differs: noise only
    assert [d.path for d in first.differences] == ["metadata.user_id"] and first.differences[0].volatile
    report = m.report()
    assert report["out_of_order"] == 1 and report["weak"] == 0 and report["served"] == 2
    assert report["notes"] == ["#2 served out of recorded order (#1 was next)"]


def test_exact_body_wins_by_hash_and_identical_requests_go_in_recorded_order():
    body = json.dumps({"model": "m", "input": "same"}).encode()
    other = json.dumps({"input": "other", "model": "m"}).encode()
    m = Matcher([rec(1, body), rec(2, other), rec(3, body), rec(4, body)])
    # key order differs from the recording: still the canonical (exact) match
    got = [m.match(req(json.dumps({"input": "same", "model": "m"}).encode())) for _ in range(3)]
    assert [g.seq for g in got] == [1, 3, 4] and all(g.exact and not g.out_of_order for g in got[:1])
    assert m.match(req(other)).seq == 2
    miss = m.match(req(body))
    assert isinstance(miss, Miss) and miss.reason == "all_used"


def test_identical_content_with_fresh_ids_goes_in_recorded_order():
    bodies = [agent_body("same prompt") for _ in range(4)]
    m = Matcher([rec(i + 1, b) for i, b in enumerate(bodies)])
    got = [m.match(req(agent_body("same prompt"))) for _ in range(4)]
    assert [g.seq for g in got] == [1, 2, 3, 4]
    assert not any(g.out_of_order or g.weak for g in got)


def test_weak_match_names_the_differing_path():
    def body(text):
        return json.dumps({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "text", "text": text}]}]}).encode()

    m = Matcher([rec(7, body("what is 2+2?"))])
    got = m.match(req(body("what is 3+3?")))
    assert isinstance(got, Match) and got.seq == 7 and got.weak
    assert got.note() == "#7 served for a request whose `messages[2].content[0].text` differs"
    assert str(got.differences[0]) == '`messages[2].content[0].text`: "what is 2+2?" -> "what is 3+3?"'
    assert m.report()["weak"] == 1


def test_most_similar_wins_and_extra_turns_count_as_differences():
    one, two, three = (agent_body("task", turns=n) for n in (1, 2, 3))
    m = Matcher([rec(1, one), rec(2, two), rec(3, three)])
    assert m.match(req(agent_body("task", turns=2))).seq == 2
    assert m.match(req(agent_body("task", turns=3))).seq == 3


def test_strict_match_turns_weak_matches_into_misses_but_serves_noise_only_differences():
    cfg = MatchConfig(strict_match=True)
    m = Matcher([rec(1, agent_body("A")), rec(2, agent_body("B"))], cfg)
    assert m.match(req(agent_body("B"))).seq == 2  # only metadata.user_id differs
    miss = m.match(req(agent_body("C")))
    assert isinstance(miss, Miss) and miss.reason == "weak_match"
    assert "`messages[0].content[0].text`" in miss.message and miss.nearest == "#1 POST /v1/messages"
    assert '-messages[0].content[0].text: "A"' in miss.diff and '+messages[0].content[0].text: "C"' in miss.diff


def test_match_body_serves_exact_only_and_a_preset_makes_real_runs_exact():
    recorded = agent_body("hello", run="run-1")
    replayed = agent_body("hello", run="run-2")  # other day, other home directory, other user_id
    assert isinstance(Matcher([rec(1, recorded)], MatchConfig(match_body=True)).match(req(replayed)), Miss)
    got = Matcher([rec(1, recorded)], MatchConfig(match_body=True, presets=("claude-code",))).match(req(replayed))
    assert isinstance(got, Match) and got.exact
    # the preset leaves out only the volatile lines: the rest of the system text is compared
    changed = replayed.replace(b"Answer in English.", b"Answer in French.")
    miss = Matcher([rec(1, recorded)], MatchConfig(match_body=True, presets=("claude-code",))).match(req(changed))
    assert isinstance(miss, Miss) and "system[1].text" in miss.diff and "French" in miss.diff


def test_claude_code_preset_never_hides_a_users_prompt_after_a_gitstatus_line():
    # gitStatus: runs to the end of the system prompt; in a message it must not swallow the rest
    def body(tail: str) -> bytes:
        return json.dumps({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "gitStatus: clean\n" + tail}]}]}).encode()

    cfg = MatchConfig(match_body=True, presets=("claude-code",))
    assert isinstance(Matcher([rec(1, body("delete the prod database"))], cfg).match(req(body("say hi"))), Miss)


def test_ignore_with_regex_blanks_only_the_matching_part():
    cfg = MatchConfig(match_body=True, ignore_json_paths=("system[*].text~(?m)^Today's date: .*$",))
    a = json.dumps({"system": [{"text": "x\nToday's date: 2026-01-01\ny"}]}).encode()
    b = json.dumps({"system": [{"text": "x\nToday's date: 2026-02-02\ny"}]}).encode()
    c = json.dumps({"system": [{"text": "x\nToday's date: 2026-02-02\nz"}]}).encode()
    assert Matcher([rec(1, a)], cfg).match(req(b)).exact
    miss = Matcher([rec(1, a)], cfg).match(req(c))
    assert isinstance(miss, Miss)
    assert miss.differences[0].path == "system[0].text" and miss.differences[0].recorded == 'line 3: "y"'


def test_bad_ignore_and_unknown_preset_fail_at_configuration():
    with pytest.raises(PathError):
        MatchConfig(ignore_json_paths=("a.b~(unclosed",))
    with pytest.raises(PathError):
        MatchConfig(ignore_json_paths=("a..b[",))
    with pytest.raises(UnknownPreset, match="known: openai, codex"):
        MatchConfig(presets=("claude",))


def test_headers_opt_in_and_preset_headers_are_never_compared():
    h1 = [("x-team", "a"), ("x-claude-code-session-id", "s1")]
    h2 = [("x-team", "a"), ("x-claude-code-session-id", "s2")]
    cfg = MatchConfig(match_headers=("X-Team", "x-claude-code-session-id"), presets=("claude-code",))
    assert isinstance(Matcher([rec(1, headers=h1)], cfg).match(req(headers=h2)), Match)
    miss = Matcher([rec(1, headers=h1)], cfg).match(req(headers=[("x-team", "b")]))
    assert isinstance(miss, Miss) and "x-team" in miss.message


def test_number_types_are_distinct():
    a, b = b'{"n": 1, "f": true}', b'{"n": 1.0, "f": 1}'
    got = Matcher([rec(1, a)]).match(req(b))
    assert not got.exact and {d.path for d in got.differences} == {"n", "f"}


def test_non_json_bodies_compare_by_line():
    m = Matcher([rec(1, b"a=1\nb=2\nc=3"), rec(2, b"a=9\nb=8\nc=7")])
    got = m.match(req(b"a=9\nb=8\nc=6"))
    assert got.seq == 2 and got.differences[0].path == "body" and got.differences[0].received == 'line 3: "c=6"'
    assert m.match(req(b"\x00\xff binary")).seq == 1


# -- presets --------------------------------------------------------------------------------------

CODEX_TURN = {
    "model": "gpt-5-codex", "instructions": "You are Codex.", "stream": True, "store": False,
    "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text":
            "<environment_context>\n  <cwd>/home/alice/repo</cwd>\n  <shell>zsh</shell>\n"
            "  <current_date>2026-11-23</current_date>\n  <timezone>Europe/Paris</timezone>\n</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
    ],
    "prompt_cache_key": "0199a3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b",
}
GEMINI_TURN = {
    "contents": [{"role": "user", "parts": [{"text":
        "This is the Gemini CLI. We are setting up the context for our chat.\n"
        "Today's date is Monday, November 23, 2026.\nMy operating system is: linux\n"
        "I'm currently working in the directory: /home/alice/repo"}]},
        {"role": "user", "parts": [{"text": "list the files"}]}],
    "generationConfig": {"temperature": 0},
}
OPENAI_TURN = {"model": "gpt-4.1-mini", "input": "hi", "prompt_cache_key": "k-1", "safety_identifier": "u-1",
               "user": "end-user-1"}


def _rerun(doc: dict, edits) -> bytes:
    doc = copy.deepcopy(doc)
    edits(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("preset, doc, volatile, content", [
    ("codex", CODEX_TURN,
     lambda d: (d.update(prompt_cache_key=str(uuid.uuid4())), d["input"][0]["content"][0].update(
         text=d["input"][0]["content"][0]["text"].replace("alice/repo", "ci/work").replace("23", "25")
         .replace("zsh", "bash").replace("Europe/Paris", "UTC"))),
     lambda d: d["input"][1]["content"][0].update(text="fix the other bug")),
    ("gemini", GEMINI_TURN,
     lambda d: d["contents"][0]["parts"][0].update(text=d["contents"][0]["parts"][0]["text"].replace(
         "Monday, November 23", "Wednesday, November 25").replace("linux", "darwin").replace("/home/alice", "/Users/bob")),
     lambda d: d["contents"][1]["parts"][0].update(text="delete the files")),
    ("openai", OPENAI_TURN,
     lambda d: d.update(prompt_cache_key="k-2", safety_identifier="u-2", user="end-user-2"),
     lambda d: d.update(input="bye")),
])
def test_presets_make_reruns_exact_and_keep_content_compared(preset, doc, volatile, content):
    recorded = json.dumps(doc).encode()
    cfg = MatchConfig(match_body=True, presets=(preset,))
    assert Matcher([rec(1, recorded)], cfg).match(req(_rerun(doc, volatile))).exact
    assert isinstance(Matcher([rec(1, recorded)], MatchConfig(match_body=True)).match(req(_rerun(doc, volatile))),
                      Miss)
    assert isinstance(Matcher([rec(1, recorded)], cfg).match(req(_rerun(doc, lambda d: (volatile(d), content(d))))),
                      Miss)


def test_every_preset_parses_and_anthropic_is_part_of_claude_code():
    for p in PRESETS.values():
        assert p.rules() and p.summary
    assert set(PRESETS["anthropic"].ignore) <= set(PRESETS["claude-code"].ignore)
    assert set(PRESETS["openai"].ignore) <= set(PRESETS["codex"].ignore)


# -- misses -----------------------------------------------------------------------------------------

def test_miss_on_query_lists_the_differing_pairs_bounded():
    big = "&".join(f"p{i}={'v' * 20}{i}" for i in range(3000))  # ~80 KB
    m = Matcher([rec(1, path="/v1/x", query=big), rec(2, path="/v1/y")])
    miss = m.match(req(path="/v1/x", query=big.replace("p7=", "p7=changed")))
    assert isinstance(miss, Miss) and miss.nearest.startswith("#1 POST /v1/x?")
    assert "-query p7=" in miss.diff and "+query p7=changed" in miss.diff
    assert len(miss.diff) <= 4100 and len(miss.request) < 250
    assert len(json.dumps(miss.to_json())) < 10_000


def test_a_miss_among_large_bodies_is_fast_and_names_the_nearest():
    # The old matcher ranked with difflib over whole bodies: minutes for this. The bench has the figure.
    notes = "".join(f"line {j}: some tool output of the earlier turn\n" for j in range(1500))  # ~60 KB
    bodies = [agent_body(f"prompt {i}\n{notes}") for i in range(200)]
    m = Matcher([rec(i + 1, b) for i, b in enumerate(bodies)], MatchConfig(match_body=True))
    t0 = time.perf_counter()
    miss = m.match(req(agent_body(f"prompt 17\n{notes}".replace("line 700:", "line 700 (edited):"))))
    elapsed = time.perf_counter() - t0
    assert isinstance(miss, Miss) and miss.nearest == "#18 POST /v1/messages"
    assert elapsed < 3.0, elapsed


def test_diagnosis_can_be_deferred():
    m = Matcher([rec(1, b'{"a": 1}', path="/v1/a")])
    miss = m.match(req(b'{"a": 1}', path="/v1/b"), diagnose=False)
    assert isinstance(miss, Miss) and not miss.diagnosed and miss.nearest is None
    m.diagnose(miss)
    assert miss.diagnosed and miss.nearest == "#1 POST /v1/a" and '-request: "POST /v1/a"' in miss.diff


class CountingSource(ListSource):
    """A CandidateSource without __iter__ that counts what the matcher asks for."""

    def __init__(self, its):
        super().__init__(its)
        self.calls: list = []

    def candidates(self, key):
        self.calls.append(("candidates", key))
        return super().candidates(key)

    def nearby(self, key, limit):
        self.calls.append(("nearby", limit))
        return super().nearby(key, limit)

    __iter__ = None


def test_matcher_takes_a_candidate_source_and_fetches_each_key_once():
    src = CountingSource([rec(i, json.dumps({"i": i}).encode()) for i in range(1, 6)])
    m = Matcher(src)
    for i in (3, 1, 2):
        assert m.match(req(json.dumps({"i": i}).encode())).seq == i
    assert src.calls == [("candidates", request_key(req()))]
    m.match(req(path="/v1/other"))
    assert ("nearby", 32) in src.calls
    assert m.unused() == [] and m.served == 3 and m.report()["recordings"] == 5


@FAST
@given(st.permutations(list(range(6))), st.lists(st.integers(0, 2), min_size=6, max_size=6))
def test_any_arrival_order_gets_each_request_its_own_recording(order, prompts):
    """Recorded bodies whose prompts may repeat; requests carry fresh ids and arrive in any order.
    Distinct prompts always get their own recording; equal prompts share theirs in recorded order."""
    recordings = [rec(i + 1, agent_body(f"prompt {p}")) for i, p in enumerate(prompts)]
    m = Matcher(recordings)
    got = {}
    for i in order:
        result = m.match(req(agent_body(f"prompt {prompts[i]}")))
        assert isinstance(result, Match) and not result.weak
        got.setdefault(prompts[i], []).append(result.seq)
    for p, seqs in got.items():
        assert sorted(seqs) == [i + 1 for i, q in enumerate(prompts) if q == p]
        assert seqs == sorted(seqs)


# -- WebSocket: handshake reserves, first frame binds -------------------------------------------------

def refused(seq, path="/v1/responses"):
    it = Interaction(Kind.HTTP, Request("GET", path, headers=[("upgrade", "websocket")]), Response(426))
    it.seq = seq
    return it


def _hs():
    return Request("GET", "/v1/responses", headers=[("upgrade", "websocket")])


def test_concurrent_ws_sessions_bind_by_first_frame_swapping_reservations():
    fa = b'{"type":"response.create","input":"A","event_id":"e1"}'
    fb = b'{"type":"response.create","input":"B","event_id":"e2"}'
    m = Matcher([ws(1, fa), ws(2, fb)])
    c1, c2 = m.match(_hs(), "ws"), m.match(_hs(), "ws")
    assert (c1.seq, c2.seq) == (1, 2) and c1.tentative and c2.tentative
    b1 = m.bind(c1, fb.replace(b"e2", b"e9"))  # connection 1 speaks B's words first
    assert b1.seq == 2 and b1.rebound_from == 1 and b1.out_of_order
    assert c2.seq == 1  # connection 2, still silent, now holds #1
    assert m.bind(c2, fa).seq == 1 and m.served == 2


def test_ws_first_frame_can_take_an_unused_session_and_release_its_own():
    fa, fb = b'{"type":"x","input":"A"}', b'{"type":"x","input":"B"}'
    m = Matcher([ws(1, fa), ws(2, fb), refused(3)])
    c1 = m.match(_hs(), "ws")
    assert m.bind(c1, fb).seq == 2
    c2 = m.match(_hs(), "ws")
    assert c2.seq == 1 and m.bind(c2, fa).seq == 1
    refusal = m.match(_hs(), "ws")
    assert refusal.seq == 3 and not refusal.tentative


def test_ws_sessions_without_client_frames_are_not_rebound():
    m = Matcher([ws(1, None), ws(2, b'{"type":"x"}')])
    pre = m.match(_hs(), "ws")  # a preconnect that never sends a frame
    c = m.match(_hs(), "ws")
    assert m.bind(c, b'{"type":"x"}').seq == 2 and pre.seq == 1


# -- frames ---------------------------------------------------------------------------------------

def test_frame_comparison_reports_paths_and_values():
    exp = b'{"type":"response.create","input":[{"role":"user","content":"hi"}],"event_id":"evt_1a2b3c4d5e"}'
    got = b'{"type":"response.create","input":[{"role":"user","content":"bye"}],"event_id":"evt_9z8y7x6w5v"}'
    ok = compare_frame(0, exp, True, got, True)
    assert ok.ok and ok.weak and [d.path for d in ok.differences] == ["input[0].content", "event_id"]
    strict = compare_frame(0, exp, True, got, True, MatchConfig(strict_match=True))
    assert not strict.ok and strict.reason == 'frame 1 differs from the recording: `input[0].content`: "hi" -> "bye"'
    body = compare_frame(1, exp, True, got, True, MatchConfig(match_body=True, presets=("openai",)))
    assert not body.ok and "event_id" not in body.reason and "input[0].content" in body.reason
    wrong_type = compare_frame(0, exp, True, b'{"type":"session.update"}', True)
    assert not wrong_type.ok and "expected type 'response.create', got 'session.update'" in wrong_type.reason
    binary = compare_frame(0, b"\x01\x02", False, b"\x01\x03", False)
    assert not binary.ok and "bytes differ" in binary.reason


def test_fingerprint_and_diff_are_bounded():
    a = json.dumps({"items": [{"v": i} for i in range(5000)]}).encode()
    b = json.dumps({"items": [{"v": -i} for i in range(5000)]}).encode()
    diffs, more = diff_bodies(a, b)
    assert len(diffs) == 20 and more
    assert fingerprint(a).exact != fingerprint(b).exact


@FAST
@given(st.lists(st.tuples(st.text("ab-_.~=%+ 1", max_size=4), st.text("ab-_.~=%+ 1", max_size=4)), max_size=6))
def test_normalize_query_fast_path_equals_the_general_rule(pairs):
    from urllib.parse import parse_qsl, urlencode

    from proxy.matching import normalize_query

    query = "&".join(f"{k}={v}" if v else k for k, v in pairs)
    assert normalize_query(query) == urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def test_format_path_and_ignores_on_other_types():
    from proxy.jsonpath import Ignore, format_path

    assert format_path(["messages", 2, "content", 0, "text"]) == "messages[2].content[0].text"
    assert format_path(["a.b", "x y", 0]) == "['a.b']['x y'][0]"
    doc = {"system": [{"text": 5}, {"text": "Today's date: 1\nkeep"}]}
    assert Ignore.parse("system[*].text~Today's date: .*").apply(doc) == 2
    assert doc == {"system": [{"text": 5}, {"text": "<ignored>\nkeep"}]}


def test_a_request_unlike_every_recording_gets_the_next_in_recorded_order():
    big = b'{"model":"sim-1","stream":true,"input":"Say hello"}'
    small = b'{"model":"sim-1","input":"again"}'
    m = Matcher([rec(1, big), rec(2, small)])
    got = m.match(req(b"{}"))  # shares nothing with either: the smaller one is not "closer"
    assert got.seq == 1 and got.weak and not got.out_of_order
    assert m.match(req(b'{"model":"sim-1","input":"again!"}')).seq == 2


def test_integers_beyond_64_bits_stay_exact():
    """orjson reads 123456789012345678901234567890 as a float: two ids differing in the last
    digit had one canonical form and --match-body served the other's recording."""
    a = b'{"id": 123456789012345678901234567890, "n": -18446744073709551617}'
    b = b'{"id": 123456789012345678901234567891, "n": -18446744073709551617}'
    assert fingerprint(a).exact != fingerprint(b).exact
    m = Matcher([rec(1, a)], MatchConfig(match_body=True))
    assert isinstance(m.match(req(b)), Miss)
    assert isinstance(m.match(req(a)), Match)


def test_ws_sessions_bound_in_handshake_order_are_not_out_of_order():
    """The second connection speaking first and binding its own reservation is in order;
    only a bind that moves a connection off its reservation is out of order."""
    fa, fb = b'{"type":"x","input":"A"}', b'{"type":"x","input":"B"}'
    m = Matcher([ws(1, fa), ws(2, fb)])
    c1, c2 = m.match(_hs(), "ws"), m.match(_hs(), "ws")
    assert m.bind(c2, fb).seq == 2 and m.bind(c1, fa).seq == 1
    assert m.report()["out_of_order"] == 0 and m.report()["notes"] == []


def test_a_weak_first_frame_is_counted_once():
    from proxy.replay.engine import Engine

    e = Engine([ws(1, b'{"type":"x","input":"A"}')])
    c = e.bind(e.handshake(_hs()), b'{"type":"x","input":"Z"}')
    e.check_frame(e.ws_script(c.interaction), 0, b'{"type":"x","input":"Z"}', True)
    r = e.report()
    assert r["weak"] + len(r["weak_frames"]) == 1


def test_the_nth_identical_request_costs_what_the_first_did():
    # Identical requests take the identical recordings in order; finding the next unused
    # one must not walk over the used ones (that made replay quadratic: 850 us per
    # request after a few thousand, in a load test of one small JSON exchange).
    n, k = 8000, 600
    its = [Interaction(Kind.HTTP, Request("POST", "/v1/x", body=b'{"a":1}'), Response(200, "OK", []), seq=i + 1)
           for i in range(n)]
    m = Matcher(ListSource(its))
    req = Request("POST", "/v1/x", body=b'{"a":1}')

    def timed(count: int) -> float:
        t = time.process_time()
        for _ in range(count):
            assert isinstance(m.match(req), Match)
        return time.process_time() - t

    first = min(timed(k // 3) for _ in range(3))
    timed(n - 2 * k)
    last = min(timed(k // 3) for _ in range(3))
    assert [x.interaction.seq for x in m.matches[:3]] == [1, 2, 3] and m.matches[-1].interaction.seq == n
    assert last < 4 * first + 0.002, (first, last)


def test_requests_normalized_once_still_get_their_own_recordings_in_order():
    # The engine keeps normalized requests by the request as received: a request sent
    # again must still take the next recording, and one differing only in a header
    # (a secret the redactor masks, say) must not be taken for it.
    from proxy.replay.engine import Engine, HttpScript, MissReply

    def it(i: int, body: bytes, h: str = "1") -> Interaction:
        return Interaction(Kind.HTTP, Request("POST", "/v1/x", headers=[("x-h", h)], body=body),
                           Response(200, "OK", [("x-n", str(i))]), seq=i)

    e = Engine([it(1, b'{"a":1}'), it(2, b'{"a":2}'), it(3, b'{"a":1}'), it(4, b'{"a":1}', "2")],
               MatchConfig(match_headers=("x-h",)))

    def ask(body: bytes, h: str = "1"):
        r = e.http(Request("POST", "/v1/x", headers=[("x-h", h)], body=body))
        return r.seq if isinstance(r, HttpScript) else r

    assert [ask(b'{"a":1}'), ask(b'{"a":2}'), ask(b'{"a":1}', "2"), ask(b'{"a":1}')] == [1, 2, 4, 3]
    assert isinstance(ask(b'{"a":1}'), MissReply)

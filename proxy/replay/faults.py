"""Faults layered on recordings: the failures a client must survive, injected into replayed traffic.

No I/O. A fault is data: an action (what to do to a response or a WebSocket session) and a
target (which recordings). ``parse_fault`` reads the one text form shared by ``--fault``, the
pytest marker and ``FaultConfig``; a ``FaultPlan`` (one per cassette, called by the engine under
its lock) decides which faults each matched recording gets and turns the engine's script into a
faulted one. The players only execute scripts.

    KIND[:ARG,NAME=VALUE,...][@TARGET]

    status:429                    answer 429 + provider-shaped error body + Retry-After, then the recording
    cut:event=3,how=reset         after SSE event 3 (or byte=N, or headers: before them): reset (RST),
                                  eof (FIN, body incomplete) or end (the body ends cleanly there)
    stall:1.5s,event=4            nothing for 1.5 s before event 4 (or byte=N); later events keep their gaps
    drip:200                      at most 200 body bytes per second
    ttfb:2s / ttfb:x4             response headers after 2 s / after 4x the recorded time
    sse-error:event=2             an SSE error event in the provider's shape after event 2, then the end
    ws-accept:3s / ws-accept:x4   the 101 after 3 s / 4x the recorded accept delay
    ws-refuse:426                 refuse the upgrade (426 or 403, provider-shaped body)
    ws-close:1011,frame=3         close with code and reason (reason=...) after server frame 3
    ws-drop:frame=3               drop the connection (no close frame) after server frame 3
    ws-stall:1s,frame=2           nothing for 1 s before server frame 2

TARGET is ``#N`` (recording N, as ``proxy inspect`` numbers them; ``#1,#3`` for several), a path
glob (``/v1/responses``, ``/v1/*``), ``every=N`` (every Nth recording by number among those of
the fault's kind the other conditions select, whatever order requests arrive in), joined by
commas (all must hold). Without a target a fault hits every recording of its kind (HTTP or
WebSocket). Every kind takes ``times=N`` (default 1). Values with ``,`` or ``@`` go in double quotes.

Rules:
- A fault hits a recording at most ``times`` times; after that the recording is served as recorded.
- Faults that end the exchange early (status, cut, sse-error, ws-refuse, ws-close, ws-drop) give the
  recording back: the client's retry (or reconnect) gets it, and it counts as served only then.
- Faults that only delay (stall, drip, ttfb, ws-accept, ws-stall) serve the recording; a client that
  leaves before the end (its timeout) gives it back too.
- One request gets every delaying fault that hits it and at most one ending fault (the first given);
  status and ws-refuse answer alone. A stall past the point where the ending fault ends the
  exchange (stall before event 5, cut after event 3) is left for the retry.
- Durations are real seconds, never divided by ``--speed``: a stall at ``--speed 0`` still stalls.
- ``ws-refuse`` with a path target also refuses handshakes the cassette has no session for (every
  time), so an HTTP-only recording tests a client's fallback. A handshake whose sessions were
  all used stays a miss.
- Chaos (``Chaos(seed, rate, kinds)``) picks for each recording, from the seed, the salt and the
  recording's number alone, whether it gets a fault and which: the same seed gives the same faults
  whatever order requests arrive in.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import math
import random
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import ClassVar

from ..matching import Match, Miss, request_class
from ..model import Chunk, Direction, End, Interaction, Kind, Request, Response
from ..sse import event_ends, parse as parse_sse
from .engine import Ending, HttpScript, WsEnding, WsScript

log = logging.getLogger("proxy.replay")


class FaultError(ValueError):
    """A fault spec that does not parse or makes no sense; the message names the offending value."""


PROVIDERS = ("openai", "anthropic", "gemini")
CUT_HOW = ("reset", "eof", "end")
RETRY_STATUSES = (429, 503, 529)  # answered with Retry-After unless told otherwise


# -- values ---------------------------------------------------------------------

def _count(name: str, text: str, low: int = 0) -> int:
    try:
        n = int(text)
    except ValueError:
        raise FaultError(f"{name}={text!r}: expected a whole number") from None
    if n < low:
        raise FaultError(f"{name}={text!r}: must be >= {low}")
    return n


def _seconds(name: str, text: str) -> float:
    t = text.strip().lower()
    scale = 1.0
    if t.endswith("ms"):
        t, scale = t[:-2], 0.001
    elif t.endswith("s"):
        t = t[:-1]
    try:
        v = float(t) * scale
    except ValueError:
        raise FaultError(f"{name}={text!r}: expected seconds, e.g. 1.5, 1.5s or 300ms") from None
    if not math.isfinite(v) or v < 0:
        raise FaultError(f"{name}={text!r}: must be a duration >= 0")
    return v


def _factor(name: str, text: str) -> float:
    try:
        v = float(text.strip().lstrip("xX"))
    except ValueError:
        raise FaultError(f"{name}={text!r}: expected a factor, e.g. 4 or x4") from None
    if not math.isfinite(v) or v < 0:
        raise FaultError(f"{name}={text!r}: must be >= 0")
    return v


def _choice(name: str, text: str, options: tuple[str, ...]) -> str:
    if text.lower() not in options:
        raise FaultError(f"{name}={text!r}: choose one of {', '.join(options)}")
    return text.lower()


def _num(v: float) -> str:
    return f"{v:g}"


def _text(name: str, text: str) -> str:
    return text


def _provider(name: str, text: str) -> str:
    return _choice(name, text, PROVIDERS)


def _how(name: str, text: str) -> str:
    return _choice(name, text, CUT_HOW)


def _flag(name: str, text: str) -> bool:
    return _choice(name, text, ("true", "false")) == "true"


def _retry_after(name: str, text: str) -> float | None:
    return None if text.lower() == "none" else _seconds(name, text)


def _rate(name: str, text: str) -> float:
    try:
        return float(text.lower().removesuffix("b/s"))
    except ValueError:
        raise FaultError(f"{name}={text!r}: expected bytes per second") from None


# -- actions: what a fault does -------------------------------------------------

@dataclass(frozen=True)
class Facts:
    """What a fault needs to know about the request and the recording it would hit."""

    path: str
    provider: str
    body: bytes = b""
    ends: list[int] | None = None  # SSE event ends; None when the body is not SSE
    content_length: bool = False  # the recorded response declares its length
    server_frames: int = 0  # WebSocket


class Action:
    """Base of the fault kinds. ``kind`` is the spec name; ``scope`` "http" or "ws";
    ``ends_exchange`` for faults that end it early (they give the recording back)."""

    kind: ClassVar[str]
    scope: ClassVar[str] = "http"
    ends_exchange: ClassVar[bool] = False
    positional: ClassVar[str | None] = None  # the field a bare first argument sets
    names: ClassVar[dict[str, str]] = {}  # spec name -> field name, where they differ
    params: ClassVar[dict[str, object]] = {}  # field name -> converter(spec name, text)

    def why_not(self, facts: Facts) -> str | None:
        """Why this fault cannot apply to that recording (None when it can)."""
        return None

    def label(self) -> str:
        back = {v: k for k, v in self.names.items()}
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default and f.name != self.positional:
                continue
            text = _fmt(f.name, value)
            bare = f.name == self.positional and f.name in ("code", "status", "seconds", "rate")
            parts.append(text if bare else f"{back.get(f.name, f.name)}={text}")
        return self.kind + (":" + ",".join(parts) if parts else "")

    @classmethod
    def convert(cls, name: str, text: str):
        """The value of field ``name`` from its text (KeyError: no such parameter)."""
        back = {v: k for k, v in cls.names.items()}
        return cls.params[name](back.get(name, name), text)

    @classmethod
    def bare(cls, text: str) -> tuple[str, str]:
        """(field, value) for a first argument given without a name."""
        if cls.positional is None:
            raise FaultError(f"{cls.kind}: {text!r} needs a name (NAME=VALUE)")
        return cls.positional, text


def _fmt(name: str, value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return _num(value) + ("s" if name in ("seconds", "retry_after") else "")
    text = str(value)
    return f'"{text}"' if any(c in text for c in ',@"') else text


def _one_point(kind: str, event: int | None, byte: int | None, headers: bool = False) -> None:
    if (event is not None) + (byte is not None) + headers != 1:
        raise FaultError(f"{kind}: give exactly one of event=N or byte=N" + (" or headers" if kind == "cut" else ""))


def _point_why_not(facts: Facts, event: int | None, byte: int | None, before: bool) -> str | None:
    if event is not None:
        if facts.ends is None:
            return "the recorded body is not an SSE stream (use byte=N)"
        if event > len(facts.ends) or (before and event == 0):
            return f"the recording has {len(facts.ends)} event(s)"
    elif byte is not None and (byte >= len(facts.body) if before else byte > len(facts.body)):
        return f"the recorded body has {len(facts.body)} byte(s)"
    return None


def _point(facts: Facts, event: int | None, byte: int | None, before: bool) -> int:
    """The body offset "after event N" (or before it), or byte N."""
    if byte is not None:
        return byte
    assert facts.ends is not None and event is not None
    if before:
        return facts.ends[event - 2] if event >= 2 else 0
    return facts.ends[event - 1] if event >= 1 else 0


@dataclass(frozen=True)
class Status(Action):
    """Answer with ``code`` and a provider-shaped error body instead of the recording (which the
    retry gets). 429/503/529 carry ``Retry-After`` (default 1 s; ``retry_after=none`` omits it)."""

    kind: ClassVar[str] = "status"
    ends_exchange: ClassVar[bool] = True
    positional: ClassVar[str | None] = "code"
    code: int = 0
    provider: str | None = None  # None: from the request (path, headers)
    retry_after: float | None = -1.0  # -1: the default for the code
    params: ClassVar[dict] = {"code": _count, "provider": _provider, "retry_after": _retry_after}

    def __post_init__(self) -> None:
        if not self.code:
            raise FaultError("status: give the status code, e.g. status:429")
        if not 400 <= self.code <= 599:
            raise FaultError(f"status:{self.code}: the status must be 400-599")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise FaultError(f"provider={self.provider!r}: choose one of {', '.join(PROVIDERS)}")
        if self.retry_after == -1.0:
            object.__setattr__(self, "retry_after", 1.0 if self.code in RETRY_STATUSES else None)

    def label(self) -> str:
        text = f"status:{self.code}"
        if self.provider:
            text += f",provider={self.provider}"
        default = 1.0 if self.code in RETRY_STATUSES else None
        if self.retry_after != default:
            text += f",retry_after={_fmt('retry_after', self.retry_after)}"
        return text


@dataclass(frozen=True)
class Cut(Action):
    """End the response after SSE event N (or body byte N, or before the headers: ``cut:headers``):
    ``how=reset`` drops the connection with a TCP reset, ``eof`` closes it (FIN) with the body
    incomplete, ``end`` finishes the body cleanly there (a stream that stops before its last
    event; for a response with a content-length, or before the headers, ``end`` is ``eof``)."""

    kind: ClassVar[str] = "cut"
    ends_exchange: ClassVar[bool] = True
    event: int | None = None
    byte: int | None = None
    how: str = "reset"
    headers: bool = False
    params: ClassVar[dict] = {"event": _count, "byte": _count, "how": _how, "headers": _flag}

    def __post_init__(self) -> None:
        _one_point(self.kind, self.event, self.byte, self.headers)
        _choice("how", self.how, CUT_HOW)

    def why_not(self, facts: Facts) -> str | None:
        return None if self.headers else _point_why_not(facts, self.event, self.byte, before=False)

    def label(self) -> str:
        if self.headers:
            return "cut:headers" + (f",how={self.how}" if self.how != "reset" else "")
        return super().label()

    @classmethod
    def bare(cls, text: str) -> tuple[str, str]:
        if text.lower() == "headers":
            return "headers", "true"
        return super().bare(text)


@dataclass(frozen=True)
class Stall(Action):
    """Send nothing for ``for`` seconds before SSE event N (or body byte N); what follows keeps
    its recorded gaps."""

    kind: ClassVar[str] = "stall"
    positional: ClassVar[str | None] = "seconds"
    names: ClassVar[dict[str, str]] = {"for": "seconds"}
    seconds: float = 1.0
    event: int | None = None
    byte: int | None = None
    params: ClassVar[dict] = {"seconds": _seconds, "event": _count, "byte": _count}

    def __post_init__(self) -> None:
        _one_point(self.kind, self.event, self.byte)
        if self.event == 0:
            raise FaultError("stall: event=N counts from 1 (the stall comes before event N)")

    def why_not(self, facts: Facts) -> str | None:
        return _point_why_not(facts, self.event, self.byte, before=True)


@dataclass(frozen=True)
class Drip(Action):
    """Send the body at most ``rate`` bytes per second (in small pieces), never earlier than recorded."""

    kind: ClassVar[str] = "drip"
    positional: ClassVar[str | None] = "rate"
    rate: float = 0.0
    params: ClassVar[dict] = {"rate": _rate}

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):  # inf would reach the player as a crash
            raise FaultError(f"drip:{_num(self.rate)}: the rate (bytes per second) must be a number > 0")


@dataclass(frozen=True)
class _Delay(Action):
    """Shared by ttfb and ws-accept: ``set`` seconds (real time) or ``scale`` x the recorded time."""

    positional: ClassVar[str | None] = "seconds"
    names: ClassVar[dict[str, str]] = {"set": "seconds"}
    seconds: float | None = None
    scale: float | None = None
    params: ClassVar[dict] = {"seconds": _seconds, "scale": _factor}

    def __post_init__(self) -> None:
        if (self.seconds is None) == (self.scale is None):
            raise FaultError(f"{self.kind}: give exactly one of set=SECONDS (or 2s) or scale=FACTOR (or x4)")

    def label(self) -> str:
        if self.scale is not None:
            return f"{self.kind}:x{_num(self.scale)}"
        return f"{self.kind}:{_num(self.seconds)}s"


    @classmethod
    def bare(cls, text: str) -> tuple[str, str]:
        return ("scale", text) if text[:1] in "xX" else ("seconds", text)


@dataclass(frozen=True)
class Ttfb(_Delay):
    """Response headers after ``set`` seconds, or ``scale`` x the recorded time to headers; the body
    keeps its recorded gaps after them."""

    kind: ClassVar[str] = "ttfb"


@dataclass(frozen=True)
class SseError(Action):
    """After SSE event N, an error event in the provider's shape (OpenAI Responses ``event: error``,
    Chat Completions ``data: {"error": ...}``, Anthropic ``event: error`` / ``overloaded_error``,
    Gemini ``data: {"error": ...}``), then the end of the stream."""

    kind: ClassVar[str] = "sse-error"
    ends_exchange: ClassVar[bool] = True
    positional: ClassVar[str | None] = "event"
    event: int = 0
    provider: str | None = None
    code: str | None = None  # the error's code/type/status; default: the provider's overload or server error
    message: str | None = None
    params: ClassVar[dict] = {"event": _count, "provider": _provider, "code": _text, "message": _text}

    def __post_init__(self) -> None:
        if self.event < 0:
            raise FaultError("sse-error: event=N must be >= 0")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise FaultError(f"provider={self.provider!r}: choose one of {', '.join(PROVIDERS)}")

    def why_not(self, facts: Facts) -> str | None:
        if facts.content_length:
            return "the recorded response has a content-length (not a stream)"
        return _point_why_not(facts, self.event, None, before=False)


@dataclass(frozen=True)
class WsAccept(_Delay):
    """The 101 after ``set`` seconds, or ``scale`` x the recorded accept delay."""

    kind: ClassVar[str] = "ws-accept"
    scope: ClassVar[str] = "ws"


@dataclass(frozen=True)
class WsRefuse(Action):
    """Refuse the upgrade with ``status`` (426 or 403 typically) and a provider-shaped body; the
    session stays for a later handshake."""

    kind: ClassVar[str] = "ws-refuse"
    scope: ClassVar[str] = "ws"
    ends_exchange: ClassVar[bool] = True
    positional: ClassVar[str | None] = "status"
    status: int = 426
    provider: str | None = None
    params: ClassVar[dict] = {"status": _count, "provider": _provider}

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise FaultError(f"ws-refuse:{self.status}: the status must be 400-599")


def _frames_why_not(facts: Facts, frame: int, before: bool) -> str | None:
    if frame > facts.server_frames or (before and frame == 0):
        return f"the session has {facts.server_frames} server frame(s)"
    return None


_SENDABLE_CLOSE = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))


@dataclass(frozen=True)
class WsClose(Action):
    """Close with ``code`` and ``reason`` right after server frame N (0: right after the accept)."""

    kind: ClassVar[str] = "ws-close"
    scope: ClassVar[str] = "ws"
    ends_exchange: ClassVar[bool] = True
    positional: ClassVar[str | None] = "code"
    code: int = 1011
    frame: int = 0
    reason: str = ""
    params: ClassVar[dict] = {"code": _count, "frame": _count, "reason": _text}

    def __post_init__(self) -> None:
        if self.code not in _SENDABLE_CLOSE:
            raise FaultError(f"ws-close:{self.code}: not a close code a server may send "
                             "(1000-1003, 1007-1014, 3000-4999)")
        if self.frame < 0:
            raise FaultError("ws-close: frame=N must be >= 0")
        if len(self.reason.encode()) > 123:
            raise FaultError("ws-close: a close reason is at most 123 bytes")

    def why_not(self, facts: Facts) -> str | None:
        return _frames_why_not(facts, self.frame, before=False)


@dataclass(frozen=True)
class WsDrop(Action):
    """Drop the connection without a close frame right after server frame N (the client sees 1006)."""

    kind: ClassVar[str] = "ws-drop"
    scope: ClassVar[str] = "ws"
    ends_exchange: ClassVar[bool] = True
    positional: ClassVar[str | None] = "frame"
    frame: int = 0
    params: ClassVar[dict] = {"frame": _count}

    def why_not(self, facts: Facts) -> str | None:
        return _frames_why_not(facts, self.frame, before=False)


@dataclass(frozen=True)
class WsStall(Action):
    """Send nothing for ``for`` seconds before server frame N; the frames after it keep their gaps."""

    kind: ClassVar[str] = "ws-stall"
    scope: ClassVar[str] = "ws"
    positional: ClassVar[str | None] = "seconds"
    names: ClassVar[dict[str, str]] = {"for": "seconds"}
    seconds: float = 1.0
    frame: int = 1
    params: ClassVar[dict] = {"seconds": _seconds, "frame": _count}

    def __post_init__(self) -> None:
        if self.frame < 1:
            raise FaultError("ws-stall: frame=N counts from 1 (the stall comes before frame N)")

    def why_not(self, facts: Facts) -> str | None:
        return _frames_why_not(facts, self.frame, before=True)


KINDS: dict[str, type[Action]] = {c.kind: c for c in (
    Status, Cut, Stall, Drip, Ttfb, SseError, WsAccept, WsRefuse, WsClose, WsDrop, WsStall)}


# -- targets and faults -----------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Which recordings a fault may hit: all conditions given must hold."""

    seqs: frozenset[int] = frozenset()  # recording numbers
    path: str | None = None  # glob on the request path
    every: int | None = None  # every Nth recording that passes the other conditions

    def label(self) -> str:
        parts = [f"#{n}" for n in sorted(self.seqs)]
        if self.path:
            parts.append(self.path)
        if self.every:
            parts.append(f"every={self.every}")
        return ",".join(parts)


@dataclass(frozen=True)
class Fault:
    action: Action
    target: Target = field(default_factory=Target)
    times: int = 1

    def __post_init__(self) -> None:
        if self.times < 1:
            raise FaultError("times=N must be >= 1")

    @property
    def scope(self) -> str:
        return self.action.scope

    def label(self) -> str:
        text = self.action.label()
        if self.times != 1:
            text += ("," if ":" in text else ":") + f"times={self.times}"
        where = self.target.label()
        return text + (f"@{where}" if where else "")

    def __str__(self) -> str:
        return self.label()


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise FaultError(f"unbalanced double quote in {text!r}")
    out.append("".join(cur))
    return out


def _unquote(text: str) -> str:
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def parse_target(text: str) -> Target:
    seqs: set[int] = set()
    path, every = None, None
    if not text.strip():
        raise FaultError("nothing after @: give a target (#N, a /path glob, every=N) or leave out the @")
    for item in (i.strip() for i in text.split(",")):
        if item.startswith("#") or item.isdigit():
            seqs.add(_count("#N", item.lstrip("#"), 1))
        elif item.startswith("/"):
            if path is not None:  # all conditions must hold: two globs would be silently one
                raise FaultError(f"target {text!r}: one path glob per fault (give the fault once per path, "
                                 "or a glob that covers both)")
            path = item
        elif item.startswith("every="):
            if every is not None:
                raise FaultError(f"target {text!r}: every given twice")
            every = _count("every", item[6:], 1)
        elif item.startswith("times="):
            raise FaultError(f"target {text!r}: times=N is a parameter: put it before the @, "
                             "e.g. status:429,times=2@#1")
        else:
            raise FaultError(f"target {item!r}: expected #N (a recording), a /path glob or every=N")
    return Target(frozenset(seqs), path, every)


def parse_fault(text: str) -> Fault:
    """``KIND[:ARG,NAME=VALUE,...][@TARGET]`` (see the module docstring) -> Fault."""
    if isinstance(text, Fault):
        return text
    pieces = _split_outside_quotes(text.strip(), "@")
    if len(pieces) > 2:
        raise FaultError(f"{text!r}: more than one @ (quote values that contain @)")
    spec, where = pieces[0], pieces[1] if len(pieces) == 2 else ""
    kind, _, args = spec.partition(":")
    cls = KINDS.get(kind.strip().lower())
    if cls is None:
        raise FaultError(f"unknown fault kind {kind.strip()!r}; choose one of {', '.join(KINDS)}")
    values: dict = {}
    times = None
    for i, item in enumerate(_split_outside_quotes(args, ",") if args.strip() else []):
        name, eq, value = item.partition("=")
        if not eq:
            if i:
                raise FaultError(f"{cls.kind}: {item.strip()!r} needs a name (NAME=VALUE)")
            name, value = cls.bare(item.strip())
        name = name.strip().lower()
        value = _unquote(value)
        fname = cls.names.get(name, name)
        if fname in values or (name == "times" and times is not None):  # not silently the last one
            raise FaultError(f"{cls.kind}: {name} given twice")
        if name == "times":
            times = _count("times", value, 1)
            continue
        try:
            values[fname] = cls.convert(fname, value)
        except KeyError:
            back = {v: k for k, v in cls.names.items()}
            known = [back.get(f.name, f.name) for f in dataclasses.fields(cls)] + ["times"]
            raise FaultError(f"{cls.kind}: unknown parameter {name!r}; it takes {', '.join(known)}") from None
    try:
        action = cls(**values)
    except TypeError as e:
        raise FaultError(f"{cls.kind}: {e}") from None
    return Fault(action, parse_target(where) if len(pieces) == 2 else Target(), times or 1)


DEFAULT_CHAOS_KINDS = ("status", "cut", "stall", "sse-error", "ws-close", "ws-drop", "ws-stall")


def parse_kinds(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    kinds = tuple(k.strip().lower() for k in items if k.strip())
    for k in kinds:
        if k not in KINDS:
            raise FaultError(f"unknown fault kind {k!r}; choose among {', '.join(KINDS)}")
    if not kinds:
        raise FaultError("no fault kinds given")
    return kinds


@dataclass(frozen=True)
class Chaos:
    """Seeded faults across a whole suite: each recording gets a fault with probability ``rate``,
    its kind drawn from ``kinds`` and its parameters from the recording."""

    seed: int
    rate: float = 0.2
    kinds: tuple[str, ...] = DEFAULT_CHAOS_KINDS

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise FaultError(f"chaos rate {self.rate}: must be between 0 and 1")
        object.__setattr__(self, "kinds", parse_kinds(self.kinds))

    def pick(self, salt: str, seq: int | None, scope: str, facts) -> Fault | None:
        """``facts``: the recording's Facts, or a function giving them (called only when the
        recording gets a fault)."""
        rng = random.Random(f"{self.seed}:{salt}:{seq}")  # str seeds hash with sha512: stable across runs
        if rng.random() >= self.rate:
            return None
        if callable(facts):
            facts = facts()
        kinds = [k for k in self.kinds if KINDS[k].scope == scope and _possible(k, facts)]
        if not kinds:
            return None
        action = _random_action(rng.choice(kinds), rng, facts)
        return Fault(action, Target(frozenset({seq}) if seq is not None else frozenset()))


def _possible(kind: str, facts: Facts) -> bool:
    if kind == "sse-error":
        return bool(facts.ends) and not facts.content_length
    if kind in ("cut", "stall", "drip"):
        return len(facts.body) > 0
    if kind in ("ws-close", "ws-drop", "ws-stall"):
        return facts.server_frames > 0
    return True


def _random_action(kind: str, rng: random.Random, facts: Facts) -> Action:
    def secs() -> float:
        return round(rng.uniform(0.2, 2.0), 1)

    n_events = len(facts.ends) if facts.ends else 0
    if kind == "status":
        return Status(rng.choice((429, 500, 503, 529)))
    if kind == "cut":
        how = rng.choice(CUT_HOW)
        if n_events:
            return Cut(event=rng.randrange(n_events), how=how)
        return Cut(byte=rng.randrange(len(facts.body)), how=how)
    if kind == "stall":
        if n_events:
            return Stall(secs(), event=rng.randint(1, n_events))
        return Stall(secs(), byte=rng.randrange(len(facts.body)))
    if kind == "drip":
        return Drip(float(max(1, math.ceil(len(facts.body) / rng.uniform(0.5, 2.0)))))
    if kind == "ttfb":
        return Ttfb(seconds=secs())
    if kind == "sse-error":
        return SseError(rng.randrange(n_events))
    if kind == "ws-accept":
        return WsAccept(seconds=secs())
    if kind == "ws-refuse":
        return WsRefuse(rng.choice((426, 403)))
    if kind == "ws-close":
        return WsClose(rng.choice((1001, 1011, 1013)), frame=rng.randrange(facts.server_frames))
    if kind == "ws-drop":
        return WsDrop(rng.randrange(facts.server_frames))
    if kind == "ws-stall":
        return WsStall(secs(), frame=rng.randint(1, facts.server_frames))
    raise AssertionError(kind)


@dataclass(frozen=True)
class FaultConfig:
    """Everything injected into one replay: explicit faults and chaos. Built from text by
    ``FaultConfig.build`` (the CLI, the pytest marker) or from Fault objects."""

    faults: tuple[Fault, ...] = ()
    chaos: Chaos | None = None

    @classmethod
    def build(cls, faults=(), chaos_seed: int | None = None, chaos_rate: float = 0.2,
              chaos_kinds=DEFAULT_CHAOS_KINDS) -> "FaultConfig":
        if isinstance(faults, (str, Fault)):
            faults = [faults]
        parsed = []
        for f in faults:
            try:
                parsed.append(parse_fault(f))
            except FaultError as e:
                raise FaultError(f"fault {f!r}: {e}") from None
        if chaos_seed is None:
            return cls(tuple(parsed))
        try:
            return cls(tuple(parsed), Chaos(int(chaos_seed), float(chaos_rate), parse_kinds(chaos_kinds)))
        except FaultError as e:
            raise FaultError(f"chaos: {e}") from None

    def __bool__(self) -> bool:
        return bool(self.faults) or self.chaos is not None

    def plan(self, salt: str = "") -> "FaultPlan":
        return FaultPlan(self, salt)


@dataclass(frozen=True)
class Applied:
    """One fault injected into one request (or handshake)."""

    seq: int | None  # the recording it hit (None: a refused handshake the cassette has no session for)
    request: str  # "POST /v1/responses"
    fault: str  # the action, e.g. "cut:event=3"
    source: str  # "from status:429@#1" (the fault as given) or "chaos 7"

    def line(self) -> str:
        where = f"#{self.seq}" if self.seq is not None else "(no recording)"
        return f"{where} {self.request} <- {self.fault} ({self.source})"

    def to_json(self) -> dict:
        return {"seq": self.seq, "request": self.request, "fault": self.fault, "source": self.source}


# -- provider-shaped errors -------------------------------------------------------

def provider_for(req: Request) -> str:
    """Whose error shape a request expects, from its path and headers."""
    path = req.path
    if req.header("anthropic-version") is not None or path.endswith(("/v1/messages", "/v1/complete")):
        return "anthropic"
    if ":generateContent" in path or ":streamGenerateContent" in path or path.startswith("/v1beta/") \
            or req.header("x-goog-api-key") is not None:
        return "gemini"
    return "openai"


_OPENAI = {
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", None, "The server is overloaded, please try again later."),
}
_ANTHROPIC = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
              404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
              503: "api_error", 504: "timeout_error", 529: "overloaded_error"}
_ANTHROPIC_MESSAGES = {429: "Number of request tokens has exceeded your per-minute rate limit",
                       500: "Internal server error", 529: "Overloaded"}
_GEMINI = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
           503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 529: "UNAVAILABLE"}
_GEMINI_MESSAGES = {429: "Resource has been exhausted (e.g. check quota).",
                    500: "An internal error has occurred. Please retry or report in "
                         "https://developers.generativeai.google/guide/troubleshooting",
                    503: "The model is overloaded. Please try again later."}


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Overloaded" if code == 529 else "Error"


def error_body(provider: str, code: int, request_id: str) -> dict:
    """The JSON body ``provider`` sends with an error status."""
    if provider == "anthropic":
        kind = _ANTHROPIC.get(code, "api_error" if code >= 500 else "invalid_request_error")
        message = _ANTHROPIC_MESSAGES.get(code, _phrase(code))
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    if provider == "gemini":
        status = _GEMINI.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": code, "message": _GEMINI_MESSAGES.get(code, _phrase(code)), "status": status}}
    kind, err_code, message = _OPENAI.get(
        code, ("server_error" if code >= 500 else "invalid_request_error", None, _phrase(code)))
    return {"error": {"message": message, "type": kind, "param": None, "code": err_code}}


def error_headers(provider: str, code: int, body: bytes, retry_after: float | None, request_id: str,
                  label: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json" + (b"; charset=UTF-8" if provider == "gemini" else b"")),
               (b"content-length", str(len(body)).encode())]
    if provider == "openai":
        headers.append((b"x-request-id", request_id.encode()))
    elif provider == "anthropic":
        headers.append((b"request-id", request_id.encode()))
    if retry_after is not None:
        headers.append((b"retry-after", str(math.ceil(retry_after)).encode()))
        headers.append((b"retry-after-ms", str(round(retry_after * 1000)).encode()))
    headers.append((b"x-proxy-fault", label.encode()))  # says the answer was injected, not recorded
    return headers


def sse_error_event(action: SseError, provider: str, path: str, prefix: bytes) -> bytes:
    """The error event ``provider`` sends mid-stream, framed as the recording frames events."""
    nl = "\r\n" if b"\r\n\r\n" in prefix else "\n"
    if provider == "anthropic":
        kind = action.code or "overloaded_error"
        message = action.message or ("Overloaded" if kind == "overloaded_error" else "Internal server error")
        doc = {"type": "error", "error": {"type": kind, "message": message}}
        return f"event: error{nl}data: {json.dumps(doc, separators=(",", ":"))}{nl}{nl}".encode()
    if provider == "gemini":
        status = action.code or "UNAVAILABLE"
        code = next((c for c, s in _GEMINI.items() if s == status), 500)
        doc = {"error": {"code": code, "message": action.message or _GEMINI_MESSAGES.get(code, _phrase(code)),
                         "status": status}}
        return f"data: {json.dumps(doc, separators=(",", ":"))}{nl}{nl}".encode()
    message = action.message or _OPENAI[500][2]
    if path.endswith("/chat/completions"):
        doc = {"error": {"message": message, "type": "server_error", "param": None, "code": action.code}}
        return f"data: {json.dumps(doc, separators=(",", ":"))}{nl}{nl}".encode()
    events = parse_sse(prefix)
    last = events[-1].json() if events else None
    number = last.get("sequence_number") if isinstance(last, dict) else None
    seq_no = number + 1 if isinstance(number, int) else len(events)
    doc = {"type": "error", "code": action.code or "server_error", "message": message, "param": None,
           "sequence_number": seq_no}
    return f"event: error{nl}data: {json.dumps(doc, separators=(",", ":"))}{nl}{nl}".encode()


# -- script transforms (pure) -------------------------------------------------------

@dataclass
class _Body:
    """An HttpScript's body while faults rewrite it: steps of [offset, data, real delay before]."""

    steps: list[list]
    ttfb: float
    ttfb_delay: float = 0.0

    @classmethod
    def of(cls, script: HttpScript) -> "_Body":
        steps = [[off, data, script.delays.get(i, 0.0)] for i, (off, data) in enumerate(script.chunks)]
        return cls(steps, script.ttfb, script.delays.get(-1, 0.0))

    def split(self, at: int) -> int:
        """Make a step boundary at body byte ``at``; the index of the first step at or after it."""
        pos = 0
        for i, (off, data, delay) in enumerate(self.steps):
            if pos == at:
                return i
            if pos < at < pos + len(data):
                k = at - pos
                self.steps[i: i + 1] = [[off, data[:k], delay], [off, data[k:], 0.0]]
                return i + 1
            pos += len(data)
        return len(self.steps)

    def into(self, script: HttpScript, **changes) -> HttpScript:
        delays = {i: s[2] for i, s in enumerate(self.steps) if s[2]}
        if self.ttfb_delay:
            delays[-1] = self.ttfb_delay
        return replace(script, ttfb=self.ttfb, chunks=[(s[0], s[1]) for s in self.steps], delays=delays, **changes)


def status_script(action: Status, req: Request, seq: int | None, provider: str, request_id: str) -> HttpScript:
    body = json.dumps(error_body(provider, action.code, request_id)).encode()
    headers = error_headers(provider, action.code, body, action.retry_after, request_id, action.label())
    return HttpScript(status=action.code, headers=headers, ttfb=0.0, chunks=[(0.0, body)], seq=seq,
                      faults=(action.label(),))


def _delay(body: _Body, action: _Delay) -> None:
    if action.scale is not None:
        shift = body.ttfb * (action.scale - 1)
        body.ttfb *= action.scale
        for s in body.steps:
            s[0] += shift
    else:
        recorded = body.ttfb
        body.ttfb = 0.0
        body.ttfb_delay += action.seconds
        for s in body.steps:
            s[0] = max(0.0, s[0] - recorded)


def apply_http(script: HttpScript, actions: list[Action], facts: Facts, path: str) -> HttpScript:
    """The recording's script with delaying faults and at most one ending fault applied. Order:
    time to headers, stalls, the end (cut or error event), the drip last (it re-splits the body)."""
    body = _Body.of(script)
    changes: dict = {}
    for a in actions:
        if isinstance(a, Ttfb):
            _delay(body, a)
    for a in actions:
        if isinstance(a, Stall):
            i = body.split(_point(facts, a.event, a.byte, before=True))
            body.steps[i][2] += a.seconds
    for a in actions:
        if isinstance(a, Cut) and a.headers:
            body.steps = []
            changes.update(status=None, ending=Ending.RESET if a.how == "reset" else Ending.CUT)
        elif isinstance(a, Cut):
            i = body.split(_point(facts, a.event, a.byte, before=False))
            body.steps = body.steps[:i]
            clean = a.how == "end" and not facts.content_length
            changes["ending"] = Ending.RESET if a.how == "reset" else Ending.COMPLETE if clean else Ending.CUT
        elif isinstance(a, SseError):
            at = _point(facts, a.event, None, before=False)
            i = body.split(at)
            offset = body.steps[i - 1][0] if i else body.ttfb
            event = sse_error_event(a, facts.provider, path, facts.body[:at])
            body.steps = body.steps[:i] + [[offset, event, 0.0]]
            changes["ending"] = Ending.COMPLETE
    for a in actions:
        if isinstance(a, Drip):
            piece = max(1, math.ceil(a.rate / 100))  # about 100 sends a second at most
            steps = []
            for off, data, delay in body.steps:
                for k in range(0, len(data), piece):
                    steps.append([off, data[k: k + piece], delay if k == 0 else 0.0])
            body.steps = steps
            changes["drip"] = a.rate
    return body.into(script, faults=script.faults + tuple(a.label() for a in actions), **changes)


def _server_frames(script: WsScript) -> list[tuple[int, int]]:
    """(group, index) of every server frame in recorded order; group -1 is the preamble, k turn k."""
    out = [(-1, i) for i in range(len(script.preamble))]
    for k, turn in enumerate(script.turns):
        out += [(k, i) for i in range(len(turn.replies))]
    return out


def apply_ws(script: WsScript, actions: list[Action]) -> WsScript:
    """A session's script with WebSocket faults applied (accept delay, stalls, close or drop)."""
    s = replace(script, preamble=list(script.preamble), preamble_lags=list(script.preamble_lags),
                turns=[replace(t, replies=list(t.replies), lags=list(t.lags)) for t in script.turns],
                faults=script.faults + tuple(a.label() for a in actions))

    def lags(group: int) -> list[float]:
        lst = s.preamble_lags if group < 0 else s.turns[group].lags
        n = len(s.preamble) if group < 0 else len(s.turns[group].replies)
        lst.extend([0.0] * (n - len(lst)))
        return lst

    last_group = len(s.turns) - 1  # the group the recorded end is anchored to
    for a in actions:
        if isinstance(a, WsAccept):
            recorded = s.accept_delay
            if a.scale is not None:
                shift, s.accept_delay = recorded * (a.scale - 1), recorded * a.scale
            else:
                shift, s.accept_delay = -recorded, 0.0
                s.accept_lag += a.seconds
                lst = lags(-1)
                for i in range(len(lst)):
                    lst[i] += a.seconds
                if not s.turns:
                    s.end_lag += a.seconds
            s.preamble = [(max(0.0, off + shift), f) for off, f in s.preamble]
            if not s.turns and s.ending.after is not None:
                s.ending = replace(s.ending, after=max(0.0, s.ending.after + shift))
    frames = _server_frames(s)
    for a in actions:
        if isinstance(a, WsStall):
            group, index = frames[a.frame - 1]
            lst = lags(group)
            for i in range(index, len(lst)):
                lst[i] += a.seconds
            if group == last_group:
                s.end_lag += a.seconds
    for a in actions:
        if isinstance(a, (WsClose, WsDrop)):
            if a.frame == 0:
                s.preamble, s.preamble_lags, s.turns = [], [], []
                after, s.end_lag = s.accept_delay, s.accept_lag
            else:
                group, index = frames[a.frame - 1]
                lst = lags(group)
                if group < 0:
                    s.preamble, s.preamble_lags, s.turns = s.preamble[: index + 1], lst[: index + 1], []
                    after = s.preamble[index][0]
                else:
                    turn = s.turns[group]
                    turn.replies, turn.lags = turn.replies[: index + 1], lst[: index + 1]
                    s.turns = s.turns[: group + 1]
                    after = turn.replies[index][0]
                s.end_lag = lst[index]
            s.ending = WsEnding("close", after, a.code, a.reason) if isinstance(a, WsClose) else WsEnding("drop", after)
            s.cut_short = True
    return s


def refusal(action: WsRefuse, req: Request, seq: int | None, provider: str, request_id: str) -> Interaction:
    """A refused upgrade, as the players replay a recorded one."""
    body = json.dumps(error_body(provider, action.status, request_id)).encode()
    headers = error_headers(provider, action.status, body, None, request_id, action.label())
    return Interaction(kind=Kind.HTTP, request=req,
                       response=Response(action.status, _phrase(action.status),
                                         [(k.decode(), v.decode()) for k, v in headers]),
                       chunks=[Chunk(0.0, body)], ttfb=0.0, duration=0.0, end=End.COMPLETE, seq=seq)


# -- the plan: which recording gets which fault ---------------------------------------

def _lands(delay: Action, ending: Action, facts: Facts) -> bool:
    """Whether a delaying fault takes effect in a response or session that ``ending`` cuts short."""
    if isinstance(delay, Stall) and isinstance(ending, (Cut, SseError)):
        if isinstance(ending, Cut) and ending.headers:
            return False
        at = _point(facts, delay.event, delay.byte, before=True)
        return at < _point(facts, ending.event, getattr(ending, "byte", None), before=False)
    if isinstance(delay, Drip) and isinstance(ending, Cut) and ending.headers:
        return False
    if isinstance(delay, WsStall) and isinstance(ending, (WsClose, WsDrop)):
        return delay.frame <= ending.frame
    return True


def _once(make):
    """``make``, called at most once, and only when first asked."""
    done: list = []

    def get():
        if not done:
            done.append(make())
        return done[0]
    return get


def _scope(it: Interaction) -> str | None:
    """Which faults a recording can get: "http", "ws" (a session), None (a recorded refusal)."""
    if it.kind is Kind.WEBSOCKET:
        return "ws"
    return "http" if request_class(it.request, it.kind) == "http" else None


def http_facts(req: Request, it: Interaction, provider: str) -> Facts:
    body = it.body
    resp = it.response
    sse = resp is not None and "text/event-stream" in (resp.header("content-type") or "")
    return Facts(req.path, provider, body, event_ends(body) if sse else None,
                 resp is not None and resp.header("content-length") is not None)


def ws_facts(req: Request, it: Interaction, provider: str) -> Facts:
    n = sum(1 for f in it.frames if f.direction is Direction.SERVER)
    return Facts(req.path, provider, server_frames=n)


class FaultPlan:
    """Decides, per matched recording, which faults it gets, and applies them. One per cassette;
    the engine calls it under its lock. ``applied`` lists every fault injected, in order."""

    def __init__(self, config: FaultConfig, salt: str = ""):
        self.config = config
        self.salt = salt
        self.applied: list[Applied] = []
        self._selected: dict[tuple, bool] = {}  # (fault index, seq) -> the target holds (decided once)
        self._times: dict[tuple, int] = {}  # (fault index or "chaos", seq) -> times applied
        self._every: dict[int, int] = {}  # fault index -> recordings that passed its other conditions (no recordings)
        self._every_seqs: dict[int, frozenset] = {}  # fault index -> the recordings every=N selects
        self.recordings = None  # every recording, in order (the engine's source): every=N counts them
        self._chaos: dict[int | None, Fault | None] = {}  # seq -> chaos's pick
        self._pending: dict[int, list[Action]] = {}  # id(session) -> faults for ws()
        self._answers = 0

    def _targets(self, i: int, fault: Fault, req: Request, seq: int | None) -> bool:
        key = (i, seq)
        if key not in self._selected:
            t = fault.target
            hit = (not t.seqs or seq in t.seqs) and (t.path is None or fnmatch.fnmatchcase(req.path, t.path))
            if hit and t.every and self.recordings is not None:
                hit = seq in self._every_nth(i, fault)
            elif hit and t.every:  # no list of recordings (a plan used alone): count them as they come
                self._every[i] = self._every.get(i, 0) + 1
                hit = self._every[i] % t.every == 0
            self._selected[key] = hit
        return self._selected[key]

    def _every_nth(self, i: int, fault: Fault) -> frozenset:
        """The recordings ``every=N`` hits: every Nth, by recording number, of those of the
        fault's kind that its other conditions select. By number, not by arrival: concurrent
        requests arrive in any order, and the same spec must hit the same recordings."""
        if i not in self._every_seqs:
            t = fault.target
            seqs = [it.seq for it in self.recordings
                    if _scope(it) == fault.scope and (not t.seqs or it.seq in t.seqs)
                    and (t.path is None or fnmatch.fnmatchcase(it.request.path, t.path))]
            self._every_seqs[i] = frozenset(seqs[t.every - 1:: t.every])
        return self._every_seqs[i]

    def _choose(self, req: Request, seq: int | None, scope: str, facts) -> list[tuple[tuple, Action, str]]:
        """(key, action, source) of every fault this request gets: the delaying ones and at most one
        that ends the exchange (alone if it answers instead of the recording). ``facts()`` gives
        the recording's Facts; called only when a fault may hit it (it parses the whole body)."""
        candidates = []
        for i, f in enumerate(self.config.faults):
            if f.scope != scope or not self._targets(i, f, req, seq) or self._times.get((i, seq), 0) >= f.times:
                continue
            candidates.append(((i, seq), f.action, f"from {f.label()}"))
        chaos = self.config.chaos
        if chaos is not None:
            if seq not in self._chaos:
                self._chaos[seq] = chaos.pick(self.salt, seq, scope, facts)  # facts() only if it picks one
            pick = self._chaos[seq]
            if pick is not None and pick.scope == scope and self._times.get(("chaos", seq), 0) < 1:
                candidates.append((("chaos", seq), pick.action, f"chaos {chaos.seed}"))
        chosen, ending = [], None
        for key, action, source in candidates:
            why = action.why_not(facts())
            if why:
                log.info("fault %s not applied to #%s: %s", action.label(), seq, why)
                continue
            if action.ends_exchange:
                if ending is None:
                    ending = (key, action, source)
                continue
            chosen.append((key, action, source))
        if ending is not None:
            if isinstance(ending[1], (Status, WsRefuse)):
                return [ending]
            landing = []
            for key, action, source in chosen:
                if _lands(action, ending[1], facts()):
                    landing.append((key, action, source))
                else:  # not applied (nor counted): the retry gets it
                    log.info("fault %s on #%s waits: the response ends before it (%s)", action.label(), seq,
                             ending[1].label())
            chosen = landing + [ending]
        return chosen

    def _record(self, chosen, req: Request, seq: int | None) -> None:
        for key, action, source in chosen:
            self._times[key] = self._times.get(key, 0) + 1
            applied = Applied(seq, f"{req.method.upper()} {req.target}", action.label(), source)
            self.applied.append(applied)
            log.info("fault: %s", applied.line())

    def never_applied(self) -> set[int]:
        """Which of the given faults (by index; chaos apart) hit nothing so far."""
        return set(range(len(self.config.faults))) - {k[0] for k in self._times if k[0] != "chaos"}

    def why_never(self, i: int, recordings) -> str:
        """Why fault ``i`` may have hit nothing, as far as ``recordings`` (the cassette) tell."""
        f = self.config.faults[i]
        t = f.target
        refuses_misses = isinstance(f.action, WsRefuse) and t.path is not None and not t.seqs
        if not refuses_misses and not any(
                _scope(it) == f.scope and (not t.seqs or it.seq in t.seqs)
                and (t.path is None or fnmatch.fnmatchcase(it.request.path, t.path)) for it in recordings):
            return f"the cassette has no {'WebSocket session' if f.scope == 'ws' else 'HTTP recording'} it targets"
        return "no request reached a recording it targets, or it could not apply (the log says why)"

    def _request_id(self) -> str:
        self._answers += 1
        return f"req_proxyfault{self._answers:06d}"

    def http(self, req: Request, it: Interaction, script: HttpScript) -> tuple[HttpScript, bool]:
        """(script to play, whether the recording goes back for the retry)."""
        provider = provider_for(req)
        facts = _once(lambda: http_facts(req, it, provider))
        chosen = self._choose(req, it.seq, "http", facts)
        if not chosen:
            return script, False
        self._record(chosen, req, it.seq)
        actions = [a for _, a, _ in chosen]
        if isinstance(actions[0], Status):
            a = actions[0]
            return status_script(a, req, it.seq, a.provider or provider, self._request_id()), True
        out = apply_http(script, actions, facts(), req.path)
        ends = any(a.ends_exchange for a in actions)
        # a recording held until its client left is fully served when the client leaves
        return replace(out, release_if_gone=not ends and out.ending is not Ending.HOLD), ends

    def handshake(self, req: Request, result: Match | Miss) -> tuple[Match | Miss, str | None]:
        """(what answers the handshake, what becomes of the matched session): "release" (give
        it back for a later handshake), "keep" (faults will play on it: keep it for this
        connection), or None (no fault)."""
        provider = provider_for(req)
        if isinstance(result, Miss):
            if result.reason != "no_recording" or result._why not in ("key", "origin"):
                return result, None  # sessions exist (used up, or other headers): a miss stays a miss
            for i, f in enumerate(self.config.faults):
                a = f.action
                if isinstance(a, WsRefuse) and not f.target.seqs and f.target.path \
                        and fnmatch.fnmatchcase(req.path, f.target.path):
                    self._record([((i, None), a, f"from {f.label()}")], req, None)
                    return Match(refusal(a, req, None, a.provider or provider, self._request_id())), None
            return result, None
        it = result.interaction
        if it.kind is not Kind.WEBSOCKET:
            return result, None  # a recorded refusal: replayed as it is
        chosen = self._choose(req, it.seq, "ws", _once(lambda: ws_facts(req, it, provider)))
        if not chosen:
            return result, None
        self._record(chosen, req, it.seq)
        actions = [a for _, a, _ in chosen]
        if isinstance(actions[0], WsRefuse):
            a = actions[0]
            return Match(refusal(a, req, it.seq, a.provider or provider, self._request_id())), "release"
        self._pending[id(it)] = actions
        return result, "release" if any(a.ends_exchange for a in actions) else "keep"

    def ws(self, it: Interaction, script: WsScript) -> WsScript:
        actions = self._pending.pop(id(it), None)
        if not actions:
            return script
        out = apply_ws(script, actions)
        return replace(out, release_if_gone=not any(a.ends_exchange for a in actions))


__all__ = ["Action", "Applied", "Chaos", "Cut", "DEFAULT_CHAOS_KINDS", "Drip", "Fault", "FaultConfig", "FaultError",
           "FaultPlan", "KINDS", "SseError", "Stall", "Status", "Target", "Ttfb", "WsAccept", "WsClose", "WsDrop",
           "WsRefuse", "WsStall", "apply_http", "apply_ws", "error_body", "parse_fault", "parse_kinds",
           "provider_for", "sse_error_event"]

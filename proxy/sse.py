"""Sans-I/O Server-Sent Events framing.

Feed bytes as they arrive with :meth:`SSEParser.feed`; it returns the events
completed by those bytes. An event split across chunks is returned once, when
its terminating blank line arrives. Used to summarise recordings (inspect, the
demo) and by tests; replay never re-frames: it sends the recorded chunks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from . import events
from .events import short


@dataclass
class Event:
    event: str | None
    data: str
    id: str | None = None

    def json(self):
        try:
            return json.loads(self.data)
        except ValueError:
            return None


class SSEParser:
    """``ends`` lists, per event returned so far, the byte offset (in everything fed) just
    past the blank line that completed it."""

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self._pos = 0  # offset of self._buf[0] in everything fed
        self.ends: list[int] = []

    def feed(self, data: bytes) -> list[Event]:
        # Linear in what is fed: one cursor over the buffer, which is cut once at the end
        # (cutting it per line, and searching it whole for the rarer line ending, was
        # quadratic: seconds for a stream of 20k events).
        buf = self._buf + data
        out: list[Event] = []
        pos = 0
        lf, cr = buf.find(b"\n"), buf.find(b"\r")
        while True:
            if 0 <= lf < pos:
                lf = buf.find(b"\n", pos)
            if 0 <= cr < pos:
                cr = buf.find(b"\r", pos)
            idx = min((i for i in (lf, cr) if i >= 0), default=-1)
            if idx < 0:
                break
            if idx == cr and idx + 1 == len(buf):
                break  # might be the first half of \r\n
            nl = 2 if buf[idx : idx + 2] == b"\r\n" else 1
            line = buf[pos:idx]
            pos = idx + nl
            ev = self._line(line.decode("utf-8", "replace"))
            if ev is not None:
                out.append(ev)
                self.ends.append(self._pos + pos)
        self._buf = buf[pos:]
        self._pos += pos
        return out

    def _line(self, line: str) -> Event | None:
        if line == "":
            if not self._data and self._event is None:
                return None
            ev = Event(self._event, "\n".join(self._data), self._id)
            self._event, self._data = None, []
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def parse(data: bytes) -> list[Event]:
    return SSEParser().feed(data)


def event_ends(data: bytes) -> list[int]:
    """Byte offsets just past each complete event of an SSE body (where "after event N"
    is, for faults cut into a recorded stream)."""
    p = SSEParser()
    p.feed(data)
    return p.ends


def summarize(ev: Event, width: int = 60) -> tuple[str, str]:
    """(name, short summary) of an event: its type and delta text where there is one
    (OpenAI, Anthropic, Gemini: see ``proxy.events``)."""
    if ev.data == "[DONE]":
        return ev.event or "message", "[DONE]"
    doc = ev.json()
    if doc is None:
        return ev.event or "message", short(ev.data, width)
    return events.summarize(doc, ev.event, width)

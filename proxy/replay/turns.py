"""The turn logic of one replayed WebSocket session, with no I/O (websockets' protocol
layer is the model): events go in, actions come out, and a thin adapter
(``websocket.py``) moves them between the socket and this object.

    turns = Turns(script, after=pacer.after, check=engine.check_frame)
    turns.accepted(start)                      # the 101 went out; ``start`` anchors the handshake's offsets
    turns.rebind(other_script)                 # before the first client frame, if the matcher says so
    failure = turns.client_frame(now, payload, is_text)
    turns.next_due()                           # when the next action is due; None: wait for the client
    turns.due(now)                             # the actions whose time has come, in order

Contract: perform the actions in the order ``due`` returns them, a ``Fail`` from
``client_frame`` at once, and stop after a ``Close``, ``Drop`` or ``Fail`` (``over``
is then true). Times are the adapter's clock readings; ``after(anchor, offset)`` turns
a recorded offset into one (``Pacer.after`` divides it by ``--speed``).

Rules: each client frame is checked against the next recorded client frame
(``matching.compare_frame``: text never matches binary; then the JSON ``type``, or equal
bytes when either is not JSON; with ``match_body``, equal JSON after the ignores); a
match queues the server frames recorded after it, relative to its arrival; the frames
recorded before any client frame are queued on accept. Frames leave in the order they
were queued, each at its due time, so timing can slip but order never can. After the
last recorded client frame is answered, the recorded ending is queued (``WsEnding``).
An injected close or drop (``faults.py``) drops the turns after it (``cut_short``): client
frames beyond them pass unanswered until it comes, instead of failing as unexpected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..matching import FrameCheck
from ..model import Frame
from .engine import WsScript

CLOSE_MISMATCH = 4000  # a client frame differs from the recorded one
CLOSE_UNEXPECTED = 4001  # a client frame the recording does not have


@dataclass(frozen=True)
class Send:
    frame: Frame


@dataclass(frozen=True)
class Close:
    code: int | None  # None: a close frame without a status code
    reason: str = ""


@dataclass(frozen=True)
class Drop:
    """End the connection without a close frame."""

    reason: str


@dataclass(frozen=True)
class Fail:
    """A client frame the recording does not match: close with ``code`` and ``reason``."""

    code: int
    reason: str


Action = Send | Close | Drop | Fail


class Turns:
    def __init__(self, script: WsScript, after: Callable[[float, float], float],
                 check: Callable[[WsScript, int, bytes, bool], FrameCheck] | None = None):
        self.script = script
        self._after = after
        # the comparison of a client frame with the recorded one (Engine.check_frame notes weak ones)
        self._check = check or (lambda script, turn, payload, is_text: script.check(turn, payload, is_text))
        self._queue: deque[tuple[float, Action]] = deque()
        self.turn = 0  # client frames matched so far
        self.over = False

    # -- events ----------------------------------------------------------------------

    def accepted(self, start: float) -> None:
        """The handshake was accepted; ``start`` is when its request arrived."""
        lags = self.script.preamble_lags  # real seconds injected stalls add (faults.py)
        for i, (offset, frame) in enumerate(self.script.preamble):
            self._queue.append((self._after(start, offset) + self.script.lag(lags, i), Send(frame)))
        if not self.script.turns:
            self._queue_ending(start)

    def rebind(self, script: WsScript) -> None:
        """Before the first client frame: replay ``script`` from here on (the matcher bound
        the connection to another recording with the same handshake). What the reserved
        recording queued and did not send yet is dropped; what it sent stays sent."""
        if self.turn:
            raise ValueError("a session is rebound before its first client frame only")
        self.script = script
        self._queue.clear()

    def client_frame(self, now: float, payload: bytes, is_text: bool) -> Fail | None:
        """A client frame arrived at ``now`` (redacted as the recorder stores frames): None
        when it matches the next recorded client frame (its replies are queued)."""
        if self.over:
            return None
        turns, seq = self.script.turns, self.script.seq
        if self.turn >= len(turns) and self.script.cut_short:
            return None  # a frame the recording has beyond an injected close: the close is still to come
        if self.turn >= len(turns):
            return self._fail(CLOSE_UNEXPECTED,
                              f"unexpected frame {self.turn + 1}: recording #{seq} has {len(turns)} client frame(s)")
        check = self._check(self.script, self.turn, payload, is_text)
        if not check.ok:
            return self._fail(CLOSE_MISMATCH, f"recording #{seq}: {check.reason}")
        turn = turns[self.turn]
        for i, (rel, frame) in enumerate(turn.replies):
            self._queue.append((self._after(now, rel) + self.script.lag(turn.lags, i), Send(frame)))
        self.turn += 1
        if self.turn == len(turns):
            self._queue_ending(now)
        return None

    # -- actions -----------------------------------------------------------------------

    def next_due(self) -> float | None:
        return self._queue[0][0] if self._queue and not self.over else None

    def unfinished(self) -> bool:
        """Recorded frames are still to be sent, or client frames to be answered (a client
        leaving now leaves early, e.g. during an injected stall)."""
        return not self.over and (self.turn < len(self.script.turns)
                                  or any(isinstance(a, Send) for _, a in self._queue))

    def due(self, now: float) -> list[Action]:
        out: list[Action] = []
        while self._queue and self._queue[0][0] <= now and not self.over:
            _, action = self._queue.popleft()
            out.append(action)
            if not isinstance(action, Send):
                self.over = True
        return out

    # -- internals ---------------------------------------------------------------------

    def _fail(self, code: int, reason: str) -> Fail:
        self.over = True
        self._queue.clear()
        return Fail(code, reason)

    def _queue_ending(self, anchor: float) -> None:
        ending = self.script.ending
        if ending.after is None:
            return  # the client ends it
        due = self._after(anchor, ending.after) + self.script.end_lag
        if ending.kind == "close":
            self._queue.append((due, Close(ending.code, ending.reason)))
        else:  # drop, or a client that dropped the connection and is not gone yet
            what = "ended without a close frame" if ending.kind == "drop" else "was left by its client"
            self._queue.append((due, Drop(f"recording #{self.script.seq} {what}")))


__all__ = ["Action", "CLOSE_MISMATCH", "CLOSE_UNEXPECTED", "Close", "Drop", "Fail", "Send", "Turns"]

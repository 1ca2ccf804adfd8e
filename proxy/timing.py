"""Pacing for replay: absolute target times, never chained sleeps.

A schedule starts at the moment the request arrived; each item is due at
``start + offset / speed``. Sleeping until an absolute target keeps errors from
accumulating (chained sleeps drift 5-9 % on these machines). ``speed == 0``
means instant: nothing waits.

asyncio's timers wake through epoll, whose timeout has 1 ms granularity, so a plain
sleep overshoots by up to ~1 ms. The pacer sleeps until ``SPIN`` before the target
and then yields to the loop (``sleep(0)``) until the target passes: other tasks
keep running, and the error drops below the epoll granularity.
"""

from __future__ import annotations

import asyncio
import time


SPIN = 0.0012


class Pacer:
    def __init__(self, speed: float, clock=time.monotonic, sleep=asyncio.sleep):
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self.clock = clock
        self._sleep = sleep
        self.start = clock()

    def due(self, offset: float | None) -> float:
        return self.after(self.start, offset)

    def after(self, anchor: float, offset: float | None) -> float:
        """The absolute time ``offset`` recorded seconds after ``anchor`` (a clock reading)."""
        if self.speed == 0 or not offset:
            return anchor
        return anchor + offset / self.speed

    def now(self) -> float:
        return self.clock()

    async def until(self, offset: float | None) -> None:
        """Wait until ``offset`` recorded seconds after the start."""
        await self.at(self.due(offset))

    async def at(self, due: float) -> None:
        """Wait until the clock reads ``due``. At speed 0 every recorded offset is due at once,
        but a real-time delay added to it (an injected stall) is still waited for."""
        delay = due - self.clock()
        if delay > SPIN:
            await self._sleep(delay - SPIN)
        while self.clock() < due:
            await self._sleep(0)

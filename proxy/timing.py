"""Pacing for replay: absolute target times, never chained sleeps.

A schedule starts at the moment the request arrived; each item is due at
``start + offset / speed``. Sleeping until an absolute target keeps errors from
accumulating (chained sleeps drift 5-9 % on these machines). ``speed == 0``
means instant: nothing waits.
"""

from __future__ import annotations

import asyncio
import time


class Pacer:
    def __init__(self, speed: float, clock=time.monotonic, sleep=asyncio.sleep):
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self.clock = clock
        self._sleep = sleep
        self.start = clock()

    def restart(self) -> None:
        self.start = self.clock()

    def due(self, offset: float) -> float:
        if self.speed == 0 or offset is None:
            return self.start
        return self.start + offset / self.speed

    async def until(self, offset: float | None) -> None:
        if self.speed == 0 or not offset:
            return
        delay = self.due(offset) - self.clock()
        if delay > 0:
            await self._sleep(delay)

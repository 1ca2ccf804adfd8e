"""Pacing for replay: absolute target times, never chained sleeps.

A schedule starts at the moment the request arrived; each item is due at
``start + offset / speed``. Sleeping until an absolute target keeps errors from
accumulating (chained sleeps drift 5-9 % on these machines). ``speed == 0``
means instant: nothing waits.

Event loop timers wake through epoll (or libuv), whose timeout has 1 ms granularity, so a
plain sleep overshoots by up to ~1 ms. On Linux each loop's waits go to a timerfd armed at
its earliest target (``_TimerFd``): the kernel wakes the loop's epoll at the target itself.
Elsewhere (or where a loop cannot watch a descriptor) one alarm thread for the process
(``_Alarm``) sleeps until the earliest target of every open stream, then wakes the loops
whose targets passed (``call_soon_threadsafe``). Nothing spins: 200 paced streams used half
a core spinning ``sleep(0)`` in the last 1.2 ms before each event.

A Pacer built with its own clock or sleep (tests' fakes) sleeps with them instead:
until ``SPIN`` before the target, then yields (``sleep(0)``) until the target passes.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import time
import weakref


SPIN = 0.0012


class _Alarm:
    """Wakes event loops at ``time.monotonic()`` targets: one daemon thread, one heap of
    (target, n, loop, future) for every loop of the process."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # also in a forked child: the thread did not come along (a lock held by it might
        # not be released either), and the parent's loops are not the child's
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._n = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, due: float) -> asyncio.Future:
        """A future of the running loop, resolved once the clock reads ``due``."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._n), loop, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="proxy-pacer", daemon=True)
                self._thread.start()
            if self._heap[0][3] is fut:  # a new earliest target: the thread sleeps until another
                self._cond.notify()
        return fut

    def _run(self) -> None:
        clock, cond, heap = time.monotonic, self._cond, self._heap
        while True:
            with cond:
                while True:
                    if not heap:
                        cond.wait()
                        continue
                    delay = heap[0][0] - clock()
                    if delay <= 0:
                        break
                    cond.wait(delay)
                now = clock()
                due: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
                while heap and heap[0][0] <= now:
                    _, _, loop, fut = heapq.heappop(heap)
                    due.setdefault(loop, []).append(fut)
            for loop, futs in due.items():
                try:
                    loop.call_soon_threadsafe(_resolve, futs)
                except RuntimeError:  # that loop is closed: nobody waits any more
                    pass


def _resolve(futs: list[asyncio.Future]) -> None:
    for fut in futs:
        if not fut.done():  # a cancelled wait (its task was cancelled) stays cancelled
            fut.set_result(None)


_ALARM = _Alarm()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ALARM._reset)


class _TimerFd:
    """One loop's waits on a Linux timerfd armed at the earliest target: the kernel wakes the
    loop's epoll at the target itself (to within tens of microseconds), with no thread to
    schedule and no GIL to hand over. Under load, the alarm thread's wake-ups waited for
    the GIL behind the loop's own work: WebSocket frames came up to 1.6-3 ms late at p99."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # No reference to the loop: it holds this (its reader). The waits' futures do refer
        # to the loop, so nothing outside the loop holds this strongly (_timerfds keeps a
        # weak reference): a loop that ends with a wait pending (a server stopped in the
        # middle of a paced stream) is freed with its timer and descriptor all the same.
        self.fd = os.timerfd_create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        self.heap: list[tuple[float, int, asyncio.Future]] = []
        self.n = itertools.count()
        self.armed: float | None = None
        try:
            loop.add_reader(self.fd, self._fire)
        except Exception:
            os.close(self.fd)
            raise
        weakref.finalize(self, os.close, self.fd)  # this goes with the loop's reader

    def at(self, due: float) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self.heap, (due, next(self.n), fut))
        if self.armed is None or due < self.armed:
            self._arm(due)
        return fut

    def _arm(self, due: float) -> None:
        self.armed = due
        # absolute, on time.monotonic()'s clock; a target already passed fires at once
        os.timerfd_settime(self.fd, flags=os.TFD_TIMER_ABSTIME, initial=max(due, 1e-6))

    def _fire(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        now = time.monotonic()
        heap = self.heap
        while heap and heap[0][0] <= now:
            fut = heapq.heappop(heap)[2]
            if not fut.done():  # a cancelled wait stays cancelled
                fut.set_result(None)
        self.armed = None
        if heap:
            self._arm(heap[0][0])


# per loop, its timer (weakly: see _TimerFd), or None where it cannot have one
_timerfds: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[_TimerFd] | None]" = \
    weakref.WeakKeyDictionary()


def _wake_at(due: float) -> asyncio.Future:
    """A future resolved once ``time.monotonic()`` reads ``due``: the running loop's timerfd
    where Linux and the loop allow one, else the alarm thread."""
    loop = asyncio.get_running_loop()
    ref = _timerfds.get(loop, False)
    if ref is None:
        return _ALARM.at(due)
    timer = ref() if ref is not False else None
    if timer is None:
        if hasattr(os, "timerfd_create"):
            try:
                timer = _TimerFd(loop)
            except (OSError, NotImplementedError, RuntimeError):
                timer = None
        _timerfds[loop] = None if timer is None else weakref.ref(timer)
        if timer is None:
            return _ALARM.at(due)
    return timer.at(due)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_timerfds.clear)


class Pacer:
    def __init__(self, speed: float, clock=time.monotonic, sleep=asyncio.sleep):
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.speed = speed
        self.clock = clock
        self._sleep = sleep
        self._alarm = clock is time.monotonic and sleep is asyncio.sleep
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
        if delay <= 0:
            return
        if self._alarm:
            await _wake_at(due)
            return
        if delay > SPIN:
            await self._sleep(delay - SPIN)
        while self.clock() < due:
            await self._sleep(0)

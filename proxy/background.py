"""Running services: until SIGINT/SIGTERM (``until_signal``, the one place that
wires those signals), or on a private event loop in a daemon thread for synchronous
callers (``BackgroundLoop``: the pytest plugin, the simulator in tests and the demo)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable


def install_stop_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """Call ``stop()`` on SIGINT/SIGTERM; returns a function that removes the handlers.
    Off the main thread (no signal handlers there) it installs nothing."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


async def until_signal(wait: Callable[[], Awaitable], stop: Callable[[], None],
                       announce: Callable[[], None] | None = None) -> None:
    """Await ``wait()``, with SIGINT/SIGTERM calling ``stop()`` meanwhile. ``announce()``
    (printing the address, say) runs once the handlers are in place, so a signal sent as
    soon as the address is known still stops cleanly."""
    remove = install_stop_signals(stop)
    try:
        if announce is not None:
            announce()
        await wait()
    finally:
        remove()


class BackgroundLoop:
    """``start()`` returns once ``setup`` has finished (re-raising what it raised);
    ``stop()`` runs ``teardown`` on the same loop and joins the thread."""

    def __init__(self, name: str, setup: Callable[[], Awaitable], teardown: Callable[[], Awaitable]):
        self.name = name
        self.setup = setup
        self.teardown = teardown
        self.result = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 60) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._stop = asyncio.Event()
                try:
                    await self.setup()
                except BaseException as e:  # handed to the caller of start()
                    failure.append(e)
                    ready.set()
                    return
                ready.set()
                await self._stop.wait()
                self.result = await self.teardown()

            try:
                loop.run_until_complete(main())
            except BaseException as e:  # e.g. SystemExit from a task (mitmproxy's start-up error check)
                failure.append(e)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"{self.name} did not start within {timeout} s")
        if failure:
            raise failure[0]

    def stop(self, timeout: float = 30):
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

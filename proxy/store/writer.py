"""A cassette writer on a thread of its own, so the recorder's event loop only enqueues.

Contract: operations are applied in the order they are submitted. The writer wakes on
the first queued operation, collects for up to BATCH_WINDOW (or until a flush is
asked for), then applies everything queued in one transaction and commits. Waking
once per window instead of once per chunk keeps the writer from contending for the
GIL with the event loop that forwards bytes (per-event latency 1.33x -> see bench). ``flush()`` returns a future
that resolves once everything submitted before it is committed: the recorder awaits
it before an interaction's end reaches the client, so an interaction the client saw
complete is in the cassette. A recorder killed mid-stream can lose the chunks still
in the queue (the last fraction of a millisecond), never a finished interaction.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading

from ..model import Chunk, Close, End, Frame, Interaction, Kind, Response
from .cassette import Cassette

log = logging.getLogger("proxy.store")

_STOP = object()
BATCH_WINDOW = 0.005  # seconds


class CassetteWriter:
    def __init__(self, cassette: Cassette):
        self.cassette = cassette
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxy-cassette-writer", daemon=True)
        self.error: BaseException | None = None
        self._thread.start()

    # -- the recorder's side: never blocks ------------------------------------

    def begin(self, it: Interaction) -> int:
        iid, seq = self.cassette.allocate()
        it.id, it.seq = iid, seq
        self._queue.put((self.cassette.insert, (it,)))
        return iid

    def set_response(self, iid: int, response: Response, ttfb: float | None, kind: Kind | None = None) -> None:
        self._queue.put((self.cassette.set_response, (iid, response, ttfb, kind)))

    def add_chunk(self, iid: int, chunk: Chunk) -> None:
        self._queue.put((self.cassette.add_chunk, (iid, chunk)))

    def add_frame(self, iid: int, frame: Frame) -> None:
        self._queue.put((self.cassette.add_frame, (iid, frame)))

    def finish(self, iid: int, end: End, detail: str = "", duration: float | None = None,
               close: Close | None = None) -> None:
        self._queue.put((self.cassette.finish, (iid, end, detail, duration, close)))

    def flush(self) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((None, fut))
        self._urgent.set()
        return fut

    def close(self, compact: bool = False) -> tuple[int, int] | None:
        """Write what is queued, optionally compact (a clean end), close the cassette."""
        self._queue.put((_STOP, None))
        self._urgent.set()
        self._thread.join()
        sizes = None
        if compact and self.error is None:
            try:
                sizes = self.cassette.compact()
            except Exception as e:  # the cassette is complete without it
                log.error("compacting the cassette failed: %s", e)
        self.cassette.close()
        return sizes

    # -- the writer thread -----------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            self._urgent.wait(BATCH_WINDOW)
            self._urgent.clear()
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            waiting, stop = [], False
            try:
                with self.cassette.transaction():
                    for fn, args in batch:
                        if fn is _STOP:
                            stop = True
                        elif fn is None:
                            waiting.append(args)
                        else:
                            fn(*args)
            except Exception as e:  # we really want to see this, not record silently nothing
                self.error = e
                log.error("writing the cassette failed: %s", e)
            for fut in waiting:
                fut.set_result(None)
            if stop:
                return

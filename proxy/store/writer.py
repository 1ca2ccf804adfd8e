"""A cassette writer on a thread of its own, so the recorder's event loop only enqueues.

Contract: operations are applied in the order they are submitted. The writer wakes on
the first queued operation, collects for up to BATCH_WINDOW (or until a flush is
asked for), then applies everything queued in one transaction and commits. While
operations come faster than one per window (a stream's chunks, say) it stays on that
timer, so it wakes once per window and the event loop's enqueueing never has a thread
to wake; after a window with one operation or none it blocks until the next. Waking
once per window instead of once per chunk keeps the writer from contending for the
GIL with the event loop that forwards bytes. ``call`` queues work of the caller's own
(the recorder's redaction) to run here, in order with the writes and inside their
transaction, so that work need not delay the bytes on their way; such work can ask
(``after_commit``) to be told once what it wrote is committed. ``flush()`` returns a future that
resolves once everything submitted before it is committed: the recorder awaits it
before an interaction's end reaches the client, so an interaction the client saw
complete is in the cassette. A recorder killed mid-stream can lose the chunks still in
the queue (the last few milliseconds), never a finished interaction.

Failure: a transaction that fails is rolled back, and the writer is broken from then
on. ``error`` holds the CassetteWriteFailed; every flush future, pending or later,
carries it as its exception (never a result: the recorder must not release the end of
a response the cassette does not hold); ``begin`` raises it; later operations are
dropped; ``on_error`` is called once, from the writer thread, so the recorder can stop;
``close`` raises it after closing the file.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable

from ..model import Chunk, Close, End, Frame, Interaction, Kind, Response
from .errors import CassetteError, CassetteWriteFailed
from .writing import WritableCassette

_STOP = object()
BATCH_WINDOW = 0.005  # seconds


class CassetteWriter:
    def __init__(self, cassette: WritableCassette, on_error: Callable[[CassetteError], None] | None = None):
        self.cassette = cassette
        self.on_error = on_error
        self.error: CassetteError | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()
        self._after: list[tuple[Callable, tuple]] = []  # after_commit() of the batch being written
        self._thread = threading.Thread(target=self._run, name="proxy-cassette-writer", daemon=True)
        self._thread.start()

    # -- the recorder's side: never blocks ------------------------------------

    def begin(self, it: Interaction) -> int:
        """Queue a new interaction; returns its seq. Raises the writer's error, if any."""
        if self.error is not None:
            raise self.error
        it.id = it.seq = self.cassette.allocate()
        self._queue.put((self.cassette.insert, (it,)))
        return it.seq

    def set_response(self, seq: int, response: Response, ttfb: float | None, kind: Kind | None = None) -> None:
        self._queue.put((self.cassette.set_response, (seq, response, ttfb, kind)))

    def add_chunk(self, seq: int, chunk: Chunk) -> None:
        self._queue.put((self.cassette.add_chunk, (seq, chunk)))

    def add_frame(self, seq: int, frame: Frame) -> None:
        self._queue.put((self.cassette.add_frame, (seq, frame)))

    def begin_with(self, build: Callable[[WritableCassette], Interaction]) -> int:
        """Like ``begin``, but the interaction is built by ``build(cassette)`` on the writer
        thread (its seq is reserved now). An exception ``build`` raises fails the writer."""
        if self.error is not None:
            raise self.error
        seq = self.cassette.allocate()
        self._queue.put((self._insert_built, (seq, build)))
        return seq

    def call(self, fn: Callable, *args) -> None:
        """Queue ``fn(cassette, *args)`` to run on the writer thread, after everything queued
        before it and inside the same transaction; what it writes to ``cassette`` (a
        WritableCassette: its steps, uncommitted) is committed with the batch. An exception
        it raises fails the writer, as a failed write does."""
        self._queue.put((fn, (self.cassette, *args)))

    def after_commit(self, fn: Callable, *args) -> None:
        """From a writer call (on the writer thread): run ``fn(*args)`` there once the batch
        being written is committed; never if it fails. What the recorder knows is on disk."""
        self._after.append((fn, args))

    @property
    def running(self) -> bool:
        """The writer thread is alive (it ends after ``close``)."""
        return self._thread.is_alive()

    def hurry(self) -> None:
        """End the current window now (someone waits for what is queued)."""
        self._urgent.set()

    def finish(self, seq: int, end: End, detail: str = "", duration: float | None = None,
               close: Close | None = None) -> None:
        self._queue.put((self.cassette.finish, (seq, end, detail, duration, close)))

    def flush(self) -> concurrent.futures.Future:
        """A future that resolves once everything queued so far is committed, or carries
        the error that stopped it from being committed."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self.error is not None:
            fut.set_exception(self.error)
            return fut
        self._queue.put((None, fut))
        self._urgent.set()
        return fut

    def close(self, compact: bool = False) -> tuple[int, int] | None:
        """Write what is queued, optionally compact (a clean end), close the cassette.
        Raises the writer's error if a write failed (the file is closed all the same)."""
        self._queue.put((_STOP, None))
        self._urgent.set()
        self._thread.join()
        try:
            sizes = self.cassette.close(compact=compact and self.error is None)
        except CassetteError as e:
            self._fail(e)
            sizes = None
        if self.error is not None:
            raise self.error
        return sizes

    # -- the writer thread -----------------------------------------------------

    def _insert_built(self, seq: int, build: Callable[[WritableCassette], Interaction]) -> None:
        it = build(self.cassette)
        it.id = it.seq = seq
        self.cassette.insert(it)

    def _run(self) -> None:
        active = False  # operations came faster than one per window: stay on the timer
        while True:
            batch = [] if active else [self._queue.get()]
            self._urgent.wait(BATCH_WINDOW)
            self._urgent.clear()
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            active = len(batch) > 1
            if not batch:
                continue
            waiting = [args for fn, args in batch if fn is None]
            stop = any(fn is _STOP for fn, _ in batch)
            if self.error is None:
                try:
                    with self.cassette.transaction():
                        for fn, args in batch:
                            if fn is not None and fn is not _STOP:
                                fn(*args)
                    for fn, args in self._after:
                        fn(*args)
                except CassetteError as e:
                    self._fail(e)
                except Exception as e:  # a bug of ours: fail loudly all the same
                    self._fail(CassetteWriteFailed(self.cassette.path, f"writing failed ({e!r})"))
                self._after.clear()
            for fut in waiting:
                # False: cancelled by whoever gave up waiting (a cancelled hook task, via
                # asyncio.wrap_future); answering it would raise here and end this thread
                if not fut.set_running_or_notify_cancel():
                    continue
                if self.error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(self.error)
            if stop:
                return

    def _fail(self, error: CassetteError) -> None:
        if self.error is not None:
            return
        self.error = error
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:  # the callback's own failure must not hide the write failure
                pass

"""Opening a cassette file: checks that cost nothing, read-only connections, the
writer's lock and the checks that writing will work.

Readers open with ``mode=ro`` and never change the journal mode, so a cassette on a
read-only mount, in an installed package or a Nix store reads like any other. A file
left in WAL mode with no ``-wal`` beside it (older versions left them so) in a directory
where SQLite cannot make its ``-shm`` is read as immutable: with no WAL there is nothing
else to read, and nobody can be writing it there.

Nothing here opens the cassette file with a descriptor of its own: SQLite holds POSIX
locks on it, and a process that closes any descriptor of a file loses all its POSIX
locks on that file, which would let another process checkpoint or delete a WAL that one
of our connections is using. The writer's lock is therefore on a file beside it.

The writer's lock: ``PATH.lock`` holds ``flock(LOCK_EX)`` for as long as a writer has the
cassette open, and says who holds it (pid, command, since when). The kernel releases it
when the process dies, however it dies, so a stale file never blocks anyone; a clean
close removes it. SQLite's own locks are held only for a transaction at a time, so they
cannot tell a second recorder that the cassette is taken.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import quote

from .errors import CassetteCorrupt, CassetteError, CassetteLocked, CassetteMissing, CassetteNotWritable, NotACassette

# PRAGMA quick_check reads the whole file: run it when that is cheap (about 20 ms here),
# and leave larger files to the checks made as their rows and blobs are read.
QUICK_CHECK_MAX_BYTES = 16 << 20

# What a damaged file raises while SQLite reads it: page damage, or text columns whose
# bytes are no longer UTF-8.
DAMAGE = (sqlite3.DatabaseError, UnicodeDecodeError)


def check_path(path: Path) -> None:
    """Cheap checks with no descriptor on the file (see the module docstring)."""
    if not path.exists():
        raise CassetteMissing(path, "no such cassette file")
    if path.is_dir():
        raise NotACassette(path, "is a directory, not a cassette file")
    if path.stat().st_size == 0:
        raise NotACassette(path, "empty file, not a cassette")


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.absolute()))}" + (f"?{query}" if query else "")


BUSY_TIMEOUT = 5.0  # seconds a connection waits for another's lock (a reader mid-read, a commit) before failing


def connect(path: Path | str, read_only: bool | None, **params: str) -> sqlite3.Connection:
    """A connection in autocommit mode (every transaction is an explicit BEGIN) that waits
    a little for other connections' locks. ``read_only`` None: create the file if needed."""
    if read_only is not None:
        params = {"mode": "ro" if read_only else "rw", **params}
    return sqlite3.connect(_uri(Path(path), **params), uri=True, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT)


def open_read(path: Path) -> sqlite3.Connection:
    check_path(path)
    conn = connect(path, read_only=True)
    try:
        first_read(conn, path)
    except sqlite3.OperationalError:
        conn.close()
        if Path(str(path) + "-wal").exists() or not os.access(path, os.R_OK):
            raise CassetteError(path, "cannot open for reading (permission denied?)") from None
        # a WAL-mode file without its WAL, where no -shm can be made: see the docstring
        conn = connect(path, read_only=True, immutable="1")
        try:
            first_read(conn, path)
        except sqlite3.OperationalError as e:
            conn.close()
            raise CassetteError(path, f"cannot open for reading ({e})") from None
    return conn


def first_read(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as e:
        conn.close()
        if "not a database" in str(e):
            raise NotACassette(path, "not a SQLite file, so not a cassette") from None
        raise CassetteCorrupt(path, f"damaged SQLite file ({e})") from None
    except UnicodeDecodeError as e:  # damaged text in the schema
        conn.close()
        raise CassetteCorrupt(path, f"damaged SQLite file ({e})") from None


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Constant-time damage checks, plus quick_check on files small enough for it."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = path.stat().st_size
    wal = Path(str(path) + "-wal")
    if size < pages * page_size and not (wal.exists() and wal.stat().st_size):
        raise CassetteCorrupt(path, f"damaged SQLite file (truncated: {size} bytes of {pages * page_size})")
    if size <= QUICK_CHECK_MAX_BYTES:
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise CassetteCorrupt(path, f"damaged SQLite file ({check})")


# -- writing -------------------------------------------------------------------------


class WriterLock:
    """``flock`` on ``PATH.lock``; see the module docstring."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, cassette: Path) -> "WriterLock":
        lock_path = Path(str(cassette) + ".lock")
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise not_writable(cassette, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise CassetteLocked(cassette, f"already being written by {holder}; "
                                               "one writer at a time (stop it, or record to another file)") from None
            # A clean close unlinks the file while holding it; if we locked a file that was
            # unlinked meanwhile, someone may already hold the new one: start over.
            try:
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lock = cls(lock_path, fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({_command()}) since {stamp}\n".encode(), 0)
        except OSError as e:  # a full disk, found here first
            lock.release()
            raise not_writable(cassette, e) from None
        return lock

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only directory by now: the lock is released below all the same
        os.close(self._fd)
        self._fd = -1


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"


def _command() -> str:
    name = os.path.basename(sys.argv[0] or "python")
    if name in ("cli.py", "__main__.py"):  # python -m proxy.cli
        name = "proxy"
    text = " ".join([name] + [os.path.basename(a) if os.sep in a else a for a in sys.argv[1:]])
    return text if len(text) <= 80 else text[:79] + "…"


def not_writable(path: Path, error: BaseException) -> CassetteNotWritable:
    """Say why a cassette cannot be written, in one line."""
    directory = path.parent
    code = getattr(error, "errno", None)
    name = getattr(error, "sqlite_errorname", "")
    if code == errno.ENOSPC or name == "SQLITE_FULL" or "full" in str(error).lower():
        return CassetteNotWritable(path, "the disk is full")
    if code == errno.EROFS or _read_only_fs(directory):
        return CassetteNotWritable(path, f"{directory} is on a read-only file system")
    if path.exists() and not os.access(path, os.W_OK):
        return CassetteNotWritable(path, "the file is read-only")
    if not os.access(directory, os.W_OK):
        return CassetteNotWritable(path, f"cannot write in {directory} (permission denied)")
    return CassetteNotWritable(path, f"cannot write ({error})")


def _read_only_fs(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False

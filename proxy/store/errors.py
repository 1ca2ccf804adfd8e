"""What the store raises. Every error is a CassetteError whose ``str()`` is one line
naming the file and the problem, so the CLI prints it as it is (exit code 2).

CassetteError
  CassetteMissing       no file at that path
  NotACassette          not SQLite, or SQLite without our application id / meta table
  CassetteCorrupt       SQLite reports damage, a table or column is missing, or a blob fails its check
  NewerSchema           written by a newer proxy: upgrade proxy
  OldSchema             written by an older proxy: run ``proxy migrate PATH`` (the file is not touched)
  CassetteLocked        another process is writing this cassette (the message names it)
  CassetteNotWritable   the file, its directory or the disk refuses writes (found before recording starts)
  CassetteWriteFailed   a write failed while recording; what was committed before it is intact

The first five are about the file as it is; the last three are about writing it.
"""

from __future__ import annotations


class CassetteError(Exception):
    def __init__(self, path, problem: str):
        self.path = str(path)
        # one line, whatever SQLite said (quick_check reports span several lines)
        problem = " ".join(str(problem).split())
        self.problem = problem if len(problem) <= 300 else problem[:299] + "…"
        super().__init__(f"{self.path}: {self.problem}")


class CassetteMissing(CassetteError):
    pass


class NotACassette(CassetteError):
    pass


class CassetteCorrupt(CassetteError):
    pass


class NewerSchema(CassetteError):
    pass


class OldSchema(CassetteError):
    pass


class CassetteLocked(CassetteError):
    pass


class CassetteNotWritable(CassetteError):
    pass


class CassetteWriteFailed(CassetteError):
    pass

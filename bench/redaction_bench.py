"""Redaction and audit cost: `python bench/redaction_bench.py` (best of N runs, CPU-bound).

- Redactor.data on 4 MB bodies: a base64url token (the Responses API's
  encrypted_content) without and with a key, and hyphenated prose;
- StreamRedactor per SSE event; EncodedStreamRedactor per gzip chunk;
- proxy.audit on a compacted cassette of 1000 streamed responses.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.audit import Auditor  # noqa: E402
from proxy.encoding import Encoder  # noqa: E402
from proxy.model import Chunk, End, Interaction, Kind, Request, Response  # noqa: E402
from proxy.redaction import Redactor  # noqa: E402
from proxy.store import Cassette  # noqa: E402
from proxy.testing import fake_key  # noqa: E402
from proxy.testing.simulator import response_events, sse  # noqa: E402


def best(f, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    r = Redactor()
    token = base64.urlsafe_b64encode(os.urandom(3_000_000)).rstrip(b"=")
    body = b'{"encrypted_content":"' + token + b'","note":"x"}'
    key = fake_key("bench").encode()
    with_key = body.replace(b'"note":"', b'"note":"' + key + b" ")
    prose = (("The quick brown fox " + "-".join(["task", "specific", "instructions"]) + " and more. ") * 80_000)
    prose_b = prose.encode()[:4_000_000]
    for name, data in (("4 MB base64url token, no key", body), ("4 MB base64url token + 1 key", with_key),
                       ("4 MB hyphenated prose", prose_b)):
        t = best(lambda data=data: r.data(data))
        print(f"Redactor.data, {name}: {t * 1000:.0f} ms ({len(data) / t / 1e6:.0f} MB/s)")

    events = [sse({"type": "response.output_text.delta", "delta": f"word {i} "}, named=True) for i in range(40_000)]

    def stream():
        s = r.stream()
        for i, e in enumerate(events):
            s.feed(e, i)
        s.finish()

    t = best(stream, 3)
    print(f"StreamRedactor, {len(events)} SSE events: {t / len(events) * 1e6:.1f} us/event")
    enc = Encoder("gzip")
    gz = [enc.feed(e) for e in events[:10_000]] + [enc.finish()]

    def gzipped():
        s = r.response_body("gzip")
        for i, c in enumerate(gz):
            s.feed(c, i)
        s.finish()

    t = best(gzipped, 3)
    print(f"EncodedStreamRedactor, gzip, {len(gz)} chunks: {t / len(gz) * 1e6:.1f} us/chunk")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.db"
        with Cassette.create(path) as c:
            for i in range(1000):
                doc = {"input": f"hello {i}", "model": "sim-1"}
                chunks = [Chunk(0.01 * j, sse(e, named=True)) for j, e in enumerate(response_events(doc, 20))]
                c.append(Interaction(Kind.HTTP, Request("POST", "/v1/responses", "", [("authorization", "REDACTED")],
                                                        str(doc).encode()),
                                     Response(200, "OK", [("content-type", "text/event-stream")]), chunks,
                                     end=End.COMPLETE, ttfb=0.01, duration=0.3))
            c.compact()
        auditor = Auditor(Redactor.build(environ={}))
        t = best(lambda: auditor.file(path), 3)
        print(f"audit, 1000 streamed responses ({path.stat().st_size // 1024} KB compacted): {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()

"""Sans-I/O framing of ``application/vnd.amazon.eventstream`` (AWS Bedrock's streamed
responses), as :mod:`proxy.sse` is for Server-Sent Events: feed bytes as they arrive,
get the messages they complete. Used to read recordings (inspect); replay never
re-frames, it sends the recorded chunks.

A message is: total length (uint32), headers length (uint32), CRC32 of those 8 bytes,
the headers, the payload, CRC32 of everything before it; big-endian. A header is a
1-byte name length, the name, a 1-byte value type and the value.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass, field

CONTENT_TYPE = "application/vnd.amazon.eventstream"

_PRELUDE = struct.Struct(">III")
_FIXED = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}  # byte, short, int, long, timestamp (ms)


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad length or checksum)."""


@dataclass
class Message:
    headers: dict = field(default_factory=dict)
    payload: bytes = b""

    @property
    def name(self) -> str:
        """``:event-type``, or ``:exception-type`` for an error message."""
        return str(self.headers.get(":event-type") or self.headers.get(":exception-type")
                   or self.headers.get(":message-type") or "message")


def _headers(data: bytes) -> dict:
    out, pos = {}, 0
    while pos < len(data):
        n = data[pos]
        name = data[pos + 1 : pos + 1 + n].decode("utf-8", "replace")
        pos += 1 + n
        kind = data[pos]
        pos += 1
        if kind in (0, 1):
            value: object = kind == 0
        elif kind in _FIXED:
            fmt = struct.Struct(_FIXED[kind])
            (value,) = fmt.unpack_from(data, pos)
            pos += fmt.size
        elif kind in (6, 7):
            (size,) = struct.unpack_from(">H", data, pos)
            raw = data[pos + 2 : pos + 2 + size]
            value = raw.decode("utf-8", "replace") if kind == 7 else raw
            pos += 2 + size
        elif kind == 9:
            value = str(uuid.UUID(bytes=data[pos : pos + 16]))
            pos += 16
        else:
            raise EventStreamError(f"unknown header value type {kind}")
        out[name] = value
    return out


class EventStreamParser:
    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out = []
        while len(self._buf) >= _PRELUDE.size:
            total, head_len, crc = _PRELUDE.unpack_from(self._buf)
            if zlib.crc32(self._buf[:8]) != crc or total < 16 + head_len:
                raise EventStreamError("bad event stream prelude")
            if len(self._buf) < total:
                break
            msg, self._buf = self._buf[:total], self._buf[total:]
            if zlib.crc32(msg[:-4]) != struct.unpack(">I", msg[-4:])[0]:
                raise EventStreamError("bad event stream message checksum")
            try:
                headers = _headers(msg[12 : 12 + head_len])
            except (IndexError, struct.error, ValueError) as e:
                raise EventStreamError(f"bad event stream headers: {e}") from None
            out.append(Message(headers, msg[12 + head_len : -4]))
        return out


def encode(headers: dict[str, str], payload: bytes) -> bytes:
    """One message with string headers (what Bedrock sends; tests build streams with it)."""
    head = b"".join(bytes([len(k.encode())]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                    for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return body + struct.pack(">I", zlib.crc32(body))

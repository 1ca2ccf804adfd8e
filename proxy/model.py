"""Pure data: what a cassette holds. No I/O here.

Times are seconds. ``started_at`` is wall-clock (epoch); every other time is an
offset from the moment the request (or WebSocket handshake request) arrived.
Headers are ordered ``(name, value)`` pairs as they were on the wire; names keep
their case, comparisons are case-insensitive.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

Headers = list[tuple[str, str]]


class Kind(str, enum.Enum):
    HTTP = "http"
    WEBSOCKET = "websocket"


class End(str, enum.Enum):
    """How an interaction ended, as the client saw it."""

    COMPLETE = "complete"
    UPSTREAM_CUT = "upstream_cut"  # upstream closed mid-body; client got a cut stream
    CLIENT_GONE = "client_gone"  # client disconnected before the end
    UPSTREAM_ERROR = "upstream_error"  # upstream unreachable / TLS failure; client got a 502
    INCOMPLETE = "incomplete"  # still in flight when the recorder died


class Direction(str, enum.Enum):
    CLIENT = "client"  # client -> server
    SERVER = "server"  # server -> client


@dataclass(slots=True)
class Chunk:
    offset: float
    data: bytes


@dataclass(slots=True)
class Frame:
    direction: Direction
    is_text: bool
    offset: float
    payload: bytes

    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query
    query: str = ""  # raw query string, without '?'
    headers: Headers = field(default_factory=list)
    body: bytes = b""  # decoded (content-encoding removed)
    body_encoding: str | None = None  # original Content-Encoding of the body, if any
    scheme: str = "http"
    host: str = ""
    port: int = 0
    http_version: str = ""  # the client's, as mitmproxy spells it ("HTTP/1.1", "HTTP/2.0"); "" unknown

    @property
    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` the request was sent to (forward mode), see ``origin()``."""
        return origin(self.scheme, self.host, self.port)

    def query_pairs(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    def header(self, name: str, default: str | None = None) -> str | None:
        return header_value(self.headers, name, default)


@dataclass(slots=True)
class Response:
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=list)

    def header(self, name: str, default: str | None = None) -> str | None:
        return header_value(self.headers, name, default)


@dataclass(slots=True)
class Close:
    """How a WebSocket session closed."""

    code: int | None = None  # None: abnormal end, no close frame
    reason: str = ""
    by: Direction | None = None


@dataclass(slots=True)
class Interaction:
    """One HTTP exchange or one WebSocket session, in recorded order."""

    kind: Kind
    request: Request
    response: Response | None = None
    chunks: list[Chunk] = field(default_factory=list)  # response body as it arrived
    frames: list[Frame] = field(default_factory=list)  # WebSocket messages
    ttfb: float | None = None  # request arrived -> response headers (HTTP) / 101 (WS)
    duration: float | None = None
    end: End = End.INCOMPLETE
    end_detail: str = ""
    close: Close | None = None
    started_at: float = 0.0
    id: int | None = None  # row id, set by the store
    seq: int | None = None  # recorded order, set by the store

    @property
    def body(self) -> bytes:
        return b"".join(c.data for c in self.chunks)

    @property
    def accept_delay(self) -> float | None:
        return self.ttfb if self.kind is Kind.WEBSOCKET else None


DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin(scheme: str, host: str, port: int) -> str:
    """The one spelling of where a request went: lower-case scheme and host, IPv6 in
    brackets, the port only when it is not the scheme's default (or unknown, 0)."""
    scheme, host = scheme.lower(), host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if port and port != DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def header_value(headers: Headers, name: str, default: str | None = None) -> str | None:
    lname = name.lower()
    for k, v in headers:
        if k.lower() == lname:
            return v
    return default


# VCR.py's record modes (proxy serve, the API, the pytest plugin). Here, in the light
# model, so the pytest plugin can name them without importing the server.
class RecordMode(str, enum.Enum):
    NONE = "none"
    ONCE = "once"
    NEW_EPISODES = "new_episodes"
    ALL = "all"

    @classmethod
    def parse(cls, value: "str | RecordMode") -> "RecordMode":
        if isinstance(value, RecordMode):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown record mode {value!r}; choose one of {names}") from None

"""``proxy_connect_to``: connect to another address than the one a request names, as
curl's ``--connect-to HOST:PORT:HOST2:PORT2``. The request, its Host header, the TLS
server name and the certificate check keep the name the client used; only the TCP
connection goes elsewhere. For recording a client whose host is fixed (forward mode)
against a staging or local server under the production name, without touching DNS.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mitmproxy import ctx, exceptions


_HOST = r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)"
_SPEC = re.compile(rf"{_HOST}:(\d+):{_HOST}:(\d+)")


def parse(spec: str) -> tuple[tuple[str, int], tuple[str, int]]:
    """``HOST:PORT:HOST2:PORT2`` (IPv6 in brackets) -> ((host, port), (host2, port2));
    ValueError names the spec."""
    m = _SPEC.fullmatch(spec)
    if m is None:
        raise ValueError(f"expected HOST:PORT:HOST2:PORT2, got {spec!r}")
    host, port, host2, port2 = m.groups()
    for p in (port, port2):
        if not 0 < int(p) < 65536:
            raise ValueError(f"port {p} is not in 1-65535, in {spec!r}")
    return (host.strip("[]").lower(), int(port)), (host2.strip("[]"), int(port2))


class ConnectTo:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, int], tuple[str, int]] = {}

    def load(self, loader) -> None:
        loader.add_option("proxy_connect_to", Sequence[str], [],
                          "HOST:PORT:HOST2:PORT2: connect to HOST2:PORT2 for requests to HOST:PORT (repeatable).")

    def configure(self, updated) -> None:
        if "proxy_connect_to" in updated:
            try:
                self.routes = dict(parse(s) for s in ctx.options.proxy_connect_to)
            except ValueError as e:
                raise exceptions.OptionsError(f"--connect-to (proxy_connect_to): {e}") from None

    def server_connect(self, data) -> None:
        server = data.server
        if server.address is None:
            return
        host, port = server.address[0], server.address[1]
        to = self.routes.get((host.lower(), port))
        if to is not None:
            # mitmproxy would take the TLS server name from the address we are changing.
            server.sni = server.sni or host
            server.address = to

"""The forward-mode front: mitmproxy as an HTTPS proxy in front of the replay server.

Clients that cannot change their base URL set ``HTTPS_PROXY`` (and trust mitmproxy's
CA, ``proxy ca``). mitmproxy does the proxy side: ``CONNECT``, TLS with a certificate for
the host the client asked for, HTTP/1.1 or HTTP/2 to the client (ALPN), plain-HTTP proxy
requests, WebSocket. This addon sends every request on to the replay server on loopback,
in plain HTTP/1.1, with where the client sent it in ``x-proxy-origin``; the replay
server answers it as it answers any request (one replay path, one engine), and
mitmproxy streams each chunk on as it arrives, so the recorded timing holds.

Nothing leaves the machine: every flow is re-targeted before mitmproxy connects
anywhere (``connection_strategy=lazy``, ``upstream_cert=false``), and ``server_connect``
refuses any other connection (a raw TCP tunnel for something that is not HTTP, say).
The one exception is record mode new_episodes: the replay server relays a request it
has no recording of back through this proxy with ``RELAY_HEADER: <token>``; that
request goes to its real host and the record addon records it.
"""

from __future__ import annotations

import logging

from mitmproxy import http
from mitmproxy.utils import human

from proxy.headers import ORIGIN_HEADER
from proxy.model import origin

log = logging.getLogger("proxy.front")

RELAY_HEADER = "x-proxy-relay"
REPLAYED = "proxy_replayed"  # flow.metadata key: answered by the replay server, not to be recorded


class Retarget:
    """Re-targets every flow to the replay server at ``address`` (host, port), except
    the replay server's own relays (``relay_token``, record mode new_episodes)."""

    def __init__(self, address: tuple[str, int], relay_token: str | None = None):
        self.address = (address[0], address[1])
        self.relay_token = relay_token
        self.relay_clients: set[str] = set()  # client connections of the replay server's relay

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        r = flow.request
        token = r.headers.pop(RELAY_HEADER, None)
        if self.relay_token is not None and token == self.relay_token:
            self.relay_clients.add(flow.client_conn.id)
            return  # to the real host, recorded
        flow.metadata[REPLAYED] = True
        # Set, not added: a client's own x-proxy-origin never decides what matches.
        r.headers[ORIGIN_HEADER] = origin(r.scheme, r.host, r.port)
        # Through .data: the host and port setters would also rewrite the Host header (and
        # :authority) to the replay server's address, and the replay server must see the
        # request as the client sent it.
        r.scheme = "http"
        r.data.host, r.data.port = self.address

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # Unless told to stream, mitmproxy holds a whole response back (an SSE stream
        # would arrive in one piece at its end).
        if flow.response is not None and flow.response.status_code != 101:
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        # A WebSocket session the replay server answers passes through as bytes (mitmproxy's
        # TCP layer after the 101), not through its WebSocket layer: that layer answers a
        # dropped connection with a close frame 1000 of its own, so a recorded drop would
        # reach the client as a clean close. As bytes, frames, their compression and the
        # end are the replay server's. (A relay keeps the WebSocket layer: it is recorded.)
        if flow.metadata.get(REPLAYED) and flow.websocket is not None:
            flow.websocket = None

    def error(self, flow: http.HTTPFlow) -> None:
        # The replay server closed the connection before any response (a recorded cut, a
        # cut:headers fault): the client must lose its connection (its stream, on HTTP/2)
        # as on a base URL, not get mitmproxy's 502 page. A killed flow is closed without
        # one. Not when the replay server could not be reached at all: that 502 says so.
        if (flow.metadata.get(REPLAYED) and flow.response is None and flow.server_conn.timestamp_tcp_setup
                and flow.killable):
            flow.kill()

    def tls_start_client(self, tls_start) -> None:
        # A real API (and mitmproxy's upstream, when it has one) picks HTTP/2 whenever the
        # client offers it; mitmproxy without an upstream follows the client's order, and
        # httpx lists http/1.1 first. Prefer h2 as the server would. (Runs after mitmproxy's
        # tlsconfig, which made the connection; None means "not forced", unlike the TLS of
        # a secure web proxy itself.)
        app = tls_start.ssl_conn.get_app_data() if tls_start.ssl_conn is not None else None
        if (isinstance(app, dict) and app.get("client_alpn") is None and app.get("http2")
                and b"h2" in (tls_start.conn.alpn_offers or ())):
            app["client_alpn"] = b"h2"

    def server_connect(self, data) -> None:
        if data.client.id in self.relay_clients:
            return
        if data.server.address is None or tuple(data.server.address[:2]) != self.address:
            data.server.error = "forward-mode replay connects to nothing but its replay server"

    def client_disconnected(self, client) -> None:
        self.relay_clients.discard(client.id)


class TrustHint:
    """One line when a client's TLS handshake with the proxy fails, once per host.

    A client that does not trust the CA only says "connection error"; mitmproxy knows why
    but runs here without its log. Its ``tls_failed_client`` hook gets the connection with
    mitmproxy's reading of the failure in ``error`` ("The client does not trust the
    proxy's certificate for HOST (...)"); a handshake cut before its ClientHello ("connection
    closed early": a port check, say) is no one's mistake and passes in silence."""

    def __init__(self, ca: str):
        self.ca = ca
        self.told: set[str] = set()

    def tls_failed_client(self, data) -> None:
        conn = data.conn
        err = str(conn.error or "")
        if err == "connection closed early":
            return
        server = data.context.server.address
        host = conn.sni or (human.format_address(server) if server else "?")
        if host in self.told:
            return
        self.told.add(host)
        client = human.format_address(conn.peername) if conn.peername else "?"
        fix = f"make it trust {self.ca} (SSL_CERT_FILE / REQUESTS_CA_BUNDLE for Python, NODE_EXTRA_CA_CERTS for Node)"
        if "does not trust" in err:
            log.warning("a client at %s rejected the proxy's certificate for %s: %s", client, host, fix)
        elif "may not trust" in err or "disconnected during the handshake" in err:
            log.warning("a client at %s ended the TLS handshake for %s (%s); if it does not trust the proxy's "
                        "certificate, %s", client, host, err, fix)
        else:
            log.warning("the TLS handshake with a client at %s for %s failed: %s", client, host, err)

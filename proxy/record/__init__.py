"""Recording: the mitmproxy addon and its runner. The only package importing mitmproxy
(import its modules explicitly; importing this package imports nothing heavy)."""


class RecordError(Exception):
    """Recording cannot start: a bad upstream URL, a port in use, mitmproxy failing to listen."""

"""Recording: the mitmproxy addon and its runner. The only package importing mitmproxy
(import its modules explicitly; importing this package imports nothing heavy)."""

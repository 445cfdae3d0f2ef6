"""``host[:port]`` as it appears in a ``Host`` header or a URL: one parser for every adapter.

The server side reads the authority the client addressed (``Host``; ``X-Forwarded-Host`` is
never read here), the client side reads the target URL's, and ``same-origin`` compares the
two, so both sides must parse alike. The rules (RFC 3986 section 3.2.2 and 3.2.3, RFC 9110
section 7.2):

* ``name``, ``name:port``, ``[v6]``, ``[v6]:port``; the port is 1 to 65535 decimal digits'
  worth, and an empty port (``name:``) counts as absent;
* anything else is malformed and gives ``None``: an unterminated ``[``, a colon in an
  unbracketed host (``a:b:c``, a bare ``::1``), a port that is not a number, characters no
  host may hold (whitespace, ``,`` from a server joining two ``Host`` headers, ``@``, ``/``);
* a missing port is not filled in here; :func:`effective_port` applies the scheme's default.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_PORTS", "Authority", "effective_port", "parse_authority", "split_url"]

DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Authority = tuple[str, "int | None"]

# reg-name = *( unreserved / pct-encoded / sub-delims ), less "," (which only ever appears
# here when a server joined repeated Host headers) and with ":" handled separately.
_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+;="
)
_V6_CHARS = frozenset("0123456789abcdefABCDEF:.%vV-_~!$&'()*+;=")
_MAX_PORT = 65535


_INVALID = -1


def _port(text: str) -> int | None:
    """The port of ``text`` (without its colon): ``None`` if empty, ``_INVALID`` if invalid."""
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        return _INVALID
    port = int(text)
    return port if 0 < port <= _MAX_PORT else _INVALID


def parse_authority(text: str | None) -> Authority | None:
    """``(host, port or None)`` of ``text``, or ``None`` when it is absent or malformed.

    An IPv6 literal comes back without its brackets; the host keeps the case it was sent in.
    """
    if not text:
        return None
    text = text.strip(" \t")
    if text.startswith("["):
        close = text.find("]")
        if close < 2:
            return None
        host, rest = text[1:close], text[close + 1 :]
        if not _V6_CHARS.issuperset(host) or (rest and rest[0] != ":"):
            return None
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        if not host or not _NAME_CHARS.issuperset(host):
            return None
    port = _port(port_text)
    return None if port == _INVALID else (host, port)


def effective_port(port: int | None, scheme: str | None) -> int | None:
    """``port``, or the default port of ``scheme`` when it is ``None``."""
    if port is not None or scheme is None:
        return port
    return DEFAULT_PORTS.get(scheme.lower())


def split_url(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, explicit port or None)`` of an absolute URL, without parsing the rest.

    Userinfo is skipped; a malformed authority gives an empty host.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", None
    end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter, 0, end)
        if index != -1:
            end = index
    netloc = rest[:end]
    at = netloc.rfind("@")
    if at != -1:
        netloc = netloc[at + 1 :]
    parsed = parse_authority(netloc)
    if parsed is None:
        return scheme.lower(), "", None
    return scheme.lower(), parsed[0], parsed[1]

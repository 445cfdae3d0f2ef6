"""The client's address behind trusted proxies (``X-Forwarded-For`` or ``Forwarded``).

Security model, werkzeug's ``ProxyFix`` made explicit: these headers are written by whoever
sends the request, so tracewire reads them only when the socket peer is one of the
``trusted_proxies``, and only as far as the chain is made of trusted proxies. The addresses
are walked from the right (the hop nearest to us first); each one inside ``trusted_proxies``
is a proxy of ours and is skipped; the first one outside is the client. A forged header from
an untrusted peer changes nothing; a client that prepends fake entries only hides behind its
own real address, which the first trusted proxy appended.

Only the header your proxies write may be read (``client_ip_header``): a proxy that appends to
``X-Forwarded-For`` passes a client's own ``Forwarded`` header through untouched, so reading
both would let the client choose its address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = [
    "CLIENT_IP_HEADERS",
    "MAX_HOPS",
    "IPAddress",
    "IPNetwork",
    "Networks",
    "client_address",
    "parse_address",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLIENT_IP_HEADERS = ("x-forwarded-for", "forwarded")

# How many forwarded addresses are looked at, at most: a proxy chain is short, a header of
# thousands of entries is an attack.
MAX_HOPS = 32


def parse_address(text: str) -> IPAddress | None:
    """An IP address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]:80``, or ``None``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


class Networks:
    """A set of networks (``10.0.0.0/8``, ``::1``, ``127.0.0.1``), checked once at start-up."""

    __slots__ = ("networks",)

    def __init__(self, specs: Sequence[str], setting: str) -> None:
        networks: list[IPNetwork] = []
        for spec in specs:
            try:
                networks.append(ipaddress.ip_network(spec.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"invalid network {spec!r} in {setting}: {exc}") from None
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(address in network for network in self.networks)


def _x_forwarded_for(values: Sequence[str]) -> list[str]:
    return [item.strip() for item in ",".join(values).split(",")[-MAX_HOPS:]]


def _forwarded(values: Sequence[str]) -> list[str]:
    """The ``for=`` of each element of ``Forwarded`` (RFC 7239 section 4), in order."""
    found: list[str] = []
    for element in ",".join(values).split(",")[-MAX_HOPS:]:
        address = ""
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            if name.strip().lower() == "for":
                address = value.strip()
        found.append(address)
    return found


def client_address(
    peer: str | None, values: Sequence[str] | None, header: str, trusted: Networks
) -> str | None:
    """The client's address: ``peer`` unless it is a trusted proxy that forwarded the request.

    Args:
        peer: the socket peer's address.
        values: the ``header`` fields of the request (``None`` if absent).
        header: ``"x-forwarded-for"`` or ``"forwarded"``.
        trusted: the trusted proxies.
    """
    if not values or not trusted or parse_address(peer or "") not in trusted:
        return peer
    chain = _forwarded(values) if header == "forwarded" else _x_forwarded_for(values)
    client: str | None = peer
    for entry in reversed(chain):
        address = parse_address(entry)
        if address is None:
            # "unknown", an obfuscated identifier, garbage: the client is that, not one of our
            # proxies (which a network rule would take for an inside address).
            return entry.strip().strip('"') or None
        client = str(address)
        if address not in trusted:
            return client
    return client

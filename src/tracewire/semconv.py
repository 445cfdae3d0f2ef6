"""HTTP semantic-convention names and the small rules both span kinds share."""

from __future__ import annotations

import sys
from typing import Any

__all__ = [
    "BAGGAGE_PREFIX",
    "CLIENT_ADDRESS",
    "CLIENT_PORT",
    "ERROR_TYPE",
    "HTTP_REQUEST_METHOD",
    "HTTP_REQUEST_METHOD_ORIGINAL",
    "HTTP_RESPONSE_STATUS_CODE",
    "HTTP_ROUTE",
    "KNOWN_METHODS",
    "LINK_REASON",
    "NETWORK_PEER_ADDRESS",
    "NETWORK_PROTOCOL_VERSION",
    "OLD_CLIENT_NAMES",
    "OLD_SERVER_NAMES",
    "OLD_TARGET",
    "OTHER_METHOD",
    "PARENT_SOURCE",
    "POLICY_RULE",
    "PROPAGATION_FORMAT",
    "REDACTED",
    "REQUEST_HEADER_PREFIX",
    "RESPONSE_HEADER_PREFIX",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "URL_FULL",
    "URL_PATH",
    "URL_QUERY",
    "URL_SCHEME",
    "USER_AGENT_ORIGINAL",
    "duplicate_client",
    "duplicate_server",
    "normalize_method",
    "qualified_name",
    "redact_query",
]

# Attribute names (OpenTelemetry HTTP semantic conventions, stable).
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL = "http.request.method_original"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
URL_QUERY = "url.query"
URL_SCHEME = "url.scheme"
URL_FULL = "url.full"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
CLIENT_PORT = "client.port"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
USER_AGENT_ORIGINAL = "user_agent.original"
ERROR_TYPE = "error.type"
NETWORK_PEER_ADDRESS = "network.peer.address"
REQUEST_HEADER_PREFIX = "http.request.header."
RESPONSE_HEADER_PREFIX = "http.response.header."

BAGGAGE_PREFIX = "baggage."

# tracewire's own attributes.
PROPAGATION_FORMAT = "tracewire.propagation.format"
PARENT_SOURCE = "tracewire.parent.source"  # header:<format> | none | invalid:<format> | ...
POLICY_RULE = "tracewire.policy.rule"  # the incoming rule that decided, in its text form
LINK_REASON = "tracewire.link.reason"  # on a link tracewire adds: restart | background

# The names before the HTTP conventions were stable (v1.20 and earlier), added next to the
# stable ones with OTEL_SEMCONV_STABILITY_OPT_IN=http/dup, for dashboards not yet migrated.
OLD_SERVER_NAMES = {
    HTTP_REQUEST_METHOD: "http.method",
    URL_SCHEME: "http.scheme",
    SERVER_ADDRESS: "net.host.name",
    SERVER_PORT: "net.host.port",
    CLIENT_ADDRESS: "net.peer.ip",
    USER_AGENT_ORIGINAL: "http.user_agent",
    NETWORK_PROTOCOL_VERSION: "http.flavor",
    HTTP_RESPONSE_STATUS_CODE: "http.status_code",
}
OLD_CLIENT_NAMES = {
    HTTP_REQUEST_METHOD: "http.method",
    URL_FULL: "http.url",
    SERVER_ADDRESS: "net.peer.name",
    SERVER_PORT: "net.peer.port",
    NETWORK_PROTOCOL_VERSION: "http.flavor",
    HTTP_RESPONSE_STATUS_CODE: "http.status_code",
}
OLD_TARGET = "http.target"

OTHER_METHOD = "_OTHER"
KNOWN_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY")
)

REDACTED = "REDACTED"


def normalize_method(method: str) -> tuple[str, str | None]:
    """``(method for the span, original if it was not a known one)``."""
    if method in KNOWN_METHODS:
        return method, None
    upper = method.upper()
    if upper in KNOWN_METHODS:
        return upper, method
    return OTHER_METHOD, method


_ERROR_TYPES: dict[type, str] = {}


def qualified_name(exc: BaseException) -> str:
    """``error.type`` for ``exc``: its fully qualified class name, by its public path.

    Builtins are bare (``ValueError``); a class defined in a private module but exported by its
    package is named by the public path (``httpx._exceptions.ConnectError`` is
    ``httpx.ConnectError``), as users know it.
    """
    cls = type(exc)
    name = _ERROR_TYPES.get(cls)
    if name is not None:
        return name
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    parts = module.split(".")
    private = next((i for i, part in enumerate(parts) if part.startswith("_")), len(parts))
    if 0 < private < len(parts):
        public = ".".join(parts[:private])
        package = sys.modules.get(public)
        if package is not None and getattr(package, cls.__qualname__, None) is cls:
            name = f"{public}.{cls.__qualname__}"
    if len(_ERROR_TYPES) < 1024:  # bounded: exception classes are few, but be safe
        _ERROR_TYPES[cls] = name
    return name


def redact_query(query: str, keys: frozenset[str]) -> str:
    """``query`` (without ``?``) with the values of the parameters named in ``keys`` replaced.

    ``sig=abc&x=1`` becomes ``sig=REDACTED&x=1``; the text is returned unchanged (the same
    object) when nothing matched, which is the common case.
    """
    if not keys or "=" not in query:
        return query
    params = query.split("&")
    changed = False
    for i, param in enumerate(params):
        key, eq, value = param.partition("=")
        if eq and value and key in keys:
            params[i] = f"{key}={REDACTED}"
            changed = True
    return "&".join(params) if changed else query


def duplicate_server(attributes: dict[str, Any]) -> None:
    """Add the pre-stable names of the SERVER attributes present (``http/dup``)."""
    _duplicate(attributes, OLD_SERVER_NAMES)
    path = attributes.get(URL_PATH)
    if path is not None:
        query = attributes.get(URL_QUERY)
        attributes[OLD_TARGET] = f"{path}?{query}" if query else path


def duplicate_client(attributes: dict[str, Any]) -> None:
    """Add the pre-stable names of the CLIENT attributes present (``http/dup``)."""
    _duplicate(attributes, OLD_CLIENT_NAMES)


def _duplicate(attributes: dict[str, Any], names: dict[str, str]) -> None:
    for new, old in names.items():
        if new in attributes:
            attributes[old] = attributes[new]

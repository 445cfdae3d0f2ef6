"""Getters and setters that read and write headers where they already are.

The carrier keeps its native shape; nothing is copied into a dict per request. Header names are
matched case-insensitively everywhere. Getters return every value of a repeated header, so the
propagators can tell "repeated" from "present once".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence
from typing import Any

from opentelemetry.propagators.textmap import Getter, Setter

__all__ = [
    "AsgiHeaders",
    "AsgiHeadersGetter",
    "AsgiHeadersSetter",
    "HeadersGetter",
    "HeadersSetter",
    "Pairs",
    "PairsGetter",
    "PairsSetter",
    "ScannedGetter",
    "WsgiEnvironGetter",
    "asgi_getter",
    "asgi_setter",
    "headers_getter",
    "headers_setter",
    "pairs_getter",
    "pairs_setter",
    "scanned_getter",
    "wsgi_getter",
    "wsgi_key",
]

AsgiHeaders = Iterable[tuple[bytes, bytes]]


class AsgiHeadersGetter(Getter[AsgiHeaders]):
    """Reads an ASGI ``scope["headers"]`` list of ``(name, value)`` byte pairs."""

    # Propagators ask for a handful of fixed names; keep their encoded forms.
    _encoded: dict[str, bytes] = {}  # noqa: RUF012 - a shared, bounded cache on purpose

    def get(self, carrier: AsgiHeaders, key: str) -> list[str] | None:
        wanted = self._encoded.get(key)
        if wanted is None:
            wanted = key.lower().encode("latin-1")
            if len(self._encoded) < 256:
                self._encoded[key] = wanted
        size = len(wanted)
        found: list[str] | None = None
        for name, value in carrier:
            # Servers lowercase names (ASGI says they should); lower() only on a length match.
            if len(name) == size and (name == wanted or name.lower() == wanted):
                if found is None:
                    found = [value.decode("latin-1")]
                else:
                    found.append(value.decode("latin-1"))
        return found

    def keys(self, carrier: AsgiHeaders) -> list[str]:
        return [name.decode("latin-1").lower() for name, _ in carrier]


class AsgiHeadersSetter(Setter[MutableSequence[tuple[bytes, bytes]]]):
    """Appends to an ASGI header list (response headers, or a request scope being built)."""

    def set(self, carrier: MutableSequence[tuple[bytes, bytes]], key: str, value: str) -> None:
        carrier.append((key.lower().encode("latin-1"), value.encode("latin-1")))


def wsgi_key(name: str) -> str:
    """The ``environ`` key of an HTTP request header (PEP 3333 / CGI naming)."""
    upper = name.upper().replace("-", "_")
    if upper in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return upper
    return "HTTP_" + upper


class WsgiEnvironGetter(Getter[Mapping[str, Any]]):
    """Reads request headers from a WSGI ``environ``.

    Servers join a repeated header into one value with ``,``; the propagators' own rules decide
    what such a joined value means (a joined ``traceparent`` is invalid, ``tracestate`` and
    ``baggage`` are lists anyway).
    """

    _keys: dict[str, str] = {}  # noqa: RUF012 - a shared, bounded cache on purpose

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        environ_key = self._keys.get(key)
        if environ_key is None:
            environ_key = wsgi_key(key)
            if len(self._keys) < 256:
                self._keys[key] = environ_key
        value = carrier.get(environ_key)
        if value is None:
            return None
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].replace("_", "-").lower() for k in carrier if k.startswith("HTTP_")]


def _as_list(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    if isinstance(value, list | tuple):
        values = [_text(v) for v in value]
        return values or None
    return None


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class HeadersGetter(Getter[Any]):
    """Reads an httpx ``Headers``, a requests ``CaseInsensitiveDict`` or a plain ``dict``.

    Objects with ``get_list`` (httpx) or ``getlist`` (Starlette, Werkzeug) keep repeated fields
    apart. A plain ``dict`` is searched case-insensitively, and two spellings of one name
    (``traceparent`` and ``TraceParent``) count as a repeated header.
    """

    # carrier type -> name of its "all values of a field" method, or "" if it has none.
    _list_methods: dict[type, str] = {}  # noqa: RUF012 - a shared, bounded cache on purpose

    def get(self, carrier: Any, key: str) -> list[str] | None:
        kind = type(carrier)
        if kind is dict:
            return self._from_dict(carrier, key)
        method = self._list_methods.get(kind)
        if method is None:
            method = next((m for m in ("get_list", "getlist") if hasattr(carrier, m)), "")
            if len(self._list_methods) < 64:
                self._list_methods[kind] = method
        if method:
            values = getattr(carrier, method)(key)
            return [_text(v) for v in values] if values else None
        return _as_list(carrier.get(key))

    @staticmethod
    def _from_dict(carrier: dict[Any, Any], key: str) -> list[str] | None:
        lower = key.lower()
        found: list[str] | None = None
        for name, value in carrier.items():
            if isinstance(name, str) and (name == key or name.lower() == lower):
                values = _as_list(value)
                if values:
                    found = values if found is None else found + values
        return found

    def keys(self, carrier: Any) -> list[str]:
        return [k.lower() if isinstance(k, str) else str(k) for k in carrier]


class HeadersSetter(Setter[MutableMapping[str, str]]):
    """Sets a header in an httpx ``Headers``, a requests ``CaseInsensitiveDict`` or a ``dict``.

    Case-insensitive mappings replace any existing field; for a plain ``dict`` the other
    spellings of the same name are removed first so the header is never sent twice.
    """

    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        if type(carrier) is dict:
            lower = key.lower()
            for name in [n for n in carrier if n != key and n.lower() == lower]:
                del carrier[name]
        carrier[key] = value


class ScannedGetter(Getter[Mapping[str, list[str]]]):
    """Reads the ``{lowercase name: [values]}`` dict an adapter made in one pass over its
    headers (the ASGI middleware keeps only those the propagators read)."""

    def get(self, carrier: Mapping[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key) or carrier.get(key.lower())

    def keys(self, carrier: Mapping[str, list[str]]) -> list[str]:
        return list(carrier)


Pairs = MutableSequence[tuple[Any, Any]]


class PairsGetter(Getter[Pairs]):
    """Reads a list of ``(name, value)`` pairs: gRPC metadata, message headers (names are
    compared case-insensitively; bytes values are read as latin-1)."""

    def get(self, carrier: Pairs, key: str) -> list[str] | None:
        lower = key.lower()
        found = [_text(value) for name, value in carrier if _text(name).lower() == lower]
        return found or None

    def keys(self, carrier: Pairs) -> list[str]:
        return [_text(name).lower() for name, _ in carrier]


class PairsSetter(Setter[Pairs]):
    """Sets a header in a list of pairs: existing pairs of that name are replaced by one
    lowercase ``(name, value)`` pair (gRPC metadata keys must be lowercase)."""

    def set(self, carrier: Pairs, key: str, value: str) -> None:
        lower = key.lower()
        carrier[:] = [pair for pair in carrier if _text(pair[0]).lower() != lower]
        carrier.append((lower, value))


asgi_getter = AsgiHeadersGetter()
asgi_setter = AsgiHeadersSetter()
wsgi_getter = WsgiEnvironGetter()
headers_getter = HeadersGetter()
headers_setter = HeadersSetter()
pairs_getter = PairsGetter()
scanned_getter = ScannedGetter()
pairs_setter = PairsSetter()

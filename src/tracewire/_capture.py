"""Headers recorded as span attributes (``http.request.header.<name>``, ...), one rule for the
server and the client side: names are lowercase, every value of a repeated header is kept,
and a redacted header's values are each recorded as ``REDACTED``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.propagators.textmap import Getter
from opentelemetry.util.types import AttributeValue

from tracewire.compiled import HeaderSet
from tracewire.semconv import REDACTED

__all__ = ["from_carrier", "from_pairs"]

Attributes = dict[str, AttributeValue]


def _record(found: dict[str, list[str]], redact: HeaderSet, prefix: str) -> Attributes:
    return {
        prefix + name: [REDACTED] * len(values) if name in redact else values
        for name, values in found.items()
    }


def from_carrier(
    carrier: Any, getter: Getter[Any], wanted: HeaderSet, redact: HeaderSet, prefix: str
) -> Attributes:
    """The ``wanted`` headers of a carrier read through ``getter``."""
    names: Iterable[str] = wanted.names
    if wanted.regex is not None:
        names = {*wanted.names, *(n for n in getter.keys(carrier) if n.lower() in wanted)}
    found: dict[str, list[str]] = {}
    for name in names:
        values = getter.get(carrier, name)
        if values:
            found[name.lower()] = list(values)
    return _record(found, redact, prefix)


def from_pairs(
    pairs: Iterable[tuple[Any, Any]], wanted: HeaderSet, redact: HeaderSet, prefix: str
) -> Attributes:
    """The ``wanted`` headers of ``(name, value)`` pairs (str or latin-1 bytes)."""
    found: dict[str, list[str]] = {}
    for raw_name, raw_value in pairs:
        name = (raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name).lower()
        if name in wanted:
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
            found.setdefault(name, []).append(value)
    return _record(found, redact, prefix)

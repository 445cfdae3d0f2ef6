"""W3C Baggage (``baggage`` header).

Differences from ``opentelemetry.baggage.propagation.W3CBaggagePropagator``:

* every ``baggage`` header field is read (several fields are one list);
* a malformed member is dropped on its own; the valid members of the same header are kept;
* values are percent-decoded as the spec says: ``+`` stays a plus sign, and an escape sequence
  that is not UTF-8 becomes U+FFFD;
* limits drop whole members, never part of one, on extract and on inject; members that are
  dropped do not use up the header's size budget;
* extraction starts from an empty context, never from the current one;
* nothing from the header is ever logged.

Member properties (``;prop=value``) must be well formed but are not kept, as OpenTelemetry's
baggage API has no place for them.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_to_bytes

from opentelemetry.baggage import get_all, set_baggage
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from tracewire._log import warn_limited

BAGGAGE = "baggage"

# OpenTelemetry Python's limits; the spec requires at least 64 members and 8192 bytes.
MAX_MEMBERS = 180
MAX_MEMBER_BYTES = 4096
MAX_HEADER_BYTES = 8192

# RFC 9110 token characters.
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# baggage-octet (W3C Baggage): printable ASCII except space, DQUOTE, comma, semicolon, backslash.
_VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\')
# Characters left unencoded on inject: baggage-octets except "%", which starts an escape, and
# "=", which is legal in a value but trips parsers that split a member on every "=".
_SAFE = _VALUE_CHARS.replace("%", "").replace("=", "")


def _is_token(value: str) -> bool:
    return bool(value) and not value.strip(_TOKEN_CHARS)


def _decode(value: str) -> str | None:
    if value.strip(_VALUE_CHARS):
        return None
    if "%" not in value:
        return value
    # The spec: octets that are not UTF-8 become the replacement character.
    return unquote_to_bytes(value).decode("utf-8", "replace")


def _valid_properties(properties: str) -> bool:
    """``;key`` / ``;key=value`` properties, as the grammar has them (whitespace allowed)."""
    for prop in properties.split(";"):
        key, eq, value = prop.partition("=")
        if not _is_token(key.strip(" \t")):
            return False
        if eq and value.strip(" \t").strip(_VALUE_CHARS):
            return False
    return True


def parse_baggage(values: list[str]) -> tuple[list[tuple[str, str]], int]:
    """Valid ``(key, value)`` members of all ``baggage`` fields, and how many were dropped.

    Members are taken left to right while they fit the limits; one that does not fit is
    dropped whole and does not count against the header budget.
    """
    entries: list[tuple[str, str]] = []
    dropped = 0
    size = 0
    for raw in ",".join(values).split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        pair, semicolon, properties = member.partition(";")
        key, eq, value = pair.partition("=")
        key = key.strip(" \t")
        decoded = _decode(value.strip(" \t")) if eq else None
        added = len(member) + (1 if entries else 0)
        if (
            decoded is None
            or not _is_token(key)
            or (semicolon and not _valid_properties(properties))
            or len(member) > MAX_MEMBER_BYTES
            or len(entries) >= MAX_MEMBERS
            or size + added > MAX_HEADER_BYTES
        ):
            dropped += 1
            continue
        size += added
        entries.append((key, decoded))
    return entries, dropped


def format_baggage(items: list[tuple[str, object]]) -> str:
    """Serialise baggage entries, skipping (never cutting) what is invalid or over the limits."""
    members: list[str] = []
    size = 0
    for key, value in items:
        if not isinstance(key, str) or not _is_token(key):
            continue
        try:
            member = f"{key}={quote(str(value), safe=_SAFE)}"
        except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
            continue
        if len(member) > MAX_MEMBER_BYTES:
            continue
        if size + len(member) + (1 if members else 0) > MAX_HEADER_BYTES:
            continue
        size += len(member) + (1 if members else 0)
        members.append(member)
        if len(members) >= MAX_MEMBERS:
            break
    return ",".join(members)


class BaggagePropagator(TextMapPropagator):
    """Extracts and injects the W3C ``baggage`` header."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = Context()
        values = getter.get(carrier, BAGGAGE)
        if not values:
            return context
        entries, dropped = parse_baggage(values)
        if dropped:
            warn_limited("baggage", f"dropped {dropped} invalid or over-limit baggage member(s)")
        for key, value in entries:
            context = set_baggage(key, value, context)
        return context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        items = get_all(context)
        if not items:
            return
        header = format_baggage(list(items.items()))
        if header:
            setter.set(carrier, BAGGAGE, header)

    @property
    def extract_fields(self) -> frozenset[str]:
        """Every header ``extract`` may read (``fields`` lists what ``inject`` writes)."""
        return frozenset((BAGGAGE,))

    @property
    def fields(self) -> set[str]:
        return {BAGGAGE}

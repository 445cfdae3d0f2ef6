"""W3C Baggage (``baggage`` header).

Differences from ``opentelemetry.baggage.propagation.W3CBaggagePropagator``:

* every ``baggage`` header field is read (several fields are one list);
* a malformed member is dropped on its own; the valid members of the same header are kept;
* values are percent-decoded as the spec says: ``+`` stays a plus sign, and an escape sequence
  that is not UTF-8 becomes U+FFFD;
* the limits are the spec's, for the whole list: 180 members (the grammar's maximum; the spec
  requires at least 64) and 8192 bytes, with no limit per member, so one member of 8190 bytes
  is sent on unchanged. Beyond them whole members are dropped, never part of one, on extract
  and on inject; members that are dropped do not use up the header's size budget;
* member properties (``k=v;p=1``, ``k=v;flag``) are kept beside the baggage (OpenTelemetry's
  baggage API has no place for them) and sent on unchanged with their member while its value
  is still the one received; a member whose value the application changed, or one it added,
  is sent without properties;
* extraction starts from an empty context, never from the current one;
* nothing from the header is ever logged.

Parsing takes time linear in the header's length: one split, then one pass over the members
with no backtracking; once the limits are reached the remaining members are only counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from opentelemetry.baggage import _BAGGAGE_KEY, get_all, set_baggage
from opentelemetry.context import Context, create_key, get_value, set_value
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from tracewire._log import warn_limited

__all__ = [
    "BAGGAGE",
    "MAX_HEADER_BYTES",
    "MAX_MEMBERS",
    "PROPERTIES_KEY",
    "BaggagePropagator",
    "Properties",
    "format_baggage",
    "parse_baggage",
    "parse_members",
]

BAGGAGE = "baggage"

# The grammar's maximum number of members (list-member 0*179( OWS "," OWS list-member )); the
# spec requires at least 64. The size is the spec's minimum, for all baggage fields together.
MAX_MEMBERS = 180
MAX_HEADER_BYTES = 8192

# Context key holding the properties of the received members that had any:
# ``{key: (value as received, properties text starting with ";")}``. Set only when some member
# had properties; read on inject to send them on with a member whose value did not change.
PROPERTIES_KEY = create_key("tracewire-baggage-properties")

# RFC 9110 token characters.
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# baggage-octet (W3C Baggage): printable ASCII except space, DQUOTE, comma, semicolon, backslash.
_VALUE_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;\\')
# Characters left unencoded on inject: baggage-octets except "%", which starts an escape, and
# "=", which is legal in a value but trips parsers that split a member on every "=".
_SAFE = _VALUE_CHARS.replace("%", "").replace("=", "")
# The shortest member there is ("k=") and the comma before it.
_SMALLEST = 3

Properties = Mapping[str, tuple[str, str]]


def _is_token(value: str) -> bool:
    return bool(value) and not value.strip(_TOKEN_CHARS)


def _valid_properties(properties: str) -> bool:
    """``;key`` / ``;key=value`` properties, as the grammar has them (whitespace allowed)."""
    for prop in properties.split(";"):
        key, eq, value = prop.partition("=")
        if not _is_token(key.strip(" \t")):
            return False
        if eq and value.strip(" \t").strip(_VALUE_CHARS):
            return False
    return True


def _member(member: str) -> tuple[str, str, str] | None:
    """``(key, value, properties)`` of one stripped, non-empty member; ``None`` if malformed.

    ``properties`` is the text from the first ``;`` on, exactly as received, or ``""``.
    """
    pair, semicolon, properties = member.partition(";")
    key, eq, value = pair.partition("=")
    key = key.strip(" \t")
    value = value.strip(" \t")
    # strip() with a set of characters leaves something only if a character is outside it.
    if not eq or not key or key.strip(_TOKEN_CHARS) or value.strip(_VALUE_CHARS):
        return None
    if "%" in value:  # the spec: octets that are not UTF-8 become the replacement character
        value = unquote_to_bytes(value).decode("utf-8", "replace")
    if not semicolon:
        return key, value, ""
    return (key, value, ";" + properties) if _valid_properties(properties) else None


def parse_members(values: list[str]) -> tuple[list[tuple[str, str, str]], int]:
    """Valid ``(key, value, properties)`` members of all ``baggage`` fields, and the dropped count.

    Members are taken left to right while they fit the limits (``MAX_MEMBERS`` members,
    ``MAX_HEADER_BYTES`` bytes counted on the members as received, properties included, and
    one comma between two); one that is malformed or does not fit is dropped whole and uses
    up nothing. ``properties`` is ``""`` for a member without any.
    """
    members: list[tuple[str, str, str]] = []
    dropped = 0
    size = 0
    full = False
    text = values[0] if len(values) == 1 else ",".join(values)
    for raw in text.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        if full:
            dropped += 1
            continue
        added = len(member) + (1 if members else 0)
        parsed = _member(member) if size + added <= MAX_HEADER_BYTES else None
        if parsed is None:
            dropped += 1
            continue
        size += added
        members.append(parsed)
        full = len(members) >= MAX_MEMBERS or size + _SMALLEST > MAX_HEADER_BYTES
    return members, dropped


def parse_baggage(values: list[str]) -> tuple[list[tuple[str, str]], int]:
    """Valid ``(key, value)`` members of all ``baggage`` fields, and how many were dropped.

    Members are taken left to right while they fit the limits; one that does not fit is
    dropped whole and does not count against the header budget. Properties are checked but
    not returned (``parse_members`` returns them).
    """
    members, dropped = parse_members(values)
    return [(key, value) for key, value, _ in members], dropped


def format_baggage(
    items: Iterable[tuple[str, object]], properties: Properties | None = None
) -> str:
    """Serialise baggage entries, skipping (never cutting) what is invalid or over the limits.

    ``properties`` (as kept by extraction) adds a member's received properties when the
    entry's value is still the value they arrived with.
    """
    members: list[str] = []
    size = 0
    for key, value in items:
        if not isinstance(key, str) or not _is_token(key):
            continue
        text = str(value)
        room = MAX_HEADER_BYTES - size - (1 if members else 0)
        if len(key) + 1 + len(text) > room:  # encoding never makes a value shorter
            continue
        try:
            member = f"{key}={quote(text, safe=_SAFE)}"
        except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
            continue
        if properties:
            kept = properties.get(key)
            if kept is not None and value.__class__ is str and value == kept[0]:
                member += kept[1]
        if len(member) > room:
            continue
        size += len(member) + (1 if members else 0)
        members.append(member)
        if len(members) >= MAX_MEMBERS:
            break
    return ",".join(members)


class _LazyBaggage(dict[str, object]):
    """The baggage of one request, parsed from its header fields the first time it is read.

    It stands where OpenTelemetry's baggage API keeps a context's baggage (a ``dict``), and
    also under ``PROPERTIES_KEY``, so that a request that never reads its baggage (most do
    not, and many never call downstream) does not pay for parsing it. Every read goes through
    here, and the first one fills the ``dict`` it is; OpenTelemetry copies it before changing.
    """

    __slots__ = ("_properties", "_values")

    def __init__(self, values: list[str]) -> None:
        super().__init__()
        self._values: list[str] | None = values
        self._properties: dict[str, tuple[str, str]] | None = None

    def _load(self) -> None:
        values = self._values
        if values is None:
            return
        members, dropped = parse_members(values)
        if dropped:
            warn_limited("baggage", f"dropped {dropped} invalid or over-limit baggage member(s)")
        # Filled before _values is cleared: a concurrent first read parses again, alike.
        dict.update(self, ((key, value) for key, value, _ in members))
        self._properties = _properties_of(members, None)
        self._values = None

    def properties(self) -> dict[str, tuple[str, str]] | None:
        self._load()
        return self._properties

    def __getitem__(self, key: str) -> object:
        self._load()
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self._load()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def __repr__(self) -> str:
        self._load()
        return dict.__repr__(self)

    def __eq__(self, other: object) -> bool:
        self._load()
        return dict.__eq__(self, other)

    __hash__ = None  # as dict's

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return dict.get(self, key, default)

    def keys(self) -> Any:
        self._load()
        return dict.keys(self)

    def values(self) -> Any:
        self._load()
        return dict.values(self)

    def items(self) -> Any:
        self._load()
        return dict.items(self)

    def copy(self) -> dict[str, object]:
        self._load()
        return dict(dict.items(self))


def _kept(context: Context | None) -> Properties | None:
    """The properties kept in ``context`` (``None``: none; the common case)."""
    kept = context.get(PROPERTIES_KEY) if context is not None else get_value(PROPERTIES_KEY)
    if isinstance(kept, _LazyBaggage):
        return kept.properties()
    return kept if isinstance(kept, dict) else None


def _properties_of(
    members: list[tuple[str, str, str]], previous: Properties | None
) -> dict[str, tuple[str, str]] | None:
    """What ``PROPERTIES_KEY`` holds after extracting ``members`` over ``previous``."""
    kept: dict[str, tuple[str, str]] = {}
    if previous:
        received = {key for key, _, _ in members}
        kept.update((k, v) for k, v in previous.items() if k not in received)
    for key, value, properties in members:
        if properties:
            kept[key] = (value, properties)
        else:  # a later duplicate without properties replaces an earlier one with them
            kept.pop(key, None)
    return kept or None


class BaggagePropagator(TextMapPropagator):
    """Extracts and injects the W3C ``baggage`` header.

    Member properties are kept under ``PROPERTIES_KEY`` in the extracted context (only when a
    member had some) and sent on with their member while its value is unchanged.
    """

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
        if _BAGGAGE_KEY not in context and PROPERTIES_KEY not in context:
            # Nothing to merge with (the usual extraction into a fresh context): parse later,
            # if anything reads it. One context copy for both keys.
            lazy = _LazyBaggage(values)
            return Context({**context, _BAGGAGE_KEY: lazy, PROPERTIES_KEY: lazy})
        members, dropped = parse_members(values)
        if dropped:
            warn_limited("baggage", f"dropped {dropped} invalid or over-limit baggage member(s)")
        previous = _kept(context)
        with_properties = False
        for key, value, properties in members:
            context = set_baggage(key, value, context)
            if properties:
                with_properties = True
        if with_properties or previous:
            context = set_value(PROPERTIES_KEY, _properties_of(members, previous), context)
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
        header = format_baggage(items.items(), _kept(context))
        if header:
            setter.set(carrier, BAGGAGE, header)

    @property
    def extract_fields(self) -> frozenset[str]:
        """Every header ``extract`` may read (``fields`` lists what ``inject`` writes)."""
        return frozenset((BAGGAGE,))

    @property
    def fields(self) -> set[str]:
        return {BAGGAGE}

"""Lowercase-hex checks by slicing and ``str.strip``, and header-value pickers: no regex."""

from __future__ import annotations

LOWER_HEX = "0123456789abcdef"


def is_lower_hex(value: str) -> bool:
    """True if every character of ``value`` is one of ``0-9a-f`` (and it is not empty)."""
    # strip() removes characters from the set at both ends; anything left means a character
    # outside the set.
    return bool(value) and not value.strip(LOWER_HEX)


def single(values: list[str] | None) -> str | None:
    """The one value of a header that must not be repeated, without HTTP whitespace.

    ``None`` when the header is absent *or* repeated: a repeated trace header is ambiguous and
    the formats say to ignore it.
    """
    if not values or len(values) != 1:
        return None
    return values[0].strip(" \t")


def first(values: list[str] | None) -> str | None:
    """The first value of a header whose first value wins, without HTTP whitespace.

    A carrier that joined repeated fields into one value (a WSGI ``environ``, a requests
    header dict) gives ``"a,b"`` or ``"a, b"``: the part before the first comma is the first
    value. Only for headers whose valid values never contain a comma (B3 ids and flags).
    ``None`` when the header is absent.
    """
    if not values:
        return None
    value = values[0]
    comma = value.find(",")
    if comma >= 0:
        value = value[:comma]
    return value.strip(" \t")

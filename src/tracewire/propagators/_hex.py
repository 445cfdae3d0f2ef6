"""Lowercase-hex checks by slicing and ``str.strip``: no regex on the hot path."""

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

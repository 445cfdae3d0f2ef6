"""The kinds of value a setting can hold: how each is read from text and checked in any form.

Every setting names one :class:`Kind`. ``parse`` turns the text of an environment variable or
a config string into a value; ``check`` takes a value from any source (code, a mapping, a
parsed string), normalises it (sequences become tuples, names are folded) and raises a
``ValueError``/``TypeError`` naming the setting as the user wrote it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.propagators.textmap import TextMapPropagator

from tracewire.matching import REGEX_PREFIX, PatternSpec, validate_patterns
from tracewire.propagation import NONE, resolve

Hook = Callable[..., Any]
Parse = Callable[[str, str], Any]
Check = Callable[[Any, str], Any]

ANY_HOST = "*"


class Kind:
    """How one kind of setting is read from text (``parse``) and checked (``check``)."""

    __slots__ = ("check", "parse")

    def __init__(self, parse: Parse, check: Check) -> None:
        self.parse = parse
        self.check = check


def fail_type(label: str, expected: str, value: object) -> TypeError:
    return TypeError(f"{label} must be {expected}, got {type(value).__name__}: {value!r}")


# ------------------------------------------------------------------------------------ text
def parse_list(text: str, label: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _sequence(value: object, label: str, expected: str) -> tuple[Any, ...]:
    """``value`` as a tuple; a string is one comma-separated list."""
    if isinstance(value, str):
        return parse_list(value, label)
    if isinstance(value, bytes) or not isinstance(value, Sequence | set | frozenset):
        raise fail_type(label, expected, value)
    return tuple(value)


# ----------------------------------------------------------------------------- propagators
def _check_propagators(value: object, label: str) -> tuple[str | TextMapPropagator, ...]:
    expected = "a sequence of propagator names or TextMapPropagator instances"
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{label} is empty; name the propagators, or 'none' for no propagation")
    items = _sequence(value, label, expected)
    if not items:
        raise ValueError(f"{label} is empty; name the propagators, or 'none' for no propagation")
    checked: list[str | TextMapPropagator] = []
    for item in items:
        if isinstance(item, TextMapPropagator):
            checked.append(item)
            continue
        if not isinstance(item, str):
            raise fail_type(label, expected, item)
        name = item.strip().lower()
        if name in checked:
            raise ValueError(f"propagator {name!r} is listed twice in {label}")
        if name != NONE:
            resolve(name, label)  # an unknown or broken propagator fails here, at start-up
        checked.append(name)
    if NONE in checked and len(checked) > 1:
        raise ValueError(f"'none' in {label} cannot be combined with other propagators")
    return tuple(checked)


PROPAGATORS = Kind(parse_list, _check_propagators)
OPTIONAL_PROPAGATORS = Kind(
    parse_list, lambda value, label: None if value is None else _check_propagators(value, label)
)


# --------------------------------------------------------------------------------- choices
def choice(choices: Sequence[str]) -> Kind:
    def check(value: object, label: str) -> str:
        if not isinstance(value, str):
            raise fail_type(label, "a string", value)
        word = value.strip().lower()
        if word not in choices:
            raise ValueError(f"invalid {label} {value!r}; valid choices: {', '.join(choices)}")
        return word

    return Kind(lambda text, label: text.strip().lower(), check)


# -------------------------------------------------------------------------------- patterns
_PATTERNS = "a sequence of strings or compiled regular expressions"


def _check_patterns(value: object, label: str) -> tuple[PatternSpec, ...]:
    items = _sequence(value, label, _PATTERNS)
    for item in items:
        if not isinstance(item, str | re.Pattern) or (isinstance(item, str) and not item):
            raise fail_type(label, _PATTERNS, item)
    validate_patterns(items, label)
    return items


PATTERNS = Kind(parse_list, _check_patterns)


def _check_url_regexes(value: object, label: str) -> tuple[PatternSpec, ...]:
    """Regular expressions searched in a full URL (the contrib packages' exclusion form)."""
    items = _check_patterns(value, label)
    # Every entry is a regular expression here, with or without its "re:".
    checked: list[PatternSpec] = [
        REGEX_PREFIX + item if isinstance(item, str) and not item.startswith(REGEX_PREFIX) else item
        for item in items
    ]
    validate_patterns(checked, label)
    return tuple(checked)


URL_REGEXES = Kind(parse_list, _check_url_regexes)


def _parse_hosts(text: str, label: str) -> tuple[str, ...] | None:
    items = parse_list(text, label)
    if items == (ANY_HOST,):
        return None
    if items == (NONE,):
        return ()
    return items


def _check_hosts(value: object, label: str) -> tuple[PatternSpec, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(
                f"{label} is an empty string; use '*' (or None) for every host, "
                "'none' (or an empty list) for no host, or a list of host patterns"
            )
        value = _parse_hosts(value, label)
        if value is None:
            return None
    return _check_patterns(value, label)


HOSTS = Kind(_parse_hosts, _check_hosts)

# RFC 9110 token characters: what a header name may hold.
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _check_names(value: object, label: str) -> tuple[str, ...]:
    items = _sequence(value, label, "a sequence of strings")
    for item in items:
        if not isinstance(item, str):
            raise fail_type(label, "a sequence of strings", item)
        if not item.strip():
            raise ValueError(f"an empty name in {label}")
    return tuple(item.strip() for item in items)


def _check_header_names(value: object, label: str) -> tuple[str, ...]:
    """Header names (folded to lowercase), or ``re:REGEX`` matched against whole names."""
    checked: list[str] = []
    for name in _check_names(value, label):
        if name.startswith(REGEX_PREFIX):
            validate_patterns([name], label)
            checked.append(name)
        elif not _TOKEN.issuperset(name):
            raise ValueError(f"invalid header name {name!r} in {label}")
        else:
            checked.append(name.lower())
    return tuple(checked)


NAMES = Kind(parse_list, _check_names)
HEADER_NAMES = Kind(parse_list, _check_header_names)


# ----------------------------------------------------------------------------------- hooks
def _parse_hook(text: str, label: str) -> Hook | None:
    target = text.strip()
    if not target:
        return None
    module_name, colon, attr = target.partition(":")
    if not colon or not module_name or not attr:
        raise ValueError(f"invalid hook {target!r} in {label}; expected 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import hook {target!r} in {label}: {exc}") from exc
    if not callable(obj):
        raise TypeError(f"hook {target!r} in {label} is not callable")
    return obj  # type: ignore[no-any-return]


def _check_hook(value: object, label: str) -> Hook | None:
    if isinstance(value, str):  # an import path, from code as from text
        value = _parse_hook(value, label)
    if value is not None and not callable(value):
        raise fail_type(label, "a callable or None", value)
    if inspect.iscoroutinefunction(value):
        # Hooks are called, never awaited: an async one would silently do nothing (contrib's
        # httpx async_request_hook, moved over as it is).
        raise TypeError(
            f"{label} must be a plain function, not an async one: hooks are not awaited"
        )
    return value


HOOK = Kind(_parse_hook, _check_hook)

# ------------------------------------------------------------------------------------ bool
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_bool(text: str, label: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(
        f"invalid boolean {text!r} in {label}; use one of: {', '.join(_TRUE + _FALSE)}"
    )


def _check_bool(value: object, label: str) -> bool:
    # Text is parsed by the readers of text; in code, "false" would be truthy, so only a bool.
    if not isinstance(value, bool):
        raise fail_type(label, "a bool", value)
    return value


BOOL = Kind(_parse_bool, _check_bool)


# ------------------------------------------------------------------------- trust settings
def _check_rules(value: object, label: str) -> tuple[Any, ...]:
    from tracewire.trust import parse_rules, to_rule

    if isinstance(value, str):
        return parse_rules(value, label)
    items = _sequence(value, label, "a sequence of rules")
    return tuple(to_rule(item, label, number) for number, item in enumerate(items, 1))


def _parse_rules(text: str, label: str) -> tuple[Any, ...]:
    from tracewire.trust import parse_rules

    return parse_rules(text, label)


RULES = Kind(_parse_rules, _check_rules)


def _check_networks(value: object, label: str) -> tuple[str, ...]:
    from tracewire.forwarded import Networks

    items = _check_names(value, label)
    Networks(items, label)  # an invalid network fails here, at start-up
    return items


NETWORKS = Kind(parse_list, _check_networks)

# W3C tracestate key: a-z0-9 first, then up to 255 of a-z 0-9 _ - * / @ (a tenant@system form
# included).
_TRACESTATE_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")


def _check_tracestate_key(value: object, label: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail_type(label, "a string or None", value)
    key = value.strip()
    if not key:
        return None
    if _TRACESTATE_KEY.fullmatch(key) is None:
        raise ValueError(
            f"invalid tracestate key {value!r} in {label}: lowercase letters, digits and "
            "_ - * / @, starting with a letter or digit, at most 256 characters"
        )
    return key


TRACESTATE_KEY = Kind(lambda text, label: text.strip() or None, _check_tracestate_key)


def _parse_destinations(
    text: str, label: str
) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    found = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        hosts, eq, names = part.partition("=")
        if not eq or not hosts.strip() or not names.strip():
            raise ValueError(
                f"invalid entry {part!r} in {label}; expected 'HOSTS=PROPAGATORS', "
                "e.g. '*.legacy.mesh=b3multi; *=tracecontext,baggage'"
            )
        found.append((parse_list(hosts, label), parse_list(names, label)))
    return tuple(found)


def _check_destinations(value: object, label: str) -> tuple[tuple[Any, Any], ...]:
    if isinstance(value, str):
        value = _parse_destinations(value, label)
    pairs = (
        list(value.items())
        if isinstance(value, Mapping)
        else _sequence(value, label, "a mapping of host patterns to propagator lists")
    )
    checked = []
    for pair in pairs:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise fail_type(label, "a mapping of host patterns to propagator lists", pair)
        hosts, names = pair
        hosts = (hosts,) if isinstance(hosts, re.Pattern) else hosts
        checked.append(
            (_check_patterns(hosts, label), _check_propagators(names, f"{label} for {hosts!r}"))
        )
    return tuple(checked)


DESTINATIONS = Kind(_parse_destinations, _check_destinations)


# --------------------------------------------------------------------------------- display
def show(value: object) -> str:
    """A setting's value as ``tracewire check`` prints it (the text form, where there is one)."""
    from tracewire.trust import Rule

    if isinstance(value, str | Rule):
        return str(value)
    if isinstance(value, re.Pattern):
        return f"re:{value.pattern}"
    if isinstance(value, TextMapPropagator):
        return type(value).__name__
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, tuple) for v in value):
        hosts, names = value  # an inject_to entry
        return f"{','.join(show(h) for h in hosts)}={','.join(show(n) for n in names)}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}:{value.__qualname__}"
    return repr(value)

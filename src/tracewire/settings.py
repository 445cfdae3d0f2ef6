"""The one immutable, validated settings object every part of tracewire takes.

Built once at start-up: in code (``Settings(...)``), from the environment (``from_env``), or
from any mapping such as a Flask ``app.config`` (``from_mapping``). A bad value fails here, at
construction, with a ``ValueError``/``TypeError`` that names the setting and the valid choices;
nothing is checked per request.

Adding a setting is one ``field(...)`` line with its string parser in ``metadata``; the
environment and mapping readers pick it up from there.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from opentelemetry.propagators.textmap import TextMapPropagator

from tracewire._log import logger
from tracewire.matching import HostMatcher, PathMatcher, PatternSpec
from tracewire.propagation import NONE, POLICIES, CompositePropagator, resolve

PropagatorSpec = str | TextMapPropagator
Hook = Callable[..., Any]

PREFIX = "TRACEWIRE_"
OTEL_PROPAGATORS = "OTEL_PROPAGATORS"

RESPONSE_PROPAGATION = ("none", "traceresponse", "server-timing")

DEFAULT_REDACT_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
)
# Query parameters whose values never appear in url.full (semantic conventions list the first
# four; the rest are common credential carriers).
DEFAULT_REDACT_QUERY = (
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "X-Goog-Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "access_token",
    "api_key",
    "apikey",
    "token",
    "password",
)

# ----------------------------------------------------------------------------- string parsers
# Each turns the text form of a setting (environment variable, config string) into the value
# the dataclass field takes. ``label`` is the name the user wrote, for error messages.


def _parse_list(text: str, label: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_optional_list(text: str, label: str) -> tuple[str, ...] | None:
    items = _parse_list(text, label)
    return None if items == ("*",) else items


def _parse_lower_list(text: str, label: str) -> tuple[str, ...]:
    return tuple(item.lower() for item in _parse_list(text, label))


def _parse_word(text: str, label: str) -> str:
    return text.strip().lower()


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


def _env(parser: Callable[[str, str], Any], doc: str) -> dict[str, Any]:
    return {"parse": parser, "doc": doc}


T = TypeVar("T")


def _fail_type(label: str, expected: str, value: object) -> TypeError:
    return TypeError(f"{label} must be {expected}, got {type(value).__name__}: {value!r}")


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """tracewire's settings. Every field is optional; the defaults suit most services.

    Sequences may be given as lists, tuples or one comma-separated string. See
    ``docs/settings.md`` for every field with its environment variable.
    """

    # --- propagation -------------------------------------------------------------------------
    propagators: Sequence[PropagatorSpec] = field(
        default=("tracecontext", "baggage"),
        metadata=_env(_parse_list, "propagators to extract and inject, in order"),
    )
    extract: Sequence[PropagatorSpec] | None = field(
        default=None,
        metadata=_env(_parse_list, "propagators to extract with (default: propagators)"),
    )
    inject: Sequence[PropagatorSpec] | None = field(
        default=None,
        metadata=_env(_parse_list, "propagators to inject with (default: propagators)"),
    )
    extract_policy: str = field(
        default="first",
        metadata=_env(_parse_word, "which parent wins when formats disagree: first | last"),
    )
    # --- server ------------------------------------------------------------------------------
    excluded_paths: Sequence[PatternSpec] = field(
        default=(),
        metadata=_env(_parse_list, "request paths that get no span (exact, glob, re:regex)"),
    )
    server_request_hook: Hook | None = field(
        default=None,
        metadata=_env(_parse_hook, "called as hook(span, request_info) when a server span starts"),
    )
    server_response_hook: Hook | None = field(
        default=None,
        metadata=_env(_parse_hook, "called as hook(span, response_info) when the response starts"),
    )
    capture_request_headers: Sequence[str] = field(
        default=(),
        metadata=_env(_parse_lower_list, "request headers recorded as span attributes"),
    )
    capture_response_headers: Sequence[str] = field(
        default=(),
        metadata=_env(_parse_lower_list, "response headers recorded as span attributes"),
    )
    redact_headers: Sequence[str] = field(
        default=DEFAULT_REDACT_HEADERS,
        metadata=_env(_parse_lower_list, "captured headers whose values are replaced by REDACTED"),
    )
    response_propagation: str = field(
        default="none",
        metadata=_env(_parse_word, "trace id in responses: none | traceresponse | server-timing"),
    )
    # --- client ------------------------------------------------------------------------------
    propagate_to: Sequence[PatternSpec] | None = field(
        default=None,
        metadata=_env(_parse_optional_list, "hosts that may receive trace headers (default: all)"),
    )
    baggage_to: Sequence[PatternSpec] | None = field(
        default=None,
        metadata=_env(_parse_optional_list, "hosts that may get baggage (default: propagate_to)"),
    )
    client_request_hook: Hook | None = field(
        default=None,
        metadata=_env(_parse_hook, "called as hook(span, request) when a client span starts"),
    )
    client_response_hook: Hook | None = field(
        default=None,
        metadata=_env(_parse_hook, "called as hook(span, request, response) when it ends"),
    )
    require_parent: bool = field(
        default=False,
        metadata=_env(_parse_bool, "no client span and no headers without a current span"),
    )
    redact_query_params: Sequence[str] = field(
        default=DEFAULT_REDACT_QUERY,
        metadata=_env(_parse_list, "query parameters whose values are redacted in url.full"),
    )
    # Where each field's value came from (the name the user wrote), for error messages.
    _labels: Mapping[str, str] | None = field(default=None, repr=False, compare=False, kw_only=True)

    # Derived once in __post_init__; not part of the constructor.
    composite: CompositePropagator = field(init=False, repr=False, compare=False)
    inject_propagator: CompositePropagator = field(init=False, repr=False, compare=False)
    path_excluded: PathMatcher | None = field(init=False, repr=False, compare=False)
    may_propagate: HostMatcher = field(init=False, repr=False, compare=False)
    may_send_baggage: HostMatcher = field(init=False, repr=False, compare=False)

    ENV_PREFIX: ClassVar[str] = PREFIX

    # ------------------------------------------------------------------------- validation
    def _label(self, name: str) -> str:
        return (self._labels or {}).get(name, name)

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.init and "parse" in f.metadata:
                value = getattr(self, f.name)
                if isinstance(value, str) and f.type != "str":
                    self._set(f.name, f.metadata["parse"](value, self._label(f.name)))

        propagators = self._propagators("propagators", self.propagators)
        extract = (
            propagators if self.extract is None else self._propagators("extract", self.extract)
        )
        inject = propagators if self.inject is None else self._propagators("inject", self.inject)
        self._set("extract_policy", self._choice("extract_policy", POLICIES))
        self._set(
            "response_propagation", self._choice("response_propagation", RESPONSE_PROPAGATION)
        )
        self._set("composite", CompositePropagator(extract, inject, self.extract_policy))
        # Injection only ever uses the inject list; a separate object keeps the hot path flat.
        self._set("inject_propagator", CompositePropagator((), inject, self.extract_policy))

        excluded = self._patterns("excluded_paths", self.excluded_paths)
        self._set("excluded_paths", excluded)
        self._set(
            "path_excluded",
            PathMatcher(excluded, self._label("excluded_paths")) if excluded else None,
        )
        for name in ("capture_request_headers", "capture_response_headers", "redact_headers"):
            self._set(name, tuple(s.lower() for s in self._strings(name)))
        self._set("redact_query_params", self._strings("redact_query_params"))
        propagate_to = (
            None if self.propagate_to is None else self._patterns("propagate_to", self.propagate_to)
        )
        baggage_to = (
            propagate_to
            if self.baggage_to is None
            else self._patterns("baggage_to", self.baggage_to)
        )
        self._set("propagate_to", propagate_to)
        self._set("may_propagate", HostMatcher(propagate_to, self._label("propagate_to")))
        self._set(
            "may_send_baggage",
            HostMatcher(
                baggage_to,
                self._label("baggage_to" if self.baggage_to is not None else "propagate_to"),
            ),
        )
        for name in (
            "server_request_hook",
            "server_response_hook",
            "client_request_hook",
            "client_response_hook",
        ):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise _fail_type(self._label(name), "a callable or None", hook)
        if not isinstance(self.require_parent, bool):
            raise _fail_type(self._label("require_parent"), "a bool", self.require_parent)

    def _sequence(self, name: str, value: object, expected: str) -> tuple[Any, ...]:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | set | frozenset):
            raise _fail_type(self._label(name), expected, value)
        return tuple(value)

    def _strings(self, name: str) -> tuple[str, ...]:
        items = self._sequence(name, getattr(self, name), "a sequence of strings")
        for item in items:
            if not isinstance(item, str):
                raise _fail_type(self._label(name), "a sequence of strings", item)
        return items

    def _patterns(self, name: str, value: object) -> tuple[PatternSpec, ...]:
        expected = "a sequence of strings or compiled regular expressions"
        items = self._sequence(name, value, expected)
        for item in items:
            if not isinstance(item, str | re.Pattern) or (isinstance(item, str) and not item):
                raise _fail_type(self._label(name), expected, item)
        return items

    def _choice(self, name: str, choices: Sequence[str]) -> str:
        value = getattr(self, name)
        if not isinstance(value, str):
            raise _fail_type(self._label(name), "a string", value)
        word = value.strip().lower()
        if word not in choices:
            raise ValueError(
                f"invalid {self._label(name)} {value!r}; valid choices: {', '.join(choices)}"
            )
        return word

    def _propagators(self, name: str, value: object) -> tuple[tuple[str, TextMapPropagator], ...]:
        label = self._label(name)
        expected = "a sequence of propagator names or TextMapPropagator instances"
        items = self._sequence(name, value, expected)
        self._set(name, items)  # a tuple, as every other sequence setting
        resolved: list[tuple[str, TextMapPropagator]] = []
        names: list[str] = []
        for item in items:
            if isinstance(item, TextMapPropagator):
                resolved.append((type(item).__name__, item))
                continue
            if not isinstance(item, str):
                raise _fail_type(label, expected, item)
            key = item.strip().lower()
            if key in names:
                raise ValueError(f"propagator {key!r} is listed twice in {label}")
            names.append(key)
            if key == NONE:
                continue
            resolved.append((key, resolve(key, label)))
        if NONE in names and len(items) > 1:
            raise ValueError(f"'none' in {label} cannot be combined with other propagators")
        return tuple(resolved)

    # ------------------------------------------------------------------------- construction
    @classmethod
    def env_fields(cls) -> list[dataclasses.Field[Any]]:
        """The fields that can be set from the environment or a mapping."""
        return [f for f in dataclasses.fields(cls) if f.init and "parse" in f.metadata]

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        prefix: str = PREFIX,
        *,
        base: Settings | None = None,
        **overrides: Any,
    ) -> Settings:
        """Settings from ``PREFIX + FIELD_NAME`` keys of ``mapping`` (e.g. ``app.config``).

        String values are parsed as in the environment; other values (lists, callables,
        compiled patterns) are taken as they are. Keys missing from ``mapping`` keep the value
        from ``base`` (default: the built-in defaults); keyword ``overrides`` win over both.
        """
        values: dict[str, Any] = {}
        labels: dict[str, str] = {}
        if base is not None:
            for f in cls.env_fields():
                values[f.name] = getattr(base, f.name)
            labels.update(base._labels or {})
        for f in cls.env_fields():
            key = prefix + f.name.upper()
            if key not in mapping:
                continue
            raw = mapping[key]
            if isinstance(raw, str):
                if not raw.strip():
                    continue  # an empty value counts as unset; "none" turns propagation off
                raw = f.metadata["parse"](raw, key)
            values[f.name] = raw
            labels[f.name] = key
        for name, value in overrides.items():
            values[name] = value
            labels.pop(name, None)
        return cls(**values, _labels=labels)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``TRACEWIRE_*`` variables, with ``OTEL_PROPAGATORS`` as the fallback.

        Precedence: keyword ``overrides`` > ``TRACEWIRE_*`` > ``OTEL_PROPAGATORS`` > defaults.
        An empty variable counts as unset.
        """
        env = os.environ if environ is None else environ
        base = None
        otel = env.get(OTEL_PROPAGATORS, "")
        if (
            otel.strip()
            and "propagators" not in overrides
            and not env.get(PREFIX + "PROPAGATORS", "").strip()
        ):
            base = cls(
                propagators=_parse_list(otel, OTEL_PROPAGATORS),
                _labels={"propagators": OTEL_PROPAGATORS},
            )
        mapping = {k: v for k, v in env.items() if k.startswith(PREFIX) and v.strip()}
        unknown = cls.unknown_keys(mapping, PREFIX)
        if unknown:
            # Not an error: the variables are process-wide and may belong to something else.
            logger.warning(
                "ignored unknown environment variable(s) %s; tracewire reads: %s",
                ", ".join(unknown),
                ", ".join(PREFIX + f.name.upper() for f in cls.env_fields()),
            )
        return cls.from_mapping(mapping, PREFIX, base=base, **overrides)

    @classmethod
    def unknown_keys(cls, mapping: Mapping[str, Any], prefix: str = PREFIX) -> list[str]:
        """Keys of ``mapping`` that start with ``prefix`` but name no setting (typos)."""
        known = {prefix + f.name.upper() for f in cls.env_fields()}
        return sorted(
            k for k in mapping if isinstance(k, str) and k.startswith(prefix) and k not in known
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated again."""
        # A changed field now comes from code, not from the variable it was first read from.
        labels = {k: v for k, v in (self._labels or {}).items() if k not in changes}
        return dataclasses.replace(self, **changes, _labels=labels)

    def describe(self) -> list[tuple[str, str, str]]:
        """``(field, value, source)`` rows for display (``tracewire check``)."""
        rows = []
        for f in self.env_fields():
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                shown = ", ".join(_show(v) for v in value) or "(none)"
            elif value is None:
                shown = "(default)"
            else:
                shown = _show(value)
            rows.append((f.name, shown, (self._labels or {}).get(f.name, "default")))
        return rows


def _show(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, re.Pattern):
        return f"re:{value.pattern}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}:{value.__qualname__}"
    return type(value).__name__ if isinstance(value, TextMapPropagator) else repr(value)

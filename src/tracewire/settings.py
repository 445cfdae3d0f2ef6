"""The one immutable, validated settings value every part of tracewire takes.

Built once at start-up: in code (``Settings(...)``), from the environment (``from_env``), or
from any mapping such as a Flask ``app.config`` (``from_mapping``). A bad value fails here, at
construction, with a ``ValueError``/``TypeError`` that names the setting as the user wrote it
and the valid choices; nothing is checked per request.

``Settings`` is a plain value: comparable, hashable, printable. The runtime objects made from
it (propagators, matchers, wrapped hooks) are built once by :mod:`tracewire.compiled`.

Adding a setting is one ``field(...)`` line whose metadata names its :class:`Kind` (how text
is parsed, how any value is checked); the environment and mapping readers pick it up.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry.propagators.textmap import TextMapPropagator

from tracewire import _kinds as k
from tracewire._log import logger
from tracewire.forwarded import CLIENT_IP_HEADERS
from tracewire.matching import PatternSpec
from tracewire.otel_env import SEMCONV_VALUES, otel_values
from tracewire.propagation import POLICIES

if TYPE_CHECKING:
    from tracewire.propagation import CompositePropagator

__all__ = [
    "BACKGROUND_SPANS",
    "DEFAULT_REDACT_HEADERS",
    "DEFAULT_REDACT_QUERY",
    "OTEL_PROPAGATORS",
    "PREFIX",
    "RESPONSE_PROPAGATION",
    "Hook",
    "PropagatorSpec",
    "Settings",
]

PropagatorSpec = str | TextMapPropagator
Hook = k.Hook

PREFIX = "TRACEWIRE_"
OTEL_PROPAGATORS = "OTEL_PROPAGATORS"

RESPONSE_PROPAGATION = ("none", "traceresponse", "server-timing")
# How background work handed off by a request (Starlette BackgroundTasks, tracewire.context)
# is traced: its own INTERNAL span in the request's trace, a new trace linked to the request,
# or no span of its own.
BACKGROUND_SPANS = ("child", "linked", "off")

DEFAULT_REDACT_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "x-csrf-token",
)
# Query parameters whose values never appear in url.full / url.query (semantic conventions
# list the first four; the rest are common credential carriers).
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


def _meta(kind: k.Kind, doc: str) -> dict[str, Any]:
    return {"kind": kind, "doc": doc}


@dataclass(frozen=True)
class Settings:
    """tracewire's settings. Every field is optional; the defaults suit most services.

    Sequences may be given as lists, tuples or one comma-separated string. See
    ``docs/settings.md`` for every field with its environment variable.
    """

    # --- propagation -------------------------------------------------------------------------
    propagators: Sequence[PropagatorSpec] = field(
        default=("tracecontext", "baggage"),
        metadata=_meta(k.PROPAGATORS, "propagators to extract and inject, in order"),
    )
    extract: Sequence[PropagatorSpec] | None = field(
        default=None,
        metadata=_meta(
            k.OPTIONAL_PROPAGATORS, "propagators to extract with (default: propagators)"
        ),
    )
    inject: Sequence[PropagatorSpec] | None = field(
        default=None,
        metadata=_meta(k.OPTIONAL_PROPAGATORS, "propagators to inject with (default: propagators)"),
    )
    extract_policy: str = field(
        default="first",
        metadata=_meta(k.choice(POLICIES), "which parent wins when formats disagree: first | last"),
    )
    # --- server ------------------------------------------------------------------------------
    excluded_paths: Sequence[PatternSpec] = field(
        default=(),
        metadata=_meta(k.PATTERNS, "request paths that get no span (exact, glob, re:regex)"),
    )
    excluded_urls: Sequence[PatternSpec] = field(
        default=(),
        metadata=_meta(k.URL_REGEXES, "regular expressions searched in the full URL: no span"),
    )
    server_request_hook: Hook | None = field(
        default=None,
        metadata=_meta(k.HOOK, "called as hook(span, scope_or_environ) when a server span starts"),
    )
    server_response_hook: Hook | None = field(
        default=None,
        metadata=_meta(k.HOOK, "called as hook(span, response_info) when the response starts"),
    )
    capture_request_headers: Sequence[str] = field(
        default=(), metadata=_meta(k.HEADER_NAMES, "request headers recorded as span attributes")
    )
    capture_response_headers: Sequence[str] = field(
        default=(), metadata=_meta(k.HEADER_NAMES, "response headers recorded as span attributes")
    )
    redact_headers: Sequence[str] = field(
        default=DEFAULT_REDACT_HEADERS,
        metadata=_meta(k.HEADER_NAMES, "captured headers recorded as REDACTED"),
    )
    response_propagation: str = field(
        default="none",
        metadata=_meta(
            k.choice(RESPONSE_PROPAGATION),
            "trace id in responses: none | traceresponse | server-timing",
        ),
    )
    # --- client ------------------------------------------------------------------------------
    propagate_to: Sequence[PatternSpec] | None = field(
        default=None, metadata=_meta(k.HOSTS, "hosts that may receive trace headers (default: all)")
    )
    baggage_to: Sequence[PatternSpec] | None = field(
        default=None, metadata=_meta(k.HOSTS, "hosts that may get baggage (default: propagate_to)")
    )
    client_request_hook: Hook | None = field(
        default=None,
        metadata=_meta(k.HOOK, "called as hook(span, request) when a client span starts"),
    )
    client_response_hook: Hook | None = field(
        default=None, metadata=_meta(k.HOOK, "called as hook(span, request, response) when it ends")
    )
    client_excluded_urls: Sequence[PatternSpec] = field(
        default=(),
        metadata=_meta(k.URL_REGEXES, "outgoing URLs (regular expressions searched) with no span"),
    )
    client_excluded_headers: bool = field(
        default=True,
        metadata=_meta(k.BOOL, "whether an excluded outgoing URL still gets trace headers"),
    )
    capture_client_request_headers: Sequence[str] = field(
        default=(),
        metadata=_meta(k.HEADER_NAMES, "outgoing request headers recorded on CLIENT spans"),
    )
    capture_client_response_headers: Sequence[str] = field(
        default=(),
        metadata=_meta(k.HEADER_NAMES, "response headers recorded on CLIENT spans"),
    )
    require_parent: bool = field(
        default=False,
        metadata=_meta(k.BOOL, "no client span and no headers without a current span"),
    )
    redact_query_params: Sequence[str] = field(
        default=DEFAULT_REDACT_QUERY,
        metadata=_meta(k.NAMES, "query parameters whose values are redacted"),
    )
    background_spans: str = field(
        default="child",
        metadata=_meta(
            k.choice(BACKGROUND_SPANS),
            "work after the response: child (a span in the request's trace) | linked | off",
        ),
    )
    semconv: str = field(
        default="http",
        metadata=_meta(
            k.choice(SEMCONV_VALUES), "http (stable names) | http/dup (stable and the old ones)"
        ),
    )
    # --- trust boundaries (docs/trust.md) -----------------------------------------------------
    incoming: Sequence[Any] = field(
        default=(),
        metadata=_meta(k.RULES, "who may continue our traces: ordered rules, first match wins"),
    )
    trusted_proxies: Sequence[str] = field(
        default=(),
        metadata=_meta(k.NETWORKS, "proxies (CIDRs) whose forwarded header names the client"),
    )
    client_ip_header: str = field(
        default="x-forwarded-for",
        metadata=_meta(
            k.choice(CLIENT_IP_HEADERS), "what trusted proxies write: x-forwarded-for | forwarded"
        ),
    )
    tracestate_key: str | None = field(
        default=None,
        metadata=_meta(k.TRACESTATE_KEY, "our own tracestate member, written on outgoing calls"),
    )
    baggage_attributes: Sequence[str] = field(
        default=(),
        metadata=_meta(k.NAMES, "baggage keys recorded as span attributes baggage.<key>"),
    )
    inject_to: Sequence[Any] = field(
        default=(),
        metadata=_meta(k.DESTINATIONS, "inject lists per destination: HOSTS=PROPAGATORS; ..."),
    )
    # Where each field's value came from (the name the user wrote), for messages and `check`.
    _labels: Mapping[str, str] | None = field(default=None, repr=False, compare=False, kw_only=True)

    ENV_PREFIX: ClassVar[str] = PREFIX

    # ------------------------------------------------------------------------- validation
    def __post_init__(self) -> None:
        for f in self.env_fields():
            kind: k.Kind = f.metadata["kind"]
            value = kind.check(getattr(self, f.name), self.label(f.name))
            object.__setattr__(self, f.name, value)
        if self._labels is not None:
            object.__setattr__(self, "_labels", dict(self._labels))

    def label(self, name: str) -> str:
        """The name the user wrote for setting ``name`` (a variable, a key, or the field)."""
        return (self._labels or {}).get(name, name)

    def source(self, name: str) -> str:
        """Where setting ``name`` came from: a variable or key name, ``code`` or ``default``."""
        found = (self._labels or {}).get(name)
        if found is not None:
            return found
        f = next(f for f in self.env_fields() if f.name == name)
        return "default" if getattr(self, name) == f.default else "code"

    # ------------------------------------------------------------------------- construction
    @classmethod
    def env_fields(cls) -> list[dataclasses.Field[Any]]:
        """The fields that can be set from the environment or a mapping."""
        return [f for f in dataclasses.fields(cls) if "kind" in f.metadata]

    @classmethod
    def keys(cls, prefix: str = PREFIX) -> list[str]:
        """Every key a mapping or the environment may set, e.g. ``TRACEWIRE_PROPAGATORS``."""
        return [prefix + f.name.upper() for f in cls.env_fields()]

    @classmethod
    def read_mapping(
        cls,
        mapping: Mapping[str, Any],
        prefix: str = PREFIX,
        *,
        label: str = "{key}",
        empty_is_unset: bool = True,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The ``(values, labels)`` that the ``prefix`` keys of ``mapping`` set, parsed.

        ``empty_is_unset``: an empty string counts as unset (the environment's rule); a
        framework's config passes ``False``, so that ``""`` is checked like any value.
        """
        values: dict[str, Any] = {}
        labels: dict[str, str] = {}
        for f in cls.env_fields():
            key = prefix + f.name.upper()
            if key not in mapping:
                continue
            raw = mapping[key]
            named = label.format(key=key)
            if isinstance(raw, str) and not raw.strip():
                if empty_is_unset:
                    continue  # an empty value counts as unset; "none" turns propagation off
            elif isinstance(raw, str):
                raw = f.metadata["kind"].parse(raw, named)
            values[f.name] = raw
            labels[f.name] = named
        return values, labels

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        prefix: str = PREFIX,
        *,
        base: Settings | None = None,
        label: str = "{key}",
        **overrides: Any,
    ) -> Settings:
        """Settings from ``PREFIX + FIELD_NAME`` keys of ``mapping`` (e.g. ``app.config``).

        String values are parsed as in the environment; other values (lists, callables,
        compiled patterns) are taken as they are. Keys missing from ``mapping`` keep the value
        from ``base`` (default: the built-in defaults); keyword ``overrides`` win over both.
        ``label`` is how messages and ``tracewire check`` name a key (``{key}`` is replaced,
        e.g. ``"app.config['{key}']"``). Unknown keys are not checked here: see
        :meth:`unknown_keys`.
        """
        values, labels = cls.read_mapping(mapping, prefix, label=label)
        values.update(overrides)
        for name in overrides:
            labels.pop(name, None)
        return (base or cls()).with_values(values, labels)

    def with_values(self, values: Mapping[str, Any], labels: Mapping[str, str]) -> Settings:
        """A copy with ``values`` set (validated again); ``labels[name]`` names where a value
        came from, and a value without a label came from code."""
        if not values:
            return self
        kept = {k: v for k, v in (self._labels or {}).items() if k not in values}
        return dataclasses.replace(self, **values, _labels={**kept, **labels})

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        frameworks: tuple[str, ...] = (),
        libraries: tuple[str, ...] = (),
        **overrides: Any,
    ) -> Settings:
        """Settings from ``TRACEWIRE_*`` variables, with OpenTelemetry's own as the fallback.

        Precedence: keyword ``overrides`` > ``TRACEWIRE_*`` > OpenTelemetry's variables
        (``OTEL_PROPAGATORS``, ``OTEL_PYTHON_EXCLUDED_URLS``, header capture, semantic
        conventions: :mod:`tracewire.otel_env`) > defaults. An empty variable counts as unset.
        ``frameworks`` / ``libraries`` name the contrib packages whose
        ``OTEL_PYTHON_<NAME>_EXCLUDED_URLS`` apply (``("FLASK",)``, ``("HTTPX",)``).
        """
        env = os.environ if environ is None else environ
        mapping = {key: value for key, value in env.items() if key.startswith(PREFIX)}
        unknown = cls.unknown_keys(mapping, PREFIX)
        if unknown:
            _warn_unknown_env(tuple(unknown))
        values, labels = cls.read_mapping(mapping, PREFIX)
        values.update(overrides)
        for name in overrides:
            labels.pop(name, None)
        # An OpenTelemetry variable that something of ours shadows is not even read.
        otel, otel_labels = otel_values(env, set(values), frameworks, libraries)
        return cls().with_values(otel, otel_labels).with_values(values, labels)

    @classmethod
    def otel_base(cls, env: Mapping[str, Any]) -> Settings | None:
        """The settings OpenTelemetry's own variables give (``OTEL_PROPAGATORS``), or ``None``."""
        otel = env.get(OTEL_PROPAGATORS)
        if not isinstance(otel, str) or not otel.strip():
            return None
        return cls(
            propagators=k.PROPAGATORS.parse(otel, OTEL_PROPAGATORS),
            _labels={"propagators": OTEL_PROPAGATORS},
        )

    @classmethod
    def unknown_keys(cls, mapping: Mapping[str, Any], prefix: str = PREFIX) -> list[str]:
        """Keys of ``mapping`` that start with ``prefix`` but name no setting (typos)."""
        known = set(cls.keys(prefix))
        return sorted(
            key
            for key in mapping
            if isinstance(key, str) and key.startswith(prefix) and key not in known
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated again."""
        # A changed field now comes from code, not from the variable it was first read from.
        labels = {k: v for k, v in (self._labels or {}).items() if k not in changes}
        return dataclasses.replace(self, **changes, _labels=labels)

    def replace_from(self, source: str, **changes: Any) -> Settings:
        """A copy with ``changes`` applied, recorded as coming from ``source`` (a key name)."""
        labels = {**(self._labels or {}), **dict.fromkeys(changes, source)}
        return dataclasses.replace(self, **changes, _labels=labels)

    def describe(self) -> list[tuple[str, str, str]]:
        """``(field, value, source)`` rows for display (``tracewire check``)."""
        rows = []
        for f in self.env_fields():
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                # Rules and destinations hold commas of their own: their text form uses ";".
                joiner = "; " if f.name in ("incoming", "inject_to") else ", "
                shown = joiner.join(_show(v) for v in value) or "(none)"
            elif value is None:
                shown = "(default)"
            else:
                shown = _show(value)
            rows.append((f.name, shown, self.source(f.name)))
        return rows

    # ------------------------------------------------------------------------ conveniences
    @property
    def composite(self) -> CompositePropagator:
        """The composite these settings extract (and inject) with, built once."""
        from tracewire.compiled import compile_settings

        return compile_settings(self).propagator

    @property
    def inject_propagator(self) -> CompositePropagator:
        """The composite of the inject list alone."""
        from tracewire.compiled import compile_settings

        return compile_settings(self).injector

    def __getattr__(self, name: str) -> Any:
        # Derived objects that used to live on Settings; kept readable for one release.
        replacement = _MOVED.get(name)
        if replacement is None:
            raise AttributeError(f"'Settings' object has no attribute {name!r}")
        warnings.warn(
            f"Settings.{name} is deprecated; use tracewire.compiled.compile_settings(settings)."
            f"{replacement}",
            DeprecationWarning,
            stacklevel=2,
        )
        from tracewire.compiled import compile_settings

        return getattr(compile_settings(self), replacement)


_MOVED = {
    "path_excluded": "excluded",
    "may_propagate": "may_propagate",
    "may_send_baggage": "may_send_baggage",
}

_warned_unknown: set[tuple[str, ...]] = set()


def _warn_unknown_env(unknown: tuple[str, ...]) -> None:
    # Not an error: the variables are process-wide and may belong to something else. Said once
    # per set of names, however many components read the environment.
    if unknown in _warned_unknown:
        return
    _warned_unknown.add(unknown)
    logger.warning(
        "ignored unknown environment variable(s) %s; tracewire reads: %s",
        ", ".join(unknown),
        ", ".join(Settings.keys()),
    )


def _show(value: object) -> str:
    return k.show(value)

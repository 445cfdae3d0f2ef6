"""The runtime form of one :class:`~tracewire.Settings`: built once, held by the tracers.

``Settings`` stays a plain value; what the request path needs from it (propagator instances
and their composite, path and host matchers, the header names to read, hooks wrapped so they
cannot raise) is made here, once per distinct settings value, and shared by every component
that uses those settings.

The compiled form also rides in each request's context under :data:`SETTINGS_KEY`: a server
middleware starts every request from its :attr:`Compiled.base_context`, so an outgoing call
made while serving that request can use the same settings without any per-request work.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

from opentelemetry.context import Context, create_key
from opentelemetry.propagators.textmap import TextMapPropagator

from tracewire import semconv
from tracewire._instrument import Hook, safe_hook
from tracewire.forwarded import Networks
from tracewire.matching import REGEX_PREFIX, HostMatcher, PathMatcher
from tracewire.otel_env import EXCLUDED_URLS
from tracewire.outbound import Injector, Route
from tracewire.propagation import NONE, CompositePropagator, resolve
from tracewire.settings import Settings
from tracewire.trust import InboundPolicy

__all__ = [
    "SETTINGS_KEY",
    "Compiled",
    "HeaderSet",
    "Named",
    "compile_settings",
    "format_family",
    "settings_in",
]

# The compiled settings of the middleware serving the current request.
SETTINGS_KEY = create_key("tracewire-settings")

Named = tuple[tuple[str, TextMapPropagator], ...]


def format_family(name: str) -> str:
    """Formats that a receiver reads alike (``b3`` and ``b3multi`` are one family)."""
    return "b3" if name in ("b3", "b3multi") else name


def _resolve(items: Sequence[object], label: str) -> Named:
    named: list[tuple[str, TextMapPropagator]] = []
    for item in items:
        if isinstance(item, TextMapPropagator):
            named.append((type(item).__name__, item))
        elif item != NONE:
            named.append((str(item), resolve(str(item), label)))
    return tuple(named)


class HeaderSet:
    """Header names to match: exact (lowercase) names, and ``re:`` entries matched against the
    whole name, case-insensitively."""

    __slots__ = ("names", "regex")

    def __init__(self, entries: Sequence[str]) -> None:
        self.names = tuple(e for e in entries if not e.startswith(REGEX_PREFIX))
        patterns = [e[len(REGEX_PREFIX) :] for e in entries if e.startswith(REGEX_PREFIX)]
        self.regex = (
            re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None
        )

    def __bool__(self) -> bool:
        return bool(self.names) or self.regex is not None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self.names:
            return True
        return self.regex is not None and self.regex.fullmatch(name) is not None


def _injectors(named: Named) -> tuple[Injector, ...]:
    return tuple(
        (name, propagator, frozenset(f.lower() for f in propagator.fields))
        for name, propagator in named
    )


def _fields(injectors: tuple[Injector, ...]) -> frozenset[str]:
    return frozenset().union(*(fields for _, _, fields in injectors))


class Compiled:
    """Everything the tracers need from one ``Settings``, built once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._propagation(settings)
        self._server(settings)
        self._client(settings)
        self.base_context = Context({SETTINGS_KEY: self})

    def _propagation(self, settings: Settings) -> None:
        both = _resolve(settings.propagators, settings.label("propagators"))
        extract = (
            both
            if settings.extract is None
            else _resolve(settings.extract, settings.label("extract"))
        )
        inject = (
            both if settings.inject is None else _resolve(settings.inject, settings.label("inject"))
        )
        policy = settings.extract_policy
        self.propagator = CompositePropagator(extract, inject, policy)
        self.injector = CompositePropagator((), inject, policy)
        self.injectors = _injectors(inject)
        self.inject_fields = _fields(self.injectors)
        families = frozenset(format_family(name) for name, _ in inject)
        # Formats this service reads but does not send on: a request in one breaks the trace
        # for every downstream service that reads only that format.
        self.not_injected = frozenset(
            name for name, _ in extract if format_family(name) not in families
        )

    def _server(self, settings: Settings) -> None:
        self.excluded = (
            PathMatcher(settings.excluded_paths, settings.label("excluded_paths"))
            if settings.excluded_paths
            else None
        )
        self.excluded_url = (
            PathMatcher(settings.excluded_urls, settings.label("excluded_urls"))
            if settings.excluded_urls
            else None
        )
        self.redact = HeaderSet(settings.redact_headers)
        self.capture_request = HeaderSet(settings.capture_request_headers)
        self.capture_response = HeaderSet(settings.capture_response_headers)
        self.redact_query = frozenset(settings.redact_query_params)
        self.semconv_dup = settings.semconv == "http/dup"
        # Header names the request path reads (extraction and capture), for adapters whose
        # carrier is a list to scan once; None when a propagator does not say what it reads,
        # or headers are captured by pattern.
        fields = self.propagator.extract_fields
        self.wanted_headers: frozenset[bytes] | None = (
            None
            if fields is None or self.capture_request.regex is not None
            else frozenset(
                name.encode("latin-1") for name in (*fields, *self.capture_request.names)
            )
        )
        self._inbound(settings)
        self.response_propagation = settings.response_propagation
        self.server_request_hook: Hook | None = safe_hook(
            "server_request_hook", settings.server_request_hook
        )
        self.server_response_hook: Hook | None = safe_hook(
            "server_response_hook", settings.server_response_hook
        )

    def _inbound(self, settings: Settings) -> None:
        trusted = Networks(settings.trusted_proxies, settings.label("trusted_proxies"))
        # None: nothing to decide per request (the default), so nothing is paid for it.
        self.inbound = (
            InboundPolicy(
                settings.incoming,
                trusted,
                settings.client_ip_header,
                settings.tracestate_key,
            )
            if settings.incoming or trusted
            else None
        )
        policy = self.inbound.policy if self.inbound is not None else None
        if policy is not None and policy.reads_all_headers:
            self.wanted_headers = None
        if trusted and self.wanted_headers is not None:
            self.wanted_headers |= {settings.client_ip_header.encode("latin-1")}
        self.baggage_attributes = tuple(
            (key, semconv.BAGGAGE_PREFIX + key) for key in settings.baggage_attributes
        )

    def _client(self, settings: Settings) -> None:
        label = settings.label("inject_to")
        routes = []
        for hosts, names in settings.inject_to:
            injectors = _injectors(_resolve(names, label))
            routes.append(Route(HostMatcher(hosts, label), injectors, _fields(injectors)))
        self.routes = tuple(routes)
        self.tracestate_key = settings.tracestate_key
        propagate_to = settings.propagate_to
        baggage_to = propagate_to if settings.baggage_to is None else settings.baggage_to
        self.may_propagate = HostMatcher(propagate_to, settings.label("propagate_to"))
        self.may_send_baggage = HostMatcher(
            baggage_to,
            settings.label("baggage_to" if settings.baggage_to is not None else "propagate_to"),
        )
        # Both open: every host gets everything, no per-request matching at all.
        self.open_to_all = self.may_propagate.allow_all and self.may_send_baggage.allow_all
        self.wants_origin = self.may_propagate.same_origin or self.may_send_baggage.same_origin
        self.require_parent = settings.require_parent
        self.client_excluded = (
            PathMatcher(settings.client_excluded_urls, settings.label("client_excluded_urls"))
            if settings.client_excluded_urls
            else None
        )
        # A library's own OTEL_PYTHON_<LIB>_EXCLUDED_URLS may replace this one unless code or
        # TRACEWIRE_CLIENT_EXCLUDED_URLS chose it.
        self.client_excluded_replaceable = settings.source("client_excluded_urls") in (
            "default",
            EXCLUDED_URLS,
        )
        self.client_excluded_headers = settings.client_excluded_headers
        self.capture_client_request = HeaderSet(settings.capture_client_request_headers)
        self.capture_client_response = HeaderSet(settings.capture_client_response_headers)
        self.client_request_hook: Hook | None = safe_hook(
            "client_request_hook", settings.client_request_hook
        )
        self.client_response_hook: Hook | None = safe_hook(
            "client_response_hook", settings.client_response_hook
        )

    def __repr__(self) -> str:
        return f"Compiled({self.propagator!r})"


_CACHE_SIZE = 64
_cache: OrderedDict[Settings, Compiled] = OrderedDict()
_lock = threading.Lock()


def compile_settings(settings: Settings) -> Compiled:
    """The compiled form of ``settings``; equal settings share one."""
    try:
        with _lock:
            found = _cache.get(settings)
            if found is not None:
                _cache.move_to_end(settings)
                return found
    except TypeError:  # an unhashable value (a hook object without __hash__): not cached
        return Compiled(settings)
    built = Compiled(settings)
    with _lock:
        _cache[settings] = built
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return built


def settings_in(context: Context) -> Compiled | None:
    """The compiled settings of the middleware serving the request ``context`` belongs to."""
    found = context.get(SETTINGS_KEY)
    return found if type(found) is Compiled else None

"""The server span lifecycle, shared by every server adapter (ASGI, WSGI, Django).

An adapter describes its request as a :class:`RequestView` and calls
:meth:`ServerTracer.begin`; the :class:`ServerCall` it gets back is told what happens next:

* ``response_started(status, headers)``: the status is known (returns headers to add);
* ``response_sent()``: the last byte of the response was handed to the server;
* ``finished(exc)``: the app's handling is over (it returned, raised, or the WSGI server
  closed the body).

The rules live here once: the parent comes from the request's headers alone; attributes
follow the HTTP semantic conventions and are built only for a recording span; the span ends
when the response is done (a 5xx waits for the exception that usually follows, keeping the
response's end time); an app that fails before responding is recorded as a 500, whatever the
protocol; a span ends exactly once. Every step is contained: a fault is logged (rate limited)
and the request goes on, answered exactly as without tracewire.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from opentelemetry.baggage import get_baggage
from opentelemetry.context import Context, set_value
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from tracewire import _capture, _diagnostics, otel_env, semconv, trust
from tracewire._fastpath import UnsampledChildren
from tracewire._instrument import TRACER_KEY, error_status, fault, make_tracer
from tracewire.authority import effective_port, parse_authority
from tracewire.compiled import Compiled
from tracewire.defaults import SettingsSource
from tracewire.matching import ORIGIN_KEY, Origin
from tracewire.metrics import ServerMetrics, now
from tracewire.propagation import Extracted
from tracewire.settings import Settings
from tracewire.trust import Inbound

__all__ = [
    "EXCEPTION_KEY",
    "ROUTE_KEY",
    "SPAN_KEY",
    "Attributes",
    "RequestView",
    "ResponseInfo",
    "RouteOf",
    "ServerCall",
    "ServerTracer",
    "check_route",
    "component_tracer",
    "describe",
]

Attributes = dict[str, AttributeValue]
RouteOf = Callable[[Any], "str | None"]

# Keys in the ASGI scope / WSGI environ (or a framework's request) that adapters share:
# the marker the outermost tracewire middleware leaves, so a nested one adds no second span;
SPAN_KEY = "tracewire.server_span"
# where a framework integration leaves the matched route template (``/items/{id}``);
ROUTE_KEY = "tracewire.route"
# where it leaves an exception its framework turned into a 500 response itself.
EXCEPTION_KEY = "tracewire.exception"

_ERROR = Status(StatusCode.ERROR)
_PROBES = 64  # recorded requests looked at for another SERVER tracer


class ResponseInfo(NamedTuple):
    """What ``server_response_hook(span, response_info)`` receives."""

    status_code: int
    headers: Any  # the protocol's native response headers (ASGI byte pairs / WSGI str pairs)


def _no_route(native: Any) -> str | None:
    return None


@dataclass(slots=True)
class RequestView:
    """One incoming request as every adapter describes it to the core.

    Attributes:
        method, scheme: as received.
        path: the decoded path (what ``excluded_paths`` matches).
        carrier, getter: the request headers in their native shape, and how to read them.
        native: the protocol's own request (ASGI scope, WSGI environ), for hooks and routes.
        raw_path: the path as sent, percent-encoding kept (``url.path``); default ``path``.
        query: the query string without ``?``, if any.
        host: the ``Host`` header's value (``:authority`` for HTTP/2), if exactly one came.
        server: the local ``(host, port)`` of the socket, used when there is no usable Host.
        client: the client's address: the socket peer's, or the one trusted proxies forwarded
            (then ``peer`` keeps the socket peer's).
        user_agent, protocol: ``User-Agent``; the HTTP version (``1.1``, ``2``).
        route_of: ``route_of(native)``, the matched route template once the app ran.
    """

    method: str
    scheme: str
    path: str
    carrier: Any
    getter: Getter[Any]
    native: Any
    raw_path: str | None = None
    query: str | None = None
    host: str | None = None
    server: tuple[str, int | None] | None = None
    client: str | None = None
    user_agent: str | None = None
    protocol: str | None = None
    route_of: RouteOf = _no_route
    peer: str | None = None

    def authority(self) -> tuple[str | None, int | None]:
        """``(server.address, server.port)``: the Host the client addressed, else the socket."""
        parsed = parse_authority(self.host)
        if parsed is not None:
            return parsed[0], effective_port(parsed[1], self.scheme)
        if self.server is not None:
            return self.server
        return None, None

    def url(self) -> str:
        """The full URL as the client addressed it, for ``excluded_urls``."""
        authority = self.host
        if not authority and self.server is not None:
            host, port = self.server
            authority = host if port is None else f"{host}:{port}"
        path = self.raw_path if self.raw_path is not None else self.path
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{authority or ''}{path}{query}"

    def origin(self) -> Origin:
        host, port = self.authority()
        return self.scheme, (host or "").lower(), port


class ServerTracer:
    """Starts, describes and ends SERVER spans; one per middleware.

    Args:
        source: which settings the middleware uses (its own, or the process default).
        tracer_provider: the OpenTelemetry ``TracerProvider``; ``None`` means the global one.
    """

    def __init__(
        self,
        source: SettingsSource,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.source = source
        self.tracer = make_tracer(tracer_provider)
        self.metrics = ServerMetrics(meter_provider)
        self._unsampled = UnsampledChildren(self.tracer)
        # A second SERVER tracer on the same requests is a set-up matter: looking on the
        # first recorded requests finds it; after that the look would only cost time.
        self._probes = _PROBES
        self._base: tuple[Compiled, Context] | None = None

    def plan(self) -> Compiled:
        """The compiled settings for the request about to begin."""
        return self.source.current()

    def begin(self, view: RequestView, plan: Compiled) -> ServerCall:
        """Extract the incoming context, apply the trust policy, start the SERVER span."""
        extracted = self._extract(view, plan)
        try:
            policy = plan.inbound
            if policy is None:
                inbound = trust.plain(extracted)
            else:
                inbound = policy.apply(view, extracted, self._unsampled.root_sampled)
            ctx = inbound.context
            if plan.wants_origin:
                ctx = set_value(ORIGIN_KEY, view.origin(), ctx)
            if _excluded(view, plan):
                return ServerCall(plan, view, ctx, None)
            if extracted.format in plan.not_injected:
                _diagnostics.format_not_injected(extracted.format, plan)
            if ctx is not inbound.context:
                inbound = inbound._replace(context=ctx)
            span = self._start(view, plan, inbound, extracted.format)
        except Exception as exc:
            fault("start", exc)
            return ServerCall(plan, view, extracted.context, None)
        call = ServerCall(plan, view, set_span_in_context(span, ctx), span)
        call.probe = self._probes > 0
        active = self.metrics.started(view.method, view.scheme)
        if active is not None:
            call.measure(self.metrics, active)
        return call

    def _extract(self, view: RequestView, plan: Compiled) -> Extracted:
        base = self._base_context(plan)
        try:
            return plan.propagator.extract_fresh(view.carrier, view.getter, base)
        except Exception as exc:
            # A broken propagator costs the caller's context, not the request's span: the
            # request starts a new trace, as for any unusable header.
            fault("extract", exc)
            return Extracted(base, None, ())

    def _base_context(self, plan: Compiled) -> Context:
        """The settings' base context plus this tracer (for background spans), built once
        per settings value, not per request."""
        base = self._base
        if base is None or base[0] is not plan:
            base = (plan, Context({**plan.base_context, TRACER_KEY: self.tracer}))
            self._base = base
        return base[1]

    def _start(self, view: RequestView, plan: Compiled, inbound: Inbound, fmt: str | None) -> Span:
        parent = inbound.parent
        if parent is not None and not parent.trace_flags.sampled and not inbound.links:
            fast = self._unsampled.child(parent)
            if fast is not None:
                return fast
        method = semconv.normalize_method(view.method)
        # The conventions want the attributes at span start, for samplers that read them;
        # the SDK's own do not, and then a span they drop costs no attribute work at all.
        early = self._unsampled.sampler_reads_attributes()
        span = self.tracer.start_span(
            method[0],
            inbound.context,
            kind=SpanKind.SERVER,
            attributes=describe(view, plan, method, inbound, fmt) if early else None,
            links=inbound.links,
        )
        if span.is_recording():
            if not early:
                span.set_attributes(describe(view, plan, method, inbound, fmt))
            if self._probes:
                self._probes -= 1
                current = get_current_span()
                if _diagnostics.is_foreign_server_span(current, None):
                    _diagnostics.second_server_span(current)
            hook = plan.server_request_hook
            if hook is not None:
                hook(span, view.native)
        elif _diagnostics.started_nothing(span, inbound.context):
            _diagnostics.no_sdk()
        return span


def _excluded(view: RequestView, plan: Compiled) -> bool:
    if plan.excluded is not None and plan.excluded(view.path):
        return True
    return plan.excluded_url is not None and plan.excluded_url(view.url())


def component_tracer(
    app: Any,
    settings: Settings | SettingsSource | None,
    overrides: dict[str, Any],
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None,
) -> ServerTracer:
    """The tracer of one server middleware wrapping ``app``: its settings (given, or the
    process default with ``overrides``, with the OpenTelemetry variables of ``app``'s
    framework) and its providers."""
    source = (
        settings
        if isinstance(settings, SettingsSource)
        else SettingsSource(settings, overrides, frameworks=otel_env.frameworks_of(app))
    )
    return ServerTracer(source, tracer_provider, meter_provider)


def check_route(route: Any) -> None:
    if route is not None and not callable(route):
        raise TypeError(f"route must be a callable or None, got {type(route).__name__}")


def describe(
    view: RequestView,
    plan: Compiled,
    method: tuple[str, str | None],
    inbound: Inbound,
    fmt: str | None,
) -> Attributes:
    """The SERVER span's attributes (HTTP semantic conventions, stable; tracewire's own).

    ``method`` is the normalised method and the original one if it was not known.
    """
    name, original = method
    attributes: Attributes = {
        semconv.HTTP_REQUEST_METHOD: name,
        semconv.URL_SCHEME: view.scheme,
        semconv.URL_PATH: view.raw_path if view.raw_path is not None else view.path,
    }
    if original is not None:
        attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = original
    if view.query:
        attributes[semconv.URL_QUERY] = semconv.redact_query(view.query, plan.redact_query)
    if view.protocol:
        attributes[semconv.NETWORK_PROTOCOL_VERSION] = view.protocol
    host, port = view.authority()
    if host:
        attributes[semconv.SERVER_ADDRESS] = host
    if port is not None:
        attributes[semconv.SERVER_PORT] = port
    if view.client:
        attributes[semconv.CLIENT_ADDRESS] = view.client
    if view.user_agent is not None:
        attributes[semconv.USER_AGENT_ORIGINAL] = view.user_agent
    _more(attributes, view, plan, inbound, fmt)
    return attributes


def _more(
    attributes: Attributes, view: RequestView, plan: Compiled, inbound: Inbound, fmt: str | None
) -> None:
    """tracewire's own attributes (where the parent came from), and the opt-in ones."""
    attributes[semconv.PARENT_SOURCE] = inbound.source
    if fmt is not None and inbound.parent is not None:
        attributes[semconv.PROPAGATION_FORMAT] = fmt
    if inbound.rule is not None:
        attributes[semconv.POLICY_RULE] = inbound.rule
    if view.peer is not None:
        attributes[semconv.NETWORK_PEER_ADDRESS] = view.peer
    if plan.capture_request:
        attributes.update(
            _capture.from_carrier(
                view.carrier,
                view.getter,
                plan.capture_request,
                plan.redact,
                semconv.REQUEST_HEADER_PREFIX,
            )
        )
    if plan.baggage_attributes:
        _baggage(attributes, inbound.context, plan)
    if plan.semconv_dup:
        semconv.duplicate_server(attributes)


def _baggage(attributes: Attributes, context: Context, plan: Compiled) -> None:
    for key, attribute in plan.baggage_attributes:
        value = get_baggage(key, context)
        if value is not None:
            attributes[attribute] = str(value)


class ServerCall:
    """One request's span, from ``begin`` to its end; every method is contained.

    Attributes:
        context: the context to make current for the app (parent, baggage, span, settings).
        span: the SERVER span, or ``None`` for an excluded path (or a tracing fault).
        recording: whether the span records (attribute work happens only then).
        observing: whether the adapter must report the response at all (a recording span,
            or response headers to add); when false it may hand the app the plain ``send``.
    """

    __slots__ = (
        "active",
        "context",
        "ended",
        "metrics",
        "observing",
        "plan",
        "probe",
        "recording",
        "sent_at",
        "span",
        "started",
        "status",
        "view",
    )

    def __init__(self, plan: Compiled, view: RequestView, context: Context, span: Span | None):
        self.plan = plan
        self.view = view
        self.context = context
        self.span = span
        self.recording = span is not None and span.is_recording()
        self.observing = span is not None and (
            self.recording or plan.response_propagation != "none"
        )
        self.status = 0
        self.sent_at: int | None = None
        self.ended = not self.recording  # a non-recording span has nothing to end
        self.probe = False
        self.metrics: ServerMetrics | None = None
        self.active: Attributes | None = None
        self.started = 0.0

    def measure(self, metrics: ServerMetrics, active: Attributes) -> None:
        """Record this request's HTTP metrics too (sampled or not)."""
        self.metrics, self.active, self.started = metrics, active, now()
        self.ended = False
        self.observing = True

    def response_started(self, status: int, headers: Any) -> list[tuple[str, str]]:
        """Record the status (a SERVER span is an error for 5xx, not 4xx); return the
        response headers tracewire adds (``traceresponse`` / ``server-timing``, opt-in)."""
        self.record_status(status, headers)
        return self.response_headers(headers)

    def response_headers(self, headers: Any) -> list[tuple[str, str]]:
        """The response headers tracewire adds (opt-in), without recording anything."""
        span = self.span
        if span is None:
            return []
        try:
            return self._response_headers(span, headers)
        except Exception as exc:
            fault("response-headers", exc)
            return []

    def record_status(self, status: int, headers: Any) -> None:
        """Record the response's status and headers (and call the response hook)."""
        self.status = status
        span = self.span
        if span is None:
            return
        if self.recording:
            try:
                self._record_response(span, status, headers)
            except Exception as exc:
                fault("response", exc)
            hook = self.plan.server_response_hook
            if hook is not None:
                hook(span, ResponseInfo(status, headers))

    def _record_response(self, span: Span, status: int, headers: Any) -> None:
        attributes: Attributes = {semconv.HTTP_RESPONSE_STATUS_CODE: status}
        if self.plan.semconv_dup:
            semconv.duplicate_server(attributes)
        if status >= 500:
            attributes[semconv.ERROR_TYPE] = str(status)
            span.set_status(_ERROR)
        plan = self.plan
        if plan.capture_response:
            attributes.update(
                _capture.from_pairs(
                    headers, plan.capture_response, plan.redact, semconv.RESPONSE_HEADER_PREFIX
                )
            )
        span.set_attributes(attributes)
        if self.probe:
            current = get_current_span()
            if _diagnostics.is_foreign_server_span(current, span):
                _diagnostics.second_server_span(current)  # one inside ours (the app's own)

    def _response_headers(self, span: Span, headers: Any) -> list[tuple[str, str]]:
        mode = self.plan.response_propagation
        if mode == "none":
            return []
        sc = span.get_span_context()
        if not sc.is_valid:
            return []
        value = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags & 0x01:02x}"
        added = (
            [("traceresponse", value)]
            if mode == "traceresponse"
            else [("server-timing", f"trace;desc={value}")]
        )
        if _is_cors(headers):
            # A script may read a cross-origin response's header only if it is exposed.
            added.append(("access-control-expose-headers", mode))
        return added

    def response_sent(self) -> None:
        """The last byte of the response went out: the span ends, unless it is a 5xx, which
        waits for ``finished`` (the exception usually follows) but keeps this end time."""
        if self.ended or self.sent_at is not None:
            return
        self.sent_at = time.time_ns()
        if self.status < 500:
            self._end(None)

    def finished(self, exc: BaseException | None = None) -> None:
        """The app's handling is over; ``exc`` is what it raised, if anything. A failure
        before any response was started is recorded as the 500 the server answers."""
        if self.ended:
            return
        if exc is None:
            handled = _handled_exception(self.view.native)
            if handled is not None:
                exc = handled
        if exc is not None and not self.status:
            self.response_started(500, ())
        self._end(exc)

    def _end(self, exc: BaseException | None) -> None:
        self.ended = True
        span = self.span
        if span is None:
            return
        route = self._route()
        if self.metrics is not None and self.active is not None:
            self.metrics.finished(self.active, self.started, self._outcome(route, exc))
        try:
            if self.recording:
                if route:
                    name, _ = semconv.normalize_method(self.view.method)
                    span.update_name(f"{name} {route}")
                    span.set_attribute(semconv.HTTP_ROUTE, route)
                if exc is not None:
                    span.record_exception(exc, timestamp=self.sent_at)
                    span.set_attribute(semconv.ERROR_TYPE, semconv.qualified_name(exc))
                    span.set_status(error_status(exc))
            span.end(self.sent_at)
        except Exception as fault_exc:
            fault("end", fault_exc)

    def _route(self) -> str | None:
        view = self.view
        try:
            return view.route_of(view.native)
        except Exception as exc:  # a user-supplied route_of
            fault("route", exc)
            return None

    def _outcome(self, route: str | None, exc: BaseException | None) -> Attributes:
        """The metric attributes known once the request is over."""
        status = self.status
        outcome: Attributes = {}
        if status:
            outcome[semconv.HTTP_RESPONSE_STATUS_CODE] = status
        if route:
            outcome[semconv.HTTP_ROUTE] = route
        if self.view.protocol:
            outcome[semconv.NETWORK_PROTOCOL_VERSION] = self.view.protocol
        if exc is not None:
            outcome[semconv.ERROR_TYPE] = semconv.qualified_name(exc)
        elif status >= 500:
            outcome[semconv.ERROR_TYPE] = str(status)
        return outcome


_ALLOW_ORIGIN = "access-control-allow-origin"


def _is_cors(headers: Any) -> bool:
    """Whether the response is a CORS response (it has ``Access-Control-Allow-Origin``)."""
    for name, _ in headers:
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        if len(text) == len(_ALLOW_ORIGIN) and text.lower() == _ALLOW_ORIGIN:
            return True
    return False


def _handled_exception(native: Any) -> BaseException | None:
    # An exception a framework turned into its own error page (Flask, Django).
    getter = getattr(native, "get", None)
    if getter is None:
        return None
    found = getter(EXCEPTION_KEY)
    return found if isinstance(found, BaseException) else None

"""The server span lifecycle, shared by the ASGI and WSGI middlewares.

The adapters translate their protocol into four calls: ``begin`` when a request arrives,
``response_started`` when the status is known, ``set_route`` when the framework matched a
route, and ``end``. Everything here is contained: a fault in tracing is logged (rate limited)
and the request goes on untraced or with an incomplete span, never with a changed response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from opentelemetry.context import Context, set_value
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
    get_tracer,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from tracewire import semconv
from tracewire._log import warn_limited
from tracewire.matching import ORIGIN_KEY, Origin
from tracewire.propagation import Extracted
from tracewire.settings import Settings

CarrierT = TypeVar("CarrierT")
Attributes = dict[str, AttributeValue]

# Marker key put in the ASGI scope / WSGI environ by the outermost tracewire middleware, so a
# nested one (a mounted sub-app) adds no second SERVER span.
SPAN_KEY = "tracewire.server_span"

INSTRUMENTATION_NAME = "tracewire"

_ERROR = Status(StatusCode.ERROR)
_RANDOM_FLAG = 0x02


class ResponseInfo(NamedTuple):
    """What ``server_response_hook(span, response_info)`` receives."""

    status_code: int
    headers: Any  # the protocol's native response headers (ASGI byte pairs / WSGI str pairs)


def _unsampled_fast_path(tracer: Any) -> Any:
    """The SDK id generator when a not-sampled remote parent always yields a non-recording
    child (the SDK's default ``ParentBased`` sampler); ``False`` when not; ``None`` while the
    global provider is still a proxy.

    The sampler round trip is most of the cost of an unsampled request; for this configuration
    its answer is known, so the span is made here exactly as the SDK would make it.
    """
    real = tracer
    if type(tracer).__name__ == "ProxyTracer":
        # The global provider's tracer: resolved once an SDK provider is set globally.
        real = getattr(tracer, "_tracer", None)
        if real is None or type(real).__name__ in ("NoOpTracer", "ProxyTracer"):
            return None
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
        from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return False
    if not isinstance(real, SdkTracer):
        return False
    sampler = real.sampler
    if type(sampler) is not ParentBased:
        return False
    not_sampled = getattr(sampler, "_remote_parent_not_sampled", None)
    if (
        not isinstance(not_sampled, StaticSampler)
        or not_sampled.get_description() != "AlwaysOffSampler"
    ):
        return False
    return real.id_generator


def _fault(where: str, exc: BaseException) -> None:
    warn_limited(f"internal:{where}", f"tracewire fault in {where}: {semconv.qualified_name(exc)}")


class ServerTracer:
    """Starts, describes and ends SERVER spans. Built once per middleware from ``Settings``."""

    def __init__(self, settings: Settings, tracer_provider: TracerProvider | None = None) -> None:
        from tracewire import __version__

        self.settings = settings
        self.tracer = get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider)
        self._extract = settings.composite.extract_detailed
        self.excluded = settings.path_excluded
        self._request_hook = settings.server_request_hook
        self._response_hook = settings.server_response_hook
        redact = frozenset(settings.redact_headers)
        self._capture_request = tuple(
            (name, semconv.REQUEST_HEADER_PREFIX + name, name in redact)
            for name in settings.capture_request_headers
        )
        self._capture_response = frozenset(settings.capture_response_headers)
        # Header names the request path reads through the carrier (extraction and capture),
        # for adapters whose carrier is a list to scan; None when a propagator does not say.
        fields = settings.composite.extract_fields
        self.wanted_headers: frozenset[bytes] | None = (
            None
            if fields is None
            else frozenset(
                n.encode("latin-1") for n in (*fields, *settings.capture_request_headers)
            )
        )
        self._redact = redact
        self._redact_query = frozenset(settings.redact_query_params)
        self.response_propagation = settings.response_propagation
        self.response_propagation_on = settings.response_propagation != "none"
        self._fast_ids: Any = _unsampled_fast_path(self.tracer)
        self.wants_origin = (
            settings.may_propagate.same_origin or settings.may_send_baggage.same_origin
        )

    # ------------------------------------------------------------------------------ start
    def begin(
        self,
        carrier: CarrierT,
        getter: Getter[CarrierT],
        method: str,
        path: str,
        describe: Callable[[Any], Attributes],
        source: Any,
        origin: Callable[[Any], Origin] | None = None,
    ) -> tuple[Context, Span | None]:
        """Extract the incoming context and start the SERVER span in it.

        ``describe(source)`` builds the protocol's attributes; it is only called for a
        recording span. Returns the context to make current and the span (``None`` for an
        excluded path, which still gets the incoming context).
        """
        try:
            extracted = self._extract(carrier, getter)
        except Exception as exc:
            # A broken propagator costs the caller's context, not the request's span: the
            # request starts a new trace, as for any unusable header.
            _fault("extract", exc)
            extracted = Extracted(Context(), None, ())
        ctx = extracted.context
        try:
            if self.wants_origin and origin is not None:
                ctx = set_value(ORIGIN_KEY, origin(source), ctx)
            if self.excluded is not None and self.excluded(path):
                return ctx, None
            name, original = semconv.normalize_method(method)
            parent = extracted.parent
            if (
                parent is not None
                and not parent.trace_flags.sampled
                and parent.is_remote
                and not extracted.conflicts
            ):
                fast_ids = self._fast_ids
                if fast_ids is None:
                    fast_ids = self._fast_ids = _unsampled_fast_path(self.tracer)
                if fast_ids:
                    fast = NonRecordingSpan(
                        SpanContext(
                            parent.trace_id,
                            fast_ids.generate_span_id(),
                            is_remote=False,
                            trace_flags=TraceFlags(parent.trace_flags & _RANDOM_FLAG),
                            trace_state=parent.trace_state,
                        )
                    )
                    return set_span_in_context(fast, ctx), fast
            conflicts = extracted.conflicts
            span: Span = self.tracer.start_span(
                name,
                ctx,
                kind=SpanKind.SERVER,
                links=[Link(sc) for sc in conflicts] if conflicts else None,
            )
        except Exception as exc:
            _fault("start", exc)
            return ctx, None
        if span.is_recording():
            try:
                attributes = describe(source)
                attributes[semconv.HTTP_REQUEST_METHOD] = name
                if original is not None:
                    attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = original
                if extracted.format is not None:
                    attributes[semconv.PROPAGATION_FORMAT] = extracted.format
                query = attributes.get(semconv.URL_QUERY)
                if query is not None and self._redact_query:
                    attributes[semconv.URL_QUERY] = semconv.redact_query(
                        str(query), self._redact_query
                    )
                if self._capture_request:
                    self._capture(attributes, carrier, getter)
                span.set_attributes(attributes)
            except Exception as exc:
                _fault("attributes", exc)
            if self._request_hook is not None:
                self._call_hook("server_request_hook", self._request_hook, span, source)
        return set_span_in_context(span, ctx), span

    def _capture(self, attributes: Attributes, carrier: Any, getter: Getter[Any]) -> None:
        for name, key, redacted in self._capture_request:
            values = getter.get(carrier, name)
            if values:
                attributes[key] = [semconv.REDACTED] * len(values) if redacted else values

    @staticmethod
    def _call_hook(which: str, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception as exc:
            warn_limited(f"hook:{which}", f"{which} raised {semconv.qualified_name(exc)}")

    # ---------------------------------------------------------------------------- response
    def response_started(self, span: Span, status_code: int, headers: Any) -> None:
        """Record the status (5xx is an error for a SERVER span; 4xx is not)."""
        if not span.is_recording():
            return
        try:
            span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status_code)
            if status_code >= 500:
                span.set_attribute(semconv.ERROR_TYPE, str(status_code))
                span.set_status(_ERROR)
            if self._capture_response:
                self._capture_response_headers(span, headers)
        except Exception as exc:
            _fault("response", exc)
        if self._response_hook is not None:
            self._call_hook(
                "server_response_hook",
                self._response_hook,
                span,
                ResponseInfo(status_code, headers),
            )

    def _capture_response_headers(self, span: Span, headers: Iterable[tuple[Any, Any]]) -> None:
        found: dict[str, list[str]] = {}
        for raw_name, raw_value in headers:
            name = raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name
            name = name.lower()
            if name in self._capture_response:
                value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
                found.setdefault(name, []).append(
                    semconv.REDACTED if name in self._redact else value
                )
        for name, values in found.items():
            span.set_attribute(semconv.RESPONSE_HEADER_PREFIX + name, values)

    def propagation_headers(self, span: Span) -> list[tuple[str, str]]:
        """Response headers that tell the caller which trace served it (opt-in)."""
        mode = self.response_propagation
        if mode == "none":
            return []
        sc = span.get_span_context()
        if not sc.is_valid:
            return []
        value = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags & 0x01:02x}"
        if mode == "traceresponse":
            return [("traceresponse", value)]
        return [("server-timing", f"trace;desc={value}")]

    def set_route(self, span: Span, method: str, route: str) -> None:
        """Name the span after the matched route template (never the raw path)."""
        if not span.is_recording():
            return
        try:
            name, _ = semconv.normalize_method(method)
            span.update_name(f"{name} {route}")
            span.set_attribute(semconv.HTTP_ROUTE, route)
        except Exception as exc:
            _fault("route", exc)

    def name_after_route(
        self, span: Span, method: str, route_of: Callable[[Any], str | None], source: Any
    ) -> None:
        """``set_route`` with the template ``route_of(source)`` gives, if any; a user-supplied
        ``route_of`` that raises is contained."""
        if not span.is_recording():
            return
        try:
            route = route_of(source)
        except Exception as exc:
            _fault("route", exc)
            return
        if route is not None:
            self.set_route(span, method, route)

    # --------------------------------------------------------------------------------- end
    def end(
        self,
        span: Span,
        exc: BaseException | None = None,
        end_time: int | None = None,
        *,
        responded: bool = True,
    ) -> None:
        """End ``span``; an exception makes it an error with ``error.type`` and an event.

        ``responded=False`` with an exception: the app failed before starting a response, so
        the server answers 500, which the span records.
        """
        try:
            if exc is not None and not responded and span.is_recording():
                self.response_started(span, 500, ())
            if exc is not None and span.is_recording():
                # Inside the span: a 5xx span ends when its response did, before the app
                # re-raised the error that caused it.
                span.record_exception(exc, timestamp=end_time)
                span.set_attribute(semconv.ERROR_TYPE, semconv.qualified_name(exc))
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end(end_time)
        except Exception as fault:
            _fault("end", fault)

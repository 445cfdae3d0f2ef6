"""The CLIENT span lifecycle and the "may this target receive our headers" decision.

Framework-neutral: ``tracewire.httpx`` and ``tracewire.requests`` describe each attempt as an
:class:`OutgoingRequest`, call :meth:`ClientTracer.start`, and report the response to the
:class:`ClientCall` they get back. Every rule for outgoing requests lives here once:

* the settings: the client's own, else those of the tracewire middleware serving the current
  request (so one service has one setting), else the process default;
* one CLIENT span per attempt, named after the method, with the stable HTTP client attributes
  given at span start (samplers see them), built only when a span is really started;
* headers are injected only for targets allowed by ``propagate_to``; baggage only for targets
  allowed by ``baggage_to`` (the context is injected with its baggage cleared otherwise);
* a propagator whose header the caller already set is skipped for that request (the caller's
  value is sent unchanged, a rate-limited warning says so);
* headers tracewire added are removed from the request object once it has been sent, so a
  redirect or a reused request object never carries a stale parent (nor baggage to a host that
  may not have it);
* OpenTelemetry's "suppress instrumentation" context keys are honoured, and another
  instrumentation's HTTP CLIENT span that is already open for this request (OpenTelemetry
  contrib wrapping the client from outside) gets no nested duplicate;
* hooks and tracewire's own faults are contained: the request is never affected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, MutableMapping
from typing import Any, NamedTuple

from opentelemetry.context import Context, create_key, get_current, set_value
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.textmap import Setter
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

from tracewire import _capture, _diagnostics, otel_env, outbound, semconv
from tracewire import _kinds as k
from tracewire._fastpath import UnsampledChildren
from tracewire._instrument import error_status, fault, make_tracer
from tracewire._log import logger
from tracewire.authority import effective_port, split_url
from tracewire.carriers import headers_getter, headers_setter
from tracewire.compiled import Compiled, settings_in
from tracewire.defaults import SettingsSource
from tracewire.matching import PathMatcher
from tracewire.metrics import ClientMetrics, now
from tracewire.outbound import Destination
from tracewire.settings import Settings

__all__ = [
    "ClientCall",
    "ClientTracer",
    "OutgoingRequest",
    "error_type",
    "lower_names",
    "protocol_version",
    "sanitize_url",
    "split_url",
]

try:  # The keys OpenTelemetry's own instrumentations read and set; private in the API package.
    from opentelemetry.context import (
        _SUPPRESS_HTTP_INSTRUMENTATION_KEY as SUPPRESS_HTTP_KEY,
    )
    from opentelemetry.context import (
        _SUPPRESS_INSTRUMENTATION_KEY as SUPPRESS_KEY,
    )
except ImportError:  # pragma: no cover - very old API versions
    SUPPRESS_HTTP_KEY = create_key("suppress_http_instrumentation")
    SUPPRESS_KEY = create_key("suppress_instrumentation")
# Older instrumentations (and opentelemetry-instrumentation's helpers) also use the plain name.
SUPPRESS_PLAIN_KEY = "suppress_instrumentation"

Headers = MutableMapping[str, str]
HeaderNames = Callable[[Any], Collection[str]]
Attributes = dict[str, AttributeValue]

_ERROR = Status(StatusCode.ERROR)
_REDACTED_USERINFO = f"{semconv.REDACTED}:{semconv.REDACTED}@"
# Attribute names by which another instrumentation's HTTP CLIENT span is recognised (stable
# and pre-stable semantic conventions).
_HTTP_METHOD_ATTRIBUTES = (semconv.HTTP_REQUEST_METHOD, "http.method")

# Kept under this name for callers of the client module; the rule is shared with the server.
error_type = semconv.qualified_name


def lower_names(headers: Any) -> Collection[str]:
    """The lowercase names of the headers in any mapping (the generic, slower way)."""
    return {name.lower() for name in headers}


class OutgoingRequest(NamedTuple):
    """One attempt of an outgoing request, as every client adapter describes it.

    Attributes:
        method: the request method as sent.
        scheme, host: of the target; ``port`` as written in the URL (``None``: the default).
        url: the full URL; ``str(url)`` is only taken when a span is started.
        headers: the request's header mapping (injected into, and cleaned after the send).
        native: the library's request object, handed to the hooks.
        header_names: ``header_names(headers)``, the lowercase names present (a view the
            library keeps is best; asked at most once).
    """

    method: str
    scheme: str
    host: str
    port: int | None
    url: object
    headers: Headers
    native: object
    header_names: HeaderNames = lower_names


def sanitize_url(url: str, redact_query: frozenset[str]) -> str:
    """``url`` for ``url.full``: credentials and the values of ``redact_query`` replaced.

    ``https://user:pw@host/p?sig=abc&x=1`` becomes
    ``https://REDACTED:REDACTED@host/p?sig=REDACTED&x=1`` (semantic conventions' form).
    """
    start = url.find("://") if "@" in url else -1
    if start != -1:
        start += 3
        end = len(url)
        for delimiter in "/?#":
            index = url.find(delimiter, start, end)
            if index != -1:
                end = index
        at = url.rfind("@", start, end)
        if at != -1:
            url = url[:start] + _REDACTED_USERINFO + url[at + 1 :]
    question = url.find("?")
    if question == -1 or not redact_query:
        return url
    fragment = url.find("#", question)
    if fragment == -1:
        fragment = len(url)
    query = url[question + 1 : fragment]
    redacted = semconv.redact_query(query, redact_query)
    if redacted is query:
        return url
    return f"{url[: question + 1]}{redacted}{url[fragment:]}"


class _HeadersSetter(Setter[Headers]):
    """Sets a header in a case-insensitive mapping, or in a ``dict`` (replacing spellings)."""

    def set(self, carrier: Headers, key: str, value: str) -> None:
        if type(carrier) is dict:
            headers_setter.set(carrier, key, value)
        else:  # case-insensitive mappings replace every spelling themselves
            carrier[key] = value


_headers_setter = _HeadersSetter()


_told_outer = False


def _note_outer_instrumentation() -> None:
    # Running both on purpose is legitimate, so this is said once per process, not warned.
    global _told_outer
    if not _told_outer:
        _told_outer = True
        logger.info(
            "another HTTP instrumentation (e.g. OpenTelemetry contrib) already traces requests "
            "tracewire sees; tracewire adds no second CLIENT span or header for those"
        )


def _remove_keys(headers: Headers, keys: list[str]) -> None:
    for key in keys:
        try:  # noqa: SIM105 - per request; contextlib.suppress would add a context manager
            del headers[key]
        except KeyError:  # the caller removed it already (e.g. a request hook)
            pass


def _is_http_client_span(span: Span) -> bool:
    # SDK spans expose ``kind`` and ``attributes``; API-only spans do not, and are not it.
    # (A non-recording span cannot be told apart; its instrumentation's headers still are.)
    if not span.is_recording() or getattr(span, "kind", None) is not SpanKind.CLIENT:
        return False
    attributes: Mapping[str, Any] | None = getattr(span, "attributes", None)
    if not attributes:
        return False
    return any(name in attributes for name in _HTTP_METHOD_ATTRIBUTES)


def _suppressed(ctx: Context) -> bool:
    if ctx.get(SUPPRESS_HTTP_KEY):
        _note_outer_instrumentation()
        return True
    return bool(ctx.get(SUPPRESS_KEY) or ctx.get(SUPPRESS_PLAIN_KEY))


# ------------------------------------------------------------------------------- the tracer
class ClientTracer:
    """Starts CLIENT spans and injects headers for outgoing requests; built once.

    Usage (what an adapter does per attempt)::

        tracer = ClientTracer(settings, tracer_provider=tracer_provider)
        call = tracer.start(OutgoingRequest("GET", "https", "api.example", None, url, headers,
                                            request))
        # call is None: send untouched. Otherwise attach call.context (if any) around the
        # send, then call.cleanup(); call.respond(status, "1.1", response); call.end(exc)

    Parameters:
        settings: a :class:`~tracewire.Settings`; ``None``: those of the tracewire
            middleware serving the current request, else the process default
            (``tracewire.configure``), else ``Settings.from_env()``.
        tracer_provider: where spans go; ``None`` means the global provider (resolved when
            the first span starts, so the provider may be set after this object is built).
        meter_provider: where ``http.client.request.duration`` goes; ``None``: the global one.
        library: the contrib name of the HTTP library (``HTTPX``, ``REQUESTS``), whose
            ``OTEL_PYTHON_<LIBRARY>_EXCLUDED_URLS`` then applies.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        library: str | None = None,
    ) -> None:
        self.source = SettingsSource(settings)
        self.tracer = make_tracer(tracer_provider)
        self.metrics = ClientMetrics(meter_provider)
        self.unsampled = UnsampledChildren(self.tracer)
        # The library's own OTEL_PYTHON_<LIBRARY>_EXCLUDED_URLS (the contrib packages'), which
        # replaces the generic exclusions unless code or TRACEWIRE_* chose them.
        found = otel_env.framework_exclusions(os.environ, (library,)) if library else None
        self.library_excluded = (
            PathMatcher(k.URL_REGEXES.check(found[0], found[1]), found[1]) if found else None
        )

    def _excluded(self, plan: Compiled, url: object) -> bool:
        excluded = plan.client_excluded
        if self.library_excluded is not None and plan.client_excluded_replaceable:
            excluded = self.library_excluded
        return excluded is not None and excluded(str(url))

    @property
    def settings(self) -> Settings:
        """The settings a call made outside any request would use now."""
        return self.source.settings()

    def start(self, request: OutgoingRequest) -> ClientCall | None:
        """Begin one attempt; ``None`` when this request is not tracewire's to trace.

        ``None`` means: instrumentation is suppressed in the current context (OpenTelemetry's
        ``suppress_instrumentation`` / ``suppress_http_instrumentation``, set by exporters
        and by an outer HTTP instrumentation), or ``require_parent`` is set and there is no
        current span, or the URL is excluded (``client_excluded_urls``) and
        ``client_excluded_headers`` is off. The request must then be sent untouched. An
        excluded URL otherwise gets the caller's trace headers and no span.
        """
        try:
            ctx = get_current()
            if _suppressed(ctx):
                return None
            plan = self.source.for_call(ctx)
            if self.source.own is not None:
                serving = settings_in(ctx)
                if serving is not None and serving.inject_fields != plan.inject_fields:
                    _diagnostics.settings_differ(plan, serving)
            current = get_current_span(ctx)
            parent = current.get_span_context()
            if plan.require_parent and not parent.is_valid:
                return None
            own_span = not _is_http_client_span(current)
            if not own_span:
                _note_outer_instrumentation()
            if own_span and self._excluded(plan, request.url):
                # No CLIENT span; the caller's context still goes on, unless told otherwise.
                if not plan.client_excluded_headers:
                    return None
                own_span = False
            call = ClientCall(self, plan, request, ctx, own_span)
        except Exception as exc:
            fault("client-start", exc)
            return None
        return call.open()


class ClientCall:
    """One attempt of one outgoing request: its span (if any) and the headers added for it.

    Every method is contained: a fault is logged (rate limited), never raised.

    Attributes:
        span: the CLIENT span, or ``None`` when another instrumentation's span covers the
            request (then tracewire only injects where that one did not).
        context: the context to make current while the request is sent, or ``None``. It
            marks HTTP instrumentation as suppressed, so an inner instrumentation
            (OpenTelemetry contrib patching the library's transport) adds no duplicate span or
            header. ``None`` for a non-recording span: nothing an inner instrumentation would
            add under the same not-sampled parent is exported, so nothing is made current.
        recording: whether the span records (adapters skip response work otherwise).
        ended: whether :meth:`end` was called.
    """

    __slots__ = (
        "context",
        "ended",
        "injected",
        "own_span",
        "parent",
        "plan",
        "port",
        "recording",
        "request",
        "span",
        "started",
        "tracer",
    )

    def __init__(
        self,
        tracer: ClientTracer,
        plan: Compiled,
        request: OutgoingRequest,
        parent: Context,
        own_span: bool,
    ) -> None:
        self.tracer = tracer
        self.plan = plan
        self.request = request
        self.parent = parent
        self.own_span = own_span
        self.port = effective_port(request.port, request.scheme)
        self.span: Span | None = None
        self.recording = False
        self.ended = False
        self.injected: list[str] = []
        self.context: Context | None = None
        # When the attempt started, if its duration is measured (sampled or not).
        self.started: float | None = None

    @property
    def measuring(self) -> bool:
        """Whether the adapter must report the response for the duration metric."""
        return self.started is not None

    # --------------------------------------------------------------------------------- start
    def open(self) -> ClientCall:
        """Start the span and inject; used for the first attempt and for each retry."""
        if self.own_span and self.tracer.metrics.gate.open():
            self.started = now()
        ctx = self.parent
        if self.own_span:
            try:
                span = self._start_span()
                self.span = span
                if span.get_span_context().is_valid:
                    ctx = set_span_in_context(span, ctx)
                # else: no SDK (a no-op tracer); the caller's context still goes downstream.
            except Exception as exc:
                fault("client-span", exc)
        if self.plan.injectors:
            try:
                self._inject(ctx)
            except Exception as exc:
                fault("client-inject", exc)
                self.cleanup()
        return self

    def _start_span(self) -> Span:
        parent = get_current_span(self.parent).get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            fast = self.tracer.unsampled.child(parent)
            if fast is not None:
                return fast
        name, original = semconv.normalize_method(self.request.method)
        # Built before the sampler decides only for a sampler that may read them.
        early = self.tracer.unsampled.sampler_reads_attributes()
        span = self.tracer.tracer.start_span(
            name,
            self.parent,
            kind=SpanKind.CLIENT,
            attributes=self._describe(name, original) if early else None,
        )
        if span.is_recording():
            if not early:
                span.set_attributes(self._describe(name, original))
            self.recording = True
            self.context = set_value(SUPPRESS_HTTP_KEY, True, self.parent)
            hook = self.plan.client_request_hook
            if hook is not None:
                hook(span, self.request.native)
        return span

    def _describe(self, name: str, original: str | None) -> Attributes:
        request = self.request
        attributes: Attributes = {
            semconv.HTTP_REQUEST_METHOD: name,
            semconv.URL_FULL: sanitize_url(str(request.url), self.plan.redact_query),
        }
        if request.host:
            attributes[semconv.SERVER_ADDRESS] = request.host
        if original is not None:
            attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = original
        if self.port is not None:
            attributes[semconv.SERVER_PORT] = self.port
        plan = self.plan
        if plan.capture_client_request:
            attributes.update(
                _capture.from_carrier(
                    request.headers,
                    headers_getter,
                    plan.capture_client_request,
                    plan.redact,
                    semconv.REQUEST_HEADER_PREFIX,
                )
            )
        if plan.semconv_dup:
            semconv.duplicate_client(attributes)
        return attributes

    def next_attempt(self, headers: Headers | None = None) -> ClientCall:
        """A new attempt of the same request (a retry): same parent, fresh span and headers.

        ``headers``: the mapping the retry is sent with, if not the original request's.
        """
        request = self.request if headers is None else self.request._replace(headers=headers)
        return ClientCall(self.tracer, self.plan, request, self.parent, self.own_span).open()

    def _inject(self, ctx: Context) -> None:
        request = self.request
        to = Destination(request.host, self.port, request.scheme)
        prepared = outbound.prepare(self.plan, ctx, self.parent, to)
        if prepared is None:
            return
        recorder = outbound.Recorder(_headers_setter, _remove_keys)
        self.injected = recorder.keys
        present = request.header_names(request.headers)
        # The caller's headers are worth a note; an outer instrumentation's are not (its span
        # is only recognisable when it records, so unsampled calls are quiet).
        outbound.write(request.headers, prepared, recorder, present, quiet=not self.recording)

    # ------------------------------------------------------------------------------ the send
    def cleanup(self) -> None:
        """Remove the headers tracewire added (call once the request has been sent)."""
        keys = self.injected
        if not keys:
            return
        self.injected = []
        try:
            _remove_keys(self.request.headers, keys)
        except Exception as exc:
            fault("client-cleanup", exc)

    def respond(
        self,
        status_code: int,
        protocol_version: str | None,
        response: object,
        *,
        hook: bool = True,
        headers: Any = None,
    ) -> None:
        """Record the response status (4xx and 5xx are errors) and call the response hook.

        ``headers``: the response's header mapping, for ``capture_client_response_headers``.
        """
        if self.started is not None:
            self._measure(status_code, protocol_version, None)
        span = self.span
        if span is None or not self.recording:
            return
        try:
            attributes: Attributes = {semconv.HTTP_RESPONSE_STATUS_CODE: status_code}
            if protocol_version:
                attributes[semconv.NETWORK_PROTOCOL_VERSION] = protocol_version
            if status_code >= 400:
                attributes[semconv.ERROR_TYPE] = str(status_code)
                span.set_status(_ERROR)
            plan = self.plan
            if plan.capture_client_response and headers is not None:
                attributes.update(
                    _capture.from_carrier(
                        headers,
                        headers_getter,
                        plan.capture_client_response,
                        plan.redact,
                        semconv.RESPONSE_HEADER_PREFIX,
                    )
                )
            if plan.semconv_dup:
                semconv.duplicate_client(attributes)
            span.set_attributes(attributes)
        except Exception as exc:
            fault("client-response", exc)
        response_hook = self.plan.client_response_hook
        if hook and response_hook is not None:
            response_hook(span, self.request.native, response)

    def _measure(self, status: int, protocol: str | None, exc: BaseException | None) -> None:
        """Record the attempt's duration, once (at its response, or at its failure)."""
        started, self.started = self.started, None
        if started is None:
            return
        request = self.request
        attributes: Attributes = {
            semconv.HTTP_REQUEST_METHOD: semconv.normalize_method(request.method)[0],
            semconv.URL_SCHEME: request.scheme,
        }
        if request.host:
            attributes[semconv.SERVER_ADDRESS] = request.host
        if self.port is not None:
            attributes[semconv.SERVER_PORT] = self.port
        if status:
            attributes[semconv.HTTP_RESPONSE_STATUS_CODE] = status
        if protocol:
            attributes[semconv.NETWORK_PROTOCOL_VERSION] = protocol
        if exc is not None:
            attributes[semconv.ERROR_TYPE] = error_type(exc)
        elif status >= 400:
            attributes[semconv.ERROR_TYPE] = str(status)
        self.tracer.metrics.record(started, attributes)

    def end(self, exc: BaseException | None = None) -> None:
        """End the span (once; later calls do nothing); ``exc`` makes it an error."""
        if self.ended:
            return
        self.ended = True
        if self.started is not None:  # no response came
            self._measure(0, None, exc)
        span = self.span
        if span is None or not self.recording:
            return
        try:
            if exc is not None:
                span.set_attribute(semconv.ERROR_TYPE, error_type(exc))
                span.set_status(error_status(exc))
            span.end()
        except Exception as fault_exc:
            fault("client-end", fault_exc)


def protocol_version(http_version: object) -> str | None:
    """``network.protocol.version`` from ``"HTTP/1.1"``, ``b"HTTP/2"``, ``11`` or ``20``."""
    if isinstance(http_version, bytes):
        http_version = http_version.decode("ascii", "replace")
    if isinstance(http_version, str):
        return http_version[5:] if http_version.startswith("HTTP/") else http_version or None
    if isinstance(http_version, int) and http_version > 0:
        major, minor = divmod(http_version, 10)
        return str(major) if major >= 2 and not minor else f"{major}.{minor}"
    return None

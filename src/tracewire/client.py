"""The CLIENT span lifecycle and the "may this target receive our headers" decision.

Framework-neutral: ``tracewire.httpx`` and ``tracewire.requests`` translate their request into
one :meth:`ClientTracer.start` call and their response into :class:`ClientCall` calls. Every rule
for outgoing requests lives here once:

* one CLIENT span per attempt, named after the method, with the stable HTTP client attributes
  (built only for a recording span);
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

import logging
from collections.abc import Callable, Collection, Mapping, MutableMapping
from typing import Any

from opentelemetry.baggage import clear as clear_baggage
from opentelemetry.context import Context, create_key, get_current, set_value
from opentelemetry.propagators.textmap import Setter, TextMapPropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
    get_current_span,
    get_tracer,
    set_span_in_context,
)

from tracewire import semconv
from tracewire._log import warn_limited
from tracewire.carriers import headers_setter
from tracewire.matching import ORIGIN_KEY, Origin
from tracewire.settings import Settings

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

INSTRUMENTATION_NAME = "tracewire"

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Headers = MutableMapping[str, str]
HeaderNames = Callable[[Any], Collection[str]]

logger = logging.getLogger("tracewire")

_ERROR = Status(StatusCode.ERROR)
_RANDOM_FLAG = 0x02  # W3C Level 2 random-trace-id flag, kept on a not-sampled child
_REDACTED_USERINFO = f"{semconv.REDACTED}:{semconv.REDACTED}@"
# Attribute names by which another instrumentation's HTTP CLIENT span is recognised (stable
# and pre-stable semantic conventions).
_HTTP_METHOD_ATTRIBUTES = (semconv.HTTP_REQUEST_METHOD, "http.method")


def _fault(where: str, exc: BaseException) -> None:
    warn_limited(
        f"internal:client-{where}", f"tracewire fault in client {where}: {error_type(exc)}"
    )


# ------------------------------------------------------------------------------ small helpers
_ERROR_TYPES: dict[type[BaseException], str] = {}


# Kept under this name for callers of the client module; the rule is shared with the server.
error_type = semconv.qualified_name


def split_url(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, explicit port or None)`` of an absolute URL, without parsing the rest.

    Userinfo is skipped; an IPv6 literal comes back without its brackets.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", None
    end = len(rest)
    for delimiter in "/?#":
        index = rest.find(delimiter, 0, end)
        if index != -1:
            end = index
    netloc = rest[:end]
    at = netloc.rfind("@")
    if at != -1:
        netloc = netloc[at + 1 :]
    if netloc.startswith("["):
        close = netloc.find("]")
        if close == -1:
            host, port_text = netloc[1:], ""
        else:
            host = netloc[1:close]
            port_text = netloc[close + 2 :] if netloc[close + 1 : close + 2] == ":" else ""
    else:
        host, _, port_text = netloc.partition(":")
    return scheme.lower(), host, int(port_text) if port_text.isdigit() else None


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


class _Recorder(Setter[Headers]):
    """Sets headers (like ``headers_setter``) and remembers which, to remove them later."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: list[str] = []

    def set(self, carrier: Headers, key: str, value: str) -> None:
        if type(carrier) is dict:
            headers_setter.set(carrier, key, value)
        else:  # case-insensitive mappings replace every spelling themselves
            carrier[key] = value
        self.keys.append(key)


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


def lower_names(headers: Any) -> Collection[str]:
    """The lowercase names of the headers in any mapping (the generic, slower way)."""
    return {name.lower() for name in headers}


def _unsampled_ids(tracer: Any) -> tuple[Any, bool, bool] | None:
    """``(id generator, remote-parent fast, local-parent fast)`` for an SDK tracer.

    Under the SDK's default ``ParentBased`` sampler a not-sampled parent always yields a
    not-sampled child, so that child can be made here without the sampler round trip (most of
    the cost of an unsampled request), exactly as the SDK would make it. ``None`` while the
    global provider is still a proxy (asked again later); ``(None, False, False)`` when the
    configuration offers no such shortcut.
    """
    real = tracer
    if type(tracer).__name__ == "ProxyTracer":
        real = getattr(tracer, "_tracer", None)
        if real is None or type(real).__name__ in ("NoOpTracer", "ProxyTracer"):
            return None
    none = (None, False, False)
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
        from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return none
    if not isinstance(real, SdkTracer) or type(real.sampler) is not ParentBased:
        return none

    def always_off(name: str) -> bool:
        sampler = getattr(real.sampler, name, None)
        return (
            isinstance(sampler, StaticSampler) and sampler.get_description() == "AlwaysOffSampler"
        )

    return (
        real.id_generator,
        always_off("_remote_parent_not_sampled"),
        always_off("_local_parent_not_sampled"),
    )


def _remove(headers: Headers, keys: list[str]) -> None:
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


# ------------------------------------------------------------------------------- the tracer
class ClientTracer:
    """Starts CLIENT spans and injects headers for outgoing requests; built once.

    Usage (what an adapter does per attempt)::

        tracer = ClientTracer(settings, tracer_provider)
        call = tracer.start("GET", "https", "api.example.com", None, url, headers, request)
        # call is None: send untouched. Otherwise attach call.context around the send, then
        # call.cleanup(); call.respond(status, "1.1", response); call.end() or call.end(exc)

    Parameters:
        settings: a :class:`~tracewire.Settings`; ``None`` means ``Settings.from_env()``.
        tracer_provider: where spans go; ``None`` means the global provider (resolved when
            the first span starts, so the provider may be set after this object is built).
    """

    def __init__(
        self, settings: Settings | None = None, tracer_provider: TracerProvider | None = None
    ) -> None:
        from tracewire import __version__

        if settings is None:
            settings = Settings.from_env()
        elif not isinstance(settings, Settings):
            raise TypeError(f"settings must be a tracewire.Settings, got {type(settings).__name__}")
        self.settings = settings
        self.tracer = get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider)
        self.injectors: tuple[tuple[str, TextMapPropagator, frozenset[str]], ...] = tuple(
            (name, propagator, frozenset(f.lower() for f in propagator.fields))
            for name, propagator in settings.inject_propagator.injectors
        )
        self.all_fields = frozenset().union(*(fields for _, _, fields in self.injectors))
        self.may_propagate = settings.may_propagate
        self.may_send_baggage = settings.may_send_baggage
        # Both None: every host gets everything, no per-request matching at all.
        self.open_to_all = settings.may_propagate.allow_all and settings.may_send_baggage.allow_all
        self.wants_origin = (
            settings.may_propagate.same_origin or settings.may_send_baggage.same_origin
        )
        self.require_parent = settings.require_parent
        self.request_hook: Callable[..., Any] | None = settings.client_request_hook
        self.response_hook: Callable[..., Any] | None = settings.client_response_hook
        self.redact_query = frozenset(settings.redact_query_params)
        self._fast: tuple[Any, bool, bool] | None = None

    def unsampled_child(self, parent: SpanContext) -> Span | None:
        """The not-sampled child of a not-sampled ``parent`` without the sampler, if possible."""
        fast = self._fast
        if fast is None:
            fast = self._fast = _unsampled_ids(self.tracer)
            if fast is None:
                return None
        ids, remote_ok, local_ok = fast
        if ids is None or not (remote_ok if parent.is_remote else local_ok):
            return None
        return NonRecordingSpan(
            SpanContext(
                parent.trace_id,
                ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(parent.trace_flags & _RANDOM_FLAG),
                trace_state=parent.trace_state,
            )
        )

    def start(
        self,
        method: str,
        scheme: str,
        host: str,
        port: int | None,
        url: object,
        headers: Headers,
        request: object,
        header_names: HeaderNames = lower_names,
    ) -> ClientCall | None:
        """Begin one attempt; ``None`` when this request is not tracewire's to trace.

        Arguments:
            method: the request method as sent.
            scheme, host: of the target; ``port`` as written in the URL (``None``: default).
            url: the full URL; ``str(url)`` is only taken for a recording span.
            headers: the outgoing request's case-insensitive header mapping (injected into).
            request: the library's request object, handed to the hooks.
            header_names: ``header_names(headers)``, the lowercase names present in the
                library's header mapping (a view it keeps is best; asked at most once).

        ``None`` means: instrumentation is suppressed in the current context (OpenTelemetry's
        ``suppress_instrumentation`` / ``suppress_http_instrumentation``, set by exporters
        and by an outer HTTP instrumentation), or ``require_parent`` is set and there is no
        current span. The request must then be sent untouched.
        """
        try:
            ctx = get_current()
            if ctx.get(SUPPRESS_HTTP_KEY):
                _note_outer_instrumentation()
                return None
            if ctx.get(SUPPRESS_KEY) or ctx.get(SUPPRESS_PLAIN_KEY):
                return None
            current = get_current_span(ctx)
            parent_span = current.get_span_context()
            if self.require_parent and not parent_span.is_valid:
                return None
            own_span = not (current.is_recording() and _is_http_client_span(current))
            if not own_span:
                _note_outer_instrumentation()
            if port is None:
                port = DEFAULT_PORTS.get(scheme)
            call = ClientCall(
                self, ctx, parent_span, own_span, method, scheme, host, port, url, headers
            )
            call.request = request
            call.header_names = header_names
        except Exception as exc:
            _fault("start", exc)
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
        recording: whether the span records (adapters skip attribute work otherwise).
    """

    __slots__ = (
        "context",
        "ended",
        "header_names",
        "headers",
        "host",
        "injected",
        "method",
        "own_span",
        "parent",
        "parent_span",
        "pending",
        "port",
        "recording",
        "request",
        "scheme",
        "span",
        "tracer",
        "url",
    )

    def __init__(
        self,
        tracer: ClientTracer,
        parent: Context,
        parent_span: SpanContext,
        own_span: bool,
        method: str,
        scheme: str,
        host: str,
        port: int | None,
        url: object,
        headers: Headers,
    ) -> None:
        self.tracer = tracer
        self.parent = parent
        self.parent_span = parent_span
        self.own_span = own_span
        self.method = method
        self.scheme = scheme
        self.host = host
        self.port = port
        self.url = url
        self.headers = headers
        self.request: object = None
        self.header_names: HeaderNames = lower_names
        self.span: Span | None = None
        self.recording = False
        self.ended = False
        self.injected: list[str] = []
        self.context: Context | None = None
        self.pending: dict[str, Any] | None = None

    # --------------------------------------------------------------------------------- start
    def open(self) -> ClientCall:
        """Start the span and inject; used for the first attempt and for each retry."""
        tracer = self.tracer
        ctx = self.parent
        if self.own_span:
            try:
                span = None
                parent = self.parent_span
                if parent.is_valid and not parent.trace_flags.sampled:
                    span = tracer.unsampled_child(parent)
                if span is None:
                    name, original = semconv.normalize_method(self.method)
                    span = tracer.tracer.start_span(name, ctx, kind=SpanKind.CLIENT)
                    if span.is_recording():
                        self.recording = True
                        self.context = set_value(SUPPRESS_HTTP_KEY, True, self.parent)
                        self._describe(span, name, original)
                self.span = span
                if span.get_span_context().is_valid:
                    ctx = set_span_in_context(span, ctx)
                # else: no SDK (a no-op tracer); the caller's context still goes downstream.
            except Exception as exc:
                _fault("span", exc)
        if tracer.injectors:
            try:
                self._inject(ctx)
            except Exception as exc:
                _fault("inject", exc)
                self.cleanup()
        return self

    def next_attempt(self, headers: Headers | None = None) -> ClientCall:
        """A new attempt of the same request (a retry): same parent, fresh span and headers.

        ``headers``: the mapping the retry is sent with, if not the original request's.
        """
        call = ClientCall(
            self.tracer,
            self.parent,
            self.parent_span,
            self.own_span,
            self.method,
            self.scheme,
            self.host,
            self.port,
            self.url,
            self.headers if headers is None else headers,
        )
        call.request = self.request
        call.header_names = self.header_names
        return call.open()

    def _describe(self, span: Span, name: str, original: str | None) -> None:
        tracer = self.tracer
        attributes: dict[str, Any] = {
            semconv.HTTP_REQUEST_METHOD: name,
            semconv.URL_FULL: sanitize_url(str(self.url), tracer.redact_query),
            semconv.SERVER_ADDRESS: self.host,
        }
        if original is not None:
            attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = original
        if self.port is not None:
            attributes[semconv.SERVER_PORT] = self.port
        hook = tracer.request_hook
        if hook is None:
            # Set together with the response's: each set_attributes call costs the SDK a lock
            # and a validation pass, and nothing reads a span's attributes before it ends.
            self.pending = attributes
            return
        span.set_attributes(attributes)  # before the hook, so that the hook's values win
        _call_hook("client_request_hook", hook, span, self.request)

    def _inject(self, ctx: Context) -> None:
        tracer = self.tracer
        if not tracer.open_to_all:
            origin: Origin | None = None
            if tracer.wants_origin:
                found = self.parent.get(ORIGIN_KEY)
                origin = found if isinstance(found, tuple) else None
            if not tracer.may_propagate(self.host, self.port, self.scheme, origin):
                return
            if not tracer.may_send_baggage(self.host, self.port, self.scheme, origin):
                ctx = clear_baggage(ctx)
        headers = self.headers
        # One pass over the request's header names, not one lookup per propagator field.
        taken = tracer.all_fields.intersection(self.header_names(headers))
        recorder = _Recorder()
        self.injected = recorder.keys
        for name, propagator, fields in tracer.injectors:
            if taken and not taken.isdisjoint(fields):
                # The caller's headers are worth a note; an outer instrumentation's are not
                # (its span is only recognisable when it records, so unsampled calls are quiet).
                if self.recording:
                    field = min(taken.intersection(fields))
                    warn_limited(
                        f"client-explicit-header:{name}",
                        f"outgoing request already has a {field!r} header; tracewire does not "
                        f"inject {name} for it and sends the caller's headers unchanged",
                    )
                continue
            done = len(recorder.keys)
            try:
                propagator.inject(headers, ctx, recorder)
            except Exception as exc:
                # One broken propagator must not cost the others: take back what it set.
                _fault(f"inject:{name}", exc)
                _remove(headers, recorder.keys[done:])
                del recorder.keys[done:]

    # ------------------------------------------------------------------------------ the send
    def cleanup(self) -> None:
        """Remove the headers tracewire added (call once the request has been sent)."""
        keys = self.injected
        if not keys:
            return
        self.injected = []
        try:
            _remove(self.headers, keys)
        except Exception as exc:
            _fault("cleanup", exc)

    def respond(
        self,
        status_code: int,
        protocol_version: str | None,
        response: object,
        *,
        hook: bool = True,
    ) -> None:
        """Record the response status (4xx and 5xx are errors) and call the response hook."""
        span = self.span
        if span is None or not self.recording:
            return
        try:
            attributes = self.pending
            if attributes is None:
                attributes = {}
            else:
                self.pending = None
            attributes[semconv.HTTP_RESPONSE_STATUS_CODE] = status_code
            if protocol_version:
                attributes[semconv.NETWORK_PROTOCOL_VERSION] = protocol_version
            if status_code >= 400:
                attributes[semconv.ERROR_TYPE] = str(status_code)
                span.set_status(_ERROR)
            span.set_attributes(attributes)
        except Exception as exc:
            _fault("response", exc)
        response_hook = self.tracer.response_hook
        if hook and response_hook is not None:
            _call_hook("client_response_hook", response_hook, span, self.request, response)

    def end(self, exc: BaseException | None = None) -> None:
        """End the span (once; later calls do nothing); ``exc`` makes it an error."""
        if self.ended:
            return
        self.ended = True
        span = self.span
        if span is None:
            return
        try:
            if self.pending is not None:  # no response came (or it was not reported)
                span.set_attributes(self.pending)
                self.pending = None
            if exc is not None and self.recording:
                name = error_type(exc)
                span.set_attribute(semconv.ERROR_TYPE, name)
                # Only the class: client exception messages embed URLs with query strings.
                span.set_status(Status(StatusCode.ERROR, name))
            span.end()
        except Exception as fault:
            _fault("end", fault)


def _call_hook(which: str, hook: Callable[..., Any], *args: Any) -> None:
    try:
        hook(*args)
    except Exception as exc:
        warn_limited(f"hook:{which}", f"{which} raised {error_type(exc)}; request unaffected")


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

"""One call to set up the OpenTelemetry SDK for a service.

Usage::

    provider = tracewire.sdk.configure(service_name="my-server")

tracewire itself needs only the OpenTelemetry *API*; this helper is for services that do not
already configure the SDK some other way. Everything it does can be steered by the standard
environment variables, and every argument wins over its variable:

===================  ===========================================  ==========================
argument             environment variable                         default
===================  ===========================================  ==========================
``service_name``     ``OTEL_SERVICE_NAME``, then ``service.name``  ``unknown_service:<exe>``
                     in ``OTEL_RESOURCE_ATTRIBUTES``
``exporter``         ``OTEL_TRACES_EXPORTER``                     ``otlp``
``endpoint``         ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,       ``http://localhost:4318``
                     ``OTEL_EXPORTER_OTLP_ENDPOINT``
``sampler``          ``OTEL_TRACES_SAMPLER`` / ``_ARG``           ``parentbased_always_on``
``metrics``          ``OTEL_METRICS_EXPORTER``                    where the traces go
(all)                ``OTEL_SDK_DISABLED=true``: no export at all
===================  ===========================================  ==========================

``otlp`` is OTLP over HTTP/protobuf and needs the ``otlp`` extra
(``pip install 'tracewire[otlp]'``); ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` switches to the gRPC
exporter when ``opentelemetry-exporter-otlp-proto-grpc`` is installed.

Operational guarantees (each proven by a test, see docs/reliability.md): the spans of a
provider built here are flushed when the process stops normally *and* on SIGTERM (uvicorn,
hypercorn, gunicorn, werkzeug, Django runserver), waiting at most ``flush_timeout`` seconds;
an exporter built from a name is re-created in a forked child; the export path's own log
records are limited to one per kind per minute.
"""

from __future__ import annotations

import importlib
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.util.types import AttributeValue
from typing_extensions import TypedDict, Unpack

from tracewire import _exportlog, _fork, _sdk_metrics, _stop

__all__ = [
    "EXPORTERS",
    "PROCESSORS",
    "SAMPLERS",
    "ExporterSpec",
    "Options",
    "configure",
    "get_exporters",
    "get_meter_provider",
    "otlp_exporter",
    "suppressed_log_records",
]

logger = logging.getLogger("tracewire")

ExporterSpec = str | SpanExporter

EXPORTERS = ("otlp", "console", "memory", "none")
# The names the SDK itself accepts in OTEL_TRACES_SAMPLER.
SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
PROCESSORS = ("batch", "simple")
PROTOCOLS = ("http/protobuf", "grpc")
# The longest a stop (exit or SIGTERM) waits for the last spans to be exported, by default.
DEFAULT_FLUSH_TIMEOUT = 5.0

OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
TRACES_PATH = "/v1/traces"

OTLP_MISSING = (
    "the 'otlp' exporter needs the otlp extra: pip install 'tracewire[otlp]' "
    "(or opentelemetry-exporter-otlp-proto-http)"
)
GRPC_MISSING = (
    "OTLP over gRPC needs the package opentelemetry-exporter-otlp-proto-grpc: "
    "pip install opentelemetry-exporter-otlp-proto-grpc"
)

# The exporters each configured provider sends to, so that callers can reach an in-memory one.
_exporters: weakref.WeakKeyDictionary[TracerProvider, tuple[SpanExporter, ...]] = (
    weakref.WeakKeyDictionary()
)
# The meter provider built next to each configured tracer provider.
_meters: weakref.WeakKeyDictionary[TracerProvider, MeterProvider] = weakref.WeakKeyDictionary()


class Options(TypedDict, total=False):
    """The keyword arguments of :func:`configure` (all optional)."""

    exporter: ExporterSpec | Sequence[ExporterSpec] | None
    endpoint: str | None
    sampler: str | Sampler | None
    sampler_arg: float | None
    resource_attributes: Mapping[str, AttributeValue] | None
    processor: str | None
    set_global: bool
    shutdown_on_exit: bool
    flush_timeout: float
    limit_export_logs: bool
    metrics: bool | str | None


class _Plan(NamedTuple):
    """What :func:`configure` decided from its arguments and the environment, before building."""

    specs: list[ExporterSpec]
    label: str
    endpoint: str | None
    sampler: Sampler | None
    processor: str
    metrics: list[str]
    attributes: dict[str, AttributeValue]


def configure(service_name: str | None = None, **options: Unpack[Options]) -> TracerProvider:
    """Build an SDK ``TracerProvider`` (and ``MeterProvider``), attach exporters, and (by
    default) make them global.

    Args:
        service_name: the resource's ``service.name``. Default: ``OTEL_SERVICE_NAME``, then
            ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, then the SDK's fallback.
        exporter: ``"otlp"``, ``"console"``, ``"memory"``, ``"none"``, a ``SpanExporter``, or a
            sequence (or comma-separated string) of those: each gets its own span processor.
            Default: ``OTEL_TRACES_EXPORTER``, else ``"otlp"``.
        endpoint: OTLP endpoint for the ``"otlp"`` exporter. A URL without a path (a collector's
            base URL, e.g. ``http://localhost:4318``) gets ``/v1/traces`` appended; a URL with a
            path is used as it is. Default: the ``OTEL_EXPORTER_OTLP_*`` variables.
        sampler: a ``Sampler`` or one of :data:`SAMPLERS`. Default: ``OTEL_TRACES_SAMPLER`` /
            ``OTEL_TRACES_SAMPLER_ARG`` read by the SDK, else ``parentbased_always_on``.
        sampler_arg: the ratio (0..1) for the ``*traceidratio`` samplers (default 1.0).
        resource_attributes: extra resource attributes; they win over
            ``OTEL_RESOURCE_ATTRIBUTES`` (and ``service_name`` wins over both).
        processor: ``"batch"`` (default) or ``"simple"`` (export each span as it ends). The
            ``"memory"`` exporter always uses ``"simple"``, so its spans are readable at once.
        set_global: make the providers the global ones (``trace.set_tracer_provider``,
            ``metrics.set_meter_provider``).
        shutdown_on_exit: flush when the process stops: at interpreter exit (``atexit``) and
            on SIGTERM (chained to the handler that was there before, or re-raised with its
            default action), and while a server drains after SIGTERM.
        flush_timeout: the longest (seconds) a stop waits for the last spans to be exported;
            after that they are dropped, so a dead collector cannot hold the stop.
        limit_export_logs: let the exporter's and span processors' own log records through
            at most once per kind per minute (see :func:`suppressed_log_records`).
        metrics: where tracewire's HTTP metrics go: ``True`` (where the traces go), ``False``,
            or ``"otlp"``, ``"console"``, ``"memory"``, ``"none"``. Default:
            ``OTEL_METRICS_EXPORTER``, else where the traces go. :func:`get_meter_provider`
            returns the ``MeterProvider``.

    Returns the provider. With ``OTEL_SDK_DISABLED=true`` it records and exports nothing.
    Raises ``ValueError`` for a bad argument or variable (naming it and the valid choices),
    ``TypeError`` for an unknown argument, and ``ImportError`` with the ``pip install`` line
    when an exporter's package is missing.
    """
    unknown = sorted(set(options) - set(Options.__annotations__))
    if unknown:
        raise TypeError(
            f"configure() got unknown argument(s) {', '.join(unknown)}; "
            f"known: service_name, {', '.join(Options.__annotations__)}"
        )
    plan = _plan(service_name, options)
    resource = Resource.create(plan.attributes)
    provider = TracerProvider(
        sampler=plan.sampler,
        resource=resource,
        # The SDK's own atexit shutdown waits up to 30 s per processor: ours is bounded.
        shutdown_on_exit=False,
    )
    disabled = os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"
    made = [] if disabled else _attach_exporters(provider, plan)
    _exporters[provider] = tuple(made)
    meter = None if disabled else _sdk_metrics.build(plan.metrics, plan.endpoint, resource)
    if meter is not None:
        _meters[provider] = meter
    if made and options.get("limit_export_logs", True):
        _exportlog.install()
    if options.get("shutdown_on_exit", True):
        timeout = float(options.get("flush_timeout", DEFAULT_FLUSH_TIMEOUT))
        _stop.register(provider, timeout)
        if meter is not None:
            _stop.register_flushable(meter, timeout)
    if options.get("set_global", True):
        _make_global(provider, meter)
    return provider


def _plan(service_name: str | None, options: Options) -> _Plan:
    if service_name is not None and (not isinstance(service_name, str) or not service_name):
        raise ValueError(f"service_name must be a non-empty string, got {service_name!r}")
    specs, label = _exporter_specs(options.get("exporter"))
    processor = options.get("processor")
    flush_timeout = options.get("flush_timeout", DEFAULT_FLUSH_TIMEOUT)
    if (
        isinstance(flush_timeout, bool)
        or not isinstance(flush_timeout, int | float)
        or not 0 <= flush_timeout <= 600
    ):
        raise ValueError(
            f"flush_timeout must be a number of seconds from 0 to 600, got {flush_timeout!r}"
        )
    attributes: dict[str, AttributeValue] = dict(options.get("resource_attributes") or {})
    if service_name is not None:
        attributes[SERVICE_NAME] = service_name
    return _Plan(
        specs=specs,
        label=label,
        endpoint=_endpoint(options.get("endpoint")),
        sampler=_sampler(options.get("sampler"), options.get("sampler_arg")),
        processor=_choice("processor", "batch" if processor is None else processor, PROCESSORS),
        metrics=_sdk_metrics.metrics_choice(options.get("metrics"), specs),
        attributes=attributes,
    )


def _attach_exporters(provider: TracerProvider, plan: _Plan) -> list[SpanExporter]:
    made: list[SpanExporter] = []
    for spec in plan.specs:
        built = _build_exporter(spec, plan.endpoint, plan.label)
        if built is not None:
            made.append(built)
            provider.add_span_processor(_processor(built, plan.processor))
    return made


def _make_global(provider: TracerProvider, meter: MeterProvider | None) -> None:
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        logger.warning(
            "tracewire.sdk.configure: a global TracerProvider was already set and "
            "OpenTelemetry does not allow replacing it; the new provider is returned but "
            "is not global (pass tracer_provider= to the middlewares, or set_global=False)"
        )
    # OpenTelemetry allows one global MeterProvider; a second configure() keeps the first.
    if meter is not None and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider":
        metrics.set_meter_provider(meter)


def get_meter_provider(provider: TracerProvider) -> MeterProvider | None:
    """The ``MeterProvider`` ``configure`` built next to ``provider`` (``None``: metrics off)."""
    return _meters.get(provider)


def get_exporters(provider: TracerProvider) -> tuple[SpanExporter, ...]:
    """The exporters ``configure`` attached to ``provider`` (e.g. to read a memory exporter).

    In a forked child, an exporter that ``configure`` re-created for that process is the one
    returned.
    """
    return tuple(_fork.unwrap(e) for e in _exporters.get(provider, ()))


def suppressed_log_records() -> dict[str, int]:
    """How many log records of the export path were held back by the rate limit, by logger.

    ``configure`` (with ``limit_export_logs=True``, the default) lets each kind of record of
    the OTLP exporters and the SDK's span processors through at most once per minute; the
    next one that passes says how many were suppressed. This is the running total per logger
    name in this process.
    """
    return _exportlog.suppressed()


def otlp_exporter(endpoint: str | None = None, **kwargs: Any) -> SpanExporter:
    """An OTLP span exporter (HTTP/protobuf, or gRPC per ``OTEL_EXPORTER_OTLP_PROTOCOL``).

    ``endpoint`` follows the rule of :func:`configure`; ``kwargs`` go to the exporter class
    (``headers``, ``timeout``, ``compression``, ...). Useful to export to a second collector:
    ``configure(exporter=["otlp", otlp_exporter("http://jaeger:4318")])``.
    """
    return _otlp(_endpoint(endpoint), "exporter", kwargs)


# ------------------------------------------------------------------------------ validation


def _choice(label: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise ValueError(f"invalid {label} {value!r}; valid choices: {', '.join(choices)}")
    return value.strip().lower()


def _exporter_specs(
    exporter: ExporterSpec | Sequence[ExporterSpec] | None,
) -> tuple[list[ExporterSpec], str]:
    label = "exporter"
    raw: object = exporter
    if exporter is None:
        from_env = os.environ.get(OTEL_TRACES_EXPORTER, "").strip()
        raw = from_env or "otlp"
        if from_env:
            label = OTEL_TRACES_EXPORTER
    items: list[object]
    if isinstance(raw, str):
        items = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, SpanExporter):
        items = [raw]
    elif isinstance(raw, Sequence):
        items = list(raw)
    else:
        raise ValueError(
            f"invalid {label} {raw!r}; valid choices: {', '.join(EXPORTERS)}, a SpanExporter, "
            "or a sequence of those"
        )
    specs: list[ExporterSpec] = []
    for item in items:
        if isinstance(item, SpanExporter):
            specs.append(item)
        else:
            specs.append(_choice(label, item, EXPORTERS))
    if not specs:
        raise ValueError(f"{label} is empty; valid choices: {', '.join(EXPORTERS)}")
    if "none" in specs and len(specs) > 1:
        raise ValueError(f"'none' in {label} cannot be combined with other exporters")
    return specs, label


def _endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    if not isinstance(endpoint, str):
        raise ValueError(f"endpoint must be a URL string, got {endpoint!r}")
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"invalid endpoint {endpoint!r}; expected an http:// or https:// URL such as "
            "http://localhost:4318"
        )
    if parts.path in ("", "/"):
        return endpoint.strip().rstrip("/") + TRACES_PATH
    return endpoint.strip()


def _sampler(sampler: str | Sampler | None, sampler_arg: float | None) -> Sampler | None:
    if sampler_arg is not None and (
        isinstance(sampler_arg, bool)
        or not isinstance(sampler_arg, int | float)
        or not 0.0 <= sampler_arg <= 1.0
    ):
        raise ValueError(f"sampler_arg must be a number from 0 to 1, got {sampler_arg!r}")
    if sampler is None:
        if sampler_arg is not None:
            raise ValueError(
                "sampler_arg needs sampler='traceidratio' or 'parentbased_traceidratio'"
            )
        return None  # the SDK reads OTEL_TRACES_SAMPLER / _ARG itself
    if isinstance(sampler, Sampler):
        return sampler
    name = _choice("sampler", sampler, SAMPLERS)
    rate = 1.0 if sampler_arg is None else float(sampler_arg)
    if name == "parentbased_traceidratio":
        return ParentBasedTraceIdRatio(rate)
    if name == "traceidratio":
        return TraceIdRatioBased(rate)
    if sampler_arg is not None:
        raise ValueError(f"sampler_arg applies only to the traceidratio samplers, not {name!r}")
    fixed: dict[str, Sampler] = {
        "parentbased_always_on": DEFAULT_ON,
        "parentbased_always_off": DEFAULT_OFF,
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
    }
    return fixed[name]


# ---------------------------------------------------------------------------------- building


def _build_exporter(spec: ExporterSpec, endpoint: str | None, label: str) -> SpanExporter | None:
    if isinstance(spec, InMemorySpanExporter | ConsoleSpanExporter):
        return spec  # nothing to renew after a fork
    if isinstance(spec, SpanExporter):
        return _fork.ForkAwareExporter(spec)  # warns once if used in a forked child
    if spec == "none":
        return None
    if spec == "console":
        return ConsoleSpanExporter()
    if spec == "memory":
        return InMemorySpanExporter()
    otlp = _otlp(endpoint, label, {})
    # Re-created in a forked child: its connection pool must not be shared with the parent.
    return _fork.ForkAwareExporter(otlp, lambda: _otlp(endpoint, label, {}))


def _protocol() -> str:
    for variable in OTEL_PROTOCOL_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            return _choice(variable, value, PROTOCOLS)
    return "http/protobuf"


def _otlp(endpoint: str | None, label: str, kwargs: dict[str, Any]) -> SpanExporter:
    if _protocol() == "grpc":
        try:
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError as exc:
            raise ImportError(f"{GRPC_MISSING} (for {label} 'otlp')") from exc
        # The gRPC exporter takes the collector's address without the HTTP signal path.
        if endpoint is not None and endpoint.endswith(TRACES_PATH):
            endpoint = endpoint[: -len(TRACES_PATH)]
        built: SpanExporter = grpc.OTLPSpanExporter(endpoint=endpoint, **kwargs)
        return built
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ImportError(f"{OTLP_MISSING} (for {label} 'otlp')") from exc
    return OTLPSpanExporter(endpoint=endpoint, **kwargs)


def _processor(exporter: SpanExporter, kind: str) -> SpanProcessor:
    # Memory exporters exist to be read right after the span ends; batching would hide spans.
    if kind == "simple" or isinstance(_fork.unwrap(exporter), InMemorySpanExporter):
        return SimpleSpanProcessor(exporter)
    return BatchSpanProcessor(exporter)

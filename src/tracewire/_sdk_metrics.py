"""The metrics half of ``tracewire.sdk.configure``: a ``MeterProvider`` for the HTTP metrics.

By default metrics go where the traces go: the OTLP exporter gets an OTLP metric exporter
(``/v1/metrics`` of the same collector), ``console`` prints them, ``memory`` keeps them in an
``InMemoryMetricReader``; ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``, ``none``) or the
``metrics=`` argument choose otherwise. ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`` (else
``OTEL_EXPORTER_OTLP_PROTOCOL``) ``grpc`` sends them over gRPC, as the traces go. Readers
export every ``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds (the SDK's default, 60 s).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

__all__ = ["METRICS", "OTEL_METRICS_EXPORTER", "build", "metrics_choice"]

METRICS = ("otlp", "console", "memory", "none")
OTEL_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
METRICS_PATH = "/v1/metrics"
METRICS_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def metrics_choice(metrics: bool | str | None, trace_specs: Sequence[Any]) -> list[str]:
    """The metric exporters to build: from ``metrics=``, else ``OTEL_METRICS_EXPORTER``, else
    the traces' named exporters (``True`` means the same; ``False`` means none)."""
    if metrics is False:
        return []
    raw: Any = metrics
    label = "metrics"
    if metrics is None or metrics is True:
        from_env = os.environ.get(OTEL_METRICS_EXPORTER, "").strip()
        if metrics is None and from_env:
            raw, label = from_env, OTEL_METRICS_EXPORTER
        else:
            raw = ",".join(s for s in trace_specs if isinstance(s, str)) or "none"
    if not isinstance(raw, str):
        raise ValueError(f"metrics must be a bool or one of {', '.join(METRICS)}, got {raw!r}")
    chosen = [part.strip().lower() for part in raw.split(",") if part.strip()]
    for name in chosen:
        if name not in METRICS:
            raise ValueError(f"invalid {label} {name!r}; valid choices: {', '.join(METRICS)}")
    return [name for name in chosen if name != "none"]


def _metrics_endpoint(traces_endpoint: str | None) -> str | None:
    """The collector's metrics URL: next to the traces one, or from the OTEL_* variables."""
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
    if explicit:
        return explicit
    if traces_endpoint is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_ENDPOINT itself
    parts = urlsplit(traces_endpoint)
    path = parts.path
    if path.endswith("/v1/traces"):
        path = path[: -len("/v1/traces")]
    return f"{parts.scheme}://{parts.netloc}{path.rstrip('/')}{METRICS_PATH}"


def _protocol() -> str:
    """The OTLP protocol for metrics: the metrics variable, else the generic one."""
    for variable in METRICS_PROTOCOL_VARIABLES:
        value = os.environ.get(variable, "").strip().lower()
        if value:
            if value not in ("http/protobuf", "grpc"):
                raise ValueError(
                    f"invalid {variable} {value!r}; valid choices: http/protobuf, grpc"
                )
            return value
    return "http/protobuf"


def _grpc_reader(traces_endpoint: str | None) -> MetricReader:
    # Over gRPC the collector is one address for every signal: no HTTP path.
    try:
        grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.metric_exporter")
    except ImportError as exc:
        raise ImportError(
            "OTLP metrics over gRPC need the package opentelemetry-exporter-otlp-proto-grpc: "
            "pip install opentelemetry-exporter-otlp-proto-grpc "
            "(or metrics=False / OTEL_METRICS_EXPORTER=none)"
        ) from exc
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip() or None
    if endpoint is None and traces_endpoint is not None:
        parts = urlsplit(traces_endpoint)
        endpoint = f"{parts.scheme}://{parts.netloc}"
    return PeriodicExportingMetricReader(grpc.OTLPMetricExporter(endpoint=endpoint))


def _reader(name: str, traces_endpoint: str | None) -> MetricReader:
    if name == "memory":
        return InMemoryMetricReader()
    if name == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if _protocol() == "grpc":
        return _grpc_reader(traces_endpoint)
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as exc:
        raise ImportError(
            "OTLP metrics need the otlp extra: pip install 'tracewire[otlp]' "
            "(or metrics=False / OTEL_METRICS_EXPORTER=none)"
        ) from exc
    return PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=_metrics_endpoint(traces_endpoint))
    )


def build(
    names: Sequence[str], traces_endpoint: str | None, resource: Resource
) -> MeterProvider | None:
    """A ``MeterProvider`` with one reader per name, or ``None`` when there is none."""
    if not names:
        return None
    readers = [_reader(name, traces_endpoint) for name in names]
    return MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)

"""HTTP metrics per the semantic conventions (stable), recorded beside the span lifecycle.

``http.server.request.duration`` (seconds, histogram), ``http.server.active_requests``
(up-down counter) and ``http.client.request.duration`` (seconds, histogram), with the
conventions' bucket advice and their required attributes. Every request is measured, sampled
or not; an excluded path is not, nor a WebSocket (its lifetime is no request's duration; as
in contrib). Cardinality stays bounded: the method is one of the known ones or ``_OTHER``,
and the server records ``http.route`` (a template, set only when the framework matched one),
never the raw path.

Metrics are on when a ``MeterProvider`` is there to record them: the one passed as
``meter_provider=``, or the global one once an SDK provider is set
(``tracewire.sdk.configure`` sets one by default). Until then each request costs one check.
A failing instrument is contained: the request never notices.
"""

from __future__ import annotations

import time

from opentelemetry.metrics import Meter, MeterProvider, get_meter
from opentelemetry.util.types import AttributeValue

from tracewire import semconv
from tracewire._instrument import INSTRUMENTATION_NAME, fault

__all__ = ["DURATION_BUCKETS", "ClientMetrics", "ServerMetrics", "now"]

# The semantic conventions' explicit bucket advice for HTTP durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

Attributes = dict[str, AttributeValue]

# The schemes of an ASGI websocket scope: its span is traced, its lifetime is not measured.
_WEBSOCKET_SCHEMES = frozenset(("ws", "wss"))


def _meter(meter_provider: MeterProvider | None) -> Meter:
    from tracewire import __version__

    if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
        raise TypeError(
            "meter_provider must be an OpenTelemetry MeterProvider or None, "
            f"got {type(meter_provider).__name__}"
        )
    return get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider)


class _Gate:
    """Whether the meter records anything: an API proxy meter does once an SDK is set."""

    __slots__ = ("meter",)

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def open(self) -> bool:
        # The API's proxy keeps ``_real_meter`` None until a real provider is set globally.
        return getattr(self.meter, "_real_meter", True) is not None and (
            type(self.meter).__name__ != "NoOpMeter"
        )


def now() -> float:
    """The clock durations are measured with."""
    return time.perf_counter()


class ServerMetrics:
    """``http.server.request.duration`` and ``http.server.active_requests``."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = _meter(meter_provider)
        self.gate = _Gate(meter)
        self.duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.active = meter.create_up_down_counter(
            "http.server.active_requests",
            unit="{request}",
            description="Number of active HTTP server requests.",
        )

    def started(self, method: str, scheme: str) -> Attributes | None:
        """Count the request as active; its attributes, or ``None`` when nothing records (or
        it is a WebSocket: a connection open for hours is not an HTTP request's duration)."""
        if scheme in _WEBSOCKET_SCHEMES or not self.gate.open():
            return None
        attributes: Attributes = {
            semconv.HTTP_REQUEST_METHOD: semconv.normalize_method(method)[0],
            semconv.URL_SCHEME: scheme,
        }
        try:
            self.active.add(1, attributes)
        except Exception as exc:
            fault("metrics", exc)
        return attributes

    def finished(self, active: Attributes, started: float, outcome: Attributes) -> None:
        """The request is over: its duration (with ``outcome``: status, route, protocol,
        error type), and it is no longer active."""
        # Each instrument on its own: one failing must not cost the other its measurement.
        try:
            self.active.add(-1, active)
        except Exception as exc:
            fault("metrics", exc)
        try:
            self.duration.record(max(now() - started, 0.0), {**active, **outcome})
        except Exception as exc:
            fault("metrics", exc)


class ClientMetrics:
    """``http.client.request.duration``."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = _meter(meter_provider)
        self.gate = _Gate(meter)
        self.duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )

    def record(self, started: float, attributes: Attributes) -> None:
        try:
            self.duration.record(max(now() - started, 0.0), attributes)
        except Exception as exc:
            fault("metrics", exc)

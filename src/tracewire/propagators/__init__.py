"""Spec-exact propagators for the wire formats tracewire speaks.

Each is an OpenTelemetry ``TextMapPropagator``, so it can also be installed globally with
``opentelemetry.propagate.set_global_textmap``. See ``docs/propagation.md`` for where they differ
from the ones shipped with OpenTelemetry Python and why.
"""

from tracewire.propagators.b3 import B3Propagator
from tracewire.propagators.baggage import BaggagePropagator
from tracewire.propagators.tracecontext import TraceContextPropagator

__all__ = ["B3Propagator", "BaggagePropagator", "TraceContextPropagator"]

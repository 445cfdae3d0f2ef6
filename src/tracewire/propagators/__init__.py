"""Spec-exact propagators for the wire formats tracewire speaks.

Each is an OpenTelemetry ``TextMapPropagator``, so it can also be installed globally with
``opentelemetry.propagate.set_global_textmap``. See ``docs/propagation.md`` for where they differ
from the ones shipped with OpenTelemetry Python and why.
"""

from opentelemetry.context import create_key

from tracewire.propagators.b3 import B3Propagator
from tracewire.propagators.baggage import BaggagePropagator
from tracewire.propagators.tracecontext import TraceContextPropagator

__all__ = ["INVALID_KEY", "B3Propagator", "BaggagePropagator", "TraceContextPropagator"]

# Set (to True) in the context a propagator returns when its trace header was present but
# unusable, so that the SERVER span can say ``tracewire.parent.source = invalid:<format>``.
INVALID_KEY = create_key("tracewire-invalid-trace-header")

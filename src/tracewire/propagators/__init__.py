"""Spec-exact propagators for the wire formats tracewire speaks.

Each is an OpenTelemetry ``TextMapPropagator``, so it can also be installed globally with
``opentelemetry.propagate.set_global_textmap``. See ``docs/propagation.md`` for where they differ
from the ones shipped with OpenTelemetry Python and why.

``INVALID_KEY``: the context key that ``TraceContextPropagator`` and ``B3Propagator`` set to
``True`` when their trace headers are present but unusable (so the request starts a new trace).
It is set only on that path; ``get_value(INVALID_KEY, context)`` is ``None`` otherwise. Baggage
and ``tracestate`` problems never set it: they never invalidate the trace context.
"""

from opentelemetry.context import create_key

# Defined before the propagator modules are imported: they import it from here.
INVALID_KEY = create_key("tracewire-invalid-trace-header")

from tracewire.propagators.b3 import B3Propagator  # noqa: E402
from tracewire.propagators.baggage import BaggagePropagator  # noqa: E402
from tracewire.propagators.tracecontext import TraceContextPropagator  # noqa: E402

__all__ = ["INVALID_KEY", "B3Propagator", "BaggagePropagator", "TraceContextPropagator"]

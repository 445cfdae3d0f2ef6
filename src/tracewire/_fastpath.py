"""The not-sampled shortcut: the child of a not-sampled parent, made without the SDK's sampler.

Under the SDK's default sampler (``ParentBased`` whose not-sampled-parent delegates are
``ALWAYS_OFF``) a not-sampled parent always yields a non-recording child. The sampler round
trip is most of the cost of such a request, and its answer is known, so the child is made
here exactly as the SDK makes it: a ``NonRecordingSpan`` with the parent's trace id and trace
state, a fresh span id from the provider's id generator, the sampled flag off, and W3C's
random-trace-id flag kept.

This relies on SDK internals, all read once per tracer (never per request) and checked by
``tests/test_fastpath.py`` against the real SDK for every sampler shape:

* ``opentelemetry.trace.ProxyTracer._tracer``: what the global tracer resolved to, once an
  SDK provider was set globally (until then there is no answer, and it is asked again);
* ``opentelemetry.sdk.trace.Tracer.sampler`` and ``.id_generator``;
* ``ParentBased._remote_parent_not_sampled`` / ``._local_parent_not_sampled``, which must be
  the SDK's own ``ALWAYS_OFF`` static sampler;
* ``ParentBased._root``, asked for ``sampled=ignore`` (``tracewire.trust``), where the
  caller's sampled flag must not decide;
* ``Tracer.sampler``'s type, to know that the SDK's own samplers never read attributes
  (so they are set only on spans that record);
* ``Tracer._is_enabled()`` (the experimental tracer configurator) and
  ``Tracer._tracer_metrics`` (the SDK's own span metrics, ``NoOpTracerMetrics`` unless
  ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``): a disabled tracer, or counted spans, are
  left to the SDK.

Anything else (a custom sampler, custom delegates, no SDK) turns the shortcut off: the SDK
then decides as usual.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, Tracer

from tracewire.propagators.tracecontext import FLAG_RANDOM

__all__ = ["UnsampledChildren"]


class _Plan:
    """What the probe found for one tracer."""

    __slots__ = ("enabled", "ids", "local", "remote")

    def __init__(self, ids: Any, remote: bool, local: bool, enabled: Any = None) -> None:
        self.ids = ids
        self.remote = remote
        self.local = local
        # The tracer's "am I enabled" check, asked per span: its config can change at run time.
        self.enabled = enabled


_OFF = _Plan(None, remote=False, local=False)


def _sdk_tracer(tracer: Tracer) -> Any:
    """What ``tracer`` stands for (a proxy's resolved tracer); ``None`` while unresolved."""
    real: Any = tracer
    if type(tracer).__name__ == "ProxyTracer":
        real = getattr(tracer, "_tracer", None)
        if real is None or type(real).__name__ in ("NoOpTracer", "ProxyTracer"):
            return None
    return real


def _probe(tracer: Tracer) -> _Plan | None:
    """The plan for ``tracer``; ``None`` while the global provider is not set yet."""
    real = _sdk_tracer(tracer)
    if real is None:
        return None
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer
        from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return _OFF
    if not isinstance(real, SdkTracer) or type(real.sampler) is not ParentBased:
        return _OFF

    def always_off(name: str) -> bool:
        delegate = getattr(real.sampler, name, None)
        return (
            isinstance(delegate, StaticSampler) and delegate.get_description() == "AlwaysOffSampler"
        )

    remote = always_off("_remote_parent_not_sampled")
    local = always_off("_local_parent_not_sampled")
    metrics = getattr(real, "_tracer_metrics", None)
    if not (remote or local) or (
        metrics is not None and type(metrics).__name__ != "NoOpTracerMetrics"
    ):
        # With the SDK's own span metrics on, every started span is counted: leave it to the SDK.
        return _OFF
    return _Plan(real.id_generator, remote, local, getattr(real, "_is_enabled", None))


def _builtin(sampler: Any) -> bool:
    """Whether ``sampler`` is one of the SDK's own, which never read a span's attributes."""
    try:
        from opentelemetry.sdk.trace.sampling import (
            ParentBased,
            ParentBasedTraceIdRatio,
            StaticSampler,
            TraceIdRatioBased,
        )
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return False
    kind = type(sampler)
    if kind in (StaticSampler, TraceIdRatioBased):
        return True
    if kind not in (ParentBased, ParentBasedTraceIdRatio):
        return False
    delegates = (
        "_root",
        "_remote_parent_sampled",
        "_remote_parent_not_sampled",
        "_local_parent_sampled",
        "_local_parent_not_sampled",
    )
    return all(_builtin(getattr(sampler, name, None)) for name in delegates)


class UnsampledChildren:
    """Makes the SDK's not-sampled child of a not-sampled parent, when the shortcut holds."""

    __slots__ = ("_plan", "_reads", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._plan: _Plan | None = None
        self._reads: bool | None = None

    def sampler_reads_attributes(self) -> bool:
        """Whether the provider's sampler may look at a span's attributes (a custom one may;
        the SDK's own never do). Only then are they built before the sampler decides: for a
        span it drops, nothing is built at all."""
        reads = self._reads
        if reads is None:
            real = _sdk_tracer(self._tracer)
            if real is None:
                return True  # not known yet: assume it reads them
            reads = self._reads = not _builtin(getattr(real, "sampler", None))
        return reads

    def root_sampled(self, trace_id: int, name: str) -> bool | None:
        """What the provider's sampler decides for a new root in trace ``trace_id`` (for
        ``sampled=ignore``): under ``ParentBased``, its root delegate (``_root``, an SDK
        internal) asked as for a span without parent; ``None`` for other samplers, which
        decide without the parent's flag anyway (or as they choose)."""
        real = _sdk_tracer(self._tracer)
        sampler = getattr(real, "sampler", None)
        root = getattr(sampler, "_root", None)
        if root is None or type(sampler).__name__ != "ParentBased":
            return None
        result = root.should_sample(None, trace_id, name)
        return bool(result.decision.is_sampled())

    def child(self, parent: SpanContext) -> NonRecordingSpan | None:
        """The child span of the not-sampled ``parent``, or ``None``: ask the SDK instead."""
        plan = self._plan
        if plan is None:
            plan = _probe(self._tracer)
            if plan is None:
                return None
            self._plan = plan
        if not (plan.remote if parent.is_remote else plan.local):
            return None
        if plan.enabled is not None and not plan.enabled():
            return None  # a disabled tracer gives the parent itself: the SDK's own answer
        return NonRecordingSpan(
            SpanContext(
                parent.trace_id,
                plan.ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(parent.trace_flags & FLAG_RANDOM),
                trace_state=parent.trace_state,
            )
        )

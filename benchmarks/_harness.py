"""Shared machinery: the workload, tracer providers per sampling mode, interleaved timing.

Every suite measures *variants* of the same workload: ``bare`` (no tracing), ``sdk floor``
(the least the OpenTelemetry SDK itself costs for one span per request, see
``benchmarks/floors.py``), ``tracewire`` and ``contrib`` (the OpenTelemetry contrib
instrumentation). A round runs each variant ``iterations`` times back to back and records
microseconds per request; the variants are interleaved, in an order rotated each round, so that
drift of the machine (CPU frequency, other load) hits all of them alike. Overhead is computed
per round against the bare variant of that same round and summarised by its median over rounds.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.baggage import set_baggage
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

# ------------------------------------------------------------------------------ the modes
# sampled:           a sampled parent (flags 01) under the SDK's default ParentBased(ALWAYS_ON)
# unsampled-parent:  a not-sampled parent (flags 00) under the same default sampler
# always-off:        a sampled parent, but the sampler is ALWAYS_OFF: the sampler says no
# ratio-off:         a sampled parent, TraceIdRatioBased(RATIO) (not parent-based) rejecting
#                    this trace id
MODES = ("sampled", "unsampled-parent", "always-off", "ratio-off")
NOT_RECORDED = MODES[1:]
MODE_TEXT = {
    "sampled": "sampled parent, default ParentBased(ALWAYS_ON) sampler",
    "unsampled-parent": "traceparent ...-00 under the default ParentBased(ALWAYS_ON) sampler",
    "always-off": "sampled parent, ALWAYS_OFF sampler (the sampler says no)",
    "ratio-off": "sampled parent, TraceIdRatioBased(0.25) rejecting the trace id",
}
PROCESSORS = ("batch", "simple")

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
# TraceIdRatioBased samples when the low 64 bits of the trace id are below rate * 2**64; those
# of TRACE_ID (0xa3ce...) are at 0.64 * 2**64, so a rate of 0.25 rejects it.
RATIO = 0.25

# The request workload of issue 11: 8 request headers, `tracestate` and `baggage` with 2
# members each, next to `traceparent`.
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
BAGGAGE = "userId=alice,serverNode=DF%2028"
HOST = "127.0.0.1:8000"
USER_AGENT = "tracewire-bench/1.0"


def mode_check(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def parent_sampled(mode: str) -> bool:
    """Whether the incoming parent says sampled (every mode but ``unsampled-parent``)."""
    return mode_check(mode) != "unsampled-parent"


def traceparent(mode: str) -> str:
    """The incoming W3C traceparent of ``mode``."""
    return f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-{'01' if parent_sampled(mode) else '00'}"


def request_headers(mode: str) -> list[tuple[str, str]]:
    """The 8 request headers of every server request (lowercase names, in wire order)."""
    return [
        ("host", HOST),
        ("user-agent", USER_AGENT),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("traceparent", traceparent(mode)),
        ("tracestate", TRACESTATE),
        ("baggage", BAGGAGE),
    ]


def parent_span_context(mode: str) -> SpanContext:
    """The remote parent the request headers describe, already parsed."""
    flags = TraceFlags(TraceFlags.SAMPLED if parent_sampled(mode) else TraceFlags.DEFAULT)
    state = TraceState([("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")])
    return SpanContext(TRACE_ID, PARENT_ID, is_remote=True, trace_flags=flags, trace_state=state)


def parent_context(mode: str, with_baggage: bool = False) -> Context:
    """A context holding the remote parent span (and optionally the 2 baggage members)."""
    ctx = set_span_in_context(NonRecordingSpan(parent_span_context(mode)), Context())
    if with_baggage:
        ctx = set_baggage("userId", "alice", ctx)
        ctx = set_baggage("serverNode", "DF 28", ctx)
    return ctx


def sampler(mode: str) -> Sampler:
    mode_check(mode)
    if mode == "always-off":
        return ALWAYS_OFF
    if mode == "ratio-off":
        return TraceIdRatioBased(RATIO)
    return ParentBased(ALWAYS_ON)  # the SDK's default


def recording(mode: str) -> bool:
    return mode_check(mode) == "sampled"


class CountingExporter(SpanExporter):
    """Drops spans but counts them, so a run can prove every variant really exported."""

    def __init__(self) -> None:
        self.count = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        if spans:
            self.last = spans[-1]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class Tracing:
    """An SDK ``TracerProvider`` as the benchmarks use it: the mode's sampler, a span
    processor (``batch`` by default, as in production, or ``simple``) and an exporter that
    drops the spans (counting them)."""

    processor: str = "batch"
    mode: str = "sampled"
    provider: TracerProvider = field(init=False)
    exporter: CountingExporter = field(init=False)

    def __post_init__(self) -> None:
        if self.processor not in PROCESSORS:
            raise ValueError(f"processor must be one of {PROCESSORS}, got {self.processor!r}")
        self.exporter = CountingExporter()
        self.provider = TracerProvider(sampler=sampler(self.mode))
        if self.processor == "simple":
            self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        else:
            # The SDK's defaults (queue 2048, batches of 512, 5 s delay), as a service gets them.
            self.provider.add_span_processor(BatchSpanProcessor(self.exporter))

    def flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


# A variant is a callable running ``n`` requests; it returns nothing. Timing wraps it.
Runner = Callable[[int], None]
ROLES = ("bare", "floor", "tracewire", "contrib", "other")


@dataclass
class Variant:
    name: str
    run: Runner
    role: str = "other"  # one of ROLES
    note: str = ""
    setup: Callable[[], None] | None = None  # called before each timed block
    teardown: Callable[[], None] | None = None  # called after each timed block
    requests: int = 0  # requests run so far (warm-up and timed)


@dataclass
class Measurement:
    name: str
    role: str
    note: str
    rounds_us: list[float]
    overhead_rounds_us: list[float] = field(default_factory=list)
    # min(this variant's rounds) - min(bare's rounds): the least-disturbed estimate, a
    # cross-check for the median on a busy machine.
    best_overhead_us: float | None = None
    requests: int = 0

    @property
    def median_us(self) -> float:
        return statistics.median(self.rounds_us)

    @property
    def overhead_us(self) -> float | None:
        return statistics.median(self.overhead_rounds_us) if self.overhead_rounds_us else None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "role": self.role,
            "note": self.note,
            "us_per_request": round(self.median_us, 3),
            "spread_us": [round(min(self.rounds_us), 3), round(max(self.rounds_us), 3)],
            "rounds_us": [round(v, 3) for v in self.rounds_us],
            "requests": self.requests,
        }
        if self.overhead_rounds_us:
            data["overhead_us"] = round(statistics.median(self.overhead_rounds_us), 3)
            data["overhead_spread_us"] = [
                round(min(self.overhead_rounds_us), 3),
                round(max(self.overhead_rounds_us), 3),
            ]
        if self.best_overhead_us is not None:
            data["best_overhead_us"] = round(self.best_overhead_us, 3)
        return data


# "cpu": CPU time of this process (all its threads, so a batch processor's export thread
# counts); time the machine spends on other processes is not charged to the variant being
# timed, which matters on a shared machine. "wall": elapsed time.
CLOCKS: dict[str, Callable[[], int]] = {
    "cpu": time.process_time_ns,
    "wall": time.perf_counter_ns,
}


def measure(
    variants: Sequence[Variant], iterations: int, rounds: int, clock: str = "cpu"
) -> list[Measurement]:
    """Time every variant ``rounds`` times, interleaved; return per-variant measurements."""
    if iterations < 1 or rounds < 1:
        raise ValueError("iterations and rounds must be >= 1")
    now = CLOCKS[clock]
    warm = max(iterations // 10, 20)
    for variant in variants:
        _timed(variant, warm, now)
    results = {v.name: Measurement(v.name, v.role, v.note, []) for v in variants}
    for index in range(rounds):
        shift = index % len(variants)
        order = [*variants[shift:], *variants[:shift]]
        for variant in order:
            elapsed = _timed(variant, iterations, now)
            results[variant.name].rounds_us.append(elapsed / iterations)
    for variant in variants:
        results[variant.name].requests = variant.requests
    bare = next((results[v.name] for v in variants if v.role == "bare"), None)
    if bare is not None:
        for m in results.values():
            if m is not bare:
                pair_with(m, bare)
    return [results[v.name] for v in variants]


def pair_with(m: Measurement, bare: Measurement) -> None:
    """Fill ``m``'s overheads against ``bare`` measured in the same rounds."""
    m.overhead_rounds_us = [v - b for v, b in zip(m.rounds_us, bare.rounds_us, strict=True)]
    m.best_overhead_us = min(m.rounds_us) - min(bare.rounds_us)


def _timed(variant: Variant, n: int, now: Callable[[], int]) -> float:
    """Microseconds for ``n`` requests of ``variant``. GC stays on: garbage is a real cost."""
    if variant.setup is not None:
        variant.setup()
    gc.collect()
    try:
        start = now()
        variant.run(n)
        elapsed = now() - start
    finally:
        if variant.teardown is not None:
            variant.teardown()
    variant.requests += n
    return elapsed / 1000.0


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


@dataclass
class SuiteResult:
    """One suite (an app or client) in one sampling mode: its measurements and ratios."""

    suite: str
    mode: str
    kind: str  # "in-process" or "end-to-end"
    measurements: list[Measurement]
    iterations: int
    rounds: int
    notes: list[str] = field(default_factory=list)
    exported: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def by_role(self, role: str) -> Measurement | None:
        return next((m for m in self.measurements if m.role == role), None)

    def overhead(self, role: str) -> float | None:
        m = self.by_role(role)
        return None if m is None else m.overhead_us

    def best(self, role: str) -> float | None:
        m = self.by_role(role)
        return None if m is None else m.best_overhead_us

    def ratio(self, subject: str = "tracewire", against: str = "floor") -> float | None:
        """``subject``'s median overhead divided by ``against``'s (roles)."""
        return _ratio(self.overhead(subject), self.overhead(against))

    def best_ratio(self, subject: str = "tracewire", against: str = "floor") -> float | None:
        return _ratio(self.best(subject), self.best(against))

    def noisy(self) -> bool:
        """True when a variant's overhead moved by more than half its median between rounds."""
        for role in ("floor", "tracewire", "contrib"):
            m = self.by_role(role)
            if m is None or not m.overhead_rounds_us or m.overhead_us is None:
                continue
            spread = max(m.overhead_rounds_us) - min(m.overhead_rounds_us)
            if spread > 0.5 * abs(m.overhead_us):
                return True
        return False

    def as_dict(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "suite": self.suite,
            "mode": self.mode,
            "mode_text": MODE_TEXT.get(self.mode, self.mode),
            "kind": self.kind,
            "iterations": self.iterations,
            "rounds": self.rounds,
            "variants": {m.name: m.as_dict() for m in self.measurements},
            "overhead_us": {
                role: r(self.overhead(role)) for role in ("floor", "tracewire", "contrib")
            },
            "ratios": {
                "tracewire_vs_floor": r(self.ratio("tracewire", "floor")),
                "tracewire_vs_contrib": r(self.ratio("tracewire", "contrib")),
                "floor_vs_contrib": r(self.ratio("floor", "contrib")),
                "best_tracewire_vs_floor": r(self.best_ratio("tracewire", "floor")),
            },
            "noisy": self.noisy(),
            "exported_spans": self.exported,
            "notes": self.notes,
            **self.extra,
        }


def iterations_from(text: str, presets: dict[str, int]) -> int:
    """``--iterations`` accepts a preset name or a positive integer."""
    if text in presets:
        return presets[text]
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"--iterations must be a positive integer or one of {', '.join(presets)}"
        ) from None
    if value < 1:
        raise ValueError("--iterations must be >= 1")
    return value


def finish(suite: SuiteResult, tracings: dict[str, Tracing], processor: str, clock: str) -> None:
    """Flush and shut down every variant's provider, recording how many spans each exported."""
    for name, tracing in tracings.items():
        tracing.flush()
        suite.exported[name] = tracing.exporter.count
        tracing.shutdown()
    suite.notes.append(f"span processor: {processor}; clock: {clock}")


def check_exports(
    name: str, role: str, mode: str, tracing: Tracing, expected_trace: int = TRACE_ID
) -> None:
    """After one request: a recording mode exported a span of the incoming trace (for every
    variant but bare); a not-recorded one exported nothing."""
    tracing.flush()
    if role == "bare":
        return
    last = tracing.exporter.last
    if recording(mode):
        if last is None or last.context is None or last.context.trace_id != expected_trace:
            raise RuntimeError(f"{name} ({mode}): the request exported no span of the trace")
    elif tracing.exporter.count:
        raise RuntimeError(
            f"{name} ({mode}): a not-recorded request exported {tracing.exporter.count} spans"
        )

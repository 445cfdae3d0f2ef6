"""Shared machinery: tracer providers per sampling mode, interleaved timing rounds, statistics.

Every suite measures *variants* (bare, tracewire, contrib, ...) of the same workload. A round
runs each variant ``iterations`` times back to back and records microseconds per request; the
variants are interleaved (in an order rotated each round) so that drift of the machine (CPU
frequency, other load) hits all of them alike. Overhead is computed per round against the bare
variant of that same round, then summarised by its median and its spread over rounds.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

MODES = ("sampled", "unsampled")
PROCESSORS = ("simple", "batch")

# Targets from the project's guide: tracewire's added cost per request as a fraction of the
# OpenTelemetry contrib instrumentation's added cost, measured in the same run.
TARGET_RATIO = {"sampled": 1 / 5, "unsampled": 1 / 10}
# The same targets in absolute numbers on the reference machine (2 cores), for information.
BUDGET_US = {"sampled": 34.0, "unsampled": 8.0}

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


def traceparent(mode: str) -> str:
    """An incoming W3C traceparent whose sampled flag matches ``mode``."""
    flags = "01" if mode == "sampled" else "00"
    return f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-{flags}"


def parent_context(mode: str) -> Context:
    """A context holding a remote parent span, sampled or not, for client-side suites."""
    flags = TraceFlags(TraceFlags.SAMPLED if mode == "sampled" else TraceFlags.DEFAULT)
    span_context = SpanContext(TRACE_ID, PARENT_ID, is_remote=True, trace_flags=flags)
    return set_span_in_context(NonRecordingSpan(span_context), Context())


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
    """A tracer provider as the benchmarks use it: parent-based ALWAYS_ON, no-op export.

    The sampling decision therefore follows the incoming traceparent (or the current parent
    for client suites): ``sampled`` mode sends flags ``01``, ``unsampled`` mode ``00``.
    """

    processor: str = "simple"
    provider: TracerProvider = field(init=False)
    exporter: CountingExporter = field(init=False)

    def __post_init__(self) -> None:
        if self.processor not in PROCESSORS:
            raise ValueError(f"processor must be one of {PROCESSORS}, got {self.processor!r}")
        self.exporter = CountingExporter()
        self.provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
        if self.processor == "simple":
            self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        else:
            self.provider.add_span_processor(BatchSpanProcessor(self.exporter))

    def flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


# A variant is a callable running ``n`` requests; it returns nothing. Timing wraps it.
Runner = Callable[[int], None]


@dataclass
class Variant:
    name: str
    run: Runner
    role: str = "other"  # "bare", "tracewire", "contrib", "floor" or "other"
    note: str = ""
    setup: Callable[[], None] | None = None  # called before each timed block
    teardown: Callable[[], None] | None = None  # called after each timed block


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
    return elapsed / 1000.0


@dataclass
class SuiteResult:
    """One suite in one sampling mode: the measurements plus the verdict against targets."""

    suite: str
    mode: str
    kind: str  # "in-process" or "end-to-end"
    measurements: list[Measurement]
    iterations: int
    rounds: int
    notes: list[str] = field(default_factory=list)
    exported: dict[str, int] = field(default_factory=dict)

    def by_role(self, role: str) -> Measurement | None:
        return next((m for m in self.measurements if m.role == role), None)

    def ratio(self, name: str | None = None) -> float | None:
        """tracewire's overhead (or ``name``'s) divided by contrib's overhead."""
        contrib = self.by_role("contrib")
        subject = (
            self.by_role("tracewire")
            if name is None
            else next((m for m in self.measurements if m.name == name), None)
        )
        if contrib is None or subject is None:
            return None
        c, s = contrib.overhead_us, subject.overhead_us
        if c is None or s is None or c <= 0:
            return None
        return s / c

    def beyond_floor(self) -> tuple[float, float] | None:
        """(tracewire, contrib) overhead minus the one-SDK-span floor: each one's own work."""
        floor, tracewire, contrib = (self.by_role(r) for r in ("floor", "tracewire", "contrib"))
        if floor is None or tracewire is None or contrib is None:
            return None
        f, t, c = floor.overhead_us, tracewire.overhead_us, contrib.overhead_us
        if f is None or t is None or c is None:
            return None
        return t - f, c - f

    def verdict(self) -> bool | None:
        """Pass/fail of the ratio target; ``None`` where no target applies."""
        if self.kind != "in-process":
            return None
        ratio = self.ratio()
        if ratio is None:
            return None
        return ratio <= TARGET_RATIO[self.mode]

    def noisy(self) -> bool:
        """True when tracewire's or contrib's overhead moved by more than half its median
        between rounds: the machine was busy, read the verdict with care (or run again)."""
        for role in ("tracewire", "contrib"):
            m = self.by_role(role)
            if m is None or not m.overhead_rounds_us or m.overhead_us is None:
                continue
            spread = max(m.overhead_rounds_us) - min(m.overhead_rounds_us)
            if spread > 0.5 * abs(m.overhead_us):
                return True
        return False

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio()
        floor_m = self.by_role("floor")
        floor = self.ratio(floor_m.name) if floor_m is not None else None
        own = self.beyond_floor()
        tracewire = self.by_role("tracewire")
        return {
            "suite": self.suite,
            "mode": self.mode,
            "kind": self.kind,
            "iterations": self.iterations,
            "rounds": self.rounds,
            "variants": {m.name: m.as_dict() for m in self.measurements},
            "tracewire_overhead_ratio_vs_contrib": None if ratio is None else round(ratio, 4),
            "floor_overhead_ratio_vs_contrib": None if floor is None else round(floor, 4),
            "beyond_floor_us": (
                None
                if own is None
                else {"tracewire": round(own[0], 3), "contrib": round(own[1], 3)}
            ),
            "target_ratio": TARGET_RATIO[self.mode] if self.kind == "in-process" else None,
            "budget_us": BUDGET_US[self.mode] if self.kind == "in-process" else None,
            "tracewire_within_budget_us": (
                None
                if tracewire is None or tracewire.overhead_us is None or self.kind != "in-process"
                else tracewire.overhead_us <= BUDGET_US[self.mode]
            ),
            "pass": self.verdict(),
            "noisy": self.noisy(),
            "exported_spans": self.exported,
            "notes": self.notes,
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

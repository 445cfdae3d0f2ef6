"""Where tracewire's time per request goes: cProfile and a sampling profiler of its paths.

Usage (from the repository root)::

    python -m benchmarks.profiling                        # the six standard paths
    python -m benchmarks.profiling asgi-sampled --top 15  # one path
    python -m benchmarks.profiling --sampler py-spy       # py-spy instead of pyinstrument
    python -m benchmarks.profiling --breakdown-only       # SDK/API building blocks timed alone

Paths: ``asgi-sampled``, ``asgi-unsampled-parent``, ``asgi-always-off``, ``wsgi-sampled``,
``httpx-sampled``, ``requests-sampled`` (any ``{asgi,starlette,wsgi,flask,httpx,httpx-async,
requests}-{mode}`` works). Each drives the benchmarks' synthetic request through the tracewire
variant only, with the same tracer provider set-up (``BatchSpanProcessor``, dropping
exporter), and prints the top self-time entries of tracewire's own code and of OpenTelemetry's
(SDK and API), per request. cProfile inflates every Python call (read its numbers as shares);
the sampling profiler (pyinstrument in process, or py-spy on a child process) does not, and is
the better guide to where the microseconds are.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._harness import MODES, Tracing, Variant

STANDARD = (
    "asgi-sampled",
    "asgi-unsampled-parent",
    "asgi-always-off",
    "wsgi-sampled",
    "httpx-sampled",
    "requests-sampled",
)
TARGETS = ("asgi", "starlette", "wsgi", "flask", "httpx", "httpx-async", "requests")
REPO = Path(__file__).resolve().parent.parent


def split_path(path: str) -> tuple[str, str]:
    for target in sorted(TARGETS, key=len, reverse=True):
        if path.startswith(target + "-") and path[len(target) + 1 :] in MODES:
            return target, path[len(target) + 1 :]
    raise ValueError(
        f"unknown path {path!r}: use TARGET-MODE, TARGET in {TARGETS}, MODE in {MODES}"
    )


def tracewire_runner(
    target: str, mode: str, processor: str = "batch"
) -> tuple[Callable[[int], None], Tracing, Callable[[], None]]:
    """``run(n)`` for the tracewire variant of ``target`` in ``mode``, its provider, clean-up."""
    loop = asyncio.new_event_loop()
    cleanups: list[Callable[[], object]] = []
    if target in ("asgi", "starlette"):
        from benchmarks import bench_asgi

        plan, tracings = bench_asgi.build(
            "raw" if target == "asgi" else "starlette", mode, processor, loop
        )
    elif target in ("wsgi", "flask"):
        from benchmarks import bench_wsgi

        plan, tracings = bench_wsgi.build("raw" if target == "wsgi" else "flask", mode, processor)
    else:
        from benchmarks import bench_client

        plan, tracings, cleanups = bench_client.build(target, mode, processor, loop)
    variant: Variant = next(v for v in plan if v.role == "tracewire")
    for name, tracing in tracings.items():
        if name != variant.name:
            tracing.shutdown()

    def close() -> None:
        for undo in cleanups:
            undo()
        tracings[variant.name].shutdown()
        loop.close()

    return variant.run, tracings[variant.name], close


def area(file: str) -> str:
    """Whose code ``file`` is: tracewire, sdk, api or other."""
    parts = Path(file).parts
    if "tracewire" in parts and "benchmarks" not in parts:
        return "tracewire"
    if "opentelemetry" in parts:
        return "sdk" if "sdk" in parts else "api"
    return "other"


def _short(file: str, line: int, function: str) -> str:
    parts = Path(file).parts
    for anchor in ("tracewire", "opentelemetry"):
        if anchor in parts:
            at = len(parts) - 1 - parts[::-1].index(anchor)
            return f"{'/'.join(parts[at:])}:{line}({function})"
    return f"{Path(file).name}:{line}({function})"


Entry = tuple[str, float, int]  # (label, self seconds, calls)


def cprofile(run: Callable[[int], None], requests: int) -> tuple[dict[str, list[Entry]], float]:
    """Self time per function under cProfile, grouped by area; and the total seconds."""
    profiler = cProfile.Profile()
    profiler.enable()
    run(requests)
    profiler.disable()
    stats: Any = pstats.Stats(profiler).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    grouped: dict[str, list[Entry]] = defaultdict(list)
    total = 0.0
    for (file, line, function), (_cc, calls, tottime, _ct, _callers) in stats.items():
        total += tottime
        grouped[area(file)].append((_short(file, line, function), tottime, calls))
    return grouped, total


def pyinstrument_profile(
    run: Callable[[int], None], requests: int
) -> tuple[dict[str, list[Entry]], float]:
    """Self time per function from pyinstrument's samples, grouped by area."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    run(requests)
    profiler.stop()
    root = profiler.last_session.root_frame() if profiler.last_session else None
    totals: dict[tuple[str, str], float] = defaultdict(float)
    grand = 0.0

    def walk(frame: Any) -> None:
        nonlocal grand
        children = list(frame.children)
        if not frame.is_synthetic:
            own = frame.time - sum(c.time for c in children if not c.is_synthetic)
            file = frame.file_path or "?"
            label = _short(file, frame.line_no or 0, frame.function)
            totals[(area(file), label)] += own
            grand += own
        for child in children:
            walk(child)

    if root is not None:
        walk(root)
    grouped: dict[str, list[Entry]] = defaultdict(list)
    for (where, label), seconds in totals.items():
        grouped[where].append((label, seconds, 0))
    return grouped, grand


def pyspy_profile(path: str, seconds: float) -> tuple[dict[str, list[Entry]], float, int]:
    """Self time per function from py-spy sampling a child process that runs ``path``."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.txt"
        count_file = Path(tmp) / "count.txt"
        command = [
            pyspy,
            "record",
            "--nonblocking",  # sample without pausing the child: no slow-down
            "--full-filenames",
            "--rate",
            "2000",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--",
            sys.executable,
            "-m",
            "benchmarks.profiling",
            "--workload",
            path,
            "--seconds",
            str(seconds),
            "--count-file",
            str(count_file),
        ]
        subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=seconds + 120)
        requests = int(count_file.read_text(encoding="ascii"))
        lines = raw.read_text(encoding="utf-8").splitlines()
    totals: dict[tuple[str, str], int] = defaultdict(int)
    samples = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or any(mark in stack for mark in _SETUP_FRAMES):
            continue  # imports and building the variant, not requests
        leaf = stack.split(";")[-1]  # "function (file:line)"
        function, _, where = leaf.partition(" (")
        file = where.rstrip(")").rpartition(":")[0]
        n = int(count_text)
        samples += n
        # Aggregated per function (py-spy reports the line being run, not the def's).
        totals[(area(file), _short(file, 0, function).replace(":0(", "("))] += n
    grouped: dict[str, list[Entry]] = defaultdict(list)
    per_sample = 1 / 2000
    for (where, label), n in totals.items():
        grouped[where].append((label, n * per_sample, 0))
    return grouped, samples * per_sample, requests


# Stacks under these frames are the child's set-up (imports, building the variant).
_SETUP_FRAMES = ("_find_and_load", "tracewire_runner", "_call_with_frames_removed")


def workload(path: str, seconds: float, count_file: Path | None) -> None:
    """The child of ``--sampler py-spy``: run ``path`` for ``seconds`` after a warm-up."""
    target, mode = split_path(path)
    run, _tracing, close = tracewire_runner(target, mode)
    run(500)
    served = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        run(200)
        served += 200
    close()
    if count_file is not None:
        count_file.write_text(str(served), encoding="ascii")


def render(
    title: str, grouped: dict[str, list[Entry]], total: float, requests: int, top: int
) -> str:
    lines = [f"### {title}: {requests} requests, {total / requests * 1e6:.1f} us/request profiled"]
    shares = {k: sum(e[1] for e in v) for k, v in grouped.items()}
    lines.append(
        "    share of self time: "
        + ", ".join(
            f"{k} {shares.get(k, 0.0) / total:.0%}" for k in ("tracewire", "sdk", "api", "other")
        )
    )
    for where, heading in (
        ("tracewire", "tracewire"),
        ("sdk", "OpenTelemetry SDK"),
        ("api", "OpenTelemetry API"),
    ):
        entries = sorted(grouped.get(where, []), key=lambda e: e[1], reverse=True)[:top]
        lines.append(f"  top {top} self time, {heading}:")
        for label, seconds, calls in entries:
            per = seconds / requests * 1e6
            call_text = f" {calls / requests:5.1f} calls/req" if calls else ""
            lines.append(f"    {per:7.2f} us/req {seconds / total:6.1%}{call_text}  {label}")
    return "\n".join(lines)


def profile_path(path: str, requests: int, top: int, sampler: str, seconds: float) -> str:
    target, mode = split_path(path)
    run, _tracing, close = tracewire_runner(target, mode)
    try:
        run(max(requests // 10, 100))  # warm caches and imports outside the profile
        out = [f"## {path}"]
        grouped, total = cprofile(run, requests)
        out.append(render("cProfile (inflated: read as shares)", grouped, total, requests, top))
        if sampler == "pyinstrument":
            grouped, total = pyinstrument_profile(run, requests)
            out.append(render("pyinstrument (sampling, 0.2 ms)", grouped, total, requests, top))
    finally:
        close()
    if sampler == "py-spy":
        grouped, total, served = pyspy_profile(path, seconds)
        out.append(render("py-spy (sampling, 2000 Hz, child process)", grouped, total, served, top))
    return "\n".join(out) + "\n"


def _tracewire_blocks(carrier: dict[str, str], empty: Any) -> list[tuple[str, Callable[[], Any]]]:
    """tracewire's public parse functions and propagators, timed alone; whatever a rewrite
    renamed is left out (with a note) rather than breaking the breakdown."""
    from benchmarks._harness import BAGGAGE, TRACESTATE

    try:
        from tracewire.propagators import BaggagePropagator, TraceContextPropagator
        from tracewire.propagators.baggage import parse_baggage
        from tracewire.propagators.tracecontext import parse_traceparent, parse_tracestate
    except ImportError as exc:
        print(f"  (tracewire parse blocks left out: {exc})")
        return []
    traceparent = carrier["traceparent"]
    tracecontext, baggage = TraceContextPropagator(), BaggagePropagator()
    return [
        ("tracewire parse_traceparent", lambda: parse_traceparent(traceparent)),
        ("tracewire parse_tracestate (2 members)", lambda: parse_tracestate([TRACESTATE])),
        ("tracewire parse_baggage (2 members)", lambda: parse_baggage([BAGGAGE])),
        (
            "tracewire TraceContextPropagator().extract(dict of 8 headers)",
            lambda: tracecontext.extract(carrier, empty),
        ),
        (
            "tracewire BaggagePropagator().extract(dict of 8 headers)",
            lambda: baggage.extract(carrier, empty),
        ),
    ]


def breakdown(number: int = 2000, repeat: int = 15) -> list[tuple[str, float]]:
    """Microseconds per call of the SDK/API building blocks of a traced request (best of
    ``repeat``), with tracewire's public parse functions. The blocks overlap."""
    from opentelemetry.baggage import set_baggage
    from opentelemetry.context import Context, attach, detach
    from opentelemetry.trace import SpanKind, set_span_in_context

    from benchmarks._harness import parent_context, request_headers
    from benchmarks.floors import SERVER_ATTRIBUTES

    results: list[tuple[str, float]] = []
    carrier = dict(request_headers("sampled"))
    empty = Context()
    sampled_parent = parent_context("sampled")
    items: list[tuple[str, Callable[[], Any]]] = _tracewire_blocks(carrier, empty)
    items.append(
        (
            "API set_baggage x2 (one context copy per member)",
            lambda: set_baggage("b", "2", set_baggage("a", "1", empty)),
        )
    )
    for mode in ("sampled", "unsampled-parent", "always-off"):
        tracing = Tracing("batch", mode)
        tracer = tracing.provider.get_tracer("breakdown")
        parent = parent_context(mode)

        def plain(t: Any = tracer, p: Any = parent) -> None:
            t.start_span("GET", p, kind=SpanKind.SERVER).end()

        def at_start(t: Any = tracer, p: Any = parent) -> None:
            t.start_span("GET", p, kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES).end()

        def one_by_one(t: Any = tracer, p: Any = parent) -> None:
            span = t.start_span("GET", p, kind=SpanKind.SERVER)
            for key, value in SERVER_ATTRIBUTES.items():
                span.set_attribute(key, value)
            span.end()

        def floor(t: Any = tracer, p: Any = parent) -> None:
            span = t.start_span("GET", p, kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES)
            detach(attach(set_span_in_context(span, p)))
            span.set_attribute("http.response.status_code", 200)
            span.end()

        items += [
            (f"SDK [{mode}] start_span + end, no attributes", plain),
            (f"SDK [{mode}] start_span(attributes=9) + end", at_start),
            (f"SDK [{mode}] start_span + 9 x set_attribute + end", one_by_one),
            (f"SDK [{mode}] the server floor (floors.py), no app", floor),
        ]
    items += [
        ("API attach + detach", lambda: detach(attach(sampled_parent))),
    ]
    for name, fn in items:
        best = min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6
        results.append((name, best))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling", description=__doc__)
    parser.add_argument("paths", nargs="*", default=[])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument(
        "--sampler", choices=("pyinstrument", "py-spy", "none"), default="pyinstrument"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="py-spy: seconds per path")
    parser.add_argument("--breakdown-only", action="store_true")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--workload", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload is not None:
        workload(args.workload, args.seconds, args.count_file)
        return 0
    if not args.no_breakdown:
        print("## building blocks, best of 15 x 2000 calls, us per call")
        for name, us in breakdown():
            print(f"  {us:7.2f}  {name}")
        print()
    if args.breakdown_only:
        return 0
    for path in args.paths or STANDARD:
        print(profile_path(path, args.requests, args.top, args.sampler, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

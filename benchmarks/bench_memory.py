"""Memory: 100,000 requests through each middleware and client variant, in process.

Each variant (the in-process benchmarks' ``bare`` / ``sdk floor`` / ``tracewire`` / ``contrib``
of raw ASGI, raw WSGI, httpx sync and async, requests) serves ``requests`` requests with its own
tracer provider (``BatchSpanProcessor`` to an exporter that drops spans). At every fifth of
the run the exporter is drained (``force_flush``), garbage is collected, and the interpreter's
live memory blocks (``sys.getallocatedblocks()``, every object allocation counts) and the
process's resident set size are read. For the graded variants (tracewire's) ``tracemalloc``
also runs over the last fifth (it slows a request about 5x, too much for the whole run): the
bytes allocated in that window and still alive at its end.

Pass rule ("no growth that scales with the request count"), per tracewire variant:

- live blocks: between the first checkpoint (20 % of the requests, everything warm) and the
  last, at most ``FIXED_BLOCKS`` (500) plus ``BLOCKS_PER_REQUEST`` (0.01) blocks per request
  served in between: 1,300 blocks for 80,000 requests;
- traced bytes: over the last fifth, at most ``FIXED_BYTES`` (64 KiB) plus
  ``BYTES_PER_REQUEST`` (1) byte per request: 85,536 bytes for 20,000 requests.

Anything kept per request fails by far: one leaked empty dict per request is 80,000 blocks and
1.3 MB (60x and 15x the bounds at 100,000 requests); a leaked span is several blocks and ~1 KiB
per request.
Growth that does not scale (a cache filling once, the benchmark's own checkpoint records, about
8 blocks each) stays well below. RSS is reported, not graded: the allocator keeps freed arenas,
so RSS moves in steps unrelated to the request count.

Run alone::

    python -m benchmarks.bench_memory --requests 100000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks._harness import Tracing, Variant

BLOCKS_PER_REQUEST = 0.01
BYTES_PER_REQUEST = 1.0
# A fixed allowance on top, for what does not scale (a cache filling once, the checkpoint
# records): it is what keeps a short run (the smoke test's) from failing on noise.
FIXED_BLOCKS = 500
FIXED_BYTES = 65_536
CHECKPOINTS = 5
TARGETS = ("asgi", "wsgi", "httpx", "httpx-async", "requests")
_LABEL = {
    "asgi": "ASGI raw",
    "wsgi": "WSGI raw",
    "httpx": "httpx sync",
    "httpx-async": "httpx async",
    "requests": "requests",
}


def rss_bytes() -> int:
    """The resident set size now (Linux ``/proc``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _variants(
    target: str, mode: str, processor: str, loop: asyncio.AbstractEventLoop
) -> tuple[list[Variant], dict[str, Tracing], list[Callable[[], object]]]:
    if target == "asgi":
        from benchmarks import bench_asgi

        plan, tracings = bench_asgi.build("raw", mode, processor, loop)
        return plan, tracings, []
    if target == "wsgi":
        from benchmarks import bench_wsgi

        plan, tracings = bench_wsgi.build("raw", mode, processor)
        return plan, tracings, []
    from benchmarks import bench_client

    return bench_client.build(target, mode, processor, loop)


def _checkpoint(tracing: Tracing, served: int, started: float) -> dict[str, Any]:
    tracing.flush()  # drain the batch queue: spans waiting for export are not a leak
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    return {
        "requests": served,
        "blocks": sys.getallocatedblocks(),
        "traced_bytes": traced,
        "rss_bytes": rss_bytes(),
        "seconds": round(time.perf_counter() - started, 2),
    }


def measure_variant(
    variant: Variant, tracing: Tracing, requests: int, traced: bool, chunk: int = 1000
) -> dict[str, Any]:
    """Serve ``requests`` requests through ``variant``, reading memory at each checkpoint;
    ``traced``: run tracemalloc over the last fifth."""
    step = max(requests // CHECKPOINTS, 1)
    points: list[dict[str, Any]] = []
    served = 0
    started = time.perf_counter()
    try:
        for index in range(CHECKPOINTS):
            goal = requests if index == CHECKPOINTS - 1 else step * (index + 1)
            if variant.setup is not None:
                variant.setup()
            try:
                while served < goal:
                    n = min(chunk, goal - served)
                    variant.run(n)
                    served += n
            finally:
                if variant.teardown is not None:
                    variant.teardown()
            points.append(_checkpoint(tracing, served, started))
            if traced and index == CHECKPOINTS - 2:
                tracemalloc.start()
                points[-1]["traced_bytes"] = tracemalloc.get_traced_memory()[0]
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
    first, before_last, last = points[0], points[-2], points[-1]
    window = last["requests"] - first["requests"]
    blocks = last["blocks"] - first["blocks"]
    rss = last["rss_bytes"] - first["rss_bytes"]
    block_bound = FIXED_BLOCKS + BLOCKS_PER_REQUEST * window
    ratio = blocks / block_bound if window else 0.0
    summary = (
        f"{first['requests']:,}->{last['requests']:,} requests: {blocks:+,} live blocks "
        f"(bound {block_bound:,.0f})"
    )
    growth: dict[str, Any] = {"blocks": blocks, "rss_bytes": rss, "traced_bytes": None}
    bounds: dict[str, Any] = {"blocks": round(block_bound), "traced_bytes": None}
    traced_window = None
    if traced:
        traced_window = [before_last["requests"], last["requests"]]
        span = last["requests"] - before_last["requests"]
        grown = last["traced_bytes"] - before_last["traced_bytes"]
        byte_bound = FIXED_BYTES + BYTES_PER_REQUEST * span
        growth["traced_bytes"] = grown
        bounds["traced_bytes"] = round(byte_bound)
        if span:
            ratio = max(ratio, grown / byte_bound)
        summary += (
            f"; {before_last['requests']:,}->{last['requests']:,}: {grown:+,} traced bytes "
            f"(bound {byte_bound:,.0f})"
        )
    summary += f"; RSS {rss / 1024:+,.0f} KiB (not graded)"
    return {
        "requests": served,
        "window": [first["requests"], last["requests"]],
        "traced_window": traced_window,
        "growth": growth,
        "bounds": bounds,
        "growth_ratio": round(ratio, 4),
        "checkpoints": points,
        "summary": summary,
        "verdict": "PASS" if ratio <= 1.0 else "FAIL",
    }


def run_memory(
    requests: int = 100_000,
    targets: Sequence[str] = TARGETS,
    mode: str = "sampled",
    processor: str = "batch",
    roles: Sequence[str] = ("bare", "floor", "tracewire", "contrib"),
    traced_roles: Sequence[str] = ("tracewire",),
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    results = []
    loop = asyncio.new_event_loop()
    try:
        for target in targets:
            plan, tracings, cleanups = _variants(target, mode, processor, loop)
            try:
                for variant in plan:
                    if variant.role not in roles:
                        continue
                    name = f"{_LABEL[target]} {variant.name}"
                    if mode != "sampled":
                        name += f" ({mode})"
                    if progress is not None:
                        progress(f"memory: {name} ({requests:,} requests)")
                    result = measure_variant(
                        variant, tracings[variant.name], requests, variant.role in traced_roles
                    )
                    exported = tracings[variant.name].exporter.count
                    results.append(
                        {
                            "variant": name,
                            "target": target,
                            "role": variant.role,
                            "mode": mode,
                            "exported_spans": exported,
                            **result,
                        }
                    )
            finally:
                for undo in cleanups:
                    undo()
                for tracing in tracings.values():
                    tracing.shutdown()
    finally:
        loop.close()
    return results


def planned(targets: Sequence[str] = TARGETS, modes: Sequence[str] = ("sampled",)) -> list[str]:
    """The graded (tracewire) variant names, for a budget table of a run without memory."""
    return [
        f"{_LABEL[t]} tracewire" + ("" if mode == "sampled" else f" ({mode})")
        for mode in modes
        for t in targets
    ]


def print_memory(results: Sequence[dict[str, Any]], out: Any = None) -> None:
    out = out or sys.stdout
    if not results:
        return
    print(
        f"\n== memory: {results[0]['requests']:,} requests per variant (bounds: "
        f"{FIXED_BLOCKS} + {BLOCKS_PER_REQUEST} live blocks per request over the last four "
        f"fifths, {FIXED_BYTES:,} + {BYTES_PER_REQUEST:g} traced byte per request over the last "
        "fifth)",
        file=out,
    )
    for r in results:
        graded = "" if r["role"] == "tracewire" else " (not graded)"
        print(f"[{r['verdict']}] {r['variant']}{graded}: {r['summary']}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_memory", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--mode", default="sampled")
    parser.add_argument("--processor", choices=("batch", "simple"), default="batch")
    parser.add_argument("--roles", default="bare,floor,tracewire,contrib")
    args = parser.parse_args(argv)
    results = run_memory(
        args.requests,
        [t for t in args.targets.split(",") if t],
        args.mode,
        args.processor,
        [r for r in args.roles.split(",") if r],
        progress=lambda text: print(text, file=sys.stderr, flush=True),
    )
    print_memory(results)
    return 0 if all(r["verdict"] == "PASS" for r in results if r["role"] == "tracewire") else 1


if __name__ == "__main__":
    sys.exit(main())

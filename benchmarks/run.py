"""Run every benchmark, print the budget of issue 11, write JSON (and a chart) to results/.

Usage (from the repository root)::

    python benchmarks/run.py                 # the full run (~15 min on 2 cores)
    python benchmarks/run.py --quick         # every suite, short (~2-3 min)
    python -m benchmarks --suites asgi,wsgi --modes sampled,always-off

Suites: ``asgi`` (raw, Starlette), ``wsgi`` (raw, Flask), ``client`` (httpx sync and async,
requests), ``e2e`` (uvicorn under wrk or benchmarks.loadgen) and ``memory`` (100,000 requests
per variant). Every in-process suite measures bare / SDK floor / tracewire / contrib in the
same interleaved run, in four modes (sampled, unsampled parent, ALWAYS_OFF, TraceIdRatioBased
rejecting). The budget lines of issue 11 are graded from this run's ratios; ``--strict`` exits
1 when any line FAILs. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import MODES, SuiteResult, iterations_from
from benchmarks.report import (
    BudgetLine,
    budget_grid_markdown,
    budget_lines,
    budget_markdown,
    e2e_markdown,
    memory_markdown,
    print_budget,
    print_suites,
    suites_markdown,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "latest.json"
SUITES = ("asgi", "wsgi", "client", "e2e", "memory")
ASGI_APPS = ("raw", "starlette")
WSGI_APPS = ("raw", "flask")
PRESETS = {"small": 100, "quick": 300, "medium": 1000, "full": 2000}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "-C", str(HERE.parent), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _wrk_version() -> str | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    try:
        done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else None


def environment() -> dict[str, Any]:
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "nproc": len(affinity(0)) if affinity is not None else os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": _git("rev-parse", "--short", "HEAD") or None,
        # Uncommitted changes under src/ were measured too (the package is installed editable).
        "src_uncommitted_changes": bool(_git("status", "--porcelain", "--", "src")),
        "versions": {
            name: _version(name)
            for name in (
                "tracewire",
                "opentelemetry-api",
                "opentelemetry-sdk",
                "opentelemetry-instrumentation-asgi",
                "opentelemetry-instrumentation-wsgi",
                "opentelemetry-instrumentation-httpx",
                "opentelemetry-instrumentation-requests",
                "starlette",
                "flask",
                "werkzeug",
                "uvicorn",
                "h11",
                "httptools",
                "uvloop",
                "httpx",
                "requests",
            )
        },
        "wrk": _wrk_version(),
    }


def _csv(
    text: str, allowed: Sequence[str], what: str, parser: argparse.ArgumentParser
) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in chosen if s not in allowed]
    if bad:
        parser.error(f"unknown {what} {', '.join(bad)}; choose from {', '.join(allowed)}")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="tracewire benchmarks: overhead vs the SDK floor and OpenTelemetry contrib, "
        "graded against the budget of issue 11.",
    )
    parser.add_argument("--quick", action="store_true", help="every suite, short")
    parser.add_argument(
        "--iterations",
        default=None,
        help=f"server requests per round: an integer or one of {', '.join(PRESETS)} "
        "(default: quick with --quick, else full); client suites use half",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per variant")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"from {', '.join(SUITES)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"from {', '.join(MODES)}")
    parser.add_argument("--asgi-apps", default=",".join(ASGI_APPS))
    parser.add_argument("--wsgi-apps", default=",".join(WSGI_APPS))
    parser.add_argument(
        "--processor",
        choices=("batch", "simple"),
        default="batch",
        help="span processor in front of the dropping exporter (default: batch)",
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="in-process timing: this process's CPU time (default) or wall-clock time",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the uvicorn run")
    parser.add_argument("--e2e-seconds", type=float, default=None, help="seconds per load run")
    parser.add_argument("--e2e-rounds", type=int, default=None)
    parser.add_argument("--e2e-modes", default=None, help="default: sampled,unsampled-parent")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load-processes", type=int, default=1)
    parser.add_argument(
        "--memory-requests", type=int, default=None, help="requests per variant (100000)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    parser.add_argument("--markdown", type=Path, default=None, help="also write Markdown tables")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a budget line FAILs")
    args = parser.parse_args(argv)
    try:
        args.iterations = iterations_from(
            args.iterations or ("quick" if args.quick else "full"), PRESETS
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds is None:
        # Many short rounds pair better than few long ones on a machine shared with other work.
        args.rounds = 5 if args.quick else 15
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.suites = _csv(args.suites, SUITES, "suite(s)", parser)
    if args.no_e2e:
        args.suites = tuple(s for s in args.suites if s != "e2e")
    args.modes = _csv(args.modes, MODES, "mode(s)", parser)
    args.asgi_apps = _csv(args.asgi_apps, ASGI_APPS, "ASGI app(s)", parser)
    args.wsgi_apps = _csv(args.wsgi_apps, WSGI_APPS, "WSGI app(s)", parser)
    if args.e2e_seconds is None:
        # Short windows, many rounds: the variants alternate often, so drift of the machine's
        # load hits all of them alike.
        args.e2e_seconds = 1.0 if args.quick else 2.0
    if args.e2e_rounds is None:
        args.e2e_rounds = 1 if args.quick else 8
    default_e2e = "sampled" if args.quick else "sampled,unsampled-parent"
    args.e2e_modes = _csv(args.e2e_modes or default_e2e, MODES, "e2e mode(s)", parser)
    if args.memory_requests is None:
        args.memory_requests = 10_000 if args.quick else 100_000
    if args.memory_requests < 5:
        parser.error("--memory-requests must be >= 5")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    suites: list[SuiteResult] = []
    e2e: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    timings: dict[str, float] = {}
    env = environment()

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t0, 2)
        return result

    common = {"processor": args.processor, "clock": args.clock}
    if "asgi" in args.suites:
        from benchmarks import bench_asgi

        for app in args.asgi_apps:
            suites += timed(
                f"asgi[{app}]",
                bench_asgi.run_inprocess,
                args.iterations,
                args.rounds,
                args.modes,
                app,
                **common,
            )
    if "wsgi" in args.suites:
        from benchmarks import bench_wsgi

        for app in args.wsgi_apps:
            suites += timed(
                f"wsgi[{app}]",
                bench_wsgi.run_inprocess,
                args.iterations,
                args.rounds,
                args.modes,
                app,
                **common,
            )
    if "client" in args.suites:
        from benchmarks import bench_client

        # A client request costs ~30-70 us bare (httpx/requests build and parse a lot) and is
        # noisier than a server one: half the iterations keep the suite's share reasonable.
        found, missing = timed(
            "client",
            bench_client.run_all,
            max(args.iterations // 2, 1),
            args.rounds,
            args.modes,
            **common,
        )
        suites += found
        skipped += missing
    if "e2e" in args.suites:
        from benchmarks import bench_e2e

        try:
            e2e = timed(
                "e2e",
                bench_e2e.run_e2e,
                args.e2e_seconds,
                args.e2e_rounds,
                args.e2e_modes,
                "raw",
                args.processor,
                args.load,
                args.connections,
                args.load_processes,
            )
        except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            skipped.append({"suite": "asgi[raw] uvicorn", "reason": f"failed: {exc}"})
    memory_modes = ("sampled", "unsampled-parent")
    if "memory" in args.suites:
        from benchmarks import bench_memory

        def progress(text: str) -> None:
            print(f"  {text}", file=sys.stderr, flush=True)

        memory = timed(
            "memory",
            bench_memory.run_memory,
            args.memory_requests,
            bench_memory.TARGETS,
            "sampled",
            args.processor,
            progress=progress,
        )
        # The not-recorded path too, for tracewire (the graded variant) alone.
        memory += timed(
            "memory (unsampled parent)",
            bench_memory.run_memory,
            args.memory_requests,
            bench_memory.TARGETS,
            "unsampled-parent",
            args.processor,
            roles=("tracewire",),
            progress=progress,
        )

    print_suites(suites)
    if e2e:
        from benchmarks.bench_e2e import print_e2e

        print_e2e(e2e)
    if memory:
        from benchmarks.bench_memory import print_memory

        print_memory(memory)
    for item in skipped:
        print(f"\nSKIPPED {item['suite']}: {item['reason']}")
    from benchmarks.bench_memory import planned

    lines = budget_lines(suites, e2e, memory, planned(modes=memory_modes))
    print_budget(lines)
    counts = {v: sum(1 for x in lines if x.verdict == v) for v in ("PASS", "FAIL", "NOT RUN")}
    env["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {
        "schema": 2,
        "environment": env,
        "arguments": {
            "quick": args.quick,
            "iterations": args.iterations,
            "client_iterations": max(args.iterations // 2, 1),
            "rounds": args.rounds,
            "suites": list(args.suites),
            "modes": list(args.modes),
            "asgi_apps": list(args.asgi_apps),
            "wsgi_apps": list(args.wsgi_apps),
            "processor": args.processor,
            "clock": args.clock,
            "e2e_seconds": args.e2e_seconds,
            "e2e_rounds": args.e2e_rounds,
            "e2e_modes": list(args.e2e_modes),
            "load": args.load,
            "connections": args.connections,
            "memory_requests": args.memory_requests,
        },
        "suites": [s.as_dict() for s in suites],
        "e2e": e2e,
        "memory": memory,
        "budget": [line.as_dict() for line in lines],
        "skipped": skipped,
        "summary": {
            "pass": counts["PASS"],
            "fail": counts["FAIL"],
            "not_run": counts["NOT RUN"],
            "failed": [line.key for line in lines if line.verdict == "FAIL"],
            "all_pass": counts["FAIL"] == 0 and counts["NOT RUN"] == 0,
        },
        "seconds": {**timings, "total": round(time.perf_counter() - started, 2)},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.output)
    print(f"\nwrote {args.output}", file=sys.stderr)
    if not args.no_chart:
        from benchmarks import chart

        if chart.available():
            print(f"wrote {chart.draw(report, args.output.with_suffix('.png'))}", file=sys.stderr)
        else:
            print(
                "no chart: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr
            )
    if args.markdown is not None:
        args.markdown.write_text(
            "## Budget\n\n"
            + budget_grid_markdown([line.as_dict() for line in lines])
            + "\n"
            + budget_markdown(lines)
            + "\n## In process\n\n"
            + suites_markdown(suites)
            + ("\n## End to end\n\n" + e2e_markdown(e2e) if e2e else "")
            + ("\n## Memory\n\n" + memory_markdown(memory) if memory else ""),
            encoding="utf-8",
        )
    print(f"total {report['seconds']['total']:.1f} s", file=sys.stderr)
    return exit_code(lines, args.strict)


def exit_code(lines: Sequence[BudgetLine], strict: bool) -> int:
    """0, or 1 with ``--strict`` when any budget line FAILs."""
    return 1 if strict and any(line.verdict == "FAIL" for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark, print one table, write ``benchmarks/results/latest.json``.

Usage (from the repository root)::

    python benchmarks/run.py                 # the full run (a few minutes on 2 cores)
    python benchmarks/run.py --quick         # under a minute
    python -m benchmarks --quick --iterations small --no-e2e

Speed is reported as ratios measured in the same run: overhead = a variant's microseconds per
request minus the bare app's (paired per round), and tracewire's overhead divided by the
OpenTelemetry contrib instrumentation's. A suite passes when that ratio is within the target
(1/5 sampled, 1/10 unsampled). The exit status is 0 unless ``--strict`` is given and a suite
fails. See docs/performance.md.
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

from benchmarks._harness import (
    BUDGET_US,
    MODES,
    TARGET_RATIO,
    SuiteResult,
    iterations_from,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "latest.json"
SUITES = ("asgi", "wsgi", "client", "e2e")
PRESETS = {"small": 200, "quick": 300, "medium": 1000, "full": 2000}


def print_table(suites: Sequence[SuiteResult], out: Any = None) -> None:
    """The human-readable summary: one block per suite and mode."""
    out = out or sys.stdout
    header = (
        f"{'variant':<34} {'us/req':>9} {'spread':>17} {'overhead':>9} {'ovh spread':>17} "
        f"{'vs contrib':>10}"
    )
    for suite in suites:
        kind = suite.kind
        detail = (
            f"{suite.iterations} requests x {suite.rounds} rounds"
            if kind == "in-process"
            else f"{suite.rounds} round(s)"
        )
        print(f"\n== {suite.suite} | {suite.mode} | {kind} | {detail}", file=out)
        print(header, file=out)
        contrib = suite.by_role("contrib")
        for m in suite.measurements:
            spread = f"{min(m.rounds_us):.1f}..{max(m.rounds_us):.1f}"
            overhead = m.overhead_us
            ovh = "" if overhead is None else f"{overhead:.1f}"
            ovh_spread = (
                ""
                if not m.overhead_rounds_us
                else f"{min(m.overhead_rounds_us):.1f}..{max(m.overhead_rounds_us):.1f}"
            )
            ratio = ""
            if contrib is not None and m is not contrib and overhead is not None:
                r = suite.ratio(m.name)
                ratio = "" if r is None else f"{r:.3f}"
            print(
                f"{m.name:<34} {m.median_us:>9.1f} {spread:>17} {ovh:>9} {ovh_spread:>17} "
                f"{ratio:>10}",
                file=out,
            )
        verdict = suite.verdict()
        suite_ratio = suite.ratio()
        tracewire = suite.by_role("tracewire")
        if verdict is not None and suite_ratio is not None and tracewire is not None:
            target = TARGET_RATIO[suite.mode]
            word = "PASS" if verdict else "FAIL"
            budget = BUDGET_US[suite.mode]
            absolute = tracewire.overhead_us or 0.0
            print(
                f"-> {word}: tracewire overhead {absolute:.1f} us = {suite_ratio:.3f} x contrib's "
                f"(target <= {target:.3f}); guide's absolute budget {budget:.0f} us: "
                f"{'within' if absolute <= budget else 'over'}",
                file=out,
            )
            best_t = tracewire.best_overhead_us
            best_c = contrib.best_overhead_us if contrib is not None else None
            if best_t is not None and best_c:
                print(
                    f"   best-of-rounds cross-check: {best_t:.1f} us = {best_t / best_c:.3f} x "
                    f"contrib's {best_c:.1f} us",
                    file=out,
                )
            floor = suite.by_role("floor")
            floor_ratio = suite.ratio(floor.name) if floor is not None else None
            if floor is not None and floor_ratio is not None and contrib is not None:
                beyond = " (the target is below one span)" if floor_ratio > target else ""
                print(
                    f"   one bare SDK span alone: {floor_ratio:.3f} x contrib's overhead{beyond}",
                    file=out,
                )
                own = suite.beyond_floor()
                if own is not None:
                    print(
                        f"   beyond that span: tracewire {own[0]:.1f} us, contrib {own[1]:.1f} us",
                        file=out,
                    )
            if suite.noisy():
                print(
                    "   NOISY: overheads moved > 50% between rounds; re-run on a quiet machine",
                    file=out,
                )
        elif kind != "in-process" and suite_ratio is not None:
            print(
                f"-> sanity: tracewire overhead = {suite_ratio:.3f} x contrib's (no target)",
                file=out,
            )
        if suite.exported:
            print(f"   exported spans: {suite.exported}", file=out)
        for note in suite.notes:
            print(f"   note: {note}", file=out)


def markdown(suites: Sequence[SuiteResult]) -> str:
    """One Markdown table of every suite, for docs/performance.md."""
    lines = [
        "| suite | mode | bare µs | tracewire overhead µs | contrib overhead µs "
        "| SDK-span floor µs | tracewire / contrib | target | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def cell(m: Any) -> str:
        if m is None or m.overhead_us is None:
            return "-"
        low, high = min(m.overhead_rounds_us), max(m.overhead_rounds_us)
        return f"{m.overhead_us:.1f} ({low:.0f}-{high:.0f})"

    for suite in suites:
        bare = suite.by_role("bare")
        ratio = suite.ratio()
        verdict = suite.verdict()
        target = TARGET_RATIO[suite.mode] if suite.kind == "in-process" else None
        word = "-" if verdict is None else "pass" if verdict else "FAIL"
        if verdict is not None and suite.noisy():
            word += " (noisy)"
        lines.append(
            f"| {suite.suite} | {suite.mode} | {bare.median_us:.1f} | "
            f"{cell(suite.by_role('tracewire'))} | {cell(suite.by_role('contrib'))} | "
            f"{cell(suite.by_role('floor'))} | {'-' if ratio is None else f'{ratio:.3f}'} | "
            f"{'-' if target is None else f'<= {target:.2f}'} | {word} |"
            if bare is not None
            else f"| {suite.suite} | {suite.mode} | - | - | - | - | - | - | - |"
        )
    return "\n".join(lines) + "\n"


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


def environment() -> dict[str, Any]:
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
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
                "uvicorn",
                "httpx",
                "requests",
            )
        },
        "wrk": shutil.which("wrk") is not None,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="tracewire benchmarks: overhead vs a bare app and vs OpenTelemetry contrib.",
    )
    parser.add_argument("--quick", action="store_true", help="a run that finishes in < 60 s")
    parser.add_argument(
        "--iterations",
        default=None,
        help=f"requests per round: an integer or one of {', '.join(PRESETS)} "
        "(default: quick with --quick, else full)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per variant")
    parser.add_argument(
        "--suites",
        default=",".join(SUITES),
        help=f"comma list from {', '.join(SUITES)} (default: all)",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the uvicorn run")
    parser.add_argument("--e2e-seconds", type=float, default=None, help="seconds per e2e run")
    parser.add_argument("--load", choices=("auto", "wrk", "httpx"), default="auto")
    parser.add_argument(
        "--processor",
        choices=("simple", "batch"),
        default="simple",
        help="span processor in front of the no-op exporter (default: simple)",
    )
    parser.add_argument(
        "--asgi-apps",
        default=None,
        help="comma list from raw, starlette (default: raw with --quick, else raw,starlette)",
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="in-process timing: this process's CPU time (default; robust on a shared "
        "machine) or wall-clock time",
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the summary as a Markdown table"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a suite misses its target"
    )
    args = parser.parse_args(argv)
    try:
        args.iterations = iterations_from(
            args.iterations or ("quick" if args.quick else "full"), PRESETS
        )
    except ValueError as exc:
        parser.error(str(exc))
    small = args.iterations <= PRESETS["small"]
    if args.rounds is None:
        # Many short rounds pair better than few long ones on a machine shared with other work.
        args.rounds = 3 if small else 7 if args.quick else 15
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    chosen = tuple(s.strip() for s in args.suites.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    if args.no_e2e:
        chosen = tuple(s for s in chosen if s != "e2e")
    args.suites = chosen
    apps = args.asgi_apps or ("raw" if args.quick or small else "raw,starlette")
    args.asgi_apps = tuple(a.strip() for a in apps.split(",") if a.strip())
    bad = [a for a in args.asgi_apps if a not in ("raw", "starlette")]
    if bad:
        parser.error(f"unknown ASGI app(s) {', '.join(bad)}; choose from raw, starlette")
    if args.e2e_seconds is None:
        args.e2e_seconds = 1.0 if small or args.quick else 4.0
    args.e2e_rounds = 1 if (small or args.quick) else 3
    args.e2e_modes = ("sampled",) if small else MODES
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    suites: list[SuiteResult] = []
    skipped: list[dict[str, str]] = []
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t0, 2)
        return result

    if "asgi" in args.suites:
        from benchmarks import bench_asgi

        for app in args.asgi_apps:
            suites += timed(
                f"asgi[{app}]",
                bench_asgi.run_inprocess,
                args.iterations,
                args.rounds,
                app_name=app,
                processor=args.processor,
                clock=args.clock,
            )
    if "wsgi" in args.suites:
        from benchmarks import bench_wsgi

        suites += timed(
            "wsgi",
            bench_wsgi.run_inprocess,
            args.iterations,
            args.rounds,
            processor=args.processor,
            clock=args.clock,
        )
    if "client" in args.suites:
        from benchmarks import bench_client

        # A client request costs ~100x a bare ASGI one (httpx/requests build and parse a lot):
        # half the iterations keep the suite's share of the run reasonable.
        found, missing = timed(
            "client",
            bench_client.run_all,
            max(args.iterations // 2, 1),
            args.rounds,
            processor=args.processor,
            clock=args.clock,
        )
        suites += found
        skipped += missing
    if "e2e" in args.suites:
        from benchmarks import bench_asgi

        try:
            suites += timed(
                "e2e",
                bench_asgi.run_e2e,
                args.e2e_seconds,
                args.e2e_rounds,
                args.e2e_modes,
                processor=args.processor,
                load=args.load,
            )
        except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
            skipped.append({"suite": "asgi uvicorn e2e", "reason": f"failed: {exc}"})

    print_table(suites)
    for item in skipped:
        print(f"\nSKIPPED {item['suite']}: {item['reason']}")
    verdicts = [s.verdict() for s in suites]
    failed = [f"{s.suite} {s.mode}" for s, v in zip(suites, verdicts, strict=True) if v is False]
    report = {
        "schema": 1,
        "environment": environment(),
        "arguments": {
            "quick": args.quick,
            "iterations": args.iterations,
            "rounds": args.rounds,
            "suites": list(args.suites),
            "asgi_apps": list(args.asgi_apps),
            "processor": args.processor,
            "clock": args.clock,
            "e2e_seconds": args.e2e_seconds,
            "e2e_rounds": args.e2e_rounds,
            "e2e_modes": list(args.e2e_modes),
        },
        "targets": {
            "overhead_ratio_vs_contrib": TARGET_RATIO,
            "absolute_budget_us_reference_machine": BUDGET_US,
        },
        "suites": [s.as_dict() for s in suites],
        "skipped": skipped,
        "summary": {
            "passed": [f"{s.suite} {s.mode}" for s, v in zip(suites, verdicts, strict=True) if v],
            "failed": failed,
            "all_pass": not failed and any(v is not None for v in verdicts),
        },
        "seconds": {**timings, "total": round(time.perf_counter() - started, 2)},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.output)
    if args.markdown is not None:
        args.markdown.write_text(markdown(suites), encoding="utf-8")
    total = report["seconds"]["total"]  # type: ignore[index]
    print(f"\nwrote {args.output} in {total:.1f} s", file=sys.stderr)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark suite: a quick run of every suite (slow), and the budget grading rules.

No timing is asserted here: speed is judged by ``benchmarks/run.py`` itself as ratios measured
in one run (docs/performance.md). The smoke run checks that every suite ran every variant
(floors included) in every mode, that spans were exported exactly when the mode records, and
that the budget table, the JSON and the chart were written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks._harness import MODES, Measurement, SuiteResult, pair_with
from benchmarks.report import budget_lines
from benchmarks.run import exit_code

REPO = Path(__file__).resolve().parent.parent
SUITES = (
    "asgi[raw]",
    "asgi[starlette]",
    "wsgi[raw]",
    "wsgi[flask]",
    "httpx client",
    "httpx async client",
    "requests client",
)
VARIANTS = {"bare", "sdk floor", "tracewire", "contrib"}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_of_every_suite(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--quick",
            "--iterations",
            "100",
            "--rounds",
            "2",
            "--e2e-seconds",
            "1",
            "--memory-requests",
            "2000",
            "--load",
            "python",  # CI must not depend on wrk
            "--output",
            str(output),
            "--markdown",
            str(tmp_path / "summary.md"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["schema"] == 2
    assert report["arguments"]["processor"] == "batch"  # the default
    assert report["skipped"] == []

    suites = {(s["suite"], s["mode"]): s for s in report["suites"]}
    assert set(suites) == {(suite, mode) for suite in SUITES for mode in MODES}
    for (_suite, mode), data in suites.items():
        assert set(data["variants"]) == VARIANTS
        for variant in data["variants"].values():
            assert variant["us_per_request"] > 0
            assert variant["requests"] >= data["iterations"] * data["rounds"]
        exported = data["exported_spans"]
        assert exported["bare"] == 0
        for name in ("sdk floor", "tracewire", "contrib"):
            if mode == "sampled":
                # Every request of every traced variant exported (at least) one span.
                assert exported[name] >= data["variants"][name]["requests"], (name, exported)
            else:
                assert exported[name] == 0, (name, mode, exported)
        assert set(data["ratios"]) >= {"tracewire_vs_floor", "tracewire_vs_contrib"}

    (e2e,) = report["e2e"]
    assert e2e["mode"] == "sampled" and e2e["load"] == "python"
    assert e2e["exported_spans"] > 0
    for variant in VARIANTS:
        assert e2e["variants"][variant]["rps"] > 0
        assert e2e["variants"][variant]["p99_ms"] > 0
        assert all(r["errors"] == 0 for r in e2e["variants"][variant]["rounds"])
        if sys.platform == "linux":  # read from /proc
            assert e2e["variants"][variant]["server_cpu_us_per_request"] > 0

    memory = report["memory"]
    graded = [m for m in memory if m["role"] == "tracewire"]
    assert len(graded) == 10  # 5 targets x (sampled, unsampled-parent)
    assert {m["role"] for m in memory} == {"bare", "floor", "tracewire", "contrib"}
    for m in memory:
        assert m["requests"] == 2000
        assert m["growth"]["blocks"] is not None
    for m in graded:
        assert m["growth"]["traced_bytes"] is not None

    budget = report["budget"]
    assert len(budget) == 4 + 12 + 12 + 1 + 10
    assert {line["verdict"] for line in budget} <= {"PASS", "FAIL"}
    assert report["summary"]["pass"] + report["summary"]["fail"] == len(budget)
    assert "== budget (issue 11)" in done.stdout

    png = output.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Budget" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def _suite(name: str, mode: str, floor: float, tracewire: float) -> SuiteResult:
    bare = Measurement("bare", "bare", "", [10.0, 10.0, 10.0])
    measured = [bare]
    for role, cost, label in (
        ("floor", floor, "sdk floor"),
        ("tracewire", tracewire, "tracewire"),
        ("contrib", 100.0, "contrib"),
    ):
        m = Measurement(label, role, "", [10.0 + cost] * 3)
        pair_with(m, bare)
        measured.append(m)
    return SuiteResult(name, mode, "in-process", measured, 100, 3)


def test_budget_grades_ratios_against_the_floor_of_the_same_mode() -> None:
    suites = [
        _suite("asgi[raw]", "sampled", floor=20.0, tracewire=30.0),  # 1.5x: on the limit
        _suite("wsgi[raw]", "sampled", floor=20.0, tracewire=31.0),  # 1.55x
        _suite("asgi[raw]", "always-off", floor=5.0, tracewire=10.0),  # 2x
        _suite("wsgi[raw]", "ratio-off", floor=5.0, tracewire=10.5),  # 2.1x
        _suite("requests client", "unsampled-parent", floor=10.0, tracewire=19.0),
        _suite("httpx client", "sampled", floor=0.0, tracewire=19.0),  # no floor: no ratio
    ]
    e2e = [
        {
            "mode": "sampled",
            "tracewire_vs_floor_rps": 0.89,
            "variants": {n: {"rps": 1.0, "p99_ms": 1.0} for n in VARIANTS},
        }
    ]
    lines = {line.key: line for line in budget_lines(suites, e2e, [], ["ASGI raw tracewire"])}
    assert lines["asgi[raw]|sampled"].verdict == "PASS"
    assert lines["wsgi[raw]|sampled"].verdict == "FAIL"
    assert lines["asgi[raw]|always-off"].verdict == "PASS"
    assert lines["wsgi[raw]|ratio-off"].verdict == "FAIL"
    assert lines["requests client|unsampled-parent"].verdict == "PASS"
    assert lines["httpx client|sampled"].verdict == "FAIL"
    assert lines["asgi[starlette]|sampled"].verdict == "NOT RUN"
    assert lines["e2e|sampled"].verdict == "FAIL"
    assert lines["memory|ASGI raw tracewire"].verdict == "NOT RUN"
    assert lines["asgi[raw]|sampled"].text == (
        "Sampled, ASGI raw: tracewire's overhead <= 1.5x the SDK floor"
    )
    every = list(lines.values())
    assert exit_code(every, strict=False) == 0
    assert exit_code(every, strict=True) == 1
    passing = [line for line in every if line.verdict != "FAIL"]
    assert exit_code(passing, strict=True) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_profiling_reports_tracewire_and_sdk_self_time() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.profiling",
            "asgi-sampled",
            "httpx-unsampled-parent",
            "--requests",
            "300",
            "--sampler",
            "pyinstrument",
            "--no-breakdown",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "## asgi-sampled" in out and "## httpx-unsampled-parent" in out
    assert out.count("top 10 self time, tracewire:") == 4  # cProfile + pyinstrument, 2 paths
    # The sampled ASGI path spends time in tracewire's middleware and in the SDK's start_span.
    sampled = out.split("## httpx-unsampled-parent")[0]
    assert "tracewire/asgi.py" in sampled
    assert "opentelemetry/sdk/trace/__init__.py" in sampled

"""Printing the suites, and the budget of issue 11 with PASS/FAIL per line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from benchmarks._harness import MODE_TEXT, NOT_RECORDED, SuiteResult

# The budget of issue 11 (ratios inside one run; the floors are measured in the same run).
SAMPLED_SERVER_LIMIT = 1.5  # x the SDK floor's overhead
NOT_RECORDED_LIMIT = 2.0  # x the not-sampled floor's overhead (same mode)
CLIENT_SAMPLED_LIMIT = 1.5  # x the client floor's overhead
CLIENT_NOT_SAMPLED_LIMIT = 2.0
E2E_LIMIT = 0.90  # tracewire req/s >= 0.90 x the SDK-floor middleware's

SERVER_SUITES = (
    ("asgi[raw]", "ASGI raw"),
    ("asgi[starlette]", "ASGI Starlette"),
    ("wsgi[raw]", "WSGI raw"),
    ("wsgi[flask]", "WSGI Flask"),
)
CLIENT_SUITES = (
    ("httpx client", "httpx sync"),
    ("httpx async client", "httpx async"),
    ("requests client", "requests"),
)
MODE_SHORT = {
    "sampled": "sampled",
    "unsampled-parent": "unsampled parent, -00 under the default sampler",
    "always-off": "sampler says no, ALWAYS_OFF with a sampled parent",
    "ratio-off": "sampler says no, TraceIdRatioBased rejecting",
}


@dataclass
class BudgetLine:
    key: str  # stable id: "<suite>|<mode>" or "e2e|<mode>" or "memory|<variant>"
    text: str  # the budget line, as issue 11 states it
    measured: str  # what was measured, in words
    value: float | None  # the graded number (a ratio)
    limit: float
    comparison: str  # "<=" or ">="
    verdict: str  # "PASS", "FAIL" or "NOT RUN"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _grade(value: float | None, limit: float, comparison: str) -> str:
    if value is None:
        return "NOT RUN"
    ok = value <= limit if comparison == "<=" else value >= limit
    return "PASS" if ok else "FAIL"


def _ratio_line(
    suites: dict[tuple[str, str], SuiteResult],
    suite: str,
    label: str,
    mode: str,
    limit: float,
    floor_word: str,
) -> BudgetLine:
    found = suites.get((suite, mode))
    if mode == "sampled":
        text = f"Sampled, {label}: tracewire's overhead <= {limit:g}x {floor_word}"
    else:
        text = (
            f"Not recorded ({MODE_SHORT[mode]}), {label}: tracewire's overhead <= {limit:g}x "
            f"{floor_word}"
        )
    value = None if found is None else found.ratio("tracewire", "floor")
    measured = "not run"
    verdict = _grade(value, limit, "<=")
    if found is not None and value is None:
        # The suite ran, but the floor's overhead came out <= 0 (noise swamped it): no ratio
        # can be shown, so the line cannot pass.
        verdict = "FAIL"
    if found is not None:
        t, f, c = (found.overhead(r) for r in ("tracewire", "floor", "contrib"))
        best = found.best_ratio("tracewire", "floor")
        parts = [
            f"tracewire {t:+.1f} us" if t is not None else "tracewire ?",
            f"floor {f:+.1f} us" if f is not None else "floor ?",
            f"contrib {c:+.1f} us" if c is not None else "contrib ?",
        ]
        measured = ", ".join(parts)
        if value is not None:
            measured = f"{value:.2f}x floor ({measured})"
        else:
            measured = f"no ratio: the floor's overhead is not positive, run longer ({measured})"
        if best is not None:
            measured += f"; best-of-rounds {best:.2f}x"
        if found.noisy():
            measured += "; noisy"
    return BudgetLine(f"{suite}|{mode}", text, measured, value, limit, "<=", verdict)


def budget_lines(
    suites: Sequence[SuiteResult],
    e2e: Sequence[dict[str, Any]] = (),
    memory: Sequence[dict[str, Any]] = (),
    memory_planned: Sequence[str] = (),
) -> list[BudgetLine]:
    """Every budget line of issue 11, graded from this run's results."""
    by_key = {(s.suite, s.mode): s for s in suites if s.kind == "in-process"}
    lines: list[BudgetLine] = []
    for mode in ("sampled", *NOT_RECORDED):
        for suite, label in SERVER_SUITES:
            if mode == "sampled":
                limit, word = SAMPLED_SERVER_LIMIT, "the SDK floor"
            else:
                limit, word = NOT_RECORDED_LIMIT, "the not-sampled floor"
            lines.append(_ratio_line(by_key, suite, label, mode, limit, word))
    for suite, label in CLIENT_SUITES:
        for mode in ("sampled", *NOT_RECORDED):
            limit = CLIENT_SAMPLED_LIMIT if mode == "sampled" else CLIENT_NOT_SAMPLED_LIMIT
            line = _ratio_line(by_key, suite, label, mode, limit, "the client floor")
            if mode != "sampled":
                line.text = line.text.replace("Not recorded (", "Not sampled (", 1)
            lines.append(line)
    e2e_modes = [r["mode"] for r in e2e] or ["sampled"]
    for mode in e2e_modes:
        found = next((r for r in e2e if r["mode"] == mode), None)
        value = None if found is None else found.get("tracewire_vs_floor_rps")
        measured = "not run"
        if found is not None:
            v = found["variants"]
            measured = ", ".join(
                f"{name} {v[name]['rps']:.0f} req/s p99 {v[name]['p99_ms']:.2f} ms"
                for name in ("bare", "sdk floor", "tracewire", "contrib")
                if name in v
            )
            if value is not None:
                measured = f"{value:.3f}x floor req/s ({measured})"
        lines.append(
            BudgetLine(
                f"e2e|{mode}",
                f"uvicorn end to end ({MODE_SHORT[mode]}): tracewire's req/s >= {E2E_LIMIT:.2f}x "
                "the SDK-floor middleware's in the same alternating run, p99 reported",
                measured,
                value,
                E2E_LIMIT,
                ">=",
                _grade(value, E2E_LIMIT, ">="),
            )
        )
    graded = [m for m in memory if m.get("role") == "tracewire"]
    names = [m["variant"] for m in graded] or list(memory_planned)
    for name in names:
        found = next((m for m in graded if m["variant"] == name), None)
        value = None if found is None else found["growth_ratio"]
        measured = "not run" if found is None else found["summary"]
        text = (
            f"Memory, {name}: {found['requests'] if found else 100_000:,} requests, no growth "
            "that scales with the request count"
        )
        lines.append(
            BudgetLine(f"memory|{name}", text, measured, value, 1.0, "<=", _grade(value, 1.0, "<="))
        )
    return lines


def print_budget(lines: Sequence[BudgetLine], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    print("\n== budget (issue 11): ratios inside this run", file=out)
    for line in lines:
        print(f"[{line.verdict:>7}] {line.text}", file=out)
        print(f"          {line.measured}", file=out)
    counts = {v: sum(1 for x in lines if x.verdict == v) for v in ("PASS", "FAIL", "NOT RUN")}
    print(
        f"-> {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['NOT RUN']} not run",
        file=out,
    )


def budget_markdown(lines: Sequence[BudgetLine]) -> str:
    rows = ["| budget line | measured | verdict |", "| --- | --- | --- |"]
    for line in lines:
        rows.append(f"| {line.text} | {line.measured} | **{line.verdict}** |")
    return "\n".join(rows) + "\n"


def print_suites(suites: Sequence[SuiteResult], out: TextIO | None = None) -> None:
    """The human-readable summary: one block per suite and mode."""
    out = out or sys.stdout
    header = (
        f"{'variant':<12} {'us/req':>9} {'overhead':>9} {'ovh spread':>15} {'best':>7} "
        f"{'x floor':>8} {'x contrib':>9} {'spans':>7}"
    )
    for suite in suites:
        print(
            f"\n== {suite.suite} | {suite.mode}: {MODE_TEXT.get(suite.mode, '')} | "
            f"{suite.iterations} requests x {suite.rounds} rounds",
            file=out,
        )
        print(header, file=out)
        floor = suite.overhead("floor")
        contrib = suite.overhead("contrib")
        for m in suite.measurements:
            ovh = m.overhead_us
            spread = (
                f"{min(m.overhead_rounds_us):.1f}..{max(m.overhead_rounds_us):.1f}"
                if m.overhead_rounds_us
                else ""
            )
            xf = f"{ovh / floor:.2f}" if ovh is not None and floor and m.role != "floor" else ""
            xc = (
                f"{ovh / contrib:.3f}"
                if ovh is not None and contrib and m.role != "contrib"
                else ""
            )
            best = "" if m.best_overhead_us is None else f"{m.best_overhead_us:.1f}"
            print(
                f"{m.name:<12} {m.median_us:>9.1f} {'' if ovh is None else f'{ovh:.1f}':>9} "
                f"{spread:>15} {best:>7} {xf:>8} {xc:>9} {suite.exported.get(m.name, ''):>7}",
                file=out,
            )
        if suite.noisy():
            print("   NOISY: an overhead moved > 50% between rounds; read with care", file=out)
        for note in suite.notes:
            print(f"   note: {note}", file=out)


def suites_markdown(suites: Sequence[SuiteResult]) -> str:
    """One Markdown table of every in-process suite and mode."""
    rows = [
        "| suite | mode | bare µs | SDK floor overhead µs | tracewire overhead µs "
        "| contrib overhead µs | tracewire / floor | tracewire / contrib |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(suite: SuiteResult, role: str) -> str:
        m = suite.by_role(role)
        if m is None or m.overhead_us is None:
            return "-"
        low, high = min(m.overhead_rounds_us), max(m.overhead_rounds_us)
        return f"{m.overhead_us:.1f} ({low:.0f}-{high:.0f})"

    def ratio(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for suite in suites:
        bare = suite.by_role("bare")
        rows.append(
            f"| {suite.suite} | {suite.mode} | {'-' if bare is None else f'{bare.median_us:.1f}'} "
            f"| {cell(suite, 'floor')} | {cell(suite, 'tracewire')} | {cell(suite, 'contrib')} "
            f"| {ratio(suite.ratio('tracewire', 'floor'), 2)} "
            f"| {ratio(suite.ratio('tracewire', 'contrib'), 3)} |"
        )
    return "\n".join(rows) + "\n"


def e2e_markdown(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| mode | variant | req/s | x bare | x SDK floor | p50 ms | p99 ms | server CPU µs/req |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        v = result["variants"]
        for name, data in v.items():
            xb = data["rps"] / v["bare"]["rps"] if v["bare"]["rps"] else float("nan")
            xf = data["rps"] / v["sdk floor"]["rps"] if v["sdk floor"]["rps"] else float("nan")
            cpu = data.get("server_cpu_us_per_request")
            rows.append(
                f"| {result['mode']} | {name} | {data['rps']:.0f} | {xb:.3f} | {xf:.3f} "
                f"| {data['p50_ms']:.2f} | {data['p99_ms']:.2f} "
                f"| {'-' if cpu is None else f'{cpu:.1f}'} |"
            )
    return "\n".join(rows) + "\n"


def memory_markdown(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| variant | requests | live blocks, 20%→100% (bound) | traced bytes, last fifth "
        "(bound) | RSS growth KiB | verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        g, b = r["growth"], r["bounds"]
        traced = (
            "-" if g["traced_bytes"] is None else f"{g['traced_bytes']:+,} ({b['traced_bytes']:,})"
        )
        verdict = r["verdict"] if r["role"] == "tracewire" else f"{r['verdict']} (not graded)"
        rows.append(
            f"| {r['variant']} | {r['requests']:,} | {g['blocks']:+,} ({b['blocks']:,}) "
            f"| {traced} | {g['rss_bytes'] / 1024:+,.0f} | {verdict} |"
        )
    return "\n".join(rows) + "\n"


def budget_grid_markdown(budget: Sequence[dict[str, Any]]) -> str:
    """The budget as one compact grid (suites x modes), from a run's JSON ``budget`` list."""
    by_key = {line["key"]: line for line in budget}
    heads = ["sampled", *NOT_RECORDED]
    rows = [
        "| suite | sampled, limit 1.5x | unsampled parent, 2x | ALWAYS_OFF, 2x "
        "| TraceIdRatioBased off, 2x |",
        "| --- | --- | --- | --- | --- |",
    ]

    def cell(line: dict[str, Any] | None, unit: str) -> str:
        if line is None or line["verdict"] == "NOT RUN":
            return "not run"
        value = "-" if line["value"] is None else f"{line['value']:.2f}{unit}"
        return f"{value} **{line['verdict']}**"

    for suite, label in (*SERVER_SUITES, *CLIENT_SUITES):
        cells = [cell(by_key.get(f"{suite}|{mode}"), "x") for mode in heads]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    e2e = [line for line in budget if line["key"].startswith("e2e|")]
    memory = [line for line in budget if line["key"].startswith("memory|")]
    out = "\n".join(rows) + "\n"
    if e2e:
        out += "\n| uvicorn end to end, tracewire req/s / SDK-floor req/s (limit >= 0.90) | |\n"
        out += "| --- | --- |\n"
        for line in e2e:
            out += f"| {line['key'].split('|', 1)[1]} | {cell(line, 'x')} |\n"
    if memory:
        passed = sum(1 for line in memory if line["verdict"] == "PASS")
        worst = max((line["value"] or 0.0) for line in memory)
        out += (
            f"\nMemory: {passed} of {len(memory)} tracewire variants PASS (100,000 requests "
            f"each; the largest share of a bound used is {worst:.2f}).\n"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.report RESULTS.json``: the budget grid of a run, as Markdown."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("json", type=Path)
    args = parser.parse_args(argv)
    report = json.loads(args.json.read_text(encoding="utf-8"))
    print(budget_grid_markdown(report["budget"]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

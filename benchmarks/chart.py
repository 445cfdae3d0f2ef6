"""The chart of a run: overhead per variant against the SDK floor and contrib, as a PNG.

Drawn from the JSON a run wrote, so a chart and its numbers always travel together::

    python -m benchmarks.chart benchmarks/results/latest.json     # writes latest.png beside it

Needs matplotlib (``pip install -e '.[bench]'``); ``benchmarks/run.py`` draws the chart itself
when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SUITE_ORDER = (
    "asgi[raw]",
    "asgi[starlette]",
    "wsgi[raw]",
    "wsgi[flask]",
    "httpx client",
    "httpx async client",
    "requests client",
)
MODE_TITLE = {
    "sampled": "sampled (limit 1.5x floor)",
    "unsampled-parent": "unsampled parent -00 (limit 2x floor)",
    "always-off": "ALWAYS_OFF sampler, sampled parent (limit 2x floor)",
    "ratio-off": "TraceIdRatioBased rejecting (limit 2x floor)",
}
COLOURS = {"floor": "#8c8c8c", "tracewire": "#1f77b4", "contrib": "#d62728"}


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw(report: dict[str, Any], path: Path) -> Path:
    """Draw ``report`` (a run's JSON) into the PNG ``path``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = [s for s in report.get("suites", []) if s.get("kind") == "in-process"]
    modes = [m for m in MODE_TITLE if any(s["mode"] == m for s in suites)]
    e2e = report.get("e2e", [])
    panels = len(modes) + (1 if e2e else 0)
    cols = 2
    rows = max(1, (panels + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 4.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    limits = {"sampled": 1.5}
    for ax, mode in zip(flat, modes, strict=False):
        in_mode = {s["suite"]: s for s in suites if s["mode"] == mode}
        names = [n for n in SUITE_ORDER if n in in_mode] + [
            n for n in in_mode if n not in SUITE_ORDER
        ]
        height = 0.26
        for offset, role in enumerate(("floor", "tracewire", "contrib")):
            values = [max(in_mode[n]["overhead_us"].get(role) or 0.0, 0.05) for n in names]
            ys = [i + (offset - 1) * height for i in range(len(names))]
            ax.barh(ys, values, height=height, color=COLOURS[role], label=role)
            if role == "tracewire":
                for y, n, v in zip(ys, names, values, strict=True):
                    ratio = in_mode[n]["ratios"].get("tracewire_vs_floor")
                    if ratio is not None:
                        ax.text(v * 1.08, y, f"{ratio:.2f}x floor", va="center", fontsize=8)
        limit = limits.get(mode, 2.0)
        for i, n in enumerate(names):  # the budget: limit x this suite's floor
            floor = in_mode[n]["overhead_us"].get("floor")
            if floor:
                ax.plot([floor * limit] * 2, [i - 0.45, i + 0.45], color="black", lw=1.2)
        ax.set_xscale("log")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel("overhead over the bare app/client, µs per request (log scale)")
        ax.set_title(MODE_TITLE[mode] + "; black tick = the budget")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", which="both", alpha=0.25)
    if e2e:
        ax = flat[len(modes)]
        width = 0.2
        variants = ("bare", "sdk floor", "tracewire", "contrib")
        for offset, name in enumerate(variants):
            xs = [i + (offset - 1.5) * width for i in range(len(e2e))]
            values = [r["variants"][name]["rps"] for r in e2e]
            colour = {"bare": "#2ca02c", "sdk floor": COLOURS["floor"]}.get(
                name, COLOURS.get(name, "#000000")
            )
            bars = ax.bar(xs, values, width=width, color=colour, label=name)
            for bar, r in zip(bars, e2e, strict=True):
                p99 = r["variants"][name]["p99_ms"]
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_height(),
                    f"p99\n{p99:.1f}ms",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(
            range(len(e2e)),
            [f"{r['mode']}\ntracewire {r['tracewire_vs_floor_rps']:.2f}x floor" for r in e2e],
        )
        ax.set_ylabel("requests per second")
        ax.set_title("uvicorn end to end, 1 worker (limit: tracewire >= 0.90x floor req/s)")
        ax.legend(fontsize=8)
    for ax in flat[panels:]:
        ax.axis("off")
    if panels < len(flat):
        flat[panels].text(
            0.0, 1.0, budget_text(report), va="top", ha="left", family="monospace", fontsize=9
        )
    env = report.get("environment", {})
    args = report.get("arguments", {})
    budget = report.get("summary", {})
    fig.suptitle(
        f"tracewire overhead vs the SDK floor and contrib — {env.get('timestamp', '')}, "
        f"commit {env.get('git_commit')}, {env.get('cpu_model')} x{env.get('cpu_count')}, "
        f"Python {env.get('python')}, SDK {env.get('versions', {}).get('opentelemetry-sdk')}, "
        f"{args.get('processor')} processor; budget: {budget.get('pass', 0)} PASS, "
        f"{budget.get('fail', 0)} FAIL",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def budget_text(report: dict[str, Any]) -> str:
    """The budget's verdicts by group, for the chart's spare panel."""
    groups: dict[str, list[str]] = {}
    clients = {"httpx client", "httpx async client", "requests client"}
    for line in report.get("budget", []):
        where, _, mode = line["key"].partition("|")
        if where == "e2e":
            group = "uvicorn end to end, req/s >= 0.90x floor"
        elif where == "memory":
            group = "memory, 100,000 requests per variant"
        elif where in clients:
            group = (
                "clients sampled, <= 1.5x client floor"
                if mode == "sampled"
                else "clients not sampled, <= 2x client floor"
            )
        else:
            group = (
                "servers sampled, <= 1.5x SDK floor"
                if mode == "sampled"
                else "servers not recorded, <= 2x floor"
            )
        groups.setdefault(group, []).append(line["verdict"])
    rows = ["Budget of issue 11 (lines passing / lines)", ""]
    for group, verdicts in groups.items():
        rows.append(f"{verdicts.count('PASS'):>2} / {len(verdicts):<2}  {group}")
    env = report.get("environment", {})
    load = (env.get("wrk") or "benchmarks.loadgen").split(" Copyright")[0]
    rows += [
        "",
        f"load average {env.get('load_average_at_start')} -> {env.get('load_average_at_end')}",
        f"nproc {env.get('nproc')}, {env.get('platform', '')[:40]}",
        f"uvicorn {env.get('versions', {}).get('uvicorn')}, load: {load}",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chart", description=__doc__)
    parser.add_argument("json", type=Path, help="a run's JSON results")
    parser.add_argument("--output", type=Path, default=None, help="default: the JSON's .png")
    args = parser.parse_args(argv)
    if not available():
        print("matplotlib is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    report = json.loads(args.json.read_text(encoding="utf-8"))
    out = draw(report, args.output or args.json.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark runner completes and writes valid JSON. No timing is asserted here: speed is
judged by ``benchmarks/run.py`` itself as ratios measured in one run (docs/performance.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_writes_valid_json(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--quick",
            "--iterations",
            "small",
            "--output",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(output.read_text(encoding="utf-8"))
    assert report["schema"] == 1
    assert report["arguments"]["iterations"] == 200
    suites = {(s["suite"], s["mode"]) for s in report["suites"]}
    for mode in ("sampled", "unsampled"):
        assert ("asgi[raw]", mode) in suites
        assert ("wsgi[raw]", mode) in suites
    skipped = {s["suite"] for s in report["skipped"]}
    for client in ("httpx client", "requests client"):
        assert (client, "sampled") in suites or client in skipped
    for suite in report["suites"]:
        variants = suite["variants"]
        assert variants["bare"]["us_per_request"] > 0
        if suite["kind"] == "in-process":
            assert "tracewire" in variants and "contrib" in variants
            assert isinstance(suite["pass"], bool)
            # Every request of a sampled run exported a span; an unsampled one exported none.
            exported = suite["exported_spans"]["tracewire"]
            assert exported > 0 if suite["mode"] == "sampled" else exported == 0
    assert "== asgi[raw] | sampled" in done.stdout

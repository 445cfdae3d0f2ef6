"""Replays the seed corpus and every recorded regression through its fuzz target.

A crash the fuzzer finds is kept as a file under ``tests/fuzz/regressions/<target>/`` (the
raw input bytes); from then on this module replays it in every default run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import seeds, targets

TARGETS = sorted(targets.TARGETS)


def _files(root: Path) -> list[tuple[str, Path]]:
    return [
        (t, p)
        for t in TARGETS
        for p in sorted((root / t).glob("*"))
        if p.is_file() and not p.name.startswith(".")
    ]


SEED_FILES = _files(seeds.CORPUS)
REGRESSION_FILES = _files(seeds.REGRESSIONS)


def test_the_seed_corpus_on_disk_is_what_seeds_py_makes() -> None:
    made = {t: {seeds.file_name(d): d for d in inputs} for t, inputs in seeds.seeds().items()}
    on_disk = {
        t: {p.name: p.read_bytes() for p in (seeds.CORPUS / t).glob("seed-*")} for t in TARGETS
    }
    assert sorted(made) == TARGETS
    assert on_disk == made, "run: python -m tests.fuzz.seeds"


def test_every_target_has_seeds_and_a_regression_folder() -> None:
    for target in TARGETS:
        assert list((seeds.CORPUS / target).glob("seed-*")), target
        assert (seeds.REGRESSIONS / target).is_dir(), target


@pytest.mark.parametrize(
    ("target", "path"), SEED_FILES, ids=[f"{t}/{p.name}" for t, p in SEED_FILES]
)
def test_seed(target: str, path: Path) -> None:
    targets.TARGETS[target](path.read_bytes())


def test_every_recorded_regression_still_passes() -> None:
    # One test for all of them: there may be none yet, and each file names itself on failure.
    for target, path in REGRESSION_FILES:
        try:
            targets.TARGETS[target](path.read_bytes())
        except AssertionError as exc:
            raise AssertionError(f"regression {target}/{path.name}: {exc}") from exc


def test_the_seeds_reach_every_rule_the_checks_know() -> None:
    targets.STATS.clear()
    for target, path in SEED_FILES:
        targets.TARGETS[target](path.read_bytes())
    reached = set(targets.STATS)
    wanted = {
        "traceparent:valid",
        "tracestate:entries",
        "tracestate:truncated",
        "baggage:kept",
        "baggage:dropped",
        "b3:state=0",
        "b3:state=1",
        "b3:state=d",
        "b3:state=defer",
        "server:continued",
        "server:app-raised",
        "response:traceresponse",
        "response:server-timing",
        *(f"downstream:{n}" for n in ("traceparent", "tracestate", "baggage", "b3")),
        *(f"downstream:x-b3-{n}" for n in ("traceid", "spanid", "sampled")),
    }
    assert wanted <= reached, sorted(wanted - reached)

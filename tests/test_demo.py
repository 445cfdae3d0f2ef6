"""``tracewire demo``: the tree printer, the trace check, argument errors, and real runs.

The real runs start the ``tracewire`` command as a subprocess exactly as a user types it; it
starts its own services (uvicorn, gunicorn, werkzeug) and its own OTLP receiver.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tracewire.demo import main
from tracewire.demo.receiver import ReceivedSpan
from tracewire.demo.tree import render
from tracewire.demo.verify import Hop, all_arrived, check, expected_chain, missing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def span(
    span_id: str,
    parent: str | None,
    name: str,
    service: str,
    kind: str,
    start_ms: float,
    end_ms: float,
    trace_id: str = TRACE,
    **attributes: object,
) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent,
        name=name,
        kind=kind,
        start_ns=T0 + int(start_ms * MS),
        end_ns=T0 + int(end_ms * MS),
        service=service,
        attributes=attributes,
    )


def seed_spans(hops: int = 2, root_parent: str | None = None) -> list[ReceivedSpan]:
    spans = [
        span("a" * 16, root_parent, "GET /process", "my-server", "SERVER", 0, 160,
             **{"url.path": "/process"}),
        span("b" * 16, "a" * 16, "GET", "my-server", "CLIENT", 100, 158),
        span("c" * 16, "b" * 16, "GET /downstream", "my-downstream", "SERVER", 102, 156),
    ]  # fmt: skip
    if hops == 3:
        spans += [
            span("d" * 16, "c" * 16, "GET", "my-downstream", "CLIENT", 103, 120),
            span("e" * 16, "d" * 16, "GET /third", "my-third", "SERVER", 104, 118),
        ]
    return spans


# ------------------------------------------------------------------------------------- tree


def test_tree_shows_nesting_services_kinds_durations_and_bars():
    lines = render(seed_spans(), bar_width=16).splitlines()
    assert lines == [
        f"trace {TRACE} · 3 spans · 160.0 ms",
        "GET /process           my-server      SERVER  160.0 ms  ████████████████",
        "└─ GET                 my-server      CLIENT   58.0 ms  ··········██████",
        "   └─ GET /downstream  my-downstream  SERVER   54.0 ms  ··········██████",
    ]


def test_tree_in_ascii_with_three_hops_and_a_remote_parent():
    lines = render(seed_spans(3, root_parent="f" * 16), unicode=False, bar_width=8).splitlines()
    assert lines[0] == f"trace {TRACE} - 5 spans - 160.0 ms - continues remote parent {'f' * 16}"
    labels = [line.split("  my-")[0].rstrip() for line in lines[1:]]
    assert labels == [
        "GET /process",
        "`- GET",
        "   `- GET /downstream",
        "      `- GET",
        "         `- GET /third",
    ]
    assert all(line.isascii() for line in lines)


def test_tree_siblings_are_ordered_by_start_and_drawn_with_branches():
    spans = [
        span("a" * 16, None, "root", "svc", "SERVER", 0, 100),
        span("c" * 16, "a" * 16, "second", "svc", "CLIENT", 50, 90),
        span("b" * 16, "a" * 16, "first", "svc", "CLIENT", 10, 40),
    ]
    labels = [line.split("  svc")[0].rstrip() for line in render(spans).splitlines()[1:]]
    assert labels == ["root", "├─ first", "└─ second"]


def test_tree_separates_traces_and_survives_a_parent_cycle():
    spans = [
        span("a" * 16, "b" * 16, "x", "svc", "SERVER", 0, 10),
        span("b" * 16, "a" * 16, "y", "svc", "CLIENT", 1, 9),
        span("c" * 16, None, "other", "svc", "SERVER", 20, 30, trace_id=OTHER_TRACE),
    ]
    text = render(spans)
    blocks = text.split("\n\n")
    assert len(blocks) == 2
    assert blocks[1].startswith(f"trace {OTHER_TRACE}")
    # a cycle has no root: each span is shown once, as its own root
    assert sum(line.startswith(("x", "y")) for line in blocks[0].splitlines()) == 2


# ------------------------------------------------------------------------------ trace check


def test_check_accepts_the_seed_chain():
    chain = expected_chain(2)
    verdict = check(seed_spans(), chain)
    assert verdict.ok, verdict.problems
    assert verdict.trace_id == TRACE
    assert [s.name for s in verdict.chain] == ["GET /process", "GET", "GET /downstream"]


def test_check_accepts_three_hops_and_a_continued_header():
    verdict = check(seed_spans(3, "f" * 16), expected_chain(3), incoming=(TRACE, "f" * 16))
    assert verdict.ok, verdict.problems
    assert len(verdict.chain) == 5


def test_check_reports_a_downstream_span_in_another_trace():
    spans = seed_spans()
    spans[2] = span("c" * 16, None, "GET /downstream", "my-downstream", "SERVER", 102, 156,
                    trace_id=OTHER_TRACE)  # fmt: skip
    verdict = check(spans, expected_chain(2))
    assert not verdict.ok
    assert any(f"in trace {OTHER_TRACE}" in p for p in verdict.problems)
    assert any("no my-downstream SERVER span is a child of my-server CLIENT" in p
               for p in verdict.problems)  # fmt: skip


def test_check_reports_a_wrong_parent_and_an_ignored_header():
    spans = seed_spans()
    spans[2] = span("c" * 16, "a" * 16, "GET /downstream", "my-downstream", "SERVER", 102, 156)
    verdict = check(spans, expected_chain(2), incoming=(OTHER_TRACE, "f" * 16))
    problems = " | ".join(verdict.problems)
    assert "does not continue the incoming header" in problems
    assert f"expected the incoming header's span {'f' * 16}" in problems
    assert "no my-downstream SERVER span is a child of my-server CLIENT" in problems


def test_check_without_header_rejects_a_root_with_a_parent():
    verdict = check(seed_spans(root_parent="f" * 16), expected_chain(2))
    assert verdict.problems == (
        f"my-server SERVER 'GET /process' ({'a' * 16}) has parent {'f' * 16} but no header "
        "was sent",
    )


def test_check_without_entry_span():
    verdict = check(seed_spans()[1:], expected_chain(2))
    assert verdict.trace_id is None
    assert verdict.problems == ("no my-server SERVER span for /process arrived",)


def test_arrival_counts_each_hop():
    chain = expected_chain(3)
    assert missing(seed_spans(2), chain) == [Hop("my-downstream", "CLIENT"), Hop("my-third", "SERVER")]
    assert all_arrived(seed_spans(3), chain)
    assert not all_arrived([], chain)
    with pytest.raises(ValueError, match="hops"):
        expected_chain(4)


# -------------------------------------------------------------------- arguments (no services)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--propagators", "b3mutli"], "unknown propagator 'b3mutli'"),
        (["--header", "traceparent 00-abc"], "expected 'NAME: VALUE'"),
        (["--header", f"b3: {TRACE}-{'a' * 16}-1"], "B3 headers need --propagators b3"),
        (["--header", "traceparent: 00-zz-zz-01"], "find no valid trace context"),
        (["--header", f"traceparent: 00-{TRACE}-{'a' * 16}-00"], "'not sampled'"),
        (["--otlp-endpoint", "localhost:4318"], "--otlp-endpoint 'localhost:4318'"),
        (["--timeout", "0"], "--timeout must be positive"),
        (
            ["--header", f"traceparent: 00-{TRACE}-{'a' * 16}-01"] * 2,
            "--header traceparent is given twice",
        ),
    ],
)
def test_bad_arguments_exit_2_before_starting_anything(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    monkeypatch.delenv("TRACEWIRE_PROPAGATORS", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tracewire demo: ")
    assert message in err


def test_argparse_errors_return_2(capsys):
    assert main(["--hops", "4"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bad_otlp_variable_is_named(capsys, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
    assert main([]) == 2
    assert "OTEL_EXPORTER_OTLP_ENDPOINT 'collector:4318/v1/traces'" in capsys.readouterr().err

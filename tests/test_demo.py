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
from tracewire.demo.receiver import OTLPReceiver, ReceivedSpan
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
    lacking = [Hop("my-downstream", "CLIENT"), Hop("my-third", "SERVER")]
    assert missing(seed_spans(2), chain) == lacking
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


# ------------------------------------------------------------------ real runs, as a user does

SCRIPT = Path(sys.executable).with_name("tracewire")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tracewire"]
RUN_TIMEOUT = 120
TREE_LINE = re.compile(
    r"^(?P<indent>(?:[│ ]  )*(?:[├└]─ )?)(?P<name>\S.*?)\s{2,}(?P<service>my-[a-z]+)\s{2,}"
    r"(?P<kind>SERVER|CLIENT|INTERNAL)\s+(?P<ms>\d+\.\d) ms\s{2}(?P<bar>[█·]+)$"
)


def demo_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "TRACEWIRE_", "TWDEMO_", "PYTEST_"))
    }
    env["PYTHONIOENCODING"] = "utf-8"  # the tree's box characters, whatever the locale
    env.update(extra)
    return env


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``tracewire demo`` in a session of its own, so that a hung run can be ended with
    every process it started (the demo stops its services itself; this is the safety net)."""
    argv = [*COMMAND, "demo", *args]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env or demo_env(),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"tracewire demo did not finish in {RUN_TIMEOUT}s\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def tree_rows(stdout: str) -> list[tuple[int, str, str, str]]:
    """``(depth, span name, service, kind)`` for each line of the printed tree."""
    rows = []
    for line in stdout.splitlines():
        match = TREE_LINE.match(line)
        if match:
            depth = len(match["indent"]) // 3
            rows.append((depth, match["name"], match["service"], match["kind"]))
    return rows


def printed_trace_id(stdout: str) -> str:
    match = re.search(r"^trace id: ([0-9a-f]{32})$", stdout, re.MULTILINE)
    assert match, stdout
    header = re.search(r"^trace ([0-9a-f]{32}) · ", stdout, re.MULTILINE)
    assert header and header[1] == match[1], stdout
    return match[1]


TWO_HOPS = [
    (0, "GET /process", "my-server", "SERVER"),
    (1, "GET", "my-server", "CLIENT"),
    (2, "GET /downstream", "my-downstream", "SERVER"),
]
THREE_HOPS = [
    *TWO_HOPS,
    (3, "GET", "my-downstream", "CLIENT"),
    (4, "GET /third", "my-third", "SERVER"),
]


def test_demo_prints_one_trace_across_two_services():
    result = run_demo()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert tree_rows(out) == TWO_HOPS
    printed_trace_id(out)
    assert " · 3 spans · " in out
    assert "OK: one trace, my-server SERVER -> my-server CLIENT -> my-downstream SERVER" in out
    assert "Starlette on uvicorn" in out
    assert "warm-up request sent" in out


def test_demo_with_b3multi_shows_the_b3_headers_on_the_wire():
    result = run_demo("--propagators", "b3multi", "--show-headers")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert tree_rows(out) == TWO_HOPS
    trace_id = printed_trace_id(out)
    assert "propagators: b3multi" in out
    received = out.split("trace headers each service received:")[1]
    assert f"x-b3-traceid: {trace_id}" in received
    assert "x-b3-sampled: 1" in received
    assert "traceparent" not in received
    assert "my-server      (none: the demo sent no trace headers" in received


def test_demo_continues_an_incoming_traceparent():
    header = f"traceparent: 00-{TRACE}-00f067aa0ba902b7-01"
    result = run_demo("--header", header, "--show-headers")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert printed_trace_id(out) == TRACE
    assert "continues remote parent 00f067aa0ba902b7" in out
    assert f"my-server      traceparent: 00-{TRACE}-00f067aa0ba902b7-01" in out
    assert "OK: one trace continuing the incoming header" in out


@pytest.mark.slow
def test_demo_with_three_hops():
    result = run_demo("--hops", "3", "--show-headers")
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree_rows(result.stdout) == THREE_HOPS
    trace_id = printed_trace_id(result.stdout)
    assert f"my-third       traceparent: 00-{trace_id}-" in result.stdout


@pytest.mark.slow
def test_demo_continues_a_b3_header_through_three_hops():
    result = run_demo(
        "--hops", "3", "--propagators", "b3", "--header", "b3: 80f198ee56343ba8-e457b5a2e4d86bd1-1"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree_rows(result.stdout) == THREE_HOPS
    assert printed_trace_id(result.stdout) == "0" * 16 + "80f198ee56343ba8"
    assert "continues remote parent e457b5a2e4d86bd1" in result.stdout


@pytest.mark.slow
def test_demo_without_propagation_fails_and_says_why():
    result = run_demo("--propagators", "none")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "warm-up request" not in out  # 'none' cannot carry "not sampled"
    assert len(re.findall(r"^trace [0-9a-f]{32} · ", out, re.MULTILINE)) == 2  # two trees
    assert " · 1 span · " in out
    assert "FAILED: the trace does not hold together:" in out
    assert "the trace headers did not get through, or were not understood" in out
    assert "no my-downstream SERVER span is a child of my-server CLIENT" in out


@pytest.mark.slow
def test_demo_exports_to_a_second_collector_too():
    with OTLPReceiver() as collector:
        result = run_demo("--otlp-endpoint", collector.endpoint)
        assert result.returncode == 0, result.stdout + result.stderr
        trace_id = printed_trace_id(result.stdout)
        spans = collector.wait_for_spans(3, trace_id=trace_id, timeout=15)
    assert {(s.service, s.kind) for s in spans} == {
        ("my-server", "SERVER"),
        ("my-server", "CLIENT"),
        ("my-downstream", "SERVER"),
    }
    assert f"spans -> also {collector.endpoint}" in result.stdout


def write_sitecustomize(directory: Path, body: str) -> dict[str, str]:
    """Environment whose Python processes run ``body`` at start-up (only where it says so)."""
    (directory / "sitecustomize.py").write_text(body)
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return demo_env(PYTHONPATH=path)


def test_a_service_that_fails_to_start_is_reported_with_its_log(tmp_path):
    env = write_sitecustomize(
        tmp_path,
        "import os, sys\n"
        "if any('gunicorn' in a for a in sys.orig_argv):\n"
        "    sys.stderr.write('downstream refuses to start (test)\\n')\n"
        "    sys.stderr.flush()\n"
        "    os._exit(3)\n",
    )
    result = run_demo(env=env)
    assert result.returncode == 1
    assert "tracewire demo: my-downstream exited with code 3 while starting" in result.stderr
    assert "downstream refuses to start (test)" in result.stderr
    server_port = re.search(r"my-server .* http://127\.0\.0\.1:(\d+)", result.stdout)
    assert server_port
    assert not _port_open(int(server_port[1]))


def test_a_start_timeout_is_bounded_and_reported():
    started = time.monotonic()
    result = run_demo("--timeout", "0.05")
    assert result.returncode == 1
    assert "did not answer within 0.05s" in result.stderr
    assert time.monotonic() - started < 60


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [
        (signal.SIGINT, 130, "interrupted"),
        pytest.param(signal.SIGTERM, 143, "terminated", marks=pytest.mark.slow),
    ],
)
def test_interrupting_the_demo_stops_every_service(tmp_path, signum, code, word):
    marker = f"TWDEMO_TEST_MARKER_{uuid.uuid4().hex}"
    env = write_sitecustomize(
        tmp_path,
        # my-downstream hangs at start-up, so the demo is still running when interrupted
        "import sys, time\nif any('gunicorn' in a for a in sys.orig_argv):\n    time.sleep(120)\n",
    )
    env[marker] = "1"
    # A runner started in the background has SIGINT ignored, which children inherit and
    # Python then keeps: the demo gets the disposition a terminal would give it.
    default_sigint = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    demo = subprocess.Popen(
        [sys.executable, "-c", default_sigint, *COMMAND, "demo", "--timeout", "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=env,
        start_new_session=True,  # the finally below can end the whole group if need be
    )
    try:
        server_port = None
        deadline = time.monotonic() + 60
        while server_port is None and time.monotonic() < deadline:
            line = demo.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            match = re.search(r"my-server .* http://127\.0\.0\.1:(\d+)", line)
            if match:
                server_port = int(match[1])
        assert server_port is not None, "the demo did not announce my-server"
        while not _port_open(server_port):
            assert time.monotonic() < deadline, "my-server did not come up"
            time.sleep(0.05)
        children = [p for p in _processes_with(marker) if p != demo.pid]
        assert len(children) >= 2  # my-server and my-downstream (gunicorn) at least
        demo.send_signal(signum)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=30)
    assert demo.returncode == code, err
    assert f"tracewire demo: {word}; every service was stopped" in err
    assert _processes_with(marker) == []
    assert not _port_open(server_port)

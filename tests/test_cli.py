"""``tracewire check`` through the real console script and ``python -m tracewire``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "tracewire"
COMMANDS = {
    "script": [str(SCRIPT)],
    "module": [sys.executable, "-m", "tracewire"],
}


def run(
    command: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if command == "script" and not SCRIPT.exists():
        pytest.skip(f"console script not installed at {SCRIPT}")
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("TRACEWIRE_", "OTEL_PROPAGATORS"))
    }
    return subprocess.run(
        [*COMMANDS[command], *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", list(COMMANDS))
def test_check_prints_settings_and_sources(command: str) -> None:
    result = run(
        command,
        "check",
        env={
            "OTEL_PROPAGATORS": "tracecontext,b3multi",
            "TRACEWIRE_REQUIRE_PARENT": "yes",
            "TRACEWIRE_EXCLUDED_PATHS": "/health, /static/*",
        },
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "tracewire settings (from the environment):"
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "tracecontext, b3multi" in rows["propagators"]
    assert rows["propagators"].endswith("[OTEL_PROPAGATORS]")
    assert "True" in rows["require_parent"]
    assert rows["require_parent"].endswith("[TRACEWIRE_REQUIRE_PARENT]")
    assert "/health, /static/*" in rows["excluded_paths"]
    assert rows["extract_policy"].endswith("[default]")
    assert "policy='first'" in rows["effective"]
    assert "extract=['tracecontext', 'b3multi']" in rows["effective"]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TRACEWIRE_PROPAGATORS": "tracecontext,b3mutli"},
            "unknown propagator 'b3mutli' in TRACEWIRE_PROPAGATORS; known: ",
        ),
        (
            {"OTEL_PROPAGATORS": "xray"},
            "propagator 'xray' in OTEL_PROPAGATORS is not installed; install the package "
            "'opentelemetry-propagator-aws-xray' to use it",
        ),
        (
            {"TRACEWIRE_SERVER_REQUEST_HOOK": "nowhere_at_all:hook"},
            "cannot import hook 'nowhere_at_all:hook' in TRACEWIRE_SERVER_REQUEST_HOOK",
        ),
    ],
    ids=["unknown", "not-installed", "hook"],
)
def test_check_exits_2_with_the_message(command: str, env: dict[str, str], message: str) -> None:
    result = run(command, "check", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"tracewire: invalid settings: {message}")
    if message.endswith("known: "):
        for name in ("b3", "b3multi", "baggage", "none", "tracecontext"):
            assert name in result.stderr.split("known: ")[1]
    assert "Traceback" not in result.stderr


def test_usage() -> None:
    assert run("module").returncode == 0
    bad = run("module", "frobnicate")
    assert bad.returncode == 2
    assert "usage: tracewire {check,demo}" in bad.stderr
    helped = run("module", "check", "--help")
    assert helped.returncode == 0
    assert "Validate tracewire settings" in helped.stdout


def test_done_when_unknown_name_lists_known_names() -> None:
    """The issue's acceptance line, run as written."""
    result = subprocess.run(
        [sys.executable, "-c", "import tracewire; tracewire.Settings(propagators=['nope'])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: unknown propagator 'nope' in propagators; known: ")
    known = last.split("known: ")[1].split(", ")
    assert {"b3", "b3multi", "baggage", "none", "tracecontext"} <= set(known)
    assert known == sorted(known)

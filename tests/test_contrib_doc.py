"""docs/coming-from-contrib.md stays true: every "after" line of its migration table runs
against tracewire's real API, and every environment variable it names as read is read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracewire
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware, otel_env

DOC = Path(__file__).resolve().parent.parent / "docs" / "coming-from-contrib.md"
TEXT = DOC.read_text()


def _migration_rows() -> list[str]:
    section = TEXT.split("## Migration", 1)[1]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`"):
            rows.append(re.findall(r"`([^`]+)`", cells[1])[0])
    return rows


ROWS = _migration_rows()
NOT_PYTHON = ('"tracewire.django.TracewireMiddleware"', "the same command")


def _namespace(line: str) -> dict[str, Any]:
    from fastapi import FastAPI
    from flask import Flask
    from starlette.applications import Starlette

    if "wsgi_app" in line or line.startswith("Tracewire("):
        app: Any = Flask("doc")
    elif "add_middleware" in line:
        app = FastAPI()
    else:
        app = Starlette()
    from tracewire.flask import Tracewire

    return {
        "app": app,
        "client": httpx.Client(),
        "tracewire": tracewire,
        "Settings": Settings,
        "Tracewire": Tracewire,
        "TracewireMiddleware": TracewireMiddleware,
        "TracewireWSGIMiddleware": TracewireWSGIMiddleware,
    }


def test_the_migration_table_was_found() -> None:
    assert len(ROWS) >= 10


@pytest.mark.parametrize("line", [r for r in ROWS if not r.startswith(NOT_PYTHON)])
def test_every_after_line_runs(line: str) -> None:
    import tracewire.httpx
    import tracewire.requests

    namespace = _namespace(line)
    try:
        exec(line, namespace)  # the line as the page shows it
        app = namespace["app"]
        if hasattr(app, "build_middleware_stack"):
            app.build_middleware_stack()  # add_middleware's arguments are checked here
    finally:
        tracewire.httpx.uninstrument()
        tracewire.requests.uninstrument()
        namespace["client"].close()


def test_every_variable_said_to_be_read_is_read() -> None:
    read = {
        otel_env.OTEL_PROPAGATORS,
        otel_env.EXCLUDED_URLS,
        otel_env.SEMCONV_OPT_IN,
        otel_env.SANITIZE,
        *otel_env.CAPTURE_VARIABLES.values(),
        *(otel_env.excluded_urls_variable(n) for n in otel_env.FRAMEWORKS),
        *(otel_env.excluded_urls_variable(n) for n in otel_env.CLIENT_LIBRARIES),
    }
    variables_table = TEXT.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    for variable in read:
        assert f"`{variable}`" in variables_table, variable
    assert "`OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS` | not read" in TEXT


def test_the_check_example_prints_what_the_page_shows() -> None:
    import os
    import subprocess
    import sys

    block = TEXT.split("```console\n", 1)[1].split("```", 1)[0].splitlines()
    command = block[0].removeprefix("$ ").split()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRACEWIRE_", "OTEL_PYTHON_", "OTEL_INSTRUMENTATION_", "OTEL_SEMCONV"))
    }
    assigned = [part for part in command if "=" in part]
    env.update(part.split("=", 1) for part in assigned)
    tool = Path(sys.executable).parent / command[len(assigned)]
    args = command[len(assigned) + 1 :]
    result = subprocess.run(
        [str(tool), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    for line in block[1:]:
        if line.strip() != "...":
            assert line in printed, line


def test_a_capture_list_of_dot_star_captures_every_header(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracewire.compiled import compile_settings

    # The page says so: contrib's ".*" form works unchanged.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    capture = compile_settings(Settings.from_env()).capture_request
    assert "x-anything" in capture and "user-agent" in capture

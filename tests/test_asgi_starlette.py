"""``tracewire.starlette``: settings from a Starlette ``Config`` (environment, then ``.env``),
used by an app mounted the Starlette way and checked with real requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.config import Config
from starlette.middleware import Middleware

from tests.support.asgi_apps import (
    Probe,
    SpanSink,
    fetch,
    new_ids,
    serve,
    starlette_app,
    traceparent,
)
from tracewire.starlette import TracewireMiddleware, settings_from_config

HOOK_CALLS: list[str] = []


def request_hook(span: Any, scope: Any) -> None:
    HOOK_CALLS.append(scope["path"])
    span.set_attribute("app.from_env_hook", True)


def _config(tmp_path: Path, env_file: str, environ: dict[str, str]) -> Config:
    path = tmp_path / ".env"
    path.write_text(env_file)
    return Config(env_file=path, environ=environ)


def test_settings_from_env_file_and_environment_drive_a_running_app(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "TRACEWIRE_PROPAGATORS=b3multi, baggage\n"
        "TRACEWIRE_RESPONSE_PROPAGATION=traceresponse\n"
        "TRACEWIRE_EXCLUDED_PATHS=/items/from-file\n"
        f"TRACEWIRE_SERVER_REQUEST_HOOK={__name__}:request_hook\n",
        # The environment wins over the file.
        {"TRACEWIRE_EXCLUDED_PATHS": "/items/skip", "TRACEWIRE_CAPTURE_REQUEST_HEADERS": ""},
    )
    settings = settings_from_config(config)
    assert [name for name, _ in settings.composite.extractors] == ["b3multi", "baggage"]
    assert settings.excluded_paths == ("/items/skip",)
    assert settings.capture_request_headers == ()  # empty counts as unset

    sink, probe = SpanSink(), Probe()
    app = starlette_app(
        probe, middleware=[Middleware(TracewireMiddleware, settings, tracer_provider=sink.provider)]
    )
    HOOK_CALLS.clear()
    with serve(app, "uvicorn") as running:
        trace_id, parent_id = new_ids()
        headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": parent_id, "X-B3-Sampled": "1"}
        response = fetch(running.url + "/items/1", headers=headers)
        assert response.json()["trace_id"] == trace_id
        span = sink.of_trace(trace_id)
        assert response.headers["traceresponse"] == f"00-{trace_id}-{span.context.span_id:016x}-01"
        assert span.attributes["app.from_env_hook"] is True
        assert span.attributes["tracewire.propagation.format"] == "b3multi"
        # traceparent is not one of the configured formats.
        other, other_parent = new_ids()
        seen = fetch(
            running.url + "/items/2", headers={"traceparent": traceparent(other, other_parent)}
        ).json()
        assert seen["trace_id"] != other
        # Excluded by the environment's value, not the file's.
        skipped = fetch(running.url + "/items/skip", headers=headers).json()
        assert skipped["span_id"] == parent_id
        sink.of_trace(seen["trace_id"])
        fetch(running.url + "/items/from-file")
        sink.wait_count(3)
    assert sorted(s.attributes["url.path"] for s in sink.server_spans()) == [
        "/items/1",
        "/items/2",
        "/items/from-file",
    ]
    assert HOOK_CALLS == ["/items/1", "/items/2", "/items/from-file"]


def test_otel_propagators_is_the_fallback(tmp_path: Path) -> None:
    config = _config(tmp_path, "OTEL_PROPAGATORS=b3\n", {})
    settings = settings_from_config(config)
    assert [name for name, _ in settings.composite.extractors] == ["b3"]
    own = _config(tmp_path, "OTEL_PROPAGATORS=b3\nTRACEWIRE_PROPAGATORS=tracecontext\n", {})
    assert [n for n, _ in settings_from_config(own).composite.extractors] == ["tracecontext"]


def test_overrides_win(tmp_path: Path) -> None:
    config = _config(tmp_path, "TRACEWIRE_RESPONSE_PROPAGATION=traceresponse\n", {})
    settings = settings_from_config(config, response_propagation="server-timing")
    assert settings.response_propagation == "server-timing"


@pytest.mark.parametrize(
    ("prefix", "text", "named"),
    [
        (
            "TRACEWIRE_",
            "TRACEWIRE_RESPONSE_PROPAGATION=sometimes\n",
            "TRACEWIRE_RESPONSE_PROPAGATION",
        ),
        ("MYAPP_", "MYAPP_RESPONSE_PROPAGATION=sometimes\n", "MYAPP_RESPONSE_PROPAGATION"),
        ("TRACEWIRE_", "TRACEWIRE_PROPAGATORS=tracecontext,zipkin\n", "TRACEWIRE_PROPAGATORS"),
        ("TRACEWIRE_", "OTEL_PROPAGATORS=nope\n", "OTEL_PROPAGATORS"),
        ("TRACEWIRE_", "TRACEWIRE_SERVER_REQUEST_HOOK=no_colon\n", "TRACEWIRE_SERVER_REQUEST_HOOK"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, prefix: str, text: str, named: str) -> None:
    config = _config(tmp_path, text, {})
    with pytest.raises(ValueError, match=named):
        settings_from_config(config, prefix=prefix)


def test_custom_prefix(tmp_path: Path) -> None:
    config = _config(tmp_path, "MYAPP_PROPAGATORS=b3\nTRACEWIRE_PROPAGATORS=baggage\n", {})
    settings = settings_from_config(config, prefix="MYAPP_")
    assert [name for name, _ in settings.composite.extractors] == ["b3"]
    assert {f: src for f, _, src in settings.describe()}[
        "propagators"
    ] == "Config('MYAPP_PROPAGATORS')"


def test_add_middleware_with_config(tmp_path: Path) -> None:
    config = _config(tmp_path, "TRACEWIRE_RESPONSE_PROPAGATION=server-timing\n", {})
    sink = SpanSink()
    app = Starlette()
    app.add_middleware(
        TracewireMiddleware, settings=settings_from_config(config), tracer_provider=sink.provider
    )
    with serve(app, "hypercorn") as running:
        trace_id, parent_id = new_ids()
        response = fetch(
            running.url + "/nothing", headers={"traceparent": traceparent(trace_id, parent_id)}
        )
        assert response.status_code == 404
        assert response.headers["server-timing"].startswith(f"trace;desc=00-{trace_id}-")
        assert sink.of_trace(trace_id).name == "GET"

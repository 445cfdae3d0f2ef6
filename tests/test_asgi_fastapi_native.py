"""FastAPI's own tracing next to tracewire: detected and reported once, never harmful."""

from __future__ import annotations

import logging

import httpx
import pytest

fastapi = pytest.importorskip("fastapi")

from tests.support.servers import UvicornThread  # noqa: E402
from tracewire import Settings, TracewireMiddleware  # noqa: E402
from tracewire.semconv import HTTP_RESPONSE_STATUS_CODE  # noqa: E402

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _app(tracing, native: bool):  # type: ignore[no-untyped-def]
    telemetry = {"tracer_provider": tracing.provider, "metrics": False, "logs": False}
    if not native:
        telemetry["tracing"] = False
    try:
        app = fastapi.FastAPI(telemetry=telemetry)
    except TypeError:
        pytest.skip("this FastAPI has no native telemetry")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    app.add_middleware(TracewireMiddleware, settings=Settings(), tracer_provider=tracing.provider)
    return app


def _server_spans(tracing):  # type: ignore[no-untyped-def]
    return [s for s in tracing.spans() if s.kind.name == "SERVER"]


def test_native_tracing_is_reported_once(tracing, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="tracewire")
    with UvicornThread(_app(tracing, native=True)) as server:
        for _ in range(3):
            r = httpx.get(f"{server.url}/items/7", headers={"traceparent": TP}, timeout=10)
            assert r.status_code == 200 and r.json() == {"item_id": 7}
    ours = [s for s in _server_spans(tracing) if s.instrumentation_scope.name == "tracewire"]
    assert len(ours) == 3
    assert len(_server_spans(tracing)) == 6  # FastAPI made its own: the case being reported
    assert all(s.attributes[HTTP_RESPONSE_STATUS_CODE] == 200 for s in ours)
    warnings = [r for r in caplog.records if "FastAPI's own tracing" in r.getMessage()]
    assert len(warnings) == 1


def test_with_native_tracing_off_there_is_one_server_span(tracing, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="tracewire")
    with UvicornThread(_app(tracing, native=False)) as server:
        r = httpx.get(f"{server.url}/items/7", headers={"traceparent": TP}, timeout=10)
        assert r.status_code == 200
    spans = _server_spans(tracing)
    assert len(spans) == 1
    assert spans[0].name == "GET /items/{item_id}"
    assert spans[0].parent is not None and spans[0].parent.span_id == int(TP[36:52], 16)
    assert "FastAPI's own tracing" not in caplog.text

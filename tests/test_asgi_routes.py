"""SERVER span names after the matched route template (Starlette, FastAPI), never the raw path.

Mounts (static, with path parameters, nested, of sub-apps and of non-router apps), Host
routing, FastAPI routers with prefixes and mounted FastAPI sub-apps, and a custom ``route``
function, all under a real uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Host, Mount, Route, Router, WebSocketRoute
from starlette.websockets import WebSocket

from tests.support.asgi_apps import (
    SpanSink,
    fetch,
    new_ids,
    serve,
    traceparent,
    websocket_session,
)
from tests.support.servers import UvicornThread
from tracewire import Settings
from tracewire.starlette import TracewireMiddleware


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def echo_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


async def raw_files(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"file"})


def starlette_site() -> Starlette:
    sub = Starlette(routes=[Route("/pages/{page_id}", ok), WebSocketRoute("/ws", echo_ws)])
    return Starlette(
        routes=[
            Route("/items/{item_id}", ok),
            Route("/plain", ok),
            Mount("/api", routes=[Route("/things/{thing_id:int}", ok)]),
            Mount("/v/{version}", routes=[Mount("/users/{user_id}", routes=[Route("/", ok)])]),
            Mount("/deep", routes=[Mount("/er", routes=[Route("/est/{x}", ok)])]),
            Mount("/sub", app=sub),
            Mount("/static", app=raw_files),
            Host("api.example.test", app=Router(routes=[Route("/hosted/{h}", ok)])),
        ]
    )


def fastapi_site() -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/v2")

    @router.get("/widgets/{widget_id}")
    async def widget(widget_id: int) -> dict[str, int]:
        return {"widget": widget_id}

    app.include_router(router)
    sub = FastAPI()

    @sub.get("/reports/{report_id}")
    async def report(report_id: str) -> dict[str, str]:
        return {"report": report_id}

    app.mount("/sub/{tenant}", sub)
    return app


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, Any]]:
    sink = SpanSink()
    running: dict[str, Any] = {"sink": sink}
    servers = []
    for name, build in (("starlette", starlette_site), ("fastapi", fastapi_site)):
        app = build()
        app.add_middleware(TracewireMiddleware, tracer_provider=sink.provider)
        server = UvicornThread(app)
        server.start()
        servers.append(server)
        running[name] = server
    try:
        yield running
    finally:
        for server in servers:
            server.stop()
        sink.provider.shutdown()


def _span_name(sites: dict[str, Any], site: str, path: str, host: str | None = None) -> Any:
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id)}
    if host:
        headers["host"] = host
    response = fetch(sites[site].url + path, headers=headers, timeout=5)
    span = sites["sink"].of_trace(trace_id)
    return response, span


@pytest.mark.parametrize(
    ("site", "path", "expected"),
    [
        ("starlette", "/items/42", "GET /items/{item_id}"),
        ("starlette", "/plain", "GET /plain"),
        ("starlette", "/api/things/7", "GET /api/things/{thing_id:int}"),
        ("starlette", "/v/3/users/alice/", "GET /v/{version}/users/{user_id}/"),
        ("starlette", "/deep/er/est/1", "GET /deep/er/est/{x}"),
        ("starlette", "/sub/pages/9", "GET /sub/pages/{page_id}"),
        ("starlette", "/static/css/site.css", "GET /static/{path}"),
        ("fastapi", "/v2/widgets/5", "GET /v2/widgets/{widget_id}"),
        ("fastapi", "/sub/acme/reports/r-1", "GET /sub/{tenant}/reports/{report_id}"),
    ],
)
def test_span_named_after_route_template(
    sites: dict[str, Any], site: str, path: str, expected: str
) -> None:
    response, span = _span_name(sites, site, path)
    assert response.status_code == 200
    assert span.name == expected
    assert span.attributes["http.route"] == expected.split(" ", 1)[1]
    assert span.attributes["url.path"] == path


def test_parameters_in_mounts_never_reach_the_name(sites: dict[str, Any]) -> None:
    names = {_span_name(sites, "starlette", f"/v/{v}/users/u{v}/")[1].name for v in range(5)}
    assert names == {"GET /v/{version}/users/{user_id}/"}


def test_host_routing(sites: dict[str, Any]) -> None:
    response, span = _span_name(sites, "starlette", "/hosted/x", host="api.example.test")
    assert response.status_code == 200
    assert span.name == "GET /hosted/{h}"


def test_unmatched_path_is_named_by_method(sites: dict[str, Any]) -> None:
    response, span = _span_name(sites, "starlette", "/nope/123")
    assert response.status_code == 404
    assert span.name == "GET"


def test_websocket_in_mounted_app(sites: dict[str, Any]) -> None:
    trace_id, parent_id = new_ids()
    server = sites["starlette"]
    websocket_session(
        server.host, server.port, "/sub/ws", [("traceparent", traceparent(trace_id, parent_id))], []
    )
    assert sites["sink"].of_trace(trace_id).name == "GET /sub/ws"


# ---------------------------------------------------------------------- custom route function
def test_custom_route_function() -> None:
    sink = SpanSink()
    app = TracewireMiddleware(
        raw_files,
        tracer_provider=sink.provider,
        route=lambda scope: "/files/{name}" if scope["path"].startswith("/files/") else None,
    )
    with serve(app, "uvicorn") as running:
        trace_id, parent_id = new_ids()
        headers = {"traceparent": traceparent(trace_id, parent_id)}
        fetch(running.url + "/files/a.txt", headers=headers, timeout=5)
        assert sink.of_trace(trace_id).name == "GET /files/{name}"


def test_raising_route_function_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    sink = SpanSink()

    def broken(scope: Any) -> str:
        raise KeyError("no route here")

    app = TracewireMiddleware(raw_files, Settings(), tracer_provider=sink.provider, route=broken)
    with caplog.at_level(logging.WARNING, logger="tracewire"), serve(app, "uvicorn") as running:
        for _ in range(3):
            trace_id, parent_id = new_ids()
            headers = {"traceparent": traceparent(trace_id, parent_id)}
            response = fetch(running.url + "/x", headers=headers, timeout=5)
            assert (response.status_code, response.text) == (200, "file")
            span = sink.of_trace(trace_id)
            assert span.name == "GET"
            assert span.attributes["http.response.status_code"] == 200
    faults = [r for r in caplog.records if "internal:route" in r.getMessage()]
    assert len(faults) == 1  # once per kind, not once per request


def test_route_must_be_callable() -> None:
    with pytest.raises(TypeError, match="route must be a callable"):
        TracewireMiddleware(raw_files, route="/x")  # type: ignore[arg-type]

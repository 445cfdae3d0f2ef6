"""``traceresponse`` / ``Server-Timing`` on CORS responses: ``Access-Control-Expose-Headers``.

Real servers: a Starlette app with Starlette's ``CORSMiddleware`` inside tracewire (uvicorn),
a Flask app that sets ``Access-Control-Allow-Origin`` itself (werkzeug), and the framework's
own 500 responses with tracewire wrapping the whole app. A CORS response (one with
``Access-Control-Allow-Origin``) names the header in ``Access-Control-Expose-Headers``; a
response that is not CORS gets no such header.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support.servers import UvicornThread, WerkzeugThread, serving
from tests.support.trust_apps import provider_with
from tracewire import Settings, TracewireMiddleware
from tracewire.flask import Tracewire

ORIGIN = "https://web.example"
MODES = ("traceresponse", "server-timing")
EXPOSE = "access-control-expose-headers"


class Boom(RuntimeError):
    pass


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def boom(request: Request) -> PlainTextResponse:
    raise Boom("the endpoint failed")


def starlette_app(*, expose: list[str] | None = None) -> Starlette:
    return Starlette(
        routes=[Route("/ok", ok), Route("/boom", boom)],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=[ORIGIN],
                allow_methods=["GET"],
                expose_headers=expose or [],
            )
        ],
    )


def exposed(response: httpx.Response) -> list[str]:
    """Every name exposed, over all Access-Control-Expose-Headers fields."""
    names = []
    for value in response.headers.get_list(EXPOSE):
        names.extend(n.strip().lower() for n in value.split(",") if n.strip())
    return names


def check_propagated(response: httpx.Response, mode: str) -> None:
    if mode == "traceresponse":
        assert response.headers["traceresponse"].startswith("00-")
    else:
        assert response.headers["server-timing"].startswith("trace;desc=00-")
    # docs/trust.md: tracewire never adds Timing-Allow-Origin (it would expose timing).
    assert "timing-allow-origin" not in response.headers


@pytest.fixture(scope="module", params=MODES)
def starlette_server(request: pytest.FixtureRequest, tracing_module: Any) -> Iterator[Any]:
    app = TracewireMiddleware(
        starlette_app(expose=["x-app-header"]),
        Settings(response_propagation=request.param),
        tracer_provider=tracing_module.provider,
    )
    with serving(UvicornThread(app, proxy_headers=False)) as server:
        server.mode = request.param  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def tracing_module() -> Iterator[Any]:
    provider, _ = provider_with()
    yield SimpleNamespace(provider=provider)
    provider.shutdown()


def test_starlette_cors_response_exposes_the_header(starlette_server: Any) -> None:
    mode = starlette_server.mode
    response = httpx.get(f"{starlette_server.url}/ok", headers={"Origin": ORIGIN}, timeout=10)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    check_propagated(response, mode)
    # The app's own exposed header is kept, ours added.
    assert sorted(exposed(response)) == sorted(["x-app-header", mode])


def test_starlette_non_cors_response_is_left_alone(starlette_server: Any) -> None:
    mode = starlette_server.mode
    response = httpx.get(f"{starlette_server.url}/ok", timeout=10)
    assert "access-control-allow-origin" not in response.headers
    check_propagated(response, mode)
    assert EXPOSE not in response.headers


def test_starlette_cors_from_a_disallowed_origin_is_not_cors(starlette_server: Any) -> None:
    response = httpx.get(
        f"{starlette_server.url}/ok", headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert "access-control-allow-origin" not in response.headers
    # (Starlette exposes its own list anyway; tracewire adds nothing to a non-CORS response.)
    assert starlette_server.mode not in exposed(response)


@pytest.mark.parametrize("mode", MODES)
def test_framework_made_500_with_tracewire_around_the_whole_app(mode: str, tracing: Any) -> None:
    """The endpoint raises; Starlette's ServerErrorMiddleware answers 500; CORSMiddleware
    (around the whole Starlette app, inside tracewire) makes it a CORS response."""
    inner = Starlette(routes=[Route("/boom", boom)])
    app = TracewireMiddleware(
        CORSMiddleware(inner, allow_origins=[ORIGIN]),
        Settings(response_propagation=mode),
        tracer_provider=tracing.provider,
    )
    with serving(UvicornThread(app, proxy_headers=False)) as server:
        response = httpx.get(f"{server.url}/boom", headers={"Origin": ORIGIN}, timeout=10)
        plain = httpx.get(f"{server.url}/boom", timeout=10)
    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == ORIGIN
    check_propagated(response, mode)
    assert exposed(response) == [mode]
    assert plain.status_code == 500
    assert EXPOSE not in plain.headers
    # The span saw the exception, and the trace id in the header is the span's.
    spans = [s for s in tracing.spans() if s.attributes.get("url.path") == "/boom"]
    assert len(spans) == 2
    ids = {f"{s.context.trace_id:032x}" for s in spans}
    value = response.headers.get("traceresponse") or response.headers["server-timing"]
    assert value.split("-")[1] in ids
    assert all(s.attributes["error.type"].endswith("Boom") for s in spans)


# ----------------------------------------------------------------------------------- Flask
def flask_app(mode: str, provider: Any) -> Any:
    from flask import Flask, request

    app = Flask(__name__)
    app.config["TRACEWIRE_RESPONSE_PROPAGATION"] = mode

    @app.get("/ok")
    def flask_ok() -> str:
        return "ok"

    @app.get("/boom")
    def flask_boom() -> str:
        raise Boom("the view failed")

    @app.after_request
    def cors(response: Any) -> Any:
        if request.headers.get("Origin") == ORIGIN:
            response.headers["Access-Control-Allow-Origin"] = ORIGIN
        return response

    Tracewire(app, tracer_provider=provider)
    return app


@pytest.mark.parametrize("mode", MODES)
def test_flask_cors_responses(mode: str, tracing: Any) -> None:
    pytest.importorskip("flask")
    with serving(WerkzeugThread(flask_app(mode, tracing.provider))) as server:
        cors = httpx.get(f"{server.url}/ok", headers={"Origin": ORIGIN}, timeout=10)
        plain = httpx.get(f"{server.url}/ok", timeout=10)
        # Flask's own 500 page, after_request included: a CORS response made by the framework.
        error = httpx.get(f"{server.url}/boom", headers={"Origin": ORIGIN}, timeout=10)
    assert cors.headers["access-control-allow-origin"] == ORIGIN
    check_propagated(cors, mode)
    assert exposed(cors) == [mode]
    check_propagated(plain, mode)
    assert EXPOSE not in plain.headers
    assert error.status_code == 500
    assert error.headers["access-control-allow-origin"] == ORIGIN
    check_propagated(error, mode)
    assert exposed(error) == [mode]


def test_no_response_propagation_no_expose_header(tracing: Any) -> None:
    app = TracewireMiddleware(starlette_app(), Settings(), tracer_provider=tracing.provider)
    with serving(UvicornThread(app, proxy_headers=False)) as server:
        response = httpx.get(f"{server.url}/ok", headers={"Origin": ORIGIN}, timeout=10)
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "traceresponse" not in response.headers
    assert "server-timing" not in response.headers
    assert EXPOSE not in response.headers

"""``tracewire.django.TracewireMiddleware`` in process: the real project of
``tests/django_project`` behind Django's own test clients (``Client`` runs the WSGI handler,
``AsyncClient`` the ASGI one), spans checked at an in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.sdk.trace import ReadableSpan

from tests.conftest import Tracing
from tests.support.asgi_apps import new_ids, traceparent
from tests.support.echo import EchoServer
from tests.wsgi_apps import ensure_django
from tracewire.django import TracewireMiddleware
from tracewire.wsgi import TracewireWSGIMiddleware


class Traced(TracewireMiddleware):
    """The middleware with the test's provider (the global one is set once per process)."""


PROJECT: dict[str, Any] = {
    "ROOT_URLCONF": "tests.django_project.urls",
    "MIDDLEWARE": [f"{__name__}.Traced"],
    "ALLOWED_HOSTS": ["testserver"],
    "DEBUG": False,
    "TRACEWIRE": {"propagators": "tracecontext,baggage"},
}


@pytest.fixture
def project(tracing: Tracing) -> Iterator[Tracing]:
    ensure_django()
    from django.test import override_settings

    Traced.tracer_provider = tracing.provider
    try:
        with override_settings(**PROJECT):
            yield tracing
    finally:
        Traced.tracer_provider = None


def only_span(tracing: Tracing) -> ReadableSpan:
    spans = tracing.spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]  # type: ignore[no-any-return]


def client() -> Any:
    from django.test import Client

    return Client(raise_request_exception=False)


def async_client() -> Any:
    from django.test import AsyncClient

    return AsyncClient(raise_request_exception=False)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/", "GET /"),
        ("/items/42", "GET /items/<int:pk>"),
        ("/api/v1/users/bob/orders/7", "GET /api/v1/users/<slug:user>/orders/<int:order>"),
        ("/nowhere", "GET"),  # nothing resolved: no route, and no unbounded name
    ],
)
def test_span_named_after_the_resolved_pattern(project: Tracing, path: str, name: str) -> None:
    client().get(path)
    span = only_span(project)
    assert span.name == name
    assert span.attributes is not None
    assert span.attributes.get("http.route") == (name[4:] or None)
    assert span.attributes["url.path"] == path


def test_traceparent_is_continued_and_the_span_is_current_in_the_view(project: Tracing) -> None:
    trace_id, parent_id = new_ids()
    seen = client().get("/items/1", HTTP_TRACEPARENT=traceparent(trace_id, parent_id)).json()
    span = only_span(project)
    assert seen == {"trace_id": trace_id, "span_id": f"{span.context.span_id:016x}", "pk": 1}
    assert span.parent is not None and f"{span.parent.span_id:016x}" == parent_id


def test_b3_when_the_django_settings_say_b3(project: Tracing) -> None:
    from django.test import override_settings

    trace_id, parent_id = new_ids()
    other_trace, other_parent = new_ids()
    headers = {"HTTP_B3": f"{trace_id}-{parent_id}-1"}
    headers["HTTP_TRACEPARENT"] = traceparent(other_trace, other_parent)
    with override_settings(TRACEWIRE_PROPAGATORS="b3", TRACEWIRE=None):
        seen = client().get("/", **headers).json()
    assert seen["trace_id"] == trace_id  # traceparent is not among the settings' formats
    span = only_span(project)
    assert span.parent is not None and f"{span.parent.span_id:016x}" == parent_id


def test_exception_type_recorded_under_wsgi(project: Tracing) -> None:
    assert client().get("/boom").status_code == 500
    span = only_span(project)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.attributes["http.response.status_code"] == 500
    assert [e.name for e in span.events] == ["exception"]
    assert span.name == "GET /boom"


def test_exception_type_recorded_under_asgi(project: Tracing) -> None:
    response = asyncio.run(async_client().get("/async-boom"))
    assert response.status_code == 500
    span = only_span(project)
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    assert [e.name for e in span.events] == ["exception"]


def test_a_404_from_the_view_is_not_an_error(project: Tracing) -> None:
    assert client().get("/missing").status_code == 404
    span = only_span(project)
    assert span.status.status_code.name == "UNSET"
    assert span.attributes is not None
    assert "error.type" not in span.attributes
    assert not span.events


def test_async_view_under_asgi_is_traced_in_async_mode(project: Tracing) -> None:
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id)}
    seen = asyncio.run(async_client().get("/async/x", headers=headers)).json()
    assert seen["trace_id"] == trace_id
    assert only_span(project).name == "GET /async/<str:name>"


def test_sync_and_async_capable() -> None:
    async def async_get_response(request: Any) -> Any:
        return None

    def sync_get_response(request: Any) -> Any:
        return None

    ensure_django()
    assert TracewireMiddleware.sync_capable and TracewireMiddleware.async_capable
    assert iscoroutinefunction(TracewireMiddleware(async_get_response))
    assert not iscoroutinefunction(TracewireMiddleware(sync_get_response))


def test_streaming_span_ends_when_the_body_is_consumed(project: Tracing) -> None:
    trace_id, parent_id = new_ids()
    response = client().get("/stream", HTTP_TRACEPARENT=traceparent(trace_id, parent_id))
    assert response.streaming
    assert project.spans() == []  # the view returned; the body is not produced yet
    body = b"".join(response.streaming_content).decode()
    assert body.count(trace_id) == 10  # each chunk produced with the request's context
    span = only_span(project)
    assert span.name == "GET /stream"


def test_async_streaming_under_asgi_ends_after_the_body(project: Tracing) -> None:
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id)}

    async def run() -> bytes:
        response = await async_client().get("/astream", headers=headers)
        chunks = [chunk async for chunk in response.streaming_content]
        return b"".join(chunks)

    body = asyncio.run(run()).decode()
    assert body.count(trace_id) == 10
    assert only_span(project).name == "GET /astream"


def test_outgoing_call_uses_the_services_propagators(project: Tracing) -> None:
    from django.test import override_settings

    with EchoServer() as echo:
        trace_id, parent_id = new_ids()
        with override_settings(TRACEWIRE={"propagators": "b3multi"}):
            seen = client().get(
                "/outgoing", {"to": echo.url}, HTTP_X_B3_TRACEID=trace_id,
                HTTP_X_B3_SPANID=parent_id, HTTP_X_B3_SAMPLED="1",
            ).json()  # fmt: skip
    echoed = seen["echoed"]
    assert echoed["x-b3-traceid"] == [trace_id]
    assert "traceparent" not in echoed
    assert seen["trace_id"] == trace_id


def test_unknown_key_is_improperly_configured_at_start_up(project: Tracing) -> None:
    from django.test import override_settings

    with (
        override_settings(TRACEWIRE={"propagator": "b3"}),
        pytest.raises(ImproperlyConfigured, match=r"TRACEWIRE_PROPAGATOR\b"),
    ):
        Traced(lambda request: None)
    with override_settings(TRACEWIRE_EXCLUDED_PATH="/health"), pytest.raises(ImproperlyConfigured):
        client().get("/")  # Django loads its middleware: the first request fails, not a later one


def test_a_host_django_would_refuse_costs_no_error(project: Tracing) -> None:
    response = client().get("/", HTTP_HOST="evil.example:8080")
    assert response.status_code == 200  # tracewire reads the raw Host, never get_host()
    span = only_span(project)
    assert span.attributes is not None
    assert span.attributes["server.address"] == "evil.example"
    assert span.attributes["server.port"] == 8080


def test_an_outer_tracewire_wrapping_keeps_one_span_named_by_django(project: Tracing) -> None:
    # The old wrapping of wsgi.py still works, with the middleware listed too: one span.
    from django.core.handlers.wsgi import WSGIHandler
    from werkzeug.test import Client as WerkzeugClient

    app = TracewireWSGIMiddleware(WSGIHandler(), tracer_provider=project.provider)
    for path in ("/items/3", "/boom"):
        WerkzeugClient(app).get(path, headers={"Host": "testserver"}).close()
    names = sorted((s.name, (s.attributes or {}).get("error.type")) for s in project.spans())
    assert names == [("GET /boom", "RuntimeError"), ("GET /items/<int:pk>", None)]


def test_excluded_paths_from_the_django_settings(project: Tracing) -> None:
    from django.test import override_settings

    trace_id, parent_id = new_ids()
    with override_settings(TRACEWIRE={"excluded_paths": ["/items/*"]}):
        http = client()
        seen = http.get("/items/9", HTTP_TRACEPARENT=traceparent(trace_id, parent_id)).json()
        assert project.spans() == []  # no span, yet the caller's trace goes on in the view
        assert seen["trace_id"] == trace_id
        http.get("/")
    assert [s.name for s in project.spans()] == ["GET /"]
    middleware = Traced(lambda request: None)
    assert middleware.settings.excluded_paths == ()


def test_tracewire_check_sees_a_django_handler(project: Tracing) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.test import override_settings

    from tracewire.cli import find_settings

    with override_settings(TRACEWIRE={"propagators": "b3multi"}):
        ((where, settings),) = find_settings(ASGIHandler())
    assert where == f"app (settings.MIDDLEWARE: {__name__}.Traced)"
    assert settings.propagators == ("b3multi",)
    with override_settings(MIDDLEWARE=[]):
        assert find_settings(ASGIHandler()) == []


def test_an_outer_asgi_wrapping_gets_the_route_and_the_exception(project: Tracing) -> None:
    import httpx
    from django.core.handlers.asgi import ASGIHandler

    from tracewire.asgi import TracewireMiddleware as ASGIMiddleware

    app = ASGIMiddleware(ASGIHandler(), tracer_provider=project.provider)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return [(await http.get(path)).status_code for path in ("/async/x", "/async-boom")]

    assert asyncio.run(run()) == [200, 500]
    names = sorted((s.name, (s.attributes or {}).get("error.type")) for s in project.spans())
    assert names == [("GET /async-boom", "ValueError"), ("GET /async/<str:name>", None)]


def test_opentelemetrys_django_excluded_urls_apply(
    project: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "healthz,items/7")
    http = client()  # the variables are read when Django loads the middleware
    assert http.get("/items/7").status_code == 200
    assert project.spans() == []
    http.get("/items/8")
    assert [s.name for s in project.spans()] == ["GET /items/<int:pk>"]

"""Django's ASGI handler wrapped in ``TracewireMiddleware``, served by uvicorn and by hypercorn
in a child process (Django's settings are process-wide, so the app gets a process of its own).

The child exports its spans as JSON lines to a file the test reads; the app notes what it saw
in another file.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.asgi_apps import fetch, http_client, new_ids, traceparent
from tests.support.servers import PYTHON, SubprocessServer, wait_for

APP = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import time

    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["tw_django_app.SpanRouteMiddleware"],
        INSTALLED_APPS=[],
        SECRET_KEY="not-a-secret",
        DATA_UPLOAD_MAX_MEMORY_SIZE=None,
        LOGGING_CONFIG=None,
    )
    django.setup()

    from django.core.asgi import get_asgi_application
    from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import path
    from opentelemetry import baggage, trace
    from opentelemetry.context import get_current
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from django.utils.deprecation import MiddlewareMixin

    from tracewire import Settings, TracewireMiddleware

    SPANS, NOTES = os.environ["TW_SPANS"], os.environ["TW_NOTES"]


    def _plain(value):
        return list(value) if isinstance(value, tuple) else value


    class JsonLines(SpanExporter):
        def export(self, spans):
            lines = []
            for s in spans:
                lines.append(json.dumps({
                    "name": s.name,
                    "kind": s.kind.name,
                    "trace_id": f"{s.context.trace_id:032x}",
                    "span_id": f"{s.context.span_id:016x}",
                    "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
                    "start": s.start_time,
                    "end": s.end_time,
                    "status": s.status.status_code.name,
                    "attributes": {k: _plain(v) for k, v in s.attributes.items()},
                    "events": [e.name for e in s.events],
                }) + "\\n")
            with open(SPANS, "a") as f:
                f.write("".join(lines))
            return SpanExportResult.SUCCESS


    class SpanRouteMiddleware(MiddlewareMixin):
        # A hand-written route middleware (the recipe before tracewire.django): name the
        # server span after Django's route, from inside the ASGI wrapping's span.

        def process_view(self, request, view_func, view_args, view_kwargs):
            match = request.resolver_match
            span = trace.get_current_span()
            if match is not None and match.route and span.is_recording():
                route = "/" + match.route
                span.update_name(f"{request.method} {route}")
                span.set_attribute("http.route", route)


    def note(key, value):
        with open(NOTES, "a") as f:
            f.write(json.dumps({"key": key, "value": value}) + "\\n")


    def seen():
        sc = trace.get_current_span().get_span_context()
        return {
            "trace_id": f"{sc.trace_id:032x}",
            "span_id": f"{sc.span_id:016x}",
            "valid": sc.is_valid,
            "baggage": {k: str(v) for k, v in baggage.get_all(get_current()).items()},
        }


    async def item(request, item_id):
        return JsonResponse({**seen(), "item_id": item_id})


    def sync_item(request, item_id):  # Django runs sync views in a thread
        return JsonResponse({**seen(), "item_id": item_id})


    async def upload(request):
        return JsonResponse({**seen(), "size": len(request.body)})


    async def stream(request):
        async def chunks():
            for i in range(20):
                await asyncio.sleep(0.005)
                if i == 19:
                    note("last_chunk_ns", time.time_ns())
                yield b"chunk %d\\n" % i
        return StreamingHttpResponse(chunks(), content_type="text/plain")


    async def endless(request):
        async def chunks():
            try:
                for i in range(1000):
                    yield b"tick %d\\n" % i
                    await asyncio.sleep(0.01)
                note("endless_finished", True)
            except BaseException as exc:
                note("endless_stopped", type(exc).__name__)
                raise
        return StreamingHttpResponse(chunks(), content_type="text/plain")


    async def boom(request):
        raise RuntimeError("the app failed")


    async def teapot(request):
        return HttpResponse("short and stout", status=418)


    GATE = {"arrived": 0, "event": None}


    async def gather(request):
        expected = int(request.GET["n"])
        if GATE["event"] is None:
            GATE["event"] = asyncio.Event()
        GATE["arrived"] += 1
        if GATE["arrived"] >= expected:
            GATE["event"].set()
        try:
            await asyncio.wait_for(GATE["event"].wait(), 20)
            gathered = True
        except asyncio.TimeoutError:
            gathered = False
        return JsonResponse({**seen(), "gathered": gathered})


    urlpatterns = [
        path("items/<str:item_id>", item),
        path("sync/<str:item_id>", sync_item),
        path("upload", upload),
        path("stream", stream),
        path("endless", endless),
        path("boom", boom),
        path("teapot", teapot),
        path("gather", gather),
    ]

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLines()))
    app = TracewireMiddleware(
        get_asgi_application(),
        Settings(propagators=["tracecontext", "baggage", "b3"]),
        tracer_provider=provider,
    )
    """
)

COMMANDS = {
    "uvicorn": [
        PYTHON, "-m", "uvicorn", "tw_django_app:app", "--host", "127.0.0.1", "--port", "{port}",
        "--lifespan", "off", "--log-level", "warning",
    ],
    "hypercorn": [
        PYTHON, "-m", "hypercorn", "tw_django_app:app", "--bind", "127.0.0.1:{port}",
        "--log-level", "WARNING",
    ],
}  # fmt: skip


class DjangoService:
    def __init__(self, server: SubprocessServer, spans: Path, notes: Path) -> None:
        self.server, self.url = server, server.url
        self.spans_file, self.notes_file = spans, notes
        self.client = http_client(base_url=server.url)

    @staticmethod
    def _lines(path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines(keepends=True):
            if line.endswith("\n"):  # a line still being written is read next time
                out.append(json.loads(line))
        return out

    def spans(self) -> list[dict[str, Any]]:
        return [s for s in self._lines(self.spans_file) if s["kind"] == "SERVER"]

    def of_trace(self, trace_id: str, timeout: float = 10) -> dict[str, Any]:
        found = wait_for(
            lambda: [s for s in self.spans() if s["trace_id"] == trace_id], timeout=timeout
        )
        assert len(found) == 1
        return found[0]  # type: ignore[no-any-return]

    def note(self, key: str) -> Any:
        values = [n["value"] for n in self._lines(self.notes_file) if n["key"] == key]
        return values[-1] if values else None


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn"])
def django_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DjangoService]:
    folder = tmp_path_factory.mktemp(f"django-{request.param}")
    (folder / "tw_django_app.py").write_text(APP)
    spans, notes = folder / "spans.jsonl", folder / "notes.jsonl"
    env = {"TW_SPANS": str(spans), "TW_NOTES": str(notes), "PYTHONPATH": str(folder)}
    with SubprocessServer(COMMANDS[request.param], env=env, cwd=str(folder)) as server:
        service = DjangoService(server, spans, notes)
        try:
            yield service
        finally:
            service.client.close()


@pytest.fixture
def dj(django_service: DjangoService) -> DjangoService:
    return django_service


def test_traceparent_continues_the_trace(dj: DjangoService) -> None:
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id), "baggage": "user=alice"}
    for path in ("/items/42", "/sync/42"):  # async view, and a sync view run in a thread
        seen = dj.client.get(path, headers=headers).json()
        assert seen["trace_id"] == trace_id
        assert seen["baggage"] == {"user": "alice"}
    spans = wait_for(
        lambda: len(s := [x for x in dj.spans() if x["trace_id"] == trace_id]) == 2 and s
    )
    assert {s["parent_id"] for s in spans} == {parent_id}
    assert {s["attributes"]["url.path"] for s in spans} == {"/items/42", "/sync/42"}
    assert all(s["status"] == "UNSET" for s in spans)
    # Named by the hand-written route middleware above (the view ran in a thread
    # for the sync view, and still found the server span current).
    assert {s["name"] for s in spans} == {"GET /items/<str:item_id>", "GET /sync/<str:item_id>"}
    assert {s["attributes"]["http.route"] for s in spans} == {
        "/items/<str:item_id>",
        "/sync/<str:item_id>",
    }
    assert all(s["attributes"]["tracewire.propagation.format"] == "tracecontext" for s in spans)


def test_no_or_invalid_header_starts_a_new_trace(dj: DjangoService) -> None:
    for headers in ({}, {"traceparent": "00-not-a-trace-01"}):
        seen = dj.client.get("/items/1", headers=headers).json()
        assert seen["valid"]
        assert dj.of_trace(seen["trace_id"])["parent_id"] is None


def test_b3_continues_the_trace(dj: DjangoService) -> None:
    trace_id, parent_id = new_ids()
    seen = dj.client.get("/items/1", headers={"b3": f"{trace_id}-{parent_id}-1"}).json()
    assert seen["trace_id"] == trace_id
    span = dj.of_trace(trace_id)
    assert span["parent_id"] == parent_id
    assert span["attributes"]["tracewire.propagation.format"] == "b3"


def test_streaming_response_is_inside_the_span(dj: DjangoService) -> None:
    trace_id, parent_id = new_ids()
    response = dj.client.get("/stream", headers={"traceparent": traceparent(trace_id, parent_id)})
    assert response.content.count(b"chunk") == 20
    span = dj.of_trace(trace_id)
    last = wait_for(lambda: dj.note("last_chunk_ns"))
    assert span["start"] < last <= span["end"]


def test_exception_gives_error_span_and_djangos_500(dj: DjangoService) -> None:
    trace_id, parent_id = new_ids()
    response = fetch(dj.url + "/boom", headers={"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 500
    assert "Server Error" in response.text  # Django's own error page
    span = dj.of_trace(trace_id)
    assert span["status"] == "ERROR"
    assert span["attributes"]["error.type"] == "500"
    teapot = dj.client.get("/teapot", headers={"traceparent": traceparent(*new_ids())})
    assert teapot.status_code == 418


def test_4xx_is_not_an_error(dj: DjangoService) -> None:
    trace_id, parent_id = new_ids()
    assert dj.client.get("/teapot", headers={"traceparent": traceparent(trace_id, parent_id)})
    span = dj.of_trace(trace_id)
    assert span["status"] == "UNSET"
    assert span["attributes"]["http.response.status_code"] == 418


def test_client_disconnect_mid_stream_ends_the_span(dj: DjangoService) -> None:
    trace_id, parent_id = new_ids()
    started = time.time_ns()
    headers = {"traceparent": traceparent(trace_id, parent_id)}
    with dj.client.stream("GET", "/endless", headers=headers) as response:
        assert next(response.iter_bytes()).startswith(b"tick")
    span = dj.of_trace(trace_id, timeout=8)
    assert span["end"] - started < 8e9  # the stream alone would run for 10 s
    assert not dj.note("endless_finished")


def test_large_body_after_traced_one_on_same_connection_starts_clean(dj: DjangoService) -> None:
    body = b"z" * (3 * 1024 * 1024)
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id)}
    assert dj.client.post("/upload", content=body, headers=headers).json()["trace_id"] == trace_id
    seen = dj.client.post("/upload", content=body).json()
    assert seen["size"] == len(body)
    assert seen["trace_id"] != trace_id
    assert dj.of_trace(seen["trace_id"])["parent_id"] is None


def test_requests_in_flight_together_keep_their_own_traces(dj: DjangoService) -> None:
    n, per_client = 200, 25

    async def fire() -> list[tuple[str, str, Any]]:
        limits = httpx.Limits(max_connections=per_client)
        clients = [
            httpx.AsyncClient(base_url=dj.url, limits=limits, timeout=30, verify=False)
            for _ in range(n // per_client)
        ]

        async def one(i: int) -> tuple[str, str, Any]:
            trace_id, parent_id = new_ids()
            headers = {"traceparent": traceparent(trace_id, parent_id)}
            response = await clients[i // per_client].get(f"/gather?n={n}", headers=headers)
            return trace_id, parent_id, response

        try:
            return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 60)
        finally:
            for client in clients:
                await client.aclose()

    results = asyncio.run(fire())
    wanted = {trace_id for trace_id, _, _ in results}
    spans = wait_for(
        lambda: (
            len(s := {x["trace_id"]: x for x in dj.spans() if x["trace_id"] in wanted}) == n and s
        ),
        timeout=20,
    )
    for trace_id, parent_id, response in results:
        seen = response.json()
        assert seen["gathered"] is True
        assert seen["trace_id"] == trace_id
        assert spans[trace_id]["parent_id"] == parent_id
        assert spans[trace_id]["span_id"] == seen["span_id"]

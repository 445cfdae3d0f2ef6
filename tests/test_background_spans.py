"""Background work that outlives the response gets a span of its own (docs/server-asgi.md).

Starlette and FastAPI apps under uvicorn run ``BackgroundTasks`` (sync and async, one that
raises) with ``tracewire.starlette.trace_background_tasks()`` switched on; Flask and raw WSGI
apps under werkzeug hand work to ``ContextExecutor`` and ``wrap``. Every task waits for the
test to release it, which the test does only once it holds the response: so each task span
is seen to end after the SERVER span, as the work really did. Spans land in an
InMemorySpanExporter.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from flask import Flask
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode, Tracer, TracerProvider
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.background import BackgroundTasks as StarletteTasks
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support.servers import UvicornThread, WerkzeugThread, wait_for
from tracewire import TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.background import traced
from tracewire.context import ContextExecutor, wrap
from tracewire.flask import Tracewire
from tracewire.starlette import trace_background_tasks

WAIT = 10.0


class TaskFailed(Exception):
    """What the raising task raises."""


class Work:
    """The tasks the apps hand off: each starts a child span, waits to be released, notes
    that it ran; the raising one raises after its child span."""

    def __init__(self, provider: Any) -> None:
        self.tracer = trace.get_tracer("test.work", tracer_provider=provider)
        self.release = threading.Event()
        self.done: list[str] = []
        self.lock = threading.Lock()

    def _finish(self, what: str) -> None:
        with self.lock:
            self.done.append(what)

    def sync_task(self, what: str) -> str:
        with self.tracer.start_as_current_span(f"inner {what}"):
            self.release.wait(WAIT)
        self._finish(what)
        return what

    async def async_task(self, what: str) -> str:
        with self.tracer.start_as_current_span(f"inner {what}"):
            for _ in range(int(WAIT / 0.01)):  # bounded: released by the test
                if self.release.is_set():
                    break
                await asyncio.sleep(0.01)
        self._finish(what)
        return what

    def raising_sync(self, what: str) -> None:
        with self.tracer.start_as_current_span(f"inner {what}"):
            self.release.wait(WAIT)
        self._finish(what)
        raise TaskFailed("the pooled call failed")

    async def raising_task(self, what: str) -> None:
        with self.tracer.start_as_current_span(f"inner {what}"):
            self.release.wait(WAIT)
        self._finish(what)
        raise TaskFailed("the task failed")


class Escaped:
    """An ASGI middleware outside tracewire's: records what the app raised past it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.raised: list[BaseException] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            self.raised.append(exc)
            raise


def starlette_app(work: Work, provider: Any, mode: str) -> Escaped:
    async def one(request: Request) -> PlainTextResponse:
        kind = request.query_params["kind"]
        task = {"sync": work.sync_task, "async": work.async_task, "raise": work.raising_task}
        return PlainTextResponse("accepted", background=BackgroundTask(task[kind], kind))

    async def both(request: Request) -> PlainTextResponse:
        tasks = StarletteTasks()
        tasks.add_task(work.sync_task, "sync")
        tasks.add_task(work.async_task, "async")
        return PlainTextResponse("accepted", background=tasks)

    app = Starlette(routes=[Route("/one", one), Route("/both", both)])
    app.add_middleware(TracewireMiddleware, tracer_provider=provider, background_spans=mode)
    return Escaped(app)


def fastapi_app(work: Work, provider: Any, mode: str) -> Escaped:
    app = FastAPI()

    @app.get("/one")
    async def one(kind: str, tasks: BackgroundTasks) -> PlainTextResponse:
        task = {"sync": work.sync_task, "async": work.async_task, "raise": work.raising_task}
        tasks.add_task(task[kind], kind)
        return PlainTextResponse("accepted")

    @app.get("/both")
    def both(tasks: BackgroundTasks) -> PlainTextResponse:
        tasks.add_task(work.sync_task, "sync")
        tasks.add_task(work.async_task, "async")
        return PlainTextResponse("accepted")

    app.add_middleware(TracewireMiddleware, tracer_provider=provider, background_spans=mode)
    return Escaped(app)


APPS = {"starlette": starlette_app, "fastapi": fastapi_app}


@pytest.fixture
def switched_on() -> Iterator[None]:
    was = trace_background_tasks()
    yield
    trace_background_tasks(was)


def by_name(spans: Any, name: str) -> Any:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def serve_tasks(
    tracing: Any, framework: str, mode: str, path: str, expect: list[str], own: bool = True
) -> tuple[Work, Escaped, Any]:
    """Serve one request, check its response came before any task ended, release the tasks,
    wait for them; returns the work, the outer middleware and the finished spans."""
    work = Work(tracing.provider)
    app = APPS[framework](work, tracing.provider, mode)
    with UvicornThread(app) as server:
        response = httpx.get(f"{server.url}{path}", timeout=WAIT)
        assert (response.status_code, response.text) == (200, "accepted")
        assert work.done == []  # the tasks are still running: they outlive the response
        wait_for(lambda: any(s.kind is SpanKind.SERVER for s in tracing.spans()), timeout=WAIT)
        work.release.set()
        wait_for(lambda: sorted(work.done) == sorted(expect), timeout=WAIT)
        inner = {f"inner {what}" for what in expect}
        wait_for(lambda: inner <= {s.name for s in tracing.spans()}, timeout=WAIT)
        if own and mode != "off":  # each task's own span too
            wait_for(lambda: len(tracing.spans()) >= 1 + 2 * len(expect), timeout=WAIT)
    return work, app, tracing.spans()


TASKS = {"sync": "Work.sync_task", "async": "Work.async_task", "raise": "Work.raising_task"}


# ---------------------------------------------------------------- Starlette / FastAPI tasks


@pytest.mark.usefixtures("switched_on")
@pytest.mark.parametrize("framework", APPS)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_task_is_a_child_of_the_server_span_and_ends_after_it(
    tracing: Any, framework: str, kind: str
) -> None:
    _, app, spans = serve_tasks(tracing, framework, "child", f"/one?kind={kind}", [kind])
    server = by_name(spans, "GET /one")
    task = by_name(spans, TASKS[kind])
    inner = by_name(spans, f"inner {kind}")
    assert task.kind is SpanKind.INTERNAL
    assert task.context.trace_id == server.context.trace_id
    assert task.parent.span_id == server.context.span_id
    assert task.start_time >= server.end_time  # the SERVER span ended first
    assert task.end_time > server.end_time
    assert inner.parent.span_id == task.context.span_id  # the task's own spans are inside
    assert task.start_time <= inner.start_time <= inner.end_time <= task.end_time
    assert task.status.status_code is StatusCode.UNSET
    assert app.raised == []


@pytest.mark.usefixtures("switched_on")
@pytest.mark.parametrize("framework", APPS)
def test_each_of_several_tasks_has_its_own_span(tracing: Any, framework: str) -> None:
    _, _, spans = serve_tasks(tracing, framework, "child", "/both", ["sync", "async"])
    server = by_name(spans, "GET /both")
    tasks = [by_name(spans, TASKS[kind]) for kind in ("sync", "async")]
    assert {t.parent.span_id for t in tasks} == {server.context.span_id}
    for kind, task in zip(("sync", "async"), tasks, strict=True):
        assert by_name(spans, f"inner {kind}").parent.span_id == task.context.span_id
    # They ran one after the other, as Starlette runs them.
    assert tasks[0].end_time <= tasks[1].start_time


@pytest.mark.usefixtures("switched_on")
@pytest.mark.parametrize("framework", APPS)
def test_a_raising_task_records_its_exception_and_the_app_sees_it_unchanged(
    tracing: Any, framework: str
) -> None:
    _, app, spans = serve_tasks(tracing, framework, "child", "/one?kind=raise", ["raise"])
    task = by_name(spans, TASKS["raise"])
    assert task.status.status_code is StatusCode.ERROR
    assert task.attributes["error.type"] == f"{__name__}.TaskFailed"
    (event,) = [e for e in task.events if e.name == "exception"]
    assert event.attributes["exception.type"] == f"{__name__}.TaskFailed"
    # It propagated out of the app as it does without tracewire (the response had gone).
    wait_for(lambda: app.raised, timeout=WAIT)
    assert [type(e) for e in app.raised] == [TaskFailed]
    server = by_name(spans, "GET /one")
    assert server.status.status_code is StatusCode.UNSET
    assert server.attributes["http.response.status_code"] == 200


@pytest.mark.usefixtures("switched_on")
@pytest.mark.parametrize("framework", APPS)
def test_linked_tasks_start_a_new_trace_linked_to_the_request(tracing: Any, framework: str) -> None:
    _, _, spans = serve_tasks(tracing, framework, "linked", "/one?kind=async", ["async"])
    server = by_name(spans, "GET /one")
    task = by_name(spans, TASKS["async"])
    assert task.parent is None
    assert task.context.trace_id != server.context.trace_id
    (link,) = task.links
    assert link.context.span_id == server.context.span_id
    assert link.context.trace_id == server.context.trace_id
    assert link.attributes["tracewire.link.reason"] == "background"
    inner = by_name(spans, "inner async")
    assert inner.parent.span_id == task.context.span_id
    assert inner.context.trace_id == task.context.trace_id


@pytest.mark.usefixtures("switched_on")
@pytest.mark.parametrize("framework", APPS)
def test_off_gives_tasks_no_span_of_their_own(tracing: Any, framework: str) -> None:
    _, _, spans = serve_tasks(tracing, framework, "off", "/both", ["sync", "async"])
    server = by_name(spans, "GET /both")
    assert {s.name for s in spans} == {"GET /both", "inner sync", "inner async"}
    for kind in ("sync", "async"):
        assert by_name(spans, f"inner {kind}").parent.span_id == server.context.span_id


def test_the_switch_is_idempotent_and_undoable(tracing: Any) -> None:
    original = BackgroundTask.__call__
    assert trace_background_tasks(False) is False  # off to start with: nothing to undo
    assert trace_background_tasks() is False
    patched = BackgroundTask.__call__
    assert patched is not original
    assert trace_background_tasks() is True
    assert BackgroundTask.__call__ is patched  # a second call changes nothing
    assert trace_background_tasks(False) is True
    assert BackgroundTask.__call__ is original
    with pytest.raises(TypeError, match="enabled"):
        trace_background_tasks("yes")  # type: ignore[arg-type]
    # Switched off, a task runs as it always did: in the request's trace, no span of its own.
    _, _, spans = serve_tasks(tracing, "fastapi", "child", "/one?kind=sync", ["sync"], own=False)
    assert {s.name for s in spans} == {"GET /one", "inner sync"}


def test_building_a_middleware_switches_task_spans_on_unless_the_user_chose() -> None:
    from tracewire import TracewireMiddleware

    original = BackgroundTask.__call__
    TracewireMiddleware(starlette_app_plain())
    assert BackgroundTask.__call__ is not original  # on: one line gives task spans
    assert trace_background_tasks(False) is True
    TracewireMiddleware(starlette_app_plain())
    assert BackgroundTask.__call__ is original  # the user's choice outlives later middlewares


def starlette_app_plain() -> Any:
    from starlette.applications import Starlette

    return Starlette()


@pytest.mark.parametrize("switch", [False, True])
def test_a_traced_function_has_one_span_with_or_without_the_switch(
    tracing: Any, switch: bool
) -> None:
    work = Work(tracing.provider)
    work.release.set()
    app = FastAPI()

    @traced(name="receipt")
    async def receipt(order: str) -> None:
        await work.async_task(order)

    @app.get("/order")
    def order(tasks: BackgroundTasks) -> str:
        tasks.add_task(receipt, "async")
        return "ok"

    app.add_middleware(TracewireMiddleware, tracer_provider=tracing.provider)
    was = trace_background_tasks(switch)
    try:
        with UvicornThread(app) as server:
            assert httpx.get(f"{server.url}/order", timeout=WAIT).json() == "ok"
            wait_for(lambda: len(tracing.spans()) >= 3, timeout=WAIT)
    finally:
        trace_background_tasks(was)
    spans = tracing.spans()
    assert sorted(s.name for s in spans) == ["GET /order", "inner async", "receipt"]
    assert by_name(spans, "receipt").parent.span_id == by_name(spans, "GET /order").context.span_id


# ------------------------------------------------------------ WSGI: ContextExecutor and wrap


def flask_app(work: Work, provider: Any, mode: str, futures: list[Future[Any]]) -> Flask:
    app = Flask(__name__)
    app.config["TRACEWIRE_BACKGROUND_SPANS"] = mode
    Tracewire(app, tracer_provider=provider)
    pool = ContextExecutor(max_workers=2)

    @app.get("/pool")
    def submit() -> str:
        futures.append(pool.submit(work.sync_task, "pool"))
        futures.append(pool.submit(work.raising_sync, "pool-raise"))
        return "accepted"

    return app


def raw_wsgi_app(work: Work, provider: Any, mode: str, futures: list[Future[Any]]) -> Any:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        threading.Thread(target=wrap(work.sync_task), args=("thread",), daemon=True).start()
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"accepted"]

    return TracewireWSGIMiddleware(app, tracer_provider=provider, background_spans=mode)


WSGI: dict[str, tuple[Callable[..., Any], str, list[str]]] = {
    "flask": (flask_app, "/pool", ["pool", "pool-raise"]),
    "wsgi": (raw_wsgi_app, "/thread", ["thread"]),
}


def serve_wsgi(tracing: Any, flavour: str, mode: str) -> tuple[list[Future[Any]], Any]:
    build, path, expect = WSGI[flavour]
    work = Work(tracing.provider)
    futures: list[Future[Any]] = []
    with WerkzeugThread(build(work, tracing.provider, mode, futures)) as server:
        response = httpx.get(f"{server.url}{path}", timeout=WAIT)
        assert (response.status_code, response.text) == (200, "accepted")
        assert work.done == []
        wait_for(lambda: any(s.kind is SpanKind.SERVER for s in tracing.spans()), timeout=WAIT)
        work.release.set()
        wait_for(lambda: sorted(work.done) == sorted(expect), timeout=WAIT)
        wanted = 1 + len(expect) * (1 if mode == "off" else 2)
        wait_for(lambda: len(tracing.spans()) >= wanted, timeout=WAIT)
    return futures, tracing.spans()


@pytest.mark.parametrize("flavour", WSGI)
def test_wsgi_hand_offs_are_children_of_the_server_span_and_end_after_it(
    tracing: Any, flavour: str
) -> None:
    expect = WSGI[flavour][2]
    futures, spans = serve_wsgi(tracing, flavour, "child")
    server = of_kind_one(spans, SpanKind.SERVER)
    names = {"pool": "Work.sync_task", "thread": "Work.sync_task"}
    names["pool-raise"] = "Work.raising_sync"
    for what in expect:
        inner = by_name(spans, f"inner {what}")
        task = next(s for s in spans if s.context.span_id == inner.parent.span_id)
        assert task.name == names[what]
        assert task.kind is SpanKind.INTERNAL
        assert task.parent.span_id == server.context.span_id
        assert task.context.trace_id == server.context.trace_id
        assert task.end_time > server.end_time
    if flavour == "flask":
        assert futures[0].result(timeout=WAIT) == "pool"  # the result is the function's
        failed = futures[1].exception(timeout=WAIT)
        assert isinstance(failed, TaskFailed)
        task = by_name(spans, "Work.raising_sync")
        assert task.status.status_code is StatusCode.ERROR
        assert task.attributes["error.type"] == f"{__name__}.TaskFailed"
        assert [e.name for e in task.events] == ["exception"]


@pytest.mark.parametrize("flavour", WSGI)
def test_wsgi_hand_offs_linked_and_off(tracing: Any, flavour: str) -> None:
    _, _, expect = WSGI[flavour]
    _, spans = serve_wsgi(tracing, flavour, "linked")
    server = of_kind_one(spans, SpanKind.SERVER)
    for what in expect:
        inner = by_name(spans, f"inner {what}")
        task = next(s for s in spans if s.context.span_id == inner.parent.span_id)
        assert task.parent is None
        assert task.context.trace_id != server.context.trace_id
        assert [link.context.span_id for link in task.links] == [server.context.span_id]
    tracing.exporter.clear()
    _, spans = serve_wsgi(tracing, flavour, "off")
    server = of_kind_one(spans, SpanKind.SERVER)
    assert len(spans) == 1 + len(expect)  # the server span and the work's own spans only
    for what in expect:
        assert by_name(spans, f"inner {what}").parent.span_id == server.context.span_id


def of_kind_one(spans: Any, kind: SpanKind) -> Any:
    (span,) = [s for s in spans if s.kind is kind]
    return span


# ---------------------------------------------------------------------------------- edges


def one_task_app(
    provider: Any, task: Callable[[], Any], per_request: bool = False, **settings: Any
) -> Escaped:
    app = FastAPI()

    @app.get("/one")
    def one(tasks: BackgroundTasks) -> str:
        tasks.add_task(wrap(task, name="wrapped") if per_request else task)
        return "ok"

    app.add_middleware(TracewireMiddleware, tracer_provider=provider, **settings)
    return Escaped(app)


def run_one(app: Escaped, done: threading.Event) -> None:
    with UvicornThread(app) as server:
        assert httpx.get(f"{server.url}/one", timeout=WAIT).json() == "ok"
        assert done.wait(WAIT)


@pytest.mark.usefixtures("switched_on")
def test_an_excluded_request_gives_its_tasks_no_span(tracing: Any) -> None:
    done = threading.Event()
    tracer = trace.get_tracer("test", tracer_provider=tracing.provider)

    def task() -> None:
        with tracer.start_as_current_span("inner"):
            pass
        done.set()

    run_one(one_task_app(tracing.provider, task, excluded_paths=["/one"]), done)
    wait_for(tracing.spans, timeout=WAIT)
    assert [s.name for s in tracing.spans()] == ["inner"]


@pytest.mark.usefixtures("switched_on")
def test_a_wrapped_function_given_as_a_task_makes_one_span(tracing: Any) -> None:
    done = threading.Event()
    app = one_task_app(tracing.provider, done.set, per_request=True)  # wrapped in the request
    run_one(app, done)
    wait_for(lambda: len(tracing.spans()) >= 2, timeout=WAIT)
    assert sorted(s.name for s in tracing.spans()) == ["GET /one", "wrapped"]


class FailingTracer(Tracer):
    """A user's tracer that fails to start INTERNAL spans (a broken vendor SDK)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def start_span(self, name: str, context: Any = None, kind: Any = None, **kwargs: Any) -> Any:
        if kind is SpanKind.INTERNAL:
            raise RuntimeError("tracer fault")
        return self.tracer.start_span(name, context, kind, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.tracer.start_as_current_span(*args, **kwargs)


class FailingProvider(TracerProvider):
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return FailingTracer(self.provider.get_tracer(*args, **kwargs))


@pytest.mark.usefixtures("switched_on")
def test_a_tracing_fault_leaves_the_task_and_the_response_as_they_were(
    tracing: Any, caplog: pytest.LogCaptureFixture
) -> None:
    done = threading.Event()
    seen: list[bool] = []

    def send_mail() -> None:
        seen.append(trace.get_current_span().get_span_context().is_valid)  # still in the trace
        done.set()

    app = one_task_app(FailingProvider(tracing.provider), send_mail)
    run_one(app, done)  # the task ran, the response was the app's
    wait_for(tracing.spans, timeout=WAIT)
    assert [s.name for s in tracing.spans()] == ["GET /one"]
    assert seen == [True]
    assert app.raised == []
    assert "tracewire fault in background-start" in caplog.text  # said, not raised


@pytest.mark.usefixtures("switched_on")
def test_a_task_of_an_unsampled_request_records_nothing_and_still_runs(tracing: Any) -> None:
    done = threading.Event()
    seen: list[str] = []

    def task() -> None:
        sc = trace.get_current_span().get_span_context()
        seen.append(f"{sc.trace_id:032x}")
        done.set()

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with UvicornThread(one_task_app(tracing.provider, task)) as server:
        headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"}
        assert httpx.get(f"{server.url}/one", headers=headers, timeout=WAIT).json() == "ok"
        assert done.wait(WAIT)
    assert seen == [trace_id]  # the task stayed in the caller's trace
    assert tracing.spans() == []


def test_traced_checks_its_arguments_and_keeps_async_functions_async() -> None:
    with pytest.raises(TypeError, match="callable"):
        traced(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name"):
        traced(name=3)(print)  # type: ignore[arg-type]

    async def job() -> None: ...

    once = traced(job)
    assert inspect.iscoroutinefunction(once)  # Starlette awaits it on the event loop
    assert traced(once) is once  # no second span layer

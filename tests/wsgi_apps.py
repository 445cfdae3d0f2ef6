"""The same small service written four ways (raw WSGI, Flask, Django, Falcon), for the WSGI
server tests. In-process tests build them with ``build(kind, settings, provider)``; gunicorn
serves ``tests.wsgi_apps:gunicorn_app`` (kind from ``WSGI_TEST_APP``, settings from the
``TRACEWIRE_*`` environment, SDK set up per worker by ``tests/wsgi_gunicorn_conf.py``).

Every app answers:

* ``GET /hello``, ``GET /health`` (excluded in the test settings), ``GET /items/<int>``: JSON
  describing the trace context the app code sees (``trace_id``, ``span_id``, ``baggage``, ...);
* ``GET /stream?n=N``: an event stream of N chunks, each stamped with the span id current
  while it was produced and the time it was produced;
* ``GET /stream-fail``: one chunk, then ``Boom`` while the body is produced;
* ``GET /boom``: ``Boom`` in the view; the framework (or the server) answers 500;
* ``POST /echo``: reads the whole body, answers its length;
* ``GET /barrier?n=N&group=G``: waits until N requests of group G are in flight at once;
* ``GET /file``: this very file, through ``wsgi.file_wrapper`` when the server has one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.util import FileWrapper

from opentelemetry import baggage, context, trace

from tests.support.servers import WerkzeugThread, port_open, serving, wait_for
from tracewire import Settings
from tracewire.wsgi import EXCEPTION_KEY, ROUTE_KEY, TracewireWSGIMiddleware

KINDS = ("raw", "flask", "django", "falcon")

FILE_PATH = os.path.abspath(__file__)

# Settings every test stack runs with, as TRACEWIRE_* text (environment / Flask config).
SETTINGS_TEXT = {
    "TRACEWIRE_PROPAGATORS": "tracecontext,b3,b3multi,baggage",
    "TRACEWIRE_EXCLUDED_PATHS": "/health,/static/*",
    "TRACEWIRE_CAPTURE_REQUEST_HEADERS": "x-request-id,authorization",
    "TRACEWIRE_CAPTURE_RESPONSE_HEADERS": "x-visible,set-cookie",
    "TRACEWIRE_RESPONSE_PROPAGATION": "traceresponse",
    "TRACEWIRE_SERVER_REQUEST_HOOK": "tests.wsgi_apps:request_hook",
    "TRACEWIRE_SERVER_RESPONSE_HOOK": "tests.wsgi_apps:response_hook",
}

# The route template each app names for /items/<id>.
ITEM_ROUTES = {
    "raw": "/items/{item_id}",
    "flask": "/items/<int:item_id>",
    "django": "/items/<int:item_id>",
    "falcon": "/items/{item_id:int}",
}


class Boom(RuntimeError):
    """The app's own failure."""


# ----------------------------------------------------------------------------------- hooks
def request_hook(span: Any, environ: dict[str, Any]) -> None:
    span.set_attribute("test.request_hook", environ.get("HTTP_X_HOOK", "none"))


def response_hook(span: Any, info: Any) -> None:
    span.set_attribute("test.response_hook", info.status_code)


# ------------------------------------------------------------------------- what app code sees
def seen(environ: dict[str, Any], **extra: Any) -> dict[str, Any]:
    sc = trace.get_current_span().get_span_context()
    return {
        "trace_id": f"{sc.trace_id:032x}",
        "span_id": f"{sc.span_id:016x}",
        "valid": sc.is_valid,
        "remote": sc.is_remote,
        "sampled": sc.trace_flags.sampled,
        "baggage": {k: str(v) for k, v in baggage.get_all().items()},
        "remote_port": environ.get("REMOTE_PORT"),
        "thread": threading.get_ident(),
        **extra,
    }


def stream_chunks(n: int) -> Iterator[bytes]:
    for i in range(n):
        sc = trace.get_current_span().get_span_context()
        line = {"i": i, "span_id": f"{sc.span_id:016x}", "t": time.time_ns()}
        yield f"data: {json.dumps(line)}\n\n".encode()
        time.sleep(0.005)  # the app's own pace: the stream really takes a while


def failing_stream() -> Iterator[bytes]:
    yield b"data: first\n\n"
    raise Boom("failed mid-stream")


_barriers: dict[tuple[str, int], threading.Barrier] = {}
_barriers_lock = threading.Lock()


def wait_at_barrier(group: str, n: int) -> None:
    with _barriers_lock:
        barrier = _barriers.setdefault((group, n), threading.Barrier(n, timeout=30))
    barrier.wait()  # BrokenBarrierError (-> 500) if the N never arrive together


def _query(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


HELLO_HEADERS = [("x-visible", "yes"), ("set-cookie", "session=abc")]


# ------------------------------------------------------------------------------------- raw
RAW_ROUTES = frozenset(
    ("/hello", "/health", "/stream", "/stream-fail", "/boom", "/echo", "/barrier", "/file")
)


def raw_route(environ: dict[str, Any]) -> str | None:
    path = environ.get("PATH_INFO", "")
    if path.startswith("/items/"):
        return "/items/{item_id}"
    return path if path in RAW_ROUTES else None


def raw_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    query = _query(environ)

    def send_json(data: Any, status: str = "200 OK", headers: Any = ()) -> list[bytes]:
        body = json.dumps(data).encode()
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                *headers,
            ],
        )
        return [body]

    if path in ("/hello", "/health"):
        return send_json(seen(environ), headers=HELLO_HEADERS)
    if path.startswith("/items/") and path[7:].isdigit():
        return send_json(seen(environ, item_id=int(path[7:])))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return stream_chunks(int(query.get("n", "5")))
    if path == "/stream-fail":
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return failing_stream()
    if path == "/boom":
        raise Boom("raw app failed")
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        return send_json(seen(environ, length=len(body)))
    if path == "/barrier":
        wait_at_barrier(query["group"], int(query["n"]))
        return send_json(seen(environ))
    if path == "/file":
        wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(os.path.getsize(FILE_PATH))),
            ],
        )
        return wrapper(open(FILE_PATH, "rb"), 8192)  # type: ignore[no-any-return]
    return send_json({"error": "not found"}, "404 Not Found")


def build_raw(settings: Settings | None, provider: Any = None) -> Any:
    if settings is None:
        return raw_app
    return TracewireWSGIMiddleware(raw_app, settings, tracer_provider=provider, route=raw_route)


# ----------------------------------------------------------------------------------- flask
def build_flask(config: dict[str, Any] | None, provider: Any = None) -> Any:
    from flask import Flask, Response, jsonify, request, send_file

    from tracewire.flask import Tracewire

    app = Flask("wsgi_test_flask")
    app.config.update(config or {})

    @app.get("/hello")
    @app.get("/health")
    def hello() -> Any:
        response = jsonify(seen(request.environ))
        for name, value in HELLO_HEADERS:
            response.headers.add(name, value)
        return response

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return jsonify(seen(request.environ, item_id=item_id))

    @app.get("/stream")
    def stream() -> Any:
        return Response(
            stream_chunks(request.args.get("n", 5, type=int)), 200, mimetype="text/event-stream"
        )

    @app.get("/stream-fail")
    def stream_fail() -> Any:
        return Response(failing_stream(), mimetype="text/event-stream")

    @app.get("/boom")
    def boom() -> Any:
        raise Boom("flask view failed")

    @app.post("/echo")
    def echo() -> Any:
        return jsonify(seen(request.environ, length=len(request.get_data())))

    @app.get("/barrier")
    def barrier() -> Any:
        wait_at_barrier(request.args["group"], int(request.args["n"]))
        return jsonify(seen(request.environ))

    @app.get("/file")
    def file() -> Any:
        return send_file(FILE_PATH, mimetype="application/octet-stream")

    if config is not None:
        Tracewire(app, tracer_provider=provider)
    return app


# ---------------------------------------------------------------------------------- django
DJANGO_SETTINGS: dict[str, Any] = {
    "ROOT_URLCONF": "tests.wsgi_apps",
    "MIDDLEWARE": ["tests.wsgi_apps.DjangoTracewireMiddleware"],
    "ALLOWED_HOSTS": ["*"],
    "DEBUG": False,
}


class DjangoTracewireMiddleware:
    """The few lines a Django project added before ``tracewire.django``: name the span after the
    URL pattern, and hand the exception Django turns into a 500 to the span."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        match = request.resolver_match
        if match is not None and match.route:
            request.environ[ROUTE_KEY] = request.META.get("SCRIPT_NAME", "") + "/" + match.route
        return response

    def process_exception(self, request: Any, exception: Exception) -> None:
        request.environ[EXCEPTION_KEY] = exception


def ensure_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY="wsgi-tests", INSTALLED_APPS=[], **DJANGO_SETTINGS)
    django.setup()


@contextlib.contextmanager
def django_settings(kind: str) -> Iterator[None]:
    """Django set up with this module's settings while it runs (no-op for other kinds)."""
    if kind != "django":
        yield
        return
    ensure_django()
    from django.test import override_settings

    # Another test module may have configured Django first: ours apply while this runs.
    with override_settings(**DJANGO_SETTINGS):
        yield


def _django_views() -> list[Any]:
    from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
    from django.urls import path

    def hello(request: Any) -> Any:
        response = JsonResponse(seen(request.environ))
        response["x-visible"] = "yes"
        response.set_cookie("session", "abc")
        return response

    def item(request: Any, item_id: int) -> Any:
        return JsonResponse(seen(request.environ, item_id=item_id))

    def stream(request: Any) -> Any:
        n = int(request.GET.get("n", "5"))
        return StreamingHttpResponse(stream_chunks(n), content_type="text/event-stream")

    def stream_fail(request: Any) -> Any:
        return StreamingHttpResponse(failing_stream(), content_type="text/event-stream")

    def boom(request: Any) -> Any:
        raise Boom("django view failed")

    def echo(request: Any) -> Any:
        return JsonResponse(seen(request.environ, length=len(request.body)))

    def barrier(request: Any) -> Any:
        wait_at_barrier(request.GET["group"], int(request.GET["n"]))
        return JsonResponse(seen(request.environ))

    def file(request: Any) -> Any:
        return FileResponse(open(FILE_PATH, "rb"), content_type="application/octet-stream")

    def not_allowed(request: Any) -> Any:
        return HttpResponse(status=405)

    return [
        path("hello", hello),
        path("health", hello),
        path("items/<int:item_id>", item),
        path("stream", stream),
        path("stream-fail", stream_fail),
        path("boom", boom),
        path("echo", echo),
        path("barrier", barrier),
        path("file", file),
        path("not-allowed", not_allowed),
    ]


def __getattr__(name: str) -> Any:
    # Django reads ``urlpatterns`` from this module (ROOT_URLCONF) only once it is set up.
    if name == "urlpatterns":
        return _django_views()
    raise AttributeError(name)


def build_django(settings: Settings | None, provider: Any = None) -> Any:
    from django.core.handlers.wsgi import WSGIHandler

    ensure_django()
    if settings is None:
        return WSGIHandler()
    return TracewireWSGIMiddleware(WSGIHandler(), settings, tracer_provider=provider)


# ---------------------------------------------------------------------------------- falcon
def build_falcon(settings: Settings | None, provider: Any = None) -> Any:
    import falcon

    class RouteTemplate:
        """Falcon middleware: name the span after the matched URI template."""

        def process_resource(self, req: Any, resp: Any, resource: Any, params: Any) -> None:
            if req.uri_template:
                req.env[ROUTE_KEY] = req.uri_template

    def record_exception(req: Any, resp: Any, ex: Exception, params: Any) -> None:
        req.env[EXCEPTION_KEY] = ex
        raise falcon.HTTPInternalServerError()

    class Hello:
        def on_get(self, req: Any, resp: Any) -> None:
            resp.media = seen(req.env)
            resp.set_header("x-visible", "yes")
            resp.set_cookie("session", "abc")

    class Item:
        def on_get(self, req: Any, resp: Any, item_id: int) -> None:
            resp.media = seen(req.env, item_id=item_id)

    class Stream:
        def on_get(self, req: Any, resp: Any) -> None:
            resp.content_type = "text/event-stream"
            resp.stream = stream_chunks(req.get_param_as_int("n", default=5))

    class StreamFail:
        def on_get(self, req: Any, resp: Any) -> None:
            resp.content_type = "text/event-stream"
            resp.stream = failing_stream()

    class BoomResource:
        def on_get(self, req: Any, resp: Any) -> None:
            raise Boom("falcon responder failed")

    class Echo:
        def on_post(self, req: Any, resp: Any) -> None:
            resp.media = seen(req.env, length=len(req.bounded_stream.read()))

    class Barrier:
        def on_get(self, req: Any, resp: Any) -> None:
            wait_at_barrier(req.get_param("group"), req.get_param_as_int("n"))
            resp.media = seen(req.env)

    class File:
        def on_get(self, req: Any, resp: Any) -> None:
            resp.content_type = "application/octet-stream"
            resp.set_stream(open(FILE_PATH, "rb"), os.path.getsize(FILE_PATH))  # noqa: SIM115

    app = falcon.App(middleware=[RouteTemplate()])
    app.add_error_handler(Exception, record_exception)
    app.add_route("/hello", Hello())
    app.add_route("/health", Hello())
    app.add_route("/items/{item_id:int}", Item())
    app.add_route("/stream", Stream())
    app.add_route("/stream-fail", StreamFail())
    app.add_route("/boom", BoomResource())
    app.add_route("/echo", Echo())
    app.add_route("/barrier", Barrier())
    app.add_route("/file", File())
    if settings is None:
        return app
    return TracewireWSGIMiddleware(app, settings, tracer_provider=provider)


# ------------------------------------------------------------------------------ dispatching
def build(kind: str, environ: dict[str, str] | None, provider: Any = None) -> Any:
    """The app of ``kind``, traced with settings read from ``TRACEWIRE_*`` text in
    ``environ`` (the Flask app reads them from its ``app.config``); ``None``: not traced."""
    if kind == "flask":
        config = environ and {k: v for k, v in environ.items() if k.startswith("TRACEWIRE_")}
        return build_flask(None if environ is None else config, provider)
    settings = None if environ is None else Settings.from_env(environ)
    if kind == "raw":
        return build_raw(settings, provider)
    if kind == "django":
        return build_django(settings, provider)
    if kind == "falcon":
        return build_falcon(settings, provider)
    raise ValueError(f"unknown app kind {kind!r}; valid: {', '.join(KINDS)}")


class Probe:
    """Outermost test layer, outside tracewire. It counts requests and their ``close()``, and
    leaks: a request that arrives with a trace context already current (left behind by an
    earlier request on the worker thread) or leaves one behind after ``close()``. For
    ``/file`` it tells (header ``x-file-wrapper``) whether the object the server gets is
    still the server's own ``wsgi.file_wrapper``. ``GET /_probe`` answers the counts."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.requests = 0
        self.closed = 0
        self.leaks = 0

    def count(self, *, closed: int = 0, leaked: bool = False) -> None:
        with self.lock:
            self.closed += closed
            self.leaks += leaked

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == "/_probe":
            with self.lock:
                counts = {"requests": self.requests, "closed": self.closed, "leaks": self.leaks}
            body = json.dumps({**counts, "sendfile_calls": _sendfile_calls[0]}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        with self.lock:
            self.requests += 1
            self.leaks += len(context.get_current()) != 0
        try:
            if environ.get("PATH_INFO") == "/file":
                return self._file(environ, start_response)
            return _ProbeBody(self.app(environ, start_response), self)
        except BaseException:
            self.count(closed=1, leaked=len(context.get_current()) != 0)
            raise

    def _file(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started: list[Any] = []

        def later(status: str, headers: list[Any], exc_info: Any = None) -> None:
            started[:] = [status, headers]

        result = self.app(environ, later)
        wrapper = environ.get("wsgi.file_wrapper")
        is_wrapper = isinstance(wrapper, type) and type(result) is wrapper
        status, headers = started
        start_response(status, [*headers, ("x-file-wrapper", "yes" if is_wrapper else "no")])
        if not is_wrapper:
            return _ProbeBody(result, self)
        original = result.close

        def close() -> None:
            try:
                original()
            finally:
                self.count(closed=1, leaked=len(context.get_current()) != 0)

        result.close = close  # keeps the object (and so the server's sendfile path) as it is
        return result


class _ProbeBody:
    def __init__(self, result: Iterable[bytes], probe: Probe) -> None:
        self.result = result
        self.probe = probe

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            self.probe.count(closed=1, leaked=len(context.get_current()) != 0)


# socket.sendfile calls in this process; -1 until install_sendfile_counter() ran.
_sendfile_calls = [-1]


def install_sendfile_counter() -> None:
    """Count (and still make) every ``socket.sendfile`` call, to see the server's fast path."""
    import socket

    real = socket.socket.sendfile
    _sendfile_calls[0] = 0

    def sendfile(self: socket.socket, *args: Any, **kwargs: Any) -> int:
        with _barriers_lock:
            _sendfile_calls[0] += 1
        return real(self, *args, **kwargs)

    socket.socket.sendfile = sendfile  # type: ignore[method-assign]


class QuickWerkzeug(WerkzeugThread):
    """``WerkzeugThread`` whose ``stop()`` returns at once: serve_forever's default half-second
    poll is most of what a short test would otherwise spend."""

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.01},
            daemon=True,
            name="werkzeug",
        )
        self.thread.start()
        wait_for(lambda: port_open(self.host, self.port), timeout=15)


@contextlib.contextmanager
def served(app: Any) -> Iterator[Any]:
    """``app`` under a werkzeug server in this process; yields an ``httpx.Client`` for it."""
    import httpx

    with serving(QuickWerkzeug(app)) as server, httpx.Client(base_url=server.url) as client:
        yield client


def gunicorn_app_factory() -> Any:
    kind = os.environ["WSGI_TEST_APP"]
    if kind == "django":
        ensure_django()
    return Probe(build(kind, dict(os.environ)))

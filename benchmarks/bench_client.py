"""HTTP client hooks: bare vs tracewire vs OpenTelemetry contrib, in-process.

httpx requests go to ``httpx.MockTransport`` and requests' to an adapter that answers
``200 ok`` without a socket, so the numbers are the hooks' cost, not the network's. The
requests enter where the instrumentations sit (the client's transport for httpx,
``Session.send`` for requests) and their bodies are read to the end. Each request runs under a
current remote parent span, sampled or not, as it would inside a traced server request.

Run alone::

    python -m benchmarks.bench_client --iterations 3000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import sys
from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry.context import attach, detach
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanKind, TracerProvider
from requests.adapters import BaseAdapter

from benchmarks._harness import (
    MODES,
    TRACE_ID,
    SuiteResult,
    Tracing,
    Variant,
    measure,
    parent_context,
)

URL = "http://127.0.0.1:8000/items/42?q=1"
_RESPONSE_HEADERS = {"Content-Type": "text/plain", "Content-Length": "2"}
VARIANTS = (
    ("bare", "bare", "the client alone"),
    ("sdk-span floor", "floor", "one SDK CLIENT span around the send, no headers/attributes"),
    ("tracewire", "tracewire", ""),
    ("contrib", "contrib", ""),
)


def missing(module: str) -> str | None:
    """Why the tracewire side of a client suite cannot run, or ``None`` when it can."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        return f"{module} does not exist yet (src/{module.replace('.', '/')}.py); suite skipped"
    return None


# The headers the last request arrived with at the fake server, to prove propagation happened.
LAST_HEADERS: dict[str, str] = {}


def _remember(headers: Any) -> None:
    LAST_HEADERS.clear()
    LAST_HEADERS.update((k.lower(), v) for k, v in headers.items())


# ------------------------------------------------------------------------------------ httpx
def _httpx_handler(request: Any) -> Any:

    if LAST_HEADERS.get("clear") == "":
        _remember(request.headers)
    # A stream, not ``content=``: httpx pre-reads ``content`` so the body would never pass
    # through a transport's stream wrapper, which is not what a real network response does.
    return httpx.Response(
        200,
        headers={"content-type": "text/plain", "content-length": "2"},
        stream=httpx.ByteStream(b"ok"),
    )


class _FloorTransport(httpx.BaseTransport):
    """Reference, not a product: one SDK CLIENT span around the inner transport's send."""

    def __init__(self, inner: httpx.BaseTransport, provider: TracerProvider) -> None:
        self.inner = inner
        self.tracer = provider.get_tracer("benchmarks.floor")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        span = self.tracer.start_span("GET", kind=SpanKind.CLIENT)
        try:
            return self.inner.handle_request(request)
        finally:
            span.end()


class _AsyncFloorTransport(httpx.AsyncBaseTransport):
    """Async twin of ``_FloorTransport``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, provider: TracerProvider) -> None:
        self.inner = inner
        self.tracer = provider.get_tracer("benchmarks.floor")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        span = self.tracer.start_span("GET", kind=SpanKind.CLIENT)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            span.end()


class _FloorAdapter(BaseAdapter):
    """requests twin of ``_FloorTransport``."""

    def __init__(self, inner: BaseAdapter, provider: TracerProvider) -> None:
        super().__init__()
        self.inner = inner
        self.tracer = provider.get_tracer("benchmarks.floor")

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        span = self.tracer.start_span("GET", kind=SpanKind.CLIENT)
        try:
            return self.inner.send(request, *args, **kwargs)
        finally:
            span.end()

    def close(self) -> None:
        self.inner.close()


def httpx_client(
    variant: str, provider: TracerProvider, is_async: bool = False
) -> tuple[Any, Callable[[], None] | None]:
    """An ``httpx.Client`` (or ``AsyncClient``) set up as ``variant`` deploys it, and the
    clean-up of its instrumentation."""

    inner = httpx.MockTransport(_httpx_handler)
    cls: Any = httpx.AsyncClient if is_async else httpx.Client
    if variant == "bare":
        return cls(transport=inner), None
    if variant == "sdk-span floor":
        floor = _AsyncFloorTransport if is_async else _FloorTransport
        return cls(transport=floor(inner, provider)), None
    if variant == "tracewire":
        from tracewire import Settings
        from tracewire.httpx import AsyncTracingTransport, TracingTransport

        wrapper: Any = AsyncTracingTransport if is_async else TracingTransport
        return cls(transport=wrapper(inner, settings=Settings(), tracer_provider=provider)), None
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    client = cls(transport=inner)
    HTTPXClientInstrumentor.instrument_client(
        client, tracer_provider=provider, meter_provider=NoOpMeterProvider()
    )
    return client, lambda: HTTPXClientInstrumentor.uninstrument_client(client)


def _httpx_runner(client: Any) -> Callable[[int], None]:
    # The transport is where both instrumentations sit (tracewire's TracingTransport, contrib's
    # wrapper of ``client._transport.handle_request``): driving it directly leaves out the
    # client's own request building, the same for every variant and noisy next to the hooks.
    transport = client._transport

    def run(n: int) -> None:
        for _ in range(n):
            response = transport.handle_request(httpx.Request("GET", URL))
            response.read()  # the body read to the end: tracewire's span ends here
            response.close()

    return run


def _httpx_async_runner(client: Any, loop: asyncio.AbstractEventLoop) -> Callable[[int], None]:
    transport = client._transport

    async def many(n: int) -> None:
        for _ in range(n):
            response = await transport.handle_async_request(httpx.Request("GET", URL))
            await response.aread()
            await response.aclose()

    def run(n: int) -> None:
        # The task made here copies the current context, so the parent attached around this
        # call is current inside the requests too.
        loop.run_until_complete(many(n))

    return run


# --------------------------------------------------------------------------------- requests
def _static_adapter() -> Any:
    from requests.models import Response
    from requests.structures import CaseInsensitiveDict
    from urllib3.response import HTTPResponse

    class StaticAdapter(BaseAdapter):
        """Answers every request with ``200 ok`` without a socket.

        The body is an unread urllib3 response, as ``HTTPAdapter`` returns it, so reading it
        goes through ``iter_content`` like a real one (a pre-filled ``_content`` would not).
        """

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Response:
            if LAST_HEADERS.get("clear") == "":
                _remember(request.headers)
            response = Response()
            response.status_code = 200
            response.reason = "OK"
            response.headers = CaseInsensitiveDict(_RESPONSE_HEADERS)
            response.raw = HTTPResponse(
                body=io.BytesIO(b"ok"),
                headers=_RESPONSE_HEADERS,
                status=200,
                preload_content=False,
                decode_content=False,
            )
            response.url = request.url
            response.request = request
            response.encoding = "utf-8"
            return response

        def close(self) -> None:
            pass

    return StaticAdapter()


def requests_session(
    variant: str, provider: TracerProvider
) -> tuple[Any, Callable[[], None] | None, Callable[[], None] | None]:
    """A session for ``variant`` plus the set-up/tear-down around each timed block.

    contrib's ``RequestsInstrumentor`` patches ``Session.send`` for the whole process, so it is
    switched on only while its own variant is being timed.
    """
    import requests

    session = requests.Session()
    # Not reading proxy settings from os.environ per request: that is requests' own (large,
    # noisy) cost and the same for every variant.
    session.trust_env = False
    session.mount("http://", _static_adapter())
    if variant == "bare":
        return session, None, None
    if variant == "sdk-span floor":
        session.mount("http://", _FloorAdapter(session.get_adapter(URL), provider))
        return session, None, None
    if variant == "tracewire":
        from tracewire import Settings
        from tracewire.requests import instrument_session

        instrument_session(session, settings=Settings(), tracer_provider=provider)
        return session, None, None
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentor = RequestsInstrumentor()

    def on() -> None:
        instrumentor.instrument(tracer_provider=provider, meter_provider=NoOpMeterProvider())

    return session, on, instrumentor.uninstrument


def _requests_runner(session: Any) -> Callable[[int], None]:
    # ``Session.send`` is where contrib patches and what calls tracewire's adapters; the
    # request is prepared once (preparing is requests' own cost, equal for every variant).
    import requests

    prepared = session.prepare_request(requests.Request("GET", URL))

    def run(n: int) -> None:
        for _ in range(n):
            session.send(prepared.copy())  # stream=False: the body is read, the span ends

    return run


# ------------------------------------------------------------------------------------ suite
def _under_parent(mode: str, run: Callable[[int], None]) -> Callable[[int], None]:
    parent = parent_context(mode)

    def wrapped(n: int) -> None:
        token = attach(parent)
        try:
            run(n)
        finally:
            detach(token)

    return wrapped


def _probe(run: Callable[[int], None], mode: str) -> None:
    """One request under the mode's parent, recording the headers the fake server saw."""
    LAST_HEADERS.clear()
    LAST_HEADERS["clear"] = ""
    try:
        _under_parent(mode, run)(1)
    finally:
        LAST_HEADERS.pop("clear", None)
    if not LAST_HEADERS:
        raise RuntimeError("the request never reached the fake server")


def _verify(name: str, mode: str, tracing: Tracing) -> None:
    tracing.flush()
    if name == "bare":
        return
    if name == "sdk-span floor":  # sends no headers, only its span
        if (mode == "sampled") != bool(tracing.exporter.count):
            raise RuntimeError(f"{name}: exported {tracing.exporter.count} spans in {mode} mode")
        return
    sent = LAST_HEADERS.get("traceparent", "")
    if sent[3:35] != f"{TRACE_ID:032x}":
        raise RuntimeError(f"{name}: the request did not carry the current trace ({sent!r})")
    if mode == "sampled" and (tracing.exporter.last is None):
        raise RuntimeError(f"{name}: a sampled request exported no span")
    if mode == "unsampled" and tracing.exporter.count:
        raise RuntimeError(f"{name}: an unsampled request exported spans")


def _closer(client: Any, loop: asyncio.AbstractEventLoop) -> Callable[[], object]:
    return lambda: loop.run_until_complete(client.aclose())


def run_httpx(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    processor: str = "simple",
    is_async: bool = False,
    clock: str = "cpu",
) -> list[SuiteResult]:
    results = []
    loop = asyncio.new_event_loop()
    try:
        for mode in modes:
            tracings: dict[str, Tracing] = {}
            cleanups: list[Callable[[], object]] = []
            plan = []
            for name, role, note in VARIANTS:
                tracing = tracings[name] = Tracing(processor)
                client, cleanup = httpx_client(name, tracing.provider, is_async)
                if cleanup is not None:
                    cleanups.append(cleanup)
                if is_async:
                    cleanups.append(_closer(client, loop))
                    run = _httpx_async_runner(client, loop)
                else:
                    cleanups.append(client.close)
                    run = _httpx_runner(client)
                _probe(run, mode)
                _verify(name, mode, tracing)
                label = note or (
                    ("AsyncTracingTransport" if is_async else "TracingTransport")
                    + "(MockTransport)"
                    if name == "tracewire"
                    else "HTTPXClientInstrumentor.instrument_client"
                )
                plan.append(Variant(name, _under_parent(mode, run), role, label))
            try:
                suite = SuiteResult(
                    "httpx async client" if is_async else "httpx client",
                    mode,
                    "in-process",
                    measure(plan, iterations, rounds, clock),
                    iterations,
                    rounds,
                )
            finally:
                for undo in cleanups:
                    undo()
            _finish(suite, tracings, processor, clock)
            results.append(suite)
    finally:
        loop.close()
    return results


def run_httpx_async(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    processor: str = "simple",
    clock: str = "cpu",
) -> list[SuiteResult]:
    return run_httpx(iterations, rounds, modes, processor, is_async=True, clock=clock)


def run_requests(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    processor: str = "simple",
    clock: str = "cpu",
) -> list[SuiteResult]:
    results = []
    for mode in modes:
        tracings: dict[str, Tracing] = {}
        plan = []
        sessions = []
        for name, role, note in VARIANTS:
            tracing = tracings[name] = Tracing(processor)
            session, on, off = requests_session(name, tracing.provider)
            sessions.append(session)
            run = _requests_runner(session)
            if on is not None:
                on()
            try:
                _probe(run, mode)
            finally:
                if off is not None:
                    off()
            _verify(name, mode, tracing)
            label = note or (
                "instrument_session(session)" if name == "tracewire" else "RequestsInstrumentor"
            )
            plan.append(Variant(name, _under_parent(mode, run), role, label, on, off))
        try:
            suite = SuiteResult(
                "requests client",
                mode,
                "in-process",
                measure(plan, iterations, rounds, clock),
                iterations,
                rounds,
            )
        finally:
            for session in sessions:
                session.close()
        _finish(suite, tracings, processor, clock)
        results.append(suite)
    return results


def _finish(suite: SuiteResult, tracings: dict[str, Tracing], processor: str, clock: str) -> None:
    for name, tracing in tracings.items():
        tracing.flush()
        suite.exported[name] = tracing.exporter.count
        tracing.shutdown()
    suite.notes.append(f"span processor: {processor}; clock: {clock}")


def run_all(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    processor: str = "simple",
    clock: str = "cpu",
) -> tuple[list[SuiteResult], list[dict[str, str]]]:
    """Every client suite; a suite whose tracewire module is missing is reported as skipped."""
    suites: list[SuiteResult] = []
    skipped: list[dict[str, str]] = []
    for suite, module, runner in (
        ("httpx client", "tracewire.httpx", run_httpx),
        ("httpx async client", "tracewire.httpx", run_httpx_async),
        ("requests client", "tracewire.requests", run_requests),
    ):
        reason = missing(module)
        if reason is not None:
            skipped.append({"suite": suite, "reason": reason})
            continue
        suites += runner(iterations, rounds, modes, processor, clock=clock)
    return suites, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_client", description=__doc__)
    parser.add_argument("--processor", choices=("simple", "batch"), default="simple")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from benchmarks.run import print_table

    suites, skipped = run_all(args.iterations, args.rounds, processor=args.processor)
    print_table(suites)
    for item in skipped:
        print(f"SKIPPED {item['suite']}: {item['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP client hooks, in process: bare vs client floor vs tracewire vs contrib.

httpx requests go to ``httpx.MockTransport`` and requests' to an adapter that answers
``200 ok`` without a socket, so the numbers are the hooks' cost, not the network's. The
requests enter where the instrumentations sit (the client's transport for httpx,
``Session.send`` for requests) and their bodies are read to the end. Each request runs under a
current remote parent span (sampled or not, per mode), as it would inside a traced server
request.

Run alone::

    python -m benchmarks.bench_client --iterations 1000 --rounds 7
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
from opentelemetry.trace import TracerProvider
from requests.adapters import BaseAdapter

from benchmarks._harness import (
    MODES,
    TRACE_ID,
    SuiteResult,
    Tracing,
    Variant,
    check_exports,
    finish,
    measure,
    parent_context,
)
from benchmarks.floors import (
    URL,
    AsyncHttpxClientFloor,
    HttpxClientFloor,
    RequestsClientFloor,
)

_RESPONSE_HEADERS = {"Content-Type": "text/plain", "Content-Length": "2"}
VARIANTS = (
    ("bare", "bare", "the client alone"),
    ("sdk floor", "floor", "one SDK CLIENT span, 4 attributes + status, traceparent injected"),
    ("tracewire", "tracewire", ""),
    ("contrib", "contrib", ""),
)
CLIENTS = ("httpx", "httpx-async", "requests")
SUITE_NAMES = {
    "httpx": "httpx client",
    "httpx-async": "httpx async client",
    "requests": "requests client",
}


def missing(module: str) -> str | None:
    """Why the tracewire side of a client suite cannot run, or ``None`` when it can."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        return f"{module} is not importable; suite skipped"
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


def httpx_client(
    variant: str, provider: TracerProvider, is_async: bool = False
) -> tuple[Any, Callable[[], None] | None]:
    """An ``httpx.Client`` (or ``AsyncClient``) set up as ``variant`` deploys it, and the
    clean-up of its instrumentation."""
    inner = httpx.MockTransport(_httpx_handler)
    cls: Any = httpx.AsyncClient if is_async else httpx.Client
    if variant == "bare":
        return cls(transport=inner), None
    if variant == "sdk floor":
        floor: Any = AsyncHttpxClientFloor if is_async else HttpxClientFloor
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


def httpx_runner(client: Any) -> Callable[[int], None]:
    # The transport is where both instrumentations sit (tracewire's TracingTransport, contrib's
    # wrapper of ``client._transport.handle_request``): driving it directly leaves out the
    # client's own request building, the same for every variant and noisy next to the hooks.
    transport = client._transport

    def run(n: int) -> None:
        for _ in range(n):
            response = transport.handle_request(httpx.Request("GET", URL))
            response.read()  # the body read to the end: a streamed span ends here
            response.close()

    return run


def httpx_async_runner(client: Any, loop: asyncio.AbstractEventLoop) -> Callable[[int], None]:
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
    if variant == "sdk floor":
        session.mount("http://", RequestsClientFloor(session.get_adapter(URL), provider))
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


def requests_runner(session: Any) -> Callable[[int], None]:
    # ``Session.send`` is where contrib patches and what calls tracewire's adapters; the
    # request is prepared once (preparing is requests' own cost, equal for every variant).
    import requests

    prepared = session.prepare_request(requests.Request("GET", URL))

    def run(n: int) -> None:
        for _ in range(n):
            session.send(prepared.copy())  # stream=False: the body is read, the span ends

    return run


# ------------------------------------------------------------------------------------ suite
def under_parent(mode: str, run: Callable[[int], None]) -> Callable[[int], None]:
    """``run`` with the mode's remote parent span current, as inside a traced request."""
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
        under_parent(mode, run)(1)
    finally:
        LAST_HEADERS.pop("clear", None)
    if not LAST_HEADERS:
        raise RuntimeError("the request never reached the fake server")


def _verify(name: str, role: str, mode: str, tracing: Tracing) -> None:
    if role != "bare":
        sent = LAST_HEADERS.get("traceparent", "")
        if sent[3:35] != f"{TRACE_ID:032x}":
            raise RuntimeError(f"{name}: the request did not carry the current trace ({sent!r})")
    check_exports(name, role, mode, tracing)


def build(
    client: str, mode: str, processor: str, loop: asyncio.AbstractEventLoop
) -> tuple[list[Variant], dict[str, Tracing], list[Callable[[], object]]]:
    """The checked variants of one client in one mode, and the clean-ups to run after."""
    tracings: dict[str, Tracing] = {}
    cleanups: list[Callable[[], object]] = []
    plan = []
    for name, role, note in VARIANTS:
        tracing = tracings[name] = Tracing(processor, mode)
        on: Callable[[], None] | None = None
        off: Callable[[], None] | None = None
        if client == "requests":
            session, on, off = requests_session(name, tracing.provider)
            cleanups.append(session.close)
            run = requests_runner(session)
            label = note or (
                "instrument_session(session)" if role == "tracewire" else "RequestsInstrumentor"
            )
        else:
            is_async = client == "httpx-async"
            http, cleanup = httpx_client(name, tracing.provider, is_async)
            if cleanup is not None:
                cleanups.append(cleanup)
            if is_async:
                cleanups.append(lambda c=http: loop.run_until_complete(c.aclose()))
                run = httpx_async_runner(http, loop)
            else:
                cleanups.append(http.close)
                run = httpx_runner(http)
            label = note or (
                ("AsyncTracingTransport" if is_async else "TracingTransport") + "(MockTransport)"
                if role == "tracewire"
                else "HTTPXClientInstrumentor.instrument_client"
            )
        if on is not None:
            on()
        try:
            _probe(run, mode)
        finally:
            if off is not None:
                off()
        _verify(name, role, mode, tracing)
        plan.append(Variant(name, under_parent(mode, run), role, label, on, off))
    return plan, tracings, cleanups


def run_client(
    client: str,
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    processor: str = "batch",
    clock: str = "cpu",
) -> list[SuiteResult]:
    results = []
    loop = asyncio.new_event_loop()
    try:
        for mode in modes:
            plan, tracings, cleanups = build(client, mode, processor, loop)
            try:
                measured = measure(plan, iterations, rounds, clock)
            finally:
                for undo in cleanups:
                    undo()
            suite = SuiteResult(
                SUITE_NAMES[client], mode, "in-process", measured, iterations, rounds
            )
            finish(suite, tracings, processor, clock)
            results.append(suite)
    finally:
        loop.close()
    return results


def run_all(
    iterations: int,
    rounds: int,
    modes: tuple[str, ...] = MODES,
    processor: str = "batch",
    clock: str = "cpu",
    clients: tuple[str, ...] = CLIENTS,
) -> tuple[list[SuiteResult], list[dict[str, str]]]:
    """Every client suite; a suite whose tracewire module is missing is reported as skipped."""
    suites: list[SuiteResult] = []
    skipped: list[dict[str, str]] = []
    for client in clients:
        reason = missing("tracewire.requests" if client == "requests" else "tracewire.httpx")
        if reason is not None:
            skipped.append({"suite": SUITE_NAMES[client], "reason": reason})
            continue
        suites += run_client(client, iterations, rounds, modes, processor, clock)
    return suites, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_client", description=__doc__)
    parser.add_argument("--client", choices=(*CLIENTS, "all"), default="all")
    parser.add_argument("--processor", choices=("batch", "simple"), default="batch")
    parser.add_argument("--mode", choices=(*MODES, "all"), default="all")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    from benchmarks.report import print_suites

    modes = MODES if args.mode == "all" else (args.mode,)
    clients = CLIENTS if args.client == "all" else (args.client,)
    suites, skipped = run_all(
        args.iterations, args.rounds, modes, processor=args.processor, clients=clients
    )
    print_suites(suites)
    for item in skipped:
        print(f"SKIPPED {item['suite']}: {item['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP client hooks: bare vs tracewire vs OpenTelemetry contrib, in-process.

httpx requests go to ``httpx.MockTransport`` and requests' to an adapter that answers
``200 ok`` without a socket, so the numbers are the hooks' cost, not the network's. Each
request runs under a current remote parent span, sampled or not, as it would inside a traced
server request.

Run alone::

    python -m benchmarks.bench_client --iterations 3000 --rounds 7
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
from collections.abc import Callable
from typing import Any

from opentelemetry.context import attach, detach
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import TracerProvider

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
    import httpx

    if LAST_HEADERS.get("clear") == "":
        _remember(request.headers)
    # A stream, not ``content=``: httpx pre-reads ``content`` so the body would never pass
    # through a transport's stream wrapper, which is not what a real network response does.
    return httpx.Response(
        200,
        headers={"content-type": "text/plain", "content-length": "2"},
        stream=httpx.ByteStream(b"ok"),
    )


def httpx_client(variant: str, provider: TracerProvider) -> tuple[Any, Callable[[], None] | None]:
    """An ``httpx.Client`` set up as ``variant`` deploys it, and its clean-up."""
    import httpx

    inner = httpx.MockTransport(_httpx_handler)
    if variant == "bare":
        return httpx.Client(transport=inner), None
    if variant == "tracewire":
        from tracewire import Settings
        from tracewire.httpx import TracingTransport

        transport = TracingTransport(inner, settings=Settings(), tracer_provider=provider)
        return httpx.Client(transport=transport), None
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    client = httpx.Client(transport=inner)
    HTTPXClientInstrumentor.instrument_client(
        client, tracer_provider=provider, meter_provider=NoOpMeterProvider()
    )
    return client, lambda: HTTPXClientInstrumentor.uninstrument_client(client)


def _httpx_runner(client: Any) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            client.get(URL).read()

    return run


# --------------------------------------------------------------------------------- requests
def _static_adapter() -> Any:
    from requests.adapters import BaseAdapter
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
    def run(n: int) -> None:
        for _ in range(n):
            session.get(URL)

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


def _probe(get: Callable[[str], Any], mode: str) -> Any:
    """One request under the mode's parent, recording the headers the fake server saw."""
    LAST_HEADERS.clear()
    LAST_HEADERS["clear"] = ""
    token = attach(parent_context(mode))
    try:
        return get(URL)
    finally:
        detach(token)
        LAST_HEADERS.pop("clear", None)


def _verify(name: str, mode: str, tracing: Tracing) -> None:
    tracing.flush()
    if name == "bare":
        return
    sent = LAST_HEADERS.get("traceparent", "")
    if sent[3:35] != f"{TRACE_ID:032x}":
        raise RuntimeError(f"{name}: the request did not carry the current trace ({sent!r})")
    if mode == "sampled" and (tracing.exporter.last is None):
        raise RuntimeError(f"{name}: a sampled request exported no span")
    if mode == "unsampled" and tracing.exporter.count:
        raise RuntimeError(f"{name}: an unsampled request exported spans")


def run_httpx(
    iterations: int, rounds: int, modes: tuple[str, ...] = MODES, processor: str = "simple"
) -> list[SuiteResult]:
    results = []
    for mode in modes:
        tracings: dict[str, Tracing] = {}
        cleanups = []
        plan = []
        for name, role, note in VARIANTS:
            tracing = tracings[name] = Tracing(processor)
            client, cleanup = httpx_client(name, tracing.provider)
            if cleanup is not None:
                cleanups.append(cleanup)
            cleanups.append(client.close)
            response = _probe(client.get, mode)
            if response.status_code != 200:
                raise RuntimeError(f"httpx {name}: HTTP {response.status_code}")
            _verify(name, mode, tracing)
            label = note or (
                "TracingTransport(MockTransport)"
                if name == "tracewire"
                else "HTTPXClientInstrumentor.instrument_client"
            )
            plan.append(Variant(name, _under_parent(mode, _httpx_runner(client)), role, label))
        try:
            suite = SuiteResult(
                "httpx client",
                mode,
                "in-process",
                measure(plan, iterations, rounds),
                iterations,
                rounds,
            )
        finally:
            for cleanup in cleanups:
                cleanup()
        _finish(suite, tracings, processor)
        results.append(suite)
    return results


def run_requests(
    iterations: int, rounds: int, modes: tuple[str, ...] = MODES, processor: str = "simple"
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
            if on is not None:
                on()
            try:
                response = _probe(session.get, mode)
            finally:
                if off is not None:
                    off()
            if response.status_code != 200:
                raise RuntimeError(f"requests {name}: HTTP {response.status_code}")
            _verify(name, mode, tracing)
            label = note or (
                "instrument_session(session)" if name == "tracewire" else "RequestsInstrumentor"
            )
            plan.append(
                Variant(name, _under_parent(mode, _requests_runner(session)), role, label, on, off)
            )
        try:
            suite = SuiteResult(
                "requests client",
                mode,
                "in-process",
                measure(plan, iterations, rounds),
                iterations,
                rounds,
            )
        finally:
            for session in sessions:
                session.close()
        _finish(suite, tracings, processor)
        results.append(suite)
    return results


def _finish(suite: SuiteResult, tracings: dict[str, Tracing], processor: str) -> None:
    for name, tracing in tracings.items():
        tracing.flush()
        suite.exported[name] = tracing.exporter.count
        tracing.shutdown()
    suite.notes.append(f"span processor: {processor}")


def run_all(
    iterations: int, rounds: int, modes: tuple[str, ...] = MODES, processor: str = "simple"
) -> tuple[list[SuiteResult], list[dict[str, str]]]:
    """Both client suites; a suite whose tracewire module is missing is reported as skipped."""
    suites: list[SuiteResult] = []
    skipped: list[dict[str, str]] = []
    for suite, module, runner in (
        ("httpx client", "tracewire.httpx", run_httpx),
        ("requests client", "tracewire.requests", run_requests),
    ):
        reason = missing(module)
        if reason is not None:
            skipped.append({"suite": suite, "reason": reason})
            continue
        suites += runner(iterations, rounds, modes, processor)
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

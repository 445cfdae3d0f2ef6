"""The not-sampled shortcut gives exactly what the SDK itself gives, and is taken only where
its answer is known.

For a not-sampled parent tracewire may skip the SDK's sampler (``ParentBased`` whose
not-sampled delegates are ``ALWAYS_OFF``). Each test here sends a request with a not-sampled
remote parent (``traceparent`` flags ``00``, and ``02``: not sampled, random trace id) through
the ASGI and WSGI middlewares and the httpx transport, and compares the span the app (or the
downstream service) gets with the span the SDK makes for the same parent through its own
``Tracer.start_span``: recording or not, span class, trace id, trace flags, trace state. A
spying wrapper around the sampler's ``should_sample`` counts whether the SDK was asked, so the
shortcut is seen being taken under the default shape and not taken under every other one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from tests.support.inprocess import (
    Seen,
    asgi_scope,
    mock_transport,
    respond,
    run_asgi,
    run_wsgi,
    wsgi_environ,
)
from tracewire import TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.httpx import TracewireTransport

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACESTATE = "vendor=v1,other=x"
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------- samplers
class KeepIfTraceState(Sampler):
    """A custom sampler: records (and samples) only a trace whose tracestate has ``keep``;
    adds its own tracestate entry either way, which a shortcut would lose."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Any] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        state = parent.trace_state or TraceState()
        decision = Decision.RECORD_AND_SAMPLE if "keep" in state else Decision.DROP
        return SamplingResult(decision, None, state.add("custom", "1"))

    def get_description(self) -> str:
        return "KeepIfTraceState"


class RecordOnly(Sampler):
    """Records every span but samples none (the ``RECORD_ONLY`` decision)."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Sequence[Any] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        return SamplingResult(Decision.RECORD_ONLY, None, parent.trace_state)

    def get_description(self) -> str:
        return "RecordOnly"


class MyParentBased(ParentBased):
    """A subclass may override anything: it is not the SDK's ParentBased any more."""


OFF = lambda: StaticSampler(Decision.DROP)  # noqa: E731 - a fresh ALWAYS_OFF each time
ON = lambda: StaticSampler(Decision.RECORD_AND_SAMPLE)  # noqa: E731


@dataclass(frozen=True)
class Shape:
    """A sampler and whether the shortcut may answer for a remote / a local parent."""

    name: str
    make: Callable[[], Sampler]
    remote_shortcut: bool
    local_shortcut: bool


SHAPES = [
    Shape("parentbased-default", lambda: ParentBased(ALWAYS_ON), True, True),
    Shape("parentbased-ratio-root", lambda: ParentBased(TraceIdRatioBased(0.5)), True, True),
    Shape(
        "parentbased-equivalent-delegates",  # fresh always-off instances: the same answer
        lambda: ParentBased(ON(), remote_parent_not_sampled=OFF(), local_parent_not_sampled=OFF()),
        True,
        True,
    ),
    Shape(
        "parentbased-remote-not-sampled-on",
        lambda: ParentBased(ALWAYS_ON, remote_parent_not_sampled=ON()),
        False,
        True,
    ),
    Shape(
        "parentbased-local-not-sampled-on",
        lambda: ParentBased(ALWAYS_ON, local_parent_not_sampled=ON()),
        True,
        False,
    ),
    Shape(
        "parentbased-custom-delegates",
        lambda: ParentBased(
            ALWAYS_ON,
            remote_parent_not_sampled=KeepIfTraceState(),
            local_parent_not_sampled=RecordOnly(),
        ),
        False,
        False,
    ),
    Shape("parentbased-subclass", lambda: MyParentBased(ALWAYS_ON), False, False),
    Shape("always-off", OFF, False, False),
    Shape("always-on", ON, False, False),
    Shape("ratio-0", lambda: TraceIdRatioBased(0), False, False),
    Shape("ratio-1", lambda: TraceIdRatioBased(1), False, False),
    Shape("custom", KeepIfTraceState, False, False),
    Shape("record-only", RecordOnly, False, False),
]
SHAPE_IDS = [s.name for s in SHAPES]
FLAGS = ["00", "02"]


class SpyingIds(RandomIdGenerator):
    """The SDK's random ids, remembering every span id handed out."""

    def __init__(self) -> None:
        self.span_ids: list[int] = []

    def generate_span_id(self) -> int:
        span_id = super().generate_span_id()
        self.span_ids.append(span_id)
        return span_id


class Sdk:
    """A provider with ``sampler``; counts the SDK sampler's calls without changing its type."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.calls = 0
        real = sampler.should_sample

        def counting(*args: Any, **kwargs: Any) -> SamplingResult:
            self.calls += 1
            return real(*args, **kwargs)

        sampler.should_sample = counting  # type: ignore[method-assign]
        self.ids = SpyingIds()
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=sampler, id_generator=self.ids)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def reference(self, context: Context, kind: SpanKind) -> dict[str, Any]:
        """``describe`` of the span the SDK itself starts for ``context`` (not counted as a
        sampler call)."""
        before = self.calls
        span = self.provider.get_tracer("reference").start_span("GET", context, kind=kind)
        described = describe(span)
        span.end()
        self.calls = before
        return described

    def exported(self) -> list[Any]:
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if s.instrumentation_scope.name == "tracewire"]


@pytest.fixture(params=SHAPES, ids=SHAPE_IDS)
def shape(request: pytest.FixtureRequest) -> Shape:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sdk(shape: Shape) -> Any:
    made = Sdk(shape.make())
    yield made
    made.provider.shutdown()


def remote_parent(flags: str, state: str = TRACESTATE) -> SpanContext:
    return SpanContext(
        TRACE_ID,
        PARENT_ID,
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
        trace_state=TraceState.from_header([state]),
    )


def parent_headers(flags: str, state: str = TRACESTATE) -> list[tuple[str, str]]:
    return [
        ("traceparent", f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-{flags}"),
        ("tracestate", state),
    ]


def describe(span: Any) -> dict[str, Any]:
    """What must be equal between tracewire's span and the SDK's (ids aside), taken while the
    span is open."""
    sc = span.get_span_context()
    return {
        "span_id": sc.span_id,
        "class": type(span).__name__,
        "recording": span.is_recording(),
        "trace_id": sc.trace_id,
        "flags": int(sc.trace_flags),
        "state": sc.trace_state.to_header(),
        "remote": sc.is_remote,
        "valid": sc.is_valid,
    }


def check_same(seen: dict[str, Any], reference: dict[str, Any], sdk: Sdk) -> None:
    """``seen`` is the SDK's own answer, but for its span id: fresh, from the provider's own
    id generator."""
    assert {**seen, "span_id": None} == {**reference, "span_id": None}
    assert seen["span_id"] not in (PARENT_ID, reference["span_id"])
    assert seen["span_id"] in sdk.ids.span_ids


def expected_calls(shape: Shape, local: bool = False) -> int:
    return 0 if (shape.local_shortcut if local else shape.remote_shortcut) else 1


# --------------------------------------------------------------------------------- server
def serve(kind: str, sdk: Sdk, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """One request through the ``kind`` middleware; ``describe`` of the app's current span."""
    seen: dict[str, Any] = {}
    if kind == "asgi":

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen["span"] = describe(trace.get_current_span())
            await respond(send, 200)

        result = run_asgi(
            TracewireMiddleware(app, tracer_provider=sdk.provider), asgi_scope(headers=headers)
        )
        assert result.status == 200
    else:

        def wsgi(environ: Any, start_response: Any) -> list[bytes]:
            seen["span"] = describe(trace.get_current_span())
            start_response("200 OK", [])
            return [b""]

        result_wsgi = run_wsgi(
            TracewireWSGIMiddleware(wsgi, tracer_provider=sdk.provider),
            wsgi_environ(headers=headers),
        )
        assert result_wsgi.status == "200 OK"
    return seen["span"]


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_server_child_of_unsampled_remote_parent(
    kind: str, flags: str, shape: Shape, sdk: Sdk
) -> None:
    seen = serve(kind, sdk, parent_headers(flags))
    assert sdk.calls == expected_calls(shape)
    parent = set_span_in_context(NonRecordingSpan(remote_parent(flags)))
    check_same(seen, sdk.reference(parent, SpanKind.SERVER), sdk)
    assert seen["trace_id"] == TRACE_ID
    if flags == "02":
        assert seen["flags"] & 0x02  # the random flag is kept
    exported = sdk.exported()  # a span is exported when it is sampled (not just recording)
    assert len(exported) == (1 if seen["flags"] & 0x01 else 0)
    if exported:
        assert exported[0].context.span_id == seen["span_id"]
        assert exported[0].parent.span_id == PARENT_ID


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_custom_sampler_sees_the_tracestate(kind: str) -> None:
    # KeepIfTraceState samples this one: the SDK had to be asked, and it said yes.
    sdk = Sdk(ParentBased(ALWAYS_ON, remote_parent_not_sampled=KeepIfTraceState()))
    seen = serve(kind, sdk, parent_headers("00", "keep=1,vendor=v1"))
    assert sdk.calls == 1
    assert seen["recording"]
    assert seen["flags"] == 0x01
    assert seen["state"] == "custom=1,keep=1,vendor=v1"
    sdk.provider.shutdown()


def test_sampled_parent_never_takes_the_shortcut() -> None:
    sdk = Sdk(ParentBased(ALWAYS_ON))
    seen = serve("asgi", sdk, parent_headers("01"))
    assert sdk.calls == 1
    assert seen["recording"]
    sdk.provider.shutdown()


def test_no_parent_never_takes_the_shortcut() -> None:
    sdk = Sdk(ParentBased(ALWAYS_ON))
    seen = serve("wsgi", sdk, [])
    assert sdk.calls == 1
    assert seen["recording"]
    assert seen["trace_id"] != TRACE_ID
    sdk.provider.shutdown()


# --------------------------------------------------------------------------------- client
def downstream(seen: list[Seen]) -> tuple[int, int, int, str | None]:
    """(trace id, parent id, flags, tracestate) the downstream service received."""
    assert len(seen) == 1
    headers = seen[0].headers
    _, trace_id, span_id, flags = headers["traceparent"].split("-")
    return int(trace_id, 16), int(span_id, 16), int(flags, 16), headers.get("tracestate")


def check_downstream(seen: list[Seen], reference: dict[str, Any], sdk: Sdk, parent_id: int) -> None:
    """The downstream service got the SDK's own child (its span id aside); it was exported
    exactly when the SDK's child is sampled."""
    trace_id, span_id, flags, state = downstream(seen)
    assert trace_id == reference["trace_id"]
    assert flags == reference["flags"] & 0x03  # only the flags W3C defines go on the wire
    assert (state or "") == reference["state"]
    assert span_id not in (parent_id, reference["span_id"])
    assert span_id in sdk.ids.span_ids
    exported = [s for s in sdk.exported() if s.kind == SpanKind.CLIENT]
    assert len(exported) == (1 if reference["flags"] & 0x01 else 0)
    if exported:
        assert exported[0].context.span_id == span_id
        assert exported[0].kind == SpanKind.CLIENT


@pytest.mark.parametrize("flags", FLAGS)
def test_httpx_child_of_unsampled_remote_parent(flags: str, shape: Shape, sdk: Sdk) -> None:
    seen: list[Seen] = []
    transport = TracewireTransport(mock_transport(seen), tracer_provider=sdk.provider)
    context = set_span_in_context(NonRecordingSpan(remote_parent(flags)))
    token = attach(context)
    try:
        with httpx.Client(transport=transport) as client:
            assert client.get("http://downstream.test/x").status_code == 200
    finally:
        detach(token)
    assert sdk.calls == expected_calls(shape)
    check_downstream(seen, sdk.reference(context, SpanKind.CLIENT), sdk, PARENT_ID)
    assert downstream(seen)[0] == TRACE_ID
    if flags == "02":
        assert downstream(seen)[2] & 0x02


@pytest.mark.parametrize("flags", FLAGS)
def test_httpx_inside_an_unsampled_server_span(flags: str, shape: Shape, sdk: Sdk) -> None:
    """The client's parent is then the server's local span; the local delegates decide."""
    seen: list[Seen] = []
    transport = TracewireTransport(mock_transport(seen), tracer_provider=sdk.provider)
    notes: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        server_span = trace.get_current_span()
        before = sdk.calls
        with httpx.Client(transport=transport) as client:
            client.get("http://downstream.test/x")
        notes["client_calls"] = sdk.calls - before
        notes["server"] = describe(server_span)
        notes["reference"] = sdk.reference(set_span_in_context(server_span), SpanKind.CLIENT)
        await respond(send, 200)

    middleware = TracewireMiddleware(app, tracer_provider=sdk.provider)
    assert run_asgi(middleware, asgi_scope(headers=parent_headers(flags))).status == 200
    server = notes["server"]
    if server["flags"] & 0x01:
        assert notes["client_calls"] == 1  # a sampled parent: the SDK decides
    else:
        assert notes["client_calls"] == expected_calls(shape, local=True)
    check_downstream(seen, notes["reference"], sdk, server["span_id"])


# ------------------------------------------------------------------- the global provider
SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, StaticSampler
    from opentelemetry.trace import NonRecordingSpan, SpanKind, set_span_in_context
    from tests.test_fastpath import Sdk, client_with, remote_parent, serve_with

    if sys.argv[1] == "default":
        sampler = ParentBased(ALWAYS_ON)
    else:
        on = StaticSampler(Decision.RECORD_AND_SAMPLE)
        sampler = ParentBased(ALWAYS_ON, remote_parent_not_sampled=on)
    # Built while no SDK provider is set: their tracers are ProxyTracers.
    runs = {{"asgi": serve_with("asgi"), "wsgi": serve_with("wsgi"), "httpx": client_with()}}
    out = {{"before": {{kind: run("02") for kind, run in runs.items()}}}}
    sdk = Sdk(sampler)
    trace.set_tracer_provider(sdk.provider)
    for flags in ("00", "02"):
        parent = set_span_in_context(NonRecordingSpan(remote_parent(flags)))
        for kind, run in runs.items():
            calls = sdk.calls
            seen, span_id = run(flags)
            calls = sdk.calls - calls
            kind_ = SpanKind.CLIENT if kind == "httpx" else SpanKind.SERVER
            out[kind + "-" + flags] = {{
                "calls": calls,
                "seen": seen,
                "reference": sdk.reference(parent, kind_),
                "fresh_id": span_id in sdk.ids.span_ids,
            }}
    print(json.dumps(out))
    """
)


def serve_with(kind: str) -> Callable[[str], tuple[dict[str, Any], int]]:
    """A middleware of ``kind`` on the global provider; ``run(flags)`` gives what the app saw
    (``describe`` of its current span) and that span's id. Used by the subprocess script."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["span"] = describe(trace.get_current_span())
        await respond(send, 200)

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        seen["span"] = describe(trace.get_current_span())
        start_response("200 OK", [])
        return [b""]

    asgi_mw = TracewireMiddleware(app)
    wsgi_mw = TracewireWSGIMiddleware(wsgi)

    def run(flags: str) -> tuple[dict[str, Any], int]:
        if kind == "asgi":
            run_asgi(asgi_mw, asgi_scope(headers=parent_headers(flags)))
        else:
            run_wsgi(wsgi_mw, wsgi_environ(headers=parent_headers(flags)))
        described = seen.pop("span")
        return described, described["span_id"]

    return run


def client_with() -> Callable[[str], tuple[dict[str, Any], int]]:
    """An httpx transport on the global provider; ``run(flags)`` gives the downstream headers
    in ``describe``'s shape (class and recording are not visible downstream: left out)."""
    seen: list[Seen] = []
    transport = TracewireTransport(mock_transport(seen))

    def run(flags: str) -> tuple[dict[str, Any], int]:
        seen.clear()
        token = attach(set_span_in_context(NonRecordingSpan(remote_parent(flags))))
        try:
            with httpx.Client(transport=transport) as client:
                client.get("http://downstream.test/x")
        finally:
            detach(token)
        trace_id, span_id, flags_sent, state = downstream(seen)
        return {"trace_id": trace_id, "flags": flags_sent, "state": state}, span_id

    return run


@pytest.mark.parametrize("which", ["default", "remote-not-sampled-on"])
def test_global_provider_set_after_the_middleware_and_client_were_built(which: str) -> None:
    """tracewire's tracers are ProxyTracers until an SDK provider is set globally; the
    shortcut must then be decided against that provider (run in a fresh interpreter, since
    the global provider can be set only once per process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT)), which],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # Before: no SDK; the API passes the remote parent itself through (no new span id).
    for kind in ("asgi", "wsgi", "httpx"):
        seen, span_id = out["before"][kind]
        assert (seen["trace_id"], span_id) == (TRACE_ID, PARENT_ID), out["before"]
    shortcut = which == "default"
    for flags in ("00", "02"):
        for kind in ("asgi", "wsgi", "httpx"):
            got = out[f"{kind}-{flags}"]
            assert got["calls"] == (0 if shortcut else 1), (kind, flags, got)
            assert got["fresh_id"], got
            ref = got["reference"]
            seen = got["seen"]
            assert seen["trace_id"] == ref["trace_id"] == TRACE_ID
            if kind == "httpx":
                assert seen["flags"] == ref["flags"] & 0x03
                assert (seen["state"] or "") == ref["state"]
            else:
                assert {**seen, "span_id": None} == {**ref, "span_id": None}
            if flags == "02":
                assert seen["flags"] & 0x02


# ------------------------------------------------------------- what the shortcut skips
def test_sdk_internal_span_metrics_count_shortcut_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), meter_provider=meters)

    def started() -> int:
        data = reader.get_metrics_data()
        total = 0
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "otel.sdk.span.started":
                        total += sum(int(p.value) for p in metric.data.data_points)
        return total

    context = set_span_in_context(NonRecordingSpan(remote_parent("00")))
    provider.get_tracer("reference").start_span("GET", context, kind=SpanKind.SERVER)
    assert started() == 1  # the SDK counts its own not-sampled child

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await respond(send, 200)

    run_asgi(
        TracewireMiddleware(app, tracer_provider=provider),
        asgi_scope(headers=parent_headers("00")),
    )
    try:
        assert started() == 2
    finally:
        provider.shutdown()
        meters.shutdown()


def test_disabled_tracer_gives_the_parent_itself() -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    disable = getattr(sdk_trace, "_disable_tracer_configurator", None)
    if disable is None:
        pytest.skip("this SDK has no tracer configurator")
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), _tracer_configurator=disable)
    parent = set_span_in_context(NonRecordingSpan(remote_parent("00")))
    reference = provider.get_tracer("reference").start_span("GET", parent, kind=SpanKind.SERVER)
    assert reference.get_span_context().span_id == PARENT_ID  # the SDK's answer
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["span_id"] = trace.get_current_span().get_span_context().span_id
        await respond(send, 200)

    run_asgi(
        TracewireMiddleware(app, tracer_provider=provider),
        asgi_scope(headers=parent_headers("00")),
    )
    assert seen["span_id"] == PARENT_ID

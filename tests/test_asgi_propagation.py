"""Incoming context at the ASGI server boundary, with real servers and a real HTTP client.

Starlette, FastAPI and a raw ASGI app, each under uvicorn and under hypercorn: the SERVER span
continues the caller's trace (W3C or B3), starts a new one for a missing or invalid header,
and the app's code sees the span and the baggage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.asgi_apps import COMBOS, Service, new_ids, running_service, traceparent
from tracewire import Settings


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{a}-{s}" for a, s in COMBOS])
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    settings = Settings(propagators=("tracecontext", "baggage", "b3"))
    with running_service(*request.param, settings) as svc:
        yield svc


@pytest.fixture
def svc(service: Service) -> Service:
    return service.fresh()


def _ids(span: Any) -> tuple[str, str]:
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def test_traceparent_continues_the_callers_trace(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    response = svc.get("/items/42", {"traceparent": traceparent(trace_id, parent_id)})
    assert response.status_code == 200
    body = response.json()
    span = svc.sink.of_trace(trace_id)
    assert span.kind == SpanKind.SERVER
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == parent_id
    # The app's code runs inside this very span.
    assert (body["trace_id"], body["span_id"]) == _ids(span)
    assert span.attributes["tracewire.propagation.format"] == "tracecontext"
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["url.path"] == "/items/42"
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code == StatusCode.UNSET
    if svc.kind != "raw":
        assert span.name == "GET /items/{item_id}"
        assert span.attributes["http.route"] == "/items/{item_id}"
    else:
        assert span.name == "GET"


def test_no_header_starts_a_new_trace(svc: Service) -> None:
    body = svc.get("/items/1").json()
    assert body["valid"]
    span = svc.sink.of_trace(body["trace_id"])
    assert span.parent is None
    assert "tracewire.propagation.format" not in span.attributes


@pytest.mark.parametrize(
    "value",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # missing flags
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # uppercase hex
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # v00 too long
        "garbage",
    ],
)
def test_invalid_traceparent_starts_a_new_trace(svc: Service, value: str) -> None:
    response = svc.get("/items/1", {"traceparent": value, "tracestate": "k=v"})
    assert response.status_code == 200
    body = response.json()
    assert body["trace_id"] != "0af7651916cd43dd8448eb211c80319c"
    span = svc.sink.of_trace(body["trace_id"])
    assert span.parent is None
    assert not span.context.trace_state


def test_b3_continues_the_callers_trace(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    body = svc.get("/items/7", {"b3": f"{trace_id}-{parent_id}-1"}).json()
    assert body["trace_id"] == trace_id
    span = svc.sink.of_trace(trace_id)
    assert f"{span.parent.span_id:016x}" == parent_id
    # Never reuse the caller's span id for the server span.
    assert f"{span.context.span_id:016x}" != parent_id
    assert span.attributes["tracewire.propagation.format"] == "b3"


def test_b3_multi_and_64_bit_trace_id(svc: Service) -> None:
    _, parent_id = new_ids()
    short = parent_id[::-1]  # any 16 hex digits
    headers = {"X-B3-TraceId": short, "X-B3-SpanId": parent_id, "X-B3-Sampled": "1"}
    body = svc.get("/items/7", headers).json()
    assert body["trace_id"] == "0" * 16 + short
    span = svc.sink.of_trace(body["trace_id"])
    assert f"{span.parent.span_id:016x}" == parent_id


def test_baggage_reaches_app_code(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    headers = {
        "traceparent": traceparent(trace_id, parent_id),
        "baggage": "user=alice,region=eu%20west;prop=1, bad member ,tenant=t-1",
    }
    body = svc.get("/items/3", headers).json()
    assert body["trace_id"] == trace_id
    assert body["baggage"] == {"user": "alice", "region": "eu west", "tenant": "t-1"}
    svc.sink.of_trace(trace_id)


def test_tracestate_is_kept(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    headers = {"traceparent": traceparent(trace_id, parent_id), "tracestate": "a=1,b=2"}
    svc.get("/items/3", headers)
    span = svc.sink.of_trace(trace_id)
    assert span.parent.trace_state.to_header() == "a=1,b=2"


def test_unsampled_caller_gives_a_non_recording_span_in_its_trace(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    body = svc.get("/items/3", {"traceparent": traceparent(trace_id, parent_id, "00")}).json()
    # The app still runs in the caller's trace (so outgoing calls keep it) ...
    assert body["trace_id"] == trace_id and body["valid"]
    # ... but nothing is exported for it: the parent-based sampler follows the caller.
    assert svc.get("/items/4").status_code == 200  # a later, sampled request lands ...
    svc.sink.wait_count(1)
    assert not [s for s in svc.sink.spans() if f"{s.context.trace_id:032x}" == trace_id]


def test_conflicting_formats_become_links(svc: Service) -> None:
    w3c_trace, w3c_parent = new_ids()
    b3_trace, b3_parent = new_ids()
    headers = {
        "traceparent": traceparent(w3c_trace, w3c_parent),
        "b3": f"{b3_trace}-{b3_parent}-1",
    }
    svc.get("/items/5", headers)
    span = svc.sink.of_trace(w3c_trace)
    assert span.attributes["tracewire.propagation.format"] == "tracecontext"
    linked = [_ids(link) for link in span.links]
    assert linked == [(b3_trace, b3_parent)]


def test_repeated_traceparent_is_invalid(svc: Service) -> None:
    trace_id, parent_id = new_ids()
    other, _ = new_ids()
    headers = [
        ("traceparent", traceparent(trace_id, parent_id)),
        ("traceparent", traceparent(other, parent_id)),
    ]
    body = svc.client.get("/items/9", headers=headers).json()
    assert body["trace_id"] not in (trace_id, other)
    assert svc.sink.of_trace(body["trace_id"]).parent is None

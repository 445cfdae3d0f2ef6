"""Flask's client-side config keys govern the outgoing calls made inside that app's requests.

``TRACEWIRE_PROPAGATE_TO``, ``TRACEWIRE_BAGGAGE_TO`` and ``TRACEWIRE_CLIENT_REQUEST_HOOK`` /
``TRACEWIRE_CLIENT_RESPONSE_HOOK`` in ``app.config``, with clients built without settings:
a host the app does not allow gets no trace headers (its CLIENT span is still recorded),
baggage only goes where the app allows it, and the app's hooks run. The same clients used
outside the app's requests are not bound by them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from tests.support import one_setting
from tests.support.one_setting import (
    CLIENTS,
    Clients,
    Downstream,
    Service,
    SharedTracing,
    Trace,
    assert_hop,
    call_outside,
    call_through,
    clean_globals,
    flask_app,
    incoming,
    outgoing_ids,
    trace_header_names,
)
from tests.support.servers import WerkzeugThread
from tracewire.flask import Tracewire
from tracewire.semconv import SERVER_PORT


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedTracing]:
    with SharedTracing() as tracing:
        yield tracing


@pytest.fixture(scope="module")
def downstream(shared: SharedTracing) -> Iterator[Downstream]:
    with Downstream(shared.provider) as server:
        yield server


@pytest.fixture(scope="module")
def other(shared: SharedTracing) -> Iterator[Downstream]:
    """A second downstream (another port): the host the app does not allow."""
    with Downstream(shared.provider) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with clean_globals(monkeypatch):
        yield


@pytest.fixture
def clients(shared: SharedTracing) -> Iterator[Clients]:
    built = Clients(shared.provider)
    yield built
    built.close()


def _app(clients: Clients, shared: SharedTracing, **config: Any) -> Any:
    app = flask_app(Service(clients))
    app.config.update(config)
    Tracewire(app, tracer_provider=shared.provider)
    return app


@pytest.mark.parametrize("kind", CLIENTS)
def test_propagate_to_in_flask_config_governs_the_apps_calls(
    kind: str,
    shared: SharedTracing,
    downstream: Downstream,
    other: Downstream,
    clients: Clients,
) -> None:
    app = _app(
        clients,
        shared,
        TRACEWIRE_PROPAGATORS="tracecontext",
        TRACEWIRE_PROPAGATE_TO=downstream.authority,
    )
    with WerkzeugThread(app) as server:
        allowed = incoming("tracecontext")
        got, _ = call_through(
            server.url, kind, allowed, downstream, ["tracecontext"], shared.provider
        )
        assert_hop(shared, allowed, got, ["tracecontext"])

        refused = incoming("tracecontext")
        got, body = call_through(
            server.url, kind, refused, other, ["tracecontext"], shared.provider
        )
    assert int(body["trace_id"], 16) == refused.trace_id
    assert trace_header_names(got) == set(), "a host outside TRACEWIRE_PROPAGATE_TO got headers"
    spans = shared.wait_spans(refused.trace_id, 2)
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert client.attributes is not None and client.attributes[SERVER_PORT] == other.server.port
    assert client.parent is not None and client.parent.span_id == int(body["span_id"], 16)
    assert [s.kind for s in spans if s.kind is SpanKind.SERVER] == [SpanKind.SERVER]

    # The same client outside the app's requests: the process default (every host).
    outside = call_outside(clients, kind, other, ["tracecontext", "baggage"])
    assert trace_header_names(outside) == {"traceparent"}


@pytest.mark.parametrize("kind", ["httpx", "requests", "httpx_async"])
def test_baggage_to_in_flask_config_governs_the_apps_calls(
    kind: str,
    shared: SharedTracing,
    downstream: Downstream,
    other: Downstream,
    clients: Clients,
) -> None:
    app = _app(
        clients,
        shared,
        TRACEWIRE_PROPAGATORS="tracecontext,baggage",
        TRACEWIRE_BAGGAGE_TO=downstream.authority,
    )
    w3c = ["tracecontext", "baggage"]
    with WerkzeugThread(app) as server:
        to_allowed = incoming("tracecontext", baggage="tenant=acme")
        got, _ = call_through(server.url, kind, to_allowed, downstream, w3c, shared.provider)
        to_other = incoming("tracecontext", baggage="tenant=acme")
        got_other, _ = call_through(server.url, kind, to_other, other, w3c, shared.provider)
    assert trace_header_names(got) == {"traceparent", "baggage"}
    assert got["baggage"] == ["tenant=acme"]
    assert trace_header_names(got_other) == {"traceparent"}, "baggage went to a refused host"
    for sent, headers in ((to_allowed, got), (to_other, got_other)):
        hop = Trace.of(shared.wait_spans(sent.trace_id, 3), sent.span_id)
        assert outgoing_ids(headers, "tracecontext") == (sent.trace_id, hop.client.context.span_id)
        hop.assert_chain()


def _response_hook(span: Any, request: Any, response: Any) -> None:
    span.set_attribute("test.response_status", int(response.status_code))


@pytest.mark.parametrize("kind", ["httpx", "requests", "httpx_async", "requests_global"])
def test_client_hooks_in_flask_config_run_for_the_apps_calls(
    kind: str, shared: SharedTracing, downstream: Downstream, clients: Clients
) -> None:
    app = _app(
        clients,
        shared,
        TRACEWIRE_PROPAGATORS="b3",
        # As config files write it (an import path), and as code does (a callable).
        TRACEWIRE_CLIENT_REQUEST_HOOK="tests.support.one_setting:record_client_hook",
        TRACEWIRE_CLIENT_RESPONSE_HOOK=_response_hook,
    )
    calls_before = len(one_setting.HOOK_CALLS)
    with WerkzeugThread(app) as server:
        sent = incoming("b3")
        got, _ = call_through(server.url, kind, sent, downstream, ["b3"], shared.provider)
    hop = assert_hop(shared, sent, got, ["b3"])
    assert hop.client.attributes is not None
    assert hop.client.attributes["test.hook"] == "flask-config"
    assert hop.client.attributes["test.response_status"] == 200
    assert len(one_setting.HOOK_CALLS) == calls_before + 1
    assert one_setting.HOOK_CALLS[-1][1].startswith(downstream.server.url)

    # Outside the app's requests the hooks are not the client's.
    outside = call_outside(clients, kind, downstream, ["tracecontext"])
    trace_id, span_id = outgoing_ids(outside, "tracecontext")
    (client,) = [s for s in shared.wait_spans(trace_id, 2) if s.kind is SpanKind.CLIENT]
    assert client.context.span_id == span_id
    assert client.attributes is not None and "test.hook" not in client.attributes
    assert len(one_setting.HOOK_CALLS) == calls_before + 1

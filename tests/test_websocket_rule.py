"""The "failed before responding means 500" rule holds for WebSockets too.

A WebSocket app that raises before accepting gets ``http.response.status_code`` 500,
``error.type`` = the exception's class, an ERROR status naming only that class, and exactly one
span; an accepted WebSocket gets 101. Driven in-process (the ASGI messages exactly) and under
a real uvicorn with a real WebSocket client (uvicorn's wsproto implementation, and its
websockets one when that package is installed).
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import Tracing
from tests.support.asgi_apps import new_ids, traceparent, websocket_session
from tests.support.inprocess import asgi_scope, run_asgi
from tests.support.servers import UvicornThread, wait_for
from tracewire import TracewireMiddleware

MESSAGE = "session token=hunter2 for ws://admin:pw@10.0.0.5/feed"


class HandshakeFailure(RuntimeError):
    """What the app raises before accepting."""


FAILURE = f"{__name__}.HandshakeFailure"


async def ws_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/raise``: raises before accepting; ``/deny``: closes before accepting; ``/deny-401``:
    the denial response extension; ``/raise-later``: accepts, then raises; else accepts and
    echoes text until the client closes."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    first = await receive()
    assert first["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/raise":
        raise HandshakeFailure(MESSAGE)
    if path == "/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    if path == "/deny-401":
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"who are you"})
        return
    await send({"type": "websocket.accept"})
    if path == "/raise-later":
        raise HandshakeFailure(MESSAGE)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": "echo " + message.get("text", "")})


def the_span(tracing: Tracing) -> ReadableSpan:
    spans = tracing.spans()
    assert len(spans) == 1, [(s.name, dict(s.attributes or {})) for s in spans]
    assert spans[0].kind == SpanKind.SERVER
    return spans[0]


def check_failed_before_accept(span: ReadableSpan) -> None:
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == FAILURE
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == FAILURE  # the class, never the message
    assert "hunter2" not in (span.status.description or "")
    assert [e.name for e in span.events] == ["exception"]


# ------------------------------------------------------------------------------ in-process
def run_ws(tracing: Tracing, path: str, incoming: list[dict[str, Any]] | None = None) -> Any:
    app = TracewireMiddleware(ws_app, tracer_provider=tracing.provider)
    messages = incoming or [{"type": "websocket.connect"}]
    return run_asgi(app, asgi_scope(kind="websocket", path=path), incoming=messages)


def test_raising_before_accept_is_a_500_in_process(tracing: Tracing) -> None:
    result = run_ws(tracing, "/raise")
    assert isinstance(result.error, HandshakeFailure)  # re-raised to the server, unchanged
    assert str(result.error) == MESSAGE
    assert result.messages == []  # the middleware sent nothing in the app's name
    check_failed_before_accept(the_span(tracing))


def test_accepted_websocket_is_a_101_in_process(tracing: Tracing) -> None:
    result = run_ws(
        tracing,
        "/echo",
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "hi"},
            {"type": "websocket.disconnect", "code": 1000},
        ],
    )
    assert result.error is None
    assert [m["type"] for m in result.messages] == ["websocket.accept", "websocket.send"]
    span = the_span(tracing)
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 101
    assert "error.type" not in span.attributes
    assert span.status.status_code == StatusCode.UNSET
    assert span.attributes["url.scheme"] == "ws"


def test_raising_after_accept_keeps_the_101_and_records_the_error(tracing: Tracing) -> None:
    result = run_ws(tracing, "/raise-later")
    assert isinstance(result.error, HandshakeFailure)
    span = the_span(tracing)
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 101
    assert span.attributes["error.type"] == FAILURE
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == FAILURE


@pytest.mark.parametrize(("path", "status"), [("/deny", 403), ("/deny-401", 401)])
def test_refused_before_accept_is_a_4xx_not_an_error(
    tracing: Tracing, path: str, status: int
) -> None:
    result = run_ws(tracing, path)
    assert result.error is None
    span = the_span(tracing)
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == status
    assert span.status.status_code == StatusCode.UNSET
    assert "error.type" not in span.attributes


# ---------------------------------------------------------------------- under uvicorn
def ws_implementations() -> list[Any]:
    params = [pytest.param("wsproto", id="wsproto")]
    try:
        import websockets  # noqa: F401
    except ImportError:
        params.append(
            pytest.param(
                "websockets",
                id="websockets",
                marks=pytest.mark.skip(reason="websockets is not installed"),
            )
        )
    else:
        params.append(pytest.param("websockets", id="websockets"))
    return params


@pytest.mark.parametrize("ws", ws_implementations())
def test_under_uvicorn(tracing: Tracing, ws: str) -> None:
    app = TracewireMiddleware(ws_app, tracer_provider=tracing.provider)
    with UvicornThread(app, ws=ws) as running:
        # Accepted: 101.
        trace_id, parent_id = new_ids()
        replies = websocket_session(
            running.host,
            running.port,
            "/echo",
            [("traceparent", traceparent(trace_id, parent_id))],
            ["one"],
        )
        assert replies == ["echo one"]
        span = wait_for(
            lambda: [s for s in tracing.spans() if s.context.trace_id == int(trace_id, 16)]
        )[0]
        assert span.attributes["http.response.status_code"] == 101
        assert span.status.status_code == StatusCode.UNSET
        assert f"{span.parent.span_id:016x}" == parent_id
        tracing.exporter.clear()

        # Raised before accepting: the server refuses the handshake with a 500.
        trace_id, parent_id = new_ids()
        with pytest.raises(ConnectionError, match="500"):
            websocket_session(
                running.host,
                running.port,
                "/raise",
                [("traceparent", traceparent(trace_id, parent_id))],
                ["never answered"],
            )
        wait_for(tracing.spans)
        span = the_span(tracing)
        assert span.context.trace_id == int(trace_id, 16)
        check_failed_before_accept(span)

"""url.query on SERVER spans: values of sensitive parameters never reach the exporter."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import UvicornThread, WerkzeugThread, wait_for
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.semconv import URL_QUERY, redact_query


async def asgi_app(scope, receive, send):  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sig=secret&x=1", "sig=REDACTED&x=1"),
        ("x=1&access_token=abc&token=", "x=1&access_token=REDACTED&token="),
        ("a=1&b=2", "a=1&b=2"),
        ("mine=s3cr3t", "mine=REDACTED"),
    ],
)
def test_sensitive_query_values_are_redacted(tracing, kind, query, expected) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(redact_query_params=(*Settings().redact_query_params, "mine"))
    if kind == "asgi":
        server = UvicornThread(
            TracewireMiddleware(asgi_app, settings, tracer_provider=tracing.provider)
        )
    else:
        server = WerkzeugThread(
            TracewireWSGIMiddleware(wsgi_app, settings, tracer_provider=tracing.provider)
        )
    with server:
        assert httpx.get(f"{server.url}/p?{query}", timeout=10).status_code == 200
        # A WSGI span ends when the server closes the body, which may follow the response.
        wait_for(tracing.spans, timeout=10)
    (span,) = tracing.spans()
    assert span.attributes[URL_QUERY] == expected
    if "secret" in query or "s3cr3t" in query or "abc" in query:
        assert all("secret" not in str(v) and "abc" not in str(v) for v in span.attributes.values())


def test_redact_query_returns_the_same_object_when_nothing_matches() -> None:
    query = "a=1&b=2"
    assert redact_query(query, frozenset({"sig"})) is query
    assert redact_query("sig", frozenset({"sig"})) == "sig"

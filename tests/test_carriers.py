"""Getters and setters on every carrier shape, and on real servers' own carriers.

The ``SHAPES`` table here is shared by the format tests: every wire rule is checked on each of
the five shapes a header list takes in practice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from opentelemetry import baggage, trace
from requests.structures import CaseInsensitiveDict

from tests.support.servers import UvicornThread, WerkzeugThread, serving
from tracewire import Settings
from tracewire.carriers import (
    asgi_getter,
    asgi_setter,
    headers_getter,
    headers_setter,
    wsgi_getter,
    wsgi_key,
)

Headers = Sequence[tuple[str, str]]
Shape = Callable[[Headers], tuple[Any, Any]]


def _odd_case(name: str, variant: int) -> str:
    """A spelling of ``name`` with mixed case; different variants give different spellings."""
    chars = list(name)
    letters = [i for i, c in enumerate(chars) if c.isalpha()]
    for n, i in enumerate(letters):
        upper = (n + variant) % 2 == 0 if variant < 2 else variant == 2
        chars[i] = chars[i].upper() if upper else chars[i].lower()
    return "".join(chars)


def as_asgi(headers: Headers) -> tuple[Any, Any]:
    """``scope["headers"]``: lowercase byte names, repeats kept apart, in order."""
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers], asgi_getter


def as_wsgi(headers: Headers) -> tuple[Any, Any]:
    """A WSGI ``environ``: ``HTTP_*`` keys, repeats joined with ``,`` as servers do."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    for name, value in headers:
        key = wsgi_key(name)
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ, wsgi_getter


def as_httpx(headers: Headers) -> tuple[Any, Any]:
    """``httpx.Headers`` as a response or request read off the wire: bytes, repeats apart."""
    return httpx.Headers([(n, v.encode("latin-1")) for n, v in headers]), headers_getter


def as_requests(headers: Headers) -> tuple[Any, Any]:
    """A requests ``CaseInsensitiveDict``: one value per name, repeats joined with ``, ``."""
    cid: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for name, value in headers:
        cid[name] = f"{cid[name]}, {value}" if name in cid else value
    return cid, headers_getter


def as_dict(headers: Headers) -> tuple[Any, Any]:
    """A plain ``dict`` with odd casing; a repeat is another spelling of the same name."""
    carrier: dict[str, Any] = {}
    spellings: dict[str, list[str]] = {}
    for name, value in headers:
        used = spellings.setdefault(name.lower(), [])
        for variant in range(3):
            spelling = _odd_case(name, variant)
            if spelling not in used:
                used.append(spelling)
                carrier[spelling] = value
                break
        else:  # no spelling left (short names): a list value is also a repeat
            last = used[-1]
            previous = carrier[last]
            carrier[last] = [*previous, value] if isinstance(previous, list) else [previous, value]
    return carrier, headers_getter


SHAPES: dict[str, Shape] = {
    "asgi": as_asgi,
    "wsgi": as_wsgi,
    "httpx": as_httpx,
    "requests": as_requests,
    "dict": as_dict,
}
shape_names = list(SHAPES)


def outgoing_carriers() -> dict[str, Callable[[], tuple[Any, Any]]]:
    """Empty carriers for inject, each with its setter."""
    return {
        "asgi": lambda: ([], asgi_setter),
        "httpx": lambda: (httpx.Headers(), headers_setter),
        "requests": lambda: (CaseInsensitiveDict(), headers_setter),
        "dict": lambda: ({}, headers_setter),
    }


def sent_headers(carrier: Any) -> dict[str, list[str]]:
    """What an injected carrier would put on the wire: lowercase name -> values."""
    out: dict[str, list[str]] = {}
    if isinstance(carrier, list):
        pairs = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in carrier]
    elif isinstance(carrier, httpx.Headers):
        pairs = list(carrier.multi_items())
    else:
        pairs = list(carrier.items())
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


def to_incoming(sent: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, values in sent.items() for value in values]


# --------------------------------------------------------------------------------- getters


@pytest.mark.parametrize("shape", shape_names)
def test_single_header_any_case(shape: str) -> None:
    carrier, getter = SHAPES[shape]([("TraceParent", "x"), ("Other", "y")])
    for key in ("traceparent", "TRACEPARENT", "TraceParent"):
        assert getter.get(carrier, key) == ["x"]
    assert getter.get(carrier, "missing") is None


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("asgi", ["a=1", "b=2"]),
        ("wsgi", ["a=1,b=2"]),
        ("httpx", ["a=1", "b=2"]),
        ("requests", ["a=1, b=2"]),
        ("dict", ["a=1", "b=2"]),
    ],
)
def test_repeated_header_values(shape: str, expected: list[str]) -> None:
    carrier, getter = SHAPES[shape]([("tracestate", "a=1"), ("x", "y"), ("TRACESTATE", "b=2")])
    assert getter.get(carrier, "tracestate") == expected


def test_dict_spellings_of_one_name_are_a_repeat() -> None:
    carrier = {"traceparent": "a", "TraceParent": "b", "other": "c"}
    assert headers_getter.get(carrier, "traceparent") == ["a", "b"]
    assert headers_getter.get(carrier, "TRACEPARENT") == ["a", "b"]


def test_dict_values_of_every_kind() -> None:
    carrier: dict[str, Any] = {"a": b"bytes", "b": ["x", b"y"], "c": (), "d": 7, "e": None}
    assert headers_getter.get(carrier, "a") == ["bytes"]
    assert headers_getter.get(carrier, "b") == ["x", "y"]
    assert headers_getter.get(carrier, "c") is None
    assert headers_getter.get(carrier, "d") is None  # not a header value
    assert headers_getter.get(carrier, "e") is None


def test_getlist_objects_keep_repeats() -> None:
    from starlette.datastructures import Headers as StarletteHeaders
    from werkzeug.datastructures import Headers as WerkzeugHeaders

    starlette = StarletteHeaders(raw=[(b"baggage", b"a=1"), (b"baggage", b"b=2")])
    werkzeug = WerkzeugHeaders([("Baggage", "a=1"), ("baggage", "b=2")])
    assert headers_getter.get(starlette, "Baggage") == ["a=1", "b=2"]
    assert headers_getter.get(werkzeug, "BAGGAGE") == ["a=1", "b=2"]
    assert headers_getter.get(werkzeug, "missing") is None


def test_asgi_names_not_lowercased_by_the_server() -> None:
    headers = [(b"TraceParent", b"x"), (b"traceparent", b"y"), (b"traceparenT2", b"z")]
    assert asgi_getter.get(headers, "traceparent") == ["x", "y"]


def test_asgi_values_are_latin1() -> None:
    assert asgi_getter.get([(b"k", b"caf\xe9")], "k") == ["caf\u00e9"]


def test_wsgi_key_naming() -> None:
    assert wsgi_key("X-B3-TraceId") == "HTTP_X_B3_TRACEID"
    assert wsgi_key("content-type") == "CONTENT_TYPE"
    assert wsgi_key("Content-Length") == "CONTENT_LENGTH"
    environ = {"HTTP_X_B3_TRACEID": "abc", "wsgi.input": object(), "HTTP_BAD": 5}
    assert wsgi_getter.get(environ, "x-b3-traceid") == ["abc"]
    assert wsgi_getter.get(environ, "bad") is None  # not a str: not a header value


@pytest.mark.parametrize("shape", shape_names)
def test_keys(shape: str) -> None:
    carrier, getter = SHAPES[shape]([("TraceParent", "x"), ("X-B3-Sampled", "1")])
    keys = {k.lower() for k in getter.keys(carrier)}
    assert {"traceparent", "x-b3-sampled"} <= keys


# --------------------------------------------------------------------------------- setters


def test_dict_setter_replaces_other_spellings() -> None:
    carrier = {"TraceParent": "old", "TRACEPARENT": "older", "other": "kept"}
    headers_setter.set(carrier, "traceparent", "new")
    assert carrier == {"traceparent": "new", "other": "kept"}


@pytest.mark.parametrize("kind", ["httpx", "requests"])
def test_case_insensitive_setters_replace(kind: str) -> None:
    carrier: Any = (
        httpx.Headers({"TraceParent": "old"})
        if kind == "httpx"
        else CaseInsensitiveDict({"TraceParent": "old"})
    )
    headers_setter.set(carrier, "traceparent", "new")
    assert sent_headers(carrier) == {"traceparent": ["new"]}


def test_asgi_setter_appends_lowercase() -> None:
    carrier: list[tuple[bytes, bytes]] = [(b"content-type", b"text/plain")]
    asgi_setter.set(carrier, "TraceResponse", "v")
    assert carrier[-1] == (b"traceresponse", b"v")


# ------------------------------------------------------------------ real servers' carriers

TP1 = "00-11111111111111111111111111111111-1111111111111111-01"
TP2 = "00-22222222222222222222222222222222-2222222222222222-01"
SETTINGS = Settings(propagators=["tracecontext", "baggage", "b3multi"])


def _describe(context: Any, getter: Any, carrier: Any, fmt: str | None) -> dict[str, Any]:
    span_context = trace.get_current_span(context).get_span_context()
    return {
        "trace_id": f"{span_context.trace_id:032x}" if span_context.is_valid else None,
        "tracestate": span_context.trace_state.to_header() if span_context.is_valid else None,
        "baggage": dict(baggage.get_all(context)),
        "format": fmt,
        "raw_tracestate": getter.get(carrier, "tracestate"),
    }


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    found = SETTINGS.composite.extract_detailed(scope["headers"], asgi_getter)
    body = json.dumps(_describe(found.context, asgi_getter, scope["headers"], found.format))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    found = SETTINGS.composite.extract_detailed(environ, wsgi_getter)
    body = json.dumps(_describe(found.context, wsgi_getter, environ, found.format))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


@pytest.fixture(scope="module")
def servers() -> Any:
    with serving(UvicornThread(asgi_app)) as asgi, serving(WerkzeugThread(wsgi_app)) as wsgi:
        yield {"asgi": asgi.url, "wsgi": wsgi.url}


@pytest.mark.parametrize("server", ["asgi", "wsgi"])
def test_real_server_repeats(servers: dict[str, str], server: str) -> None:
    url = servers[server]
    with httpx.Client(timeout=10) as client:
        one = client.get(
            url,
            headers=[
                ("traceparent", TP1),
                ("tracestate", "a=1"),
                ("tracestate", "b=2"),
                ("baggage", "k=1"),
                ("Baggage", "j=2"),
            ],
        ).json()
        assert one["trace_id"] == "1" * 32
        assert one["tracestate"] == "a=1,b=2"
        assert one["baggage"] == {"k": "1", "j": "2"}
        assert one["format"] == "tracecontext"
        expected_raw = ["a=1", "b=2"] if server == "asgi" else ["a=1,b=2"]
        assert one["raw_tracestate"] == expected_raw

        # Two traceparent fields: a new trace, and the tracestate is ignored with them.
        two = client.get(
            url,
            headers=[("traceparent", TP1), ("traceparent", TP1), ("tracestate", "a=1")],
        ).json()
        assert two["trace_id"] is None
        assert two["format"] is None

        # Repeated X-B3-* headers: the first value wins (B3 specification), also when the
        # server joined the repeats into one value.
        b3_headers = [("X-B3-TraceId", "2" * 32), ("X-B3-SpanId", "2" * 16)]
        b3 = client.get(url, headers=b3_headers).json()
        assert (b3["trace_id"], b3["format"]) == ("2" * 32, "b3multi")
        b3 = client.get(url, headers=[*b3_headers, ("X-B3-TraceId", "3" * 32)]).json()
        assert (b3["trace_id"], b3["format"]) == ("2" * 32, "b3multi")

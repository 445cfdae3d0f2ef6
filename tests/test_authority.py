"""One ``host[:port]`` rule for every adapter: the same inputs through ``parse_authority``, the
ASGI and WSGI middlewares (Host header), httpx and requests (URL authority), and the
``same-origin`` decision that compares a server parse with a client parse.

Where the protocols allow it the SERVER and CLIENT spans carry the same ``server.address`` /
``server.port``. Where the input is malformed no address comes from it: the server falls back
to the socket's address (``scope["server"]`` / ``SERVER_NAME`` + ``SERVER_PORT``), and a client
library either refuses the URL or (httpx, for some) sends it on.

Differences that are the client libraries' own, before tracewire sees the URL:

* both httpx and requests (urllib3) lowercase a host name (``Example.COM``), while a server
  span keeps the Host header's case as sent;
* requests drops a ``:0`` port from the URL (the request goes to the scheme's default port);
* requests refuses a URL with an empty or malformed authority (urllib3 1.26 percent-encodes
  ``a, b`` instead); httpx percent-encodes some.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import urllib3
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.conftest import Tracing
from tests.support.inprocess import (
    LocalAdapter,
    Seen,
    asgi_scope,
    mock_transport,
    respond,
    run_asgi,
    run_wsgi,
    wsgi_environ,
)
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.authority import DEFAULT_PORTS, effective_port, parse_authority, split_url
from tracewire.httpx import TracewireTransport
from tracewire.requests import TracewireAdapter

URLLIB3_MAJOR = int(urllib3.__version__.split(".")[0])
SOCKET = ("127.0.0.9", 8009)  # the local address of the (synthetic) server socket


@dataclass(frozen=True)
class Case:
    """One authority and what every adapter must make of it.

    ``parsed``: ``parse_authority``'s answer. ``client``: the CLIENT span's
    ``(server.address, server.port)`` where it differs from the server's (the library rewrote
    the URL), ``"rejected"`` when the library refuses the URL, ``"absent"`` when no address
    may be recorded; ``None`` means the same as the SERVER span.
    """

    text: str
    parsed: tuple[str, int | None] | None
    httpx: tuple[str, int] | str | None = None
    requests: tuple[str, int] | str | None = None
    # httpx itself fails after the transport answered (its cookie jar cannot parse the URL).
    httpx_raises: type[Exception] | None = None


CASES = [
    Case("10.0.0.1", ("10.0.0.1", None)),
    Case("10.0.0.1:8080", ("10.0.0.1", 8080)),
    Case("example.com", ("example.com", None)),
    Case("api.example.com:8443", ("api.example.com", 8443)),
    Case("h:080", ("h", 80)),
    Case("Example.COM:81", ("Example.COM", 81), ("example.com", 81), ("example.com", 81)),
    Case("[::1]", ("::1", None)),
    Case("[::1]:8443", ("::1", 8443)),
    Case("[2001:db8::1]:80", ("2001:db8::1", 80)),
    Case("h:", ("h", None)),  # an empty port counts as absent
    Case("[::1", None, "rejected", "rejected"),
    Case("a:b:c", None, "rejected", "rejected"),
    Case("h:abc", None, "rejected", "rejected"),
    Case("h:99999", None, "absent", "rejected"),
    Case("h:0", None, "absent", ("h", 80)),
    Case("", None, "absent", "rejected", httpx_raises=ValueError),
    # Two Host values, joined; urllib3 2 refuses the URL, 1.26 percent-encodes it.
    Case("a, b", None, "absent", "rejected" if URLLIB3_MAJOR >= 2 else "absent"),
]
IDS = [repr(c.text) for c in CASES]


def server_expectation(case: Case) -> tuple[str | None, int | None]:
    """``(server.address, server.port)`` the SERVER span must carry for ``case``."""
    if case.parsed is None:
        return SOCKET
    host, port = case.parsed
    return host, effective_port(port, "http")


def attrs(span: ReadableSpan) -> tuple[Any, Any]:
    assert span.attributes is not None
    return span.attributes.get("server.address"), span.attributes.get("server.port")


def only(tracing: Tracing, kind: SpanKind) -> ReadableSpan:
    spans = [s for s in tracing.spans() if s.kind == kind]
    assert len(spans) == 1, spans
    return spans[0]


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await respond(send, 200, b"ok")


def ok_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


# ------------------------------------------------------------------------------ the parser
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parse_authority(case: Case) -> None:
    assert parse_authority(case.text) == case.parsed
    # split_url gives the same answer for the authority of an absolute URL.
    host, port = case.parsed if case.parsed is not None else ("", None)
    assert split_url(f"http://{case.text}/p?q=1") == ("http", host, port)
    assert split_url(f"HTTP://user:pw@{case.text}#frag") == ("http", host, port)


def test_default_ports_are_one_table() -> None:
    assert dict(DEFAULT_PORTS) == {"http": 80, "https": 443, "ws": 80, "wss": 443}
    for scheme, port in DEFAULT_PORTS.items():
        assert effective_port(None, scheme) == port
        assert effective_port(None, scheme.upper()) == port
        assert effective_port(1234, scheme) == 1234
    assert effective_port(None, "ftp") is None
    assert effective_port(None, None) is None


# ---------------------------------------------------------------------------- server side
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_asgi_host_header(case: Case, tracing: Tracing) -> None:
    app = TracewireMiddleware(ok_app, tracer_provider=tracing.provider)
    result = run_asgi(app, asgi_scope(headers=[("host", case.text)], server=SOCKET))
    assert result.status == 200
    assert attrs(only(tracing, SpanKind.SERVER)) == server_expectation(case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_wsgi_host_header(case: Case, tracing: Tracing) -> None:
    app = TracewireWSGIMiddleware(ok_wsgi, tracer_provider=tracing.provider)
    result = run_wsgi(app, wsgi_environ(headers=[("Host", case.text)]))
    assert result.status == "200 OK"
    assert attrs(only(tracing, SpanKind.SERVER)) == server_expectation(case)


@pytest.mark.parametrize("case", [c for c in CASES if c.parsed is None], ids=repr)
def test_malformed_host_without_socket_address_gives_no_address(
    case: Case, tracing: Tracing
) -> None:
    asgi = TracewireMiddleware(ok_app, tracer_provider=tracing.provider)
    run_asgi(asgi, asgi_scope(headers=[("host", case.text)], server=None))
    wsgi = TracewireWSGIMiddleware(ok_wsgi, tracer_provider=tracing.provider)
    run_wsgi(wsgi, wsgi_environ(headers=[("Host", case.text)], server_name=None))
    spans = tracing.spans()
    assert len(spans) == 2
    for span in spans:
        assert attrs(span) == (None, None), span.attributes


@pytest.mark.parametrize(
    "hosts", [("a.example", "b.example"), ("a.example:81", "a.example:81")], ids=["differ", "same"]
)
def test_asgi_repeated_host_headers_count_as_absent(
    hosts: tuple[str, str], tracing: Tracing
) -> None:
    app = TracewireMiddleware(ok_app, tracer_provider=tracing.provider)
    run_asgi(app, asgi_scope(headers=[("host", hosts[0]), ("host", hosts[1])], server=SOCKET))
    assert attrs(only(tracing, SpanKind.SERVER)) == SOCKET


def test_wsgi_joined_host_headers_count_as_malformed(tracing: Tracing) -> None:
    # A WSGI server joins repeated headers with ", " (wsgi_environ does the same).
    environ = wsgi_environ(headers=[("Host", "a.example"), ("Host", "b.example")])
    assert environ["HTTP_HOST"] == "a.example, b.example"
    app = TracewireWSGIMiddleware(ok_wsgi, tracer_provider=tracing.provider)
    run_wsgi(app, environ)
    assert attrs(only(tracing, SpanKind.SERVER)) == SOCKET


@pytest.mark.parametrize(
    ("host", "expected"),
    [("app.internal:8080", ("app.internal", 8080)), (None, SOCKET)],
    ids=["with-host", "without-host"],
)
def test_x_forwarded_host_is_not_read(
    host: str | None, expected: tuple[str, int], tracing: Tracing
) -> None:
    headers = [("x-forwarded-host", "public.example:443")]
    if host is not None:
        headers.insert(0, ("host", host))
    asgi = TracewireMiddleware(ok_app, tracer_provider=tracing.provider)
    run_asgi(asgi, asgi_scope(headers=headers, server=SOCKET))
    wsgi = TracewireWSGIMiddleware(ok_wsgi, tracer_provider=tracing.provider)
    run_wsgi(wsgi, wsgi_environ(headers=headers))
    spans = tracing.spans()
    assert [attrs(s) for s in spans] == [expected, expected]


def test_https_and_ws_default_ports_on_the_server(tracing: Tracing) -> None:
    asgi = TracewireMiddleware(ok_app, tracer_provider=tracing.provider)
    run_asgi(asgi, asgi_scope(headers=[("host", "secure.example")], scheme="https"))
    wsgi = TracewireWSGIMiddleware(ok_wsgi, tracer_provider=tracing.provider)
    run_wsgi(wsgi, wsgi_environ(headers=[("Host", "[::1]")], scheme="https"))
    assert sorted(attrs(s) for s in tracing.spans()) == [("::1", 443), ("secure.example", 443)]


# ---------------------------------------------------------------------------- client side
def client_expectation(case: Case, library: str) -> tuple[str | None, int | None] | str:
    special = case.httpx if library == "httpx" else case.requests
    if special is not None:
        return special
    return server_expectation(case)


def client_params() -> list[Any]:
    params = []
    for library in ("httpx", "requests"):
        for case in CASES:
            params.append(pytest.param(library, case, id=f"{library}-{case.text!r}"))
    return params


def send(library: str, url: str, tracing: Tracing, seen: list[Seen]) -> None:
    """One GET of ``url`` through tracewire's wrapper around a transport that answers from
    memory; ``seen`` gets what that transport was asked to send."""
    if library == "httpx":
        transport = TracewireTransport(mock_transport(seen), tracer_provider=tracing.provider)
        with httpx.Client(transport=transport) as client:
            client.get(url)
    else:
        with requests.Session() as session:
            session.mount(
                "http://",
                TracewireAdapter(LocalAdapter(seen), tracer_provider=tracing.provider),
            )
            session.get(url)


REJECTED = {"httpx": httpx.InvalidURL, "requests": requests.exceptions.InvalidURL}


@pytest.mark.parametrize(("library", "case"), client_params())
def test_client_url_authority(library: str, case: Case, tracing: Tracing) -> None:
    url = f"http://{case.text}/p"
    expected = client_expectation(case, library)
    seen: list[Seen] = []
    if expected == "rejected":
        with pytest.raises(REJECTED[library]):
            send(library, url, tracing, seen)
        assert seen == []
        assert tracing.spans() == []
        return
    if library == "httpx" and case.httpx_raises is not None:
        with pytest.raises(case.httpx_raises):
            send(library, url, tracing, seen)
    else:
        send(library, url, tracing, seen)
    assert len(seen) == 1
    assert "traceparent" in seen[0].headers
    span = only(tracing, SpanKind.CLIENT)
    if expected == "absent":
        assert span.attributes is not None
        assert "server.address" not in span.attributes, dict(span.attributes)
        assert span.attributes.get("server.port") in (None, 80), dict(span.attributes)
    else:
        assert attrs(span) == expected


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_client_https_default_port(library: str, tracing: Tracing) -> None:
    seen: list[Seen] = []
    if library == "httpx":
        transport = TracewireTransport(mock_transport(seen), tracer_provider=tracing.provider)
        with httpx.Client(transport=transport) as client:
            client.get("https://[::1]/p")
    else:
        with requests.Session() as session:
            adapter = TracewireAdapter(LocalAdapter(seen), tracer_provider=tracing.provider)
            session.mount("https://", adapter)
            session.get("https://[::1]/p")
    assert attrs(only(tracing, SpanKind.CLIENT)) == ("::1", 443)


# --------------------------------------------------------------------------- same-origin
SAME_ORIGIN = Settings(propagate_to=["same-origin"])


def same_origin_cases() -> list[Any]:
    """(Host header, the same authority as a URL, another port as a URL) per case."""
    out = []
    for case in CASES:
        if case.parsed is None:
            # The origin falls back to the socket's address.
            same = f"http://{SOCKET[0]}:{SOCKET[1]}/x"
            other = f"http://{SOCKET[0]}:{SOCKET[1] + 1}/x"
        else:
            host, port = case.parsed
            shown = f"[{host}]" if ":" in host else host
            port = effective_port(port, "http")
            assert port is not None
            same = f"http://{case.text}/x"
            other = f"http://{shown}:{port + 1}/x"
        out.append(pytest.param(case.text, same, other, id=repr(case.text)))
    # A default port written out is the same origin as one left out, both ways.
    out.append(
        pytest.param(
            "example.com",
            "http://example.com:80/x",
            "http://example.com:8080/x",
            id="explicit-default-port",
        )
    )
    out.append(
        pytest.param(
            "example.com:80", "http://example.com/x", "https://example.com/x", id="scheme-differs"
        )
    )
    return out


def outgoing(library: str, url: str, tracing: Tracing) -> bool:
    """Call ``url`` from inside the request being served (the client takes the serving
    middleware's settings); whether trace headers were sent."""
    seen: list[Seen] = []
    if library == "httpx":
        transport = TracewireTransport(mock_transport(seen), tracer_provider=tracing.provider)
        with httpx.Client(transport=transport) as client:
            client.get(url)
    else:
        with requests.Session() as session:
            adapter = TracewireAdapter(LocalAdapter(seen), tracer_provider=tracing.provider)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.get(url)
    assert len(seen) == 1
    return "traceparent" in seen[0].headers


@pytest.mark.parametrize("server", ["asgi", "wsgi"])
@pytest.mark.parametrize(("host", "same", "other"), same_origin_cases())
def test_same_origin_compares_server_and_client_parses_alike(
    server: str, host: str, same: str, other: str, tracing: Tracing
) -> None:
    answers: dict[str, bool] = {}

    def calls() -> None:
        for library in ("httpx", "requests"):
            answers[f"{library}-same"] = outgoing(library, same, tracing)
            answers[f"{library}-other"] = outgoing(library, other, tracing)

    if server == "asgi":

        async def app(scope: Any, receive: Any, send: Any) -> None:
            calls()
            await respond(send, 200)

        wrapped = TracewireMiddleware(app, SAME_ORIGIN, tracer_provider=tracing.provider)
        assert run_asgi(wrapped, asgi_scope(headers=[("host", host)], server=SOCKET)).status == 200
    else:

        def wsgi(environ: Any, start_response: Any) -> list[bytes]:
            calls()
            start_response("200 OK", [])
            return [b""]

        wrapped_wsgi = TracewireWSGIMiddleware(wsgi, SAME_ORIGIN, tracer_provider=tracing.provider)
        assert run_wsgi(wrapped_wsgi, wsgi_environ(headers=[("Host", host)])).status == "200 OK"
    assert answers == {
        "httpx-same": True,
        "httpx-other": False,
        "requests-same": True,
        "requests-other": False,
    }

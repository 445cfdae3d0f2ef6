"""One check per fuzz target: bytes in, ``AssertionError`` when an invariant breaks.

Targets (``TARGETS``):

* ``traceparent``, ``tracestate``, ``baggage``, ``b3``, ``b3multi``: the header parsers of
  ``tracewire.propagators``, each against an independent reading of its rules (``spec.py``),
  then extract -> inject -> extract through the propagator: what is sent is valid and the same
  context comes back.
* ``asgi``, ``wsgi``: a synthetic request through ``TracewireMiddleware`` /
  ``TracewireWSGIMiddleware`` and through the bare app; the app may call a downstream service
  with httpx (``TracingTransport`` / ``AsyncTracingTransport`` over ``httpx.MockTransport``)
  or requests (``TracingAdapter`` over a local adapter).
* ``client``: the inject path alone, under a current span extracted from the fuzzed headers.

Invariants of the server and client targets:

1. nothing raises that the bare app does not raise (the same exception type and message);
2. the response (status, headers, body, in order) is identical to the bare app's, with
   ``response_propagation="none"``; with it on, the only difference is the one header
   tracewire adds, which is valid and names the server span the app saw;
3. every header tracewire adds to an outgoing request is valid per SPECS.md, and the caller's
   own headers reach the wire unchanged;
4. the request context is detached afterwards; at most one SERVER span ends per request and,
   when sampled, it is the span the app saw, with its HTTP attributes; no warning tracewire
   logs contains a header value;
5. a single valid ``traceparent`` is continued when tracecontext decides the parent.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from tests.fuzz import spec
from tests.fuzz.inputs import STATUSES, Case, decode, header_text
from tracewire import Settings, TracewireMiddleware, TracewireWSGIMiddleware
from tracewire.carriers import asgi_getter
from tracewire.httpx import AsyncTracingTransport, TracingTransport
from tracewire.propagators import B3Propagator, BaggagePropagator, TraceContextPropagator
from tracewire.propagators.b3 import parse_multi, parse_single
from tracewire.propagators.baggage import parse_baggage
from tracewire.propagators.tracecontext import parse_traceparent, parse_tracestate
from tracewire.requests import TracingAdapter

# ---------------------------------------------------------------------------- shared set-up

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("tests.fuzz")

# Which rules the inputs reached (the tests check that the seeds reach every one).
STATS: Counter[str] = Counter()

# (settings keywords, does a single valid traceparent decide the parent?)
CONFIGS: tuple[tuple[dict[str, Any], bool], ...] = (
    ({}, True),
    ({"propagators": ["tracecontext", "baggage", "b3", "b3multi"]}, True),
    ({"propagators": ["b3multi", "tracecontext", "baggage"], "extract_policy": "last"}, False),
    ({"propagators": ["b3", "baggage"]}, False),
    (
        {
            "extract": ["tracecontext", "b3", "b3multi", "baggage"],
            "inject": ["tracecontext", "baggage", "b3multi"],
        },
        True,
    ),
    (
        {
            "propagators": ["tracecontext", "baggage", "b3"],
            "capture_request_headers": ["traceparent", "baggage", "user-agent", "cookie"],
        },
        True,
    ),
    ({"propagate_to": ["same-origin"], "baggage_to": ["*.internal"]}, True),
    (
        {
            "propagators": ["b3", "tracecontext", "baggage"],
            "propagate_to": ["mock.test", "*.internal"],
            "baggage_to": ["same-origin"],
        },
        False,
    ),
)


@functools.cache
def settings_for(config: int, response_mode: str = "none") -> Settings:
    keywords, _ = CONFIGS[config % len(CONFIGS)]
    return Settings(**keywords, response_propagation=response_mode)


class _Records(logging.Handler):
    """Everything tracewire logs, to check that no header value ever appears in it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


LOGGED = _Records()
logging.getLogger("tracewire").addHandler(LOGGED)


def check_nothing_logged_of(values: Iterable[bytes]) -> None:
    """No logged message quotes a header value (long, digit-bearing ones: no false alarms)."""
    if not LOGGED.messages:
        return
    texts = [header_text(v) for v in values if len(v) >= 24 and any(48 <= c <= 57 for c in v)]
    for message in LOGGED.messages:
        for text in texts:
            assert text not in message, "a header value appeared in tracewire's log"
    LOGGED.messages.clear()


def _lines(data: bytes) -> list[str]:
    """Header values for the single-format targets: byte 0 picks the decoding, the rest are
    values separated by newlines (each is one header line)."""
    if not data:
        return []
    raw = data[1:].split(b"\n")[:64]
    if data[0] & 1:
        return [line.decode("utf-8", "replace") for line in raw]
    return [line.decode("latin-1") for line in raw]


def _carrier(name: str, values: Sequence[str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), v.encode("utf-8", "surrogatepass")) for v in values]


def _one(values: Sequence[str]) -> str | None:
    """A header that must not repeat: its value without OWS, or None (absent or repeated)."""
    return values[0].strip(" \t") if len(values) == 1 else None


def _parent(ctx: Any) -> trace.SpanContext:
    return trace.get_current_span(ctx).get_span_context()


# ------------------------------------------------------------------------- parser targets

TRACECONTEXT = TraceContextPropagator()
BAGGAGE = BaggagePropagator()
B3_SINGLE = B3Propagator(single_header=True)
B3_MULTI = B3Propagator(single_header=False)


def check_traceparent(data: bytes) -> None:
    lines = _lines(data)
    for line in lines:
        assert parse_traceparent(line) == spec.oracle_traceparent(line), "parser != SPECS"
    one = _one(lines)
    expected = spec.oracle_traceparent(one) if one is not None else None
    ctx = TRACECONTEXT.extract(_carrier("traceparent", lines), getter=asgi_getter)
    found = _parent(ctx)
    if expected is None:
        assert not found.is_valid, "an invalid or repeated traceparent was continued"
        return
    trace_id, span_id, flags = expected
    STATS["traceparent:valid"] += 1
    assert (found.trace_id, found.span_id) == (trace_id, span_id)
    assert found.trace_flags == flags & 0x03, "unknown flag bits are dropped"
    out: dict[str, str] = {}
    TRACECONTEXT.inject(out, ctx)
    spec.check_outgoing(out)
    assert out["traceparent"] == f"00-{trace_id:032x}-{span_id:016x}-{flags & 0x03:02x}", (
        "sampled and random-trace-id go on, nothing else"
    )
    again = _parent(TRACECONTEXT.extract(out))
    assert (again.trace_id, again.span_id, again.trace_flags) == (trace_id, span_id, flags & 3)


VALID_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def check_tracestate(data: bytes) -> None:
    lines = _lines(data)
    expected = spec.oracle_tracestate(lines) if lines else []
    if lines:
        assert parse_tracestate(lines) == expected, "parser != SPECS"
    carrier = _carrier("traceparent", [VALID_TRACEPARENT]) + _carrier("tracestate", lines)
    ctx = TRACECONTEXT.extract(carrier, getter=asgi_getter)
    found = _parent(ctx)
    assert found.is_valid, "a bad tracestate never invalidates traceparent"
    entries = expected or []
    assert list(found.trace_state.items()) == entries
    out: dict[str, str] = {}
    TRACECONTEXT.inject(out, ctx)
    spec.check_outgoing(out)
    assert out["traceparent"] == VALID_TRACEPARENT
    members = [f"{k}={v}" for k, v in entries]
    if not members:
        assert "tracestate" not in out
        return
    STATS["tracestate:entries"] += 1
    sent = out["tracestate"].split(",")
    if len(",".join(members)) <= 8192:
        assert sent == members, "a tracestate within the limits goes on unchanged"
        return
    STATS["tracestate:truncated"] += 1
    # Truncated: whole entries only, in order, long ones (> 128) before any short one.
    it = iter(members)
    assert all(any(s == m for m in it) for s in sent), "truncation kept whole entries in order"
    dropped = [m for m in members if m not in sent]
    if any(len(m) <= 128 for m in dropped):
        assert all(len(m) <= 128 for m in sent), "a short entry went before a long one"


def _baggage_member_ok(member: str) -> bool:
    """The W3C grammar of one list-member, limits aside."""
    pair, semicolon, properties = member.partition(";")
    key, eq, value = pair.partition("=")
    key, value = key.strip(" \t"), value.strip(" \t")
    if not eq or not _is_token(key) or not _octets(value):
        return False
    if not semicolon:
        return True
    for prop in properties.split(";"):
        pkey, peq, pvalue = prop.partition("=")
        if not _is_token(pkey.strip(" \t")) or (peq and not _octets(pvalue.strip(" \t"))):
            return False
    return True


def _is_token(text: str) -> bool:
    return bool(text) and all(c in spec.TOKEN_CHARS for c in text)


def _octets(text: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E and c not in '",;\\' for c in text)


def check_baggage(data: bytes) -> None:
    lines = _lines(data)
    if not lines:
        return
    entries, dropped = parse_baggage(lines)
    members = [m.strip(" \t") for m in ",".join(lines).split(",")]
    members = [m for m in members if m]
    valid = [m for m in members if _baggage_member_ok(m)]
    assert len(entries) + dropped == len(members), "every member is kept or counted as dropped"
    assert len(entries) <= len(valid), "an invalid member was kept"
    valid_keys = [m.partition(";")[0].partition("=")[0].strip(" \t") for m in valid]
    it = iter(valid_keys)
    assert all(any(k == v for v in it) for k, _ in entries), "kept members are valid, in order"
    if (
        len(valid) <= 64
        and len(",".join(valid)) <= 8192
        and all(len(m) <= 4096 for m in valid)  # tracewire's per-member cap; see issue 10
    ):
        assert len(entries) == len(valid), "a valid baggage within the limits lost members"
    STATS["baggage:kept" if entries else "baggage:none"] += 1
    if dropped:
        STATS["baggage:dropped"] += 1
    ctx = BAGGAGE.extract(_carrier("baggage", lines), getter=asgi_getter)
    assert dict(baggage.get_all(ctx)) == dict(entries)
    out: dict[str, str] = {}
    BAGGAGE.inject(out, ctx)
    spec.check_outgoing(out)
    if "baggage" in out:
        back = dict(baggage.get_all(BAGGAGE.extract(out)))
        held = dict(baggage.get_all(ctx))
        assert all(held.get(k) == v for k, v in back.items()), "baggage changed on the way"


def _expect_b3(
    single_values: Sequence[str], multi: dict[str, list[str]]
) -> tuple[int, int, str] | None:
    """B3 per the OpenTelemetry rules: the single header first, then the multi headers."""
    if single_values:
        one = _one(single_values)
        found = spec.oracle_b3_single(one) if one is not None else None
        if found is not None:
            return found
    names = ("x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags")
    if not (multi.get(names[0]) or multi.get(names[2]) or multi.get(names[3])):
        return None
    # B3 "Multiple Headers": a repeated X-B3-* header's first value wins (also when a
    # server joined the repeats into one value).
    values = [_first(multi.get(n, [])) for n in names]
    return spec.oracle_b3_multi(*values)


def _first(values: Sequence[str]) -> str | None:
    if not values:
        return None
    return values[0].partition(",")[0].strip(" \t")


def _check_b3(headers: list[tuple[bytes, bytes]]) -> None:
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(header_text(name).lower(), []).append(header_text(value))
    single = grouped.get("b3", [])
    expected = _expect_b3(single, grouped)
    ctx = B3_SINGLE.extract(headers, getter=asgi_getter)
    found = _parent(ctx)
    if expected is None:
        assert not found.is_valid, "invalid B3 headers were continued"
        return
    trace_id, span_id, state = expected
    STATS[f"b3:state={state or 'defer'}"] += 1
    assert found.is_valid
    if trace_id:
        assert (found.trace_id, found.span_id) == (trace_id, span_id)
    assert found.trace_flags.sampled is (state in ("1", "d")), "B3 sampling state"
    sent_single: dict[str, str] = {}
    sent_multi: dict[str, str] = {}
    B3_SINGLE.inject(sent_single, ctx)
    B3_MULTI.inject(sent_multi, ctx)
    spec.check_outgoing(sent_single)
    spec.check_outgoing(sent_multi)
    want_state = {"1": "-1", "0": "-0", "d": "-d", "": ""}[state]
    assert sent_single["b3"] == f"{found.trace_id:032x}-{found.span_id:016x}{want_state}"
    assert sent_multi.get("x-b3-flags") == ("1" if state == "d" else None), "debug goes on"
    assert sent_multi.get("x-b3-sampled") == (state if state in ("0", "1") else None)
    assert _parent(B3_SINGLE.extract(sent_single)) == found
    assert _parent(B3_MULTI.extract(sent_multi)) == found


def check_b3(data: bytes) -> None:
    lines = _lines(data)
    for line in lines:
        assert parse_single(line) == spec.oracle_b3_single(line), "parser != SPECS"
    _check_b3(_carrier("b3", lines))


def check_b3multi(data: bytes) -> None:
    case = decode(data)
    grouped: dict[str, list[str]] = {}
    for name, value in case.headers:
        grouped.setdefault(header_text(name).lower(), []).append(header_text(value))
    names = ("x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags")
    values = [_one(grouped.get(n, [])) for n in names]
    assert parse_multi(*values) == spec.oracle_b3_multi(*values), "parser != SPECS"
    _check_b3(list(case.headers))


# --------------------------------------------------------------------- the downstream hop

DOWNSTREAM_BODY = b"downstream says hello"


@dataclass
class Downstream:
    """A downstream service in memory: records the headers of each request it gets."""

    sent: list[list[tuple[str, str]]] = field(default_factory=list)

    def httpx_handler(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers.raw]
        )
        return httpx.Response(200, headers={"x-down": "1"}, content=DOWNSTREAM_BODY)


class LocalAdapter(BaseAdapter):
    """A requests transport adapter that answers in memory (no socket)."""

    def __init__(self, downstream: Downstream) -> None:
        super().__init__()
        self.downstream = downstream

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.downstream.sent.append(
            [(str(k).lower(), _as_text(v)) for k, v in request.headers.items()]
        )
        response = requests.Response()
        response.status_code = 200
        response.headers = CaseInsensitiveDict({"x-down": "1"})
        response._content = DOWNSTREAM_BODY
        response.url = request.url or ""
        response.request = request
        response.reason = "OK"
        return response

    def close(self) -> None:
        pass


def _as_text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class Clients:
    """The three clients an app may use, traced or not, all answered by one ``Downstream``."""

    def __init__(self, traced: bool, settings: Settings) -> None:
        self.downstream = Downstream()
        mock = httpx.MockTransport(self.downstream.httpx_handler)
        sync_transport: httpx.BaseTransport = mock
        async_transport: httpx.AsyncBaseTransport = mock
        adapter: BaseAdapter = LocalAdapter(self.downstream)
        if traced:
            sync_transport = TracingTransport(mock, settings, tracer_provider=PROVIDER)
            async_transport = AsyncTracingTransport(mock, settings, tracer_provider=PROVIDER)
            adapter = TracingAdapter(adapter, settings, tracer_provider=PROVIDER)
        self.httpx = httpx.Client(transport=sync_transport)
        self.httpx_async = httpx.AsyncClient(transport=async_transport)
        self.requests = requests.Session()
        self.requests.mount("http://", adapter)
        self.requests.mount("https://", adapter)

    def sync_call(self, kind: str, url: str, headers: list[tuple[bytes, bytes]]) -> str:
        try:
            if kind == "requests":
                response = self.requests.get(url, headers=_requests_headers(headers))
                return f"{response.status_code}:{response.content!r}:{_names(response)}"
            answer = self.httpx.get(url, headers=headers)
            return f"{answer.status_code}:{answer.content!r}:{answer.request.headers.raw!r}"
        except Exception as exc:  # the same failure with and without tracewire
            return f"raised {type(exc).__name__}: {exc}"

    async def async_call(self, url: str, headers: list[tuple[bytes, bytes]]) -> str:
        try:
            answer = await self.httpx_async.get(url, headers=headers)
            return f"{answer.status_code}:{answer.content!r}:{answer.request.headers.raw!r}"
        except Exception as exc:
            return f"raised {type(exc).__name__}: {exc}"


def _requests_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, value in headers:
        out[name.decode("latin-1")] = value
    return out


def _names(response: requests.Response) -> str:
    return repr(sorted((k.lower(), _as_text(v)) for k, v in response.request.headers.items()))


FORWARDED = frozenset((b"traceparent", b"tracestate", b"baggage", b"b3", b"x-b3-traceid"))


def _forwarded(case: Case) -> list[tuple[bytes, bytes]]:
    """Headers an app copies onto its own outgoing call (in the ``forward`` mode)."""
    if case.failure != "forward":
        return [(b"x-caller", b"app")]
    return [(n, v) for n, v in case.headers if n.lower() in FORWARDED][:8]


def check_emitted(bare: Downstream, traced: Downstream, current: trace.SpanContext) -> None:
    """What tracewire added to each outgoing request is valid; the rest is the caller's."""
    try:
        assert len(bare.sent) == len(traced.sent), "a different number of downstream calls"
        for plain, with_tracing in zip(bare.sent, traced.sent, strict=True):
            rest = list(with_tracing)
            for pair in plain:
                assert pair in rest, "a header of the caller was changed or removed"
                rest.remove(pair)
            added = dict(rest)
            assert len(added) == len(rest), "tracewire sent one header twice"
            for name in added:
                assert name not in {n for n, _ in plain}, "tracewire doubled a caller's header"
            spec.check_outgoing(added)
            STATS.update(f"downstream:{name}" for name in added)
            if "traceparent" in added and current.is_valid:
                assert added["traceparent"][3:35] == f"{current.trace_id:032x}", "trace id lost"
    finally:
        bare.sent.clear()
        traced.sent.clear()


# ------------------------------------------------------------------------------ the apps


class AppError(Exception):
    """What the app raises in the ``raise-*`` modes."""


@dataclass
class Seen:
    """What the app's code saw of the current context (a side channel, not the response)."""

    span: trace.SpanContext | None = None
    baggage: dict[str, object] = field(default_factory=dict)


def _observe(seen: Seen) -> None:
    seen.span = trace.get_current_span().get_span_context()
    seen.baggage = dict(baggage.get_all())


def _digest(items: Iterable[tuple[Any, Any]]) -> bytes:
    return hashlib.sha256(repr(list(items)).encode("utf-8", "surrogatepass")).hexdigest().encode()


URLS = ("http://mock.test/down", "http://api.internal:8080/x?token=1", "https://other.example/")
APP_HEADERS = [(b"content-type", b"text/plain"), (b"x-app", b"yes")]


class AsgiApp:
    """The app under test: answers from its request alone, so a response can be compared."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.case = Case()
        self.seen = Seen()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        case = self.case
        await receive()
        _observe(self.seen)
        body = _digest(scope["headers"]) + b" " + scope["path"].encode()
        if case.client_call:
            headers = _forwarded(case)
            outcomes = []
            if case.client in ("httpx-async", "all"):
                outcomes.append(await self.clients.async_call(URLS[0], headers))
            if case.client in ("httpx", "all"):
                outcomes.append(self.clients.sync_call("httpx", URLS[1], headers))
            if case.client in ("requests", "all"):
                outcomes.append(self.clients.sync_call("requests", URLS[2], headers))
            body += b" " + _digest(enumerate(outcomes))
        if case.failure == "raise-before":
            raise AppError("failed before responding")
        await send(
            {"type": "http.response.start", "status": case.status, "headers": list(APP_HEADERS)}
        )
        if case.status == 204:
            body = b""
        if case.streamed:
            await send({"type": "http.response.body", "body": body[:10], "more_body": True})
            await send({"type": "http.response.body", "body": body[10:]})
        else:
            await send({"type": "http.response.body", "body": body})
        if case.failure == "raise-after":
            raise AppError("failed after responding")


@dataclass
class Outcome:
    """What a server would see: the messages sent, and the exception that came out, if any."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    left_attached: bool = False


LOOP = asyncio.new_event_loop()


def _scope(case: Case) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/case",
        "raw_path": b"/case",
        "query_string": b"",
        "root_path": "",
        "headers": list(case.headers),
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def run_asgi(app: Any, case: Case) -> Outcome:
    outcome = Outcome()
    requests_left = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return requests_left.pop() if requests_left else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        outcome.messages.append(message)

    async def main() -> None:
        # The request runs in a task of its own, as under a server: a context left attached
        # shows here, not in the caller's context.
        before = context.get_current()
        try:
            await app(_scope(case), receive, send)
        except Exception as exc:
            outcome.error = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        outcome.left_attached = context.get_current() != before

    LOOP.run_until_complete(main())
    return outcome


@dataclass
class Server:
    """One app, bare and wrapped, for one settings choice."""

    bare_app: Any
    bare_clients: Clients
    traced_app: Any
    traced_clients: Clients
    wrapped: dict[str, Any]


@functools.cache
def asgi_server(config: int) -> Server:
    bare_clients = Clients(False, settings_for(config))
    traced_clients = Clients(True, settings_for(config))
    traced_app = AsgiApp(traced_clients)
    wrapped = {
        mode: TracewireMiddleware(traced_app, settings_for(config, mode), tracer_provider=PROVIDER)
        for mode in ("none", "traceresponse", "server-timing")
    }
    return Server(AsgiApp(bare_clients), bare_clients, traced_app, traced_clients, wrapped)


def _expected_parent(case: Case, joined: bool) -> int | None:
    """The trace id a single valid traceparent names, when the config lets it decide."""
    if not CONFIGS[case.config % len(CONFIGS)][1]:
        return None
    values = [header_text(v) for n, v in case.headers if n.lower() == b"traceparent"]
    if joined and values:
        values = [",".join(values)]
    one = _one(values)
    found = spec.oracle_traceparent(one) if one is not None else None
    return found[0] if found is not None else None


def _fresh(*clients: Clients) -> None:
    """Forget what an earlier (possibly failed) check left behind."""
    for each in clients:
        each.downstream.sent.clear()
    EXPORTER.clear()


def _finished_server_spans() -> int:
    spans = EXPORTER.get_finished_spans()
    EXPORTER.clear()
    return sum(1 for s in spans if s.kind is SpanKind.SERVER)


def check_server_spans(case: Case, seen: Seen) -> None:
    """At most one SERVER span; the one the app saw, exported once if sampled, described."""
    spans = [s for s in EXPORTER.get_finished_spans() if s.kind is SpanKind.SERVER]
    EXPORTER.clear()
    assert len(spans) <= 1, "more than one SERVER span for one request"
    assert seen.span is not None and seen.span.is_valid, "the app saw no span"
    if seen.span.trace_flags.sampled:
        assert len(spans) == 1, "the sampled span the app saw was not exported"
        assert spans[0].context.span_id == seen.span.span_id, "the app saw another span"
        attributes = spans[0].attributes or {}
        for key in ("http.request.method", "url.path", "url.scheme"):
            assert key in attributes, f"the SERVER span has no {key}"


def _compare_with_added_header(
    bare: list[tuple[Any, Any]], traced: list[tuple[Any, Any]], seen: Seen, mode: str
) -> None:
    assert traced[: len(bare)] == bare, "tracewire changed the app's response headers"
    added = traced[len(bare) :]
    assert len(added) == 1, f"expected one {mode} header, got {len(added)}"
    name, value = (x.decode("latin-1") if isinstance(x, bytes) else x for x in added[0])
    trace_id, span_id = spec.check_response_header(name, value)
    STATS[f"response:{name}"] += 1
    assert name == mode
    assert seen.span is not None
    assert (trace_id, span_id) == (seen.span.trace_id, seen.span.span_id), (
        f"{mode} names another span than the one the app saw"
    )


def check_asgi_case(case: Case, server: Server | None = None) -> None:
    """Invariants 1-4 for one request; ``server`` replaces the real one (to test the checks)."""
    if server is None:
        server = asgi_server(case.config)
    _fresh(server.bare_clients, server.traced_clients)
    before = context.get_current()
    server.bare_app.case = server.traced_app.case = case
    bare = run_asgi(server.bare_app, case)
    traced = run_asgi(server.wrapped["none"], case)
    assert not traced.left_attached, "the request context was left attached"
    assert context.get_current() == before, "the request context was left attached"
    assert traced.error == bare.error, "tracewire changed what the app raised"
    assert traced.messages == bare.messages, "tracewire changed the app's response"
    seen = server.traced_app.seen
    check_server_spans(case, seen)
    assert seen.span is not None
    expected = _expected_parent(case, joined=False)
    if expected is not None:
        assert seen.span.trace_id == expected, "a valid traceparent was not continued"
        STATS["server:continued"] += 1
    if bare.error:
        STATS["server:app-raised"] += 1
    check_emitted(server.bare_clients.downstream, server.traced_clients.downstream, seen.span)
    if case.response_mode != "none":
        traced = run_asgi(server.wrapped[case.response_mode], case)
        assert traced.error == bare.error
        _finished_server_spans()
        server.traced_clients.downstream.sent.clear()
        if bare.messages:
            start, start_bare = traced.messages[0], bare.messages[0]
            assert {**start, "headers": None} == {**start_bare, "headers": None}
            assert traced.messages[1:] == bare.messages[1:]
            _compare_with_added_header(
                start_bare["headers"], start["headers"], server.traced_app.seen, case.response_mode
            )
    server.bare_clients.downstream.sent.clear()
    check_nothing_logged_of(v for _, v in case.headers)


def check_asgi(data: bytes) -> None:
    check_asgi_case(decode(data))


# ---------------------------------------------------------------------------------- WSGI


def wsgi_key(name: bytes) -> str:
    """CGI naming as servers do it (tracewire.carriers.wsgi_key is what is under test)."""
    upper = name.decode("latin-1").upper().replace("-", "_")
    return upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper


def environ_for(case: Case) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/case",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in case.headers:
        key = wsgi_key(name)
        text = header_text(value)
        # Servers join a repeated header with "," into one value.
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


class WsgiApp:
    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.case = Case()
        self.seen = Seen()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        case = self.case
        _observe(self.seen)
        request = sorted((k, v) for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_")))
        body = _digest(request) + b" " + environ["PATH_INFO"].encode("latin-1")
        if case.client_call:
            headers = _forwarded(case)
            kinds = ["httpx", "requests"] if case.client == "all" else [case.client]
            outcomes = [
                self.clients.sync_call("httpx" if k == "httpx-async" else k, url, headers)
                for k, url in zip(kinds, URLS[1:], strict=False)
            ]
            body += b" " + _digest(enumerate(outcomes))
        if case.failure == "raise-before":
            raise AppError("failed before responding")
        status = {200: "200 OK", 204: "204 No Content", 404: "404 Not Found", 500: "500 Oops"}
        start_response(status[case.status], [(n.decode(), v.decode()) for n, v in APP_HEADERS])
        if case.status == 204:
            body = b""
        if case.streamed or case.failure == "raise-after":
            return self._stream(body, case.failure == "raise-after")
        return [body]

    def _stream(self, body: bytes, fail: bool) -> Iterator[bytes]:
        _observe(self.seen)  # the body is produced in the request's context too
        yield body[:10]
        if fail:
            raise AppError("failed after responding")
        yield body[10:]


@dataclass
class WsgiOutcome:
    status: str | None = None
    headers: list[tuple[str, str]] | None = None
    body: list[bytes] = field(default_factory=list)
    error: str | None = None


def run_wsgi(app: Callable[..., Iterable[bytes]], case: Case) -> WsgiOutcome:
    outcome = WsgiOutcome()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        outcome.status, outcome.headers = status, list(headers)
        return outcome.body.append

    try:
        result = app(environ_for(case), start_response)
        try:
            for chunk in result:
                outcome.body.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception as exc:
        outcome.error = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    return outcome


@functools.cache
def wsgi_server(config: int) -> Server:
    bare_clients = Clients(False, settings_for(config))
    traced_clients = Clients(True, settings_for(config))
    traced_app = WsgiApp(traced_clients)
    wrapped = {
        mode: TracewireWSGIMiddleware(
            traced_app, settings_for(config, mode), tracer_provider=PROVIDER
        )
        for mode in ("none", "traceresponse", "server-timing")
    }
    return Server(WsgiApp(bare_clients), bare_clients, traced_app, traced_clients, wrapped)


def check_wsgi_case(case: Case, server: Server | None = None) -> None:
    """Invariants 1-4 for one request; ``server`` replaces the real one (to test the checks)."""
    if server is None:
        server = wsgi_server(case.config)
    _fresh(server.bare_clients, server.traced_clients)
    before = context.get_current()
    server.bare_app.case = server.traced_app.case = case
    bare = run_wsgi(server.bare_app, case)
    traced = run_wsgi(server.wrapped["none"], case)
    assert context.get_current() == before, "the request context was left attached"
    assert traced.error == bare.error, "tracewire changed what the app raised"
    assert (traced.status, traced.headers, traced.body) == (bare.status, bare.headers, bare.body)
    seen = server.traced_app.seen
    check_server_spans(case, seen)
    assert seen.span is not None
    expected = _expected_parent(case, joined=True)
    if expected is not None:
        assert seen.span.trace_id == expected, "a valid traceparent was not continued"
        STATS["server:continued"] += 1
    if bare.error:
        STATS["server:app-raised"] += 1
    check_emitted(server.bare_clients.downstream, server.traced_clients.downstream, seen.span)
    if case.response_mode != "none":
        traced = run_wsgi(server.wrapped[case.response_mode], case)
        assert traced.error == bare.error
        assert (traced.status, traced.body) == (bare.status, bare.body)
        _finished_server_spans()
        server.traced_clients.downstream.sent.clear()
        if bare.headers is not None:
            assert traced.headers is not None
            _compare_with_added_header(
                bare.headers, traced.headers, server.traced_app.seen, case.response_mode
            )
    server.bare_clients.downstream.sent.clear()
    check_nothing_logged_of(v for _, v in case.headers)


def check_wsgi(data: bytes) -> None:
    check_wsgi_case(decode(data))


# ----------------------------------------------------------------------------- the client


@functools.cache
def client_pair(config: int) -> tuple[Clients, Clients]:
    return Clients(False, settings_for(config)), Clients(True, settings_for(config))


def check_client_case(case: Case) -> None:
    """Calls under a context extracted from the fuzzed headers (the status bits choose the
    URL; ``streamed`` adds a local span in between; ``forward`` copies headers onto the call)."""
    bare, traced = client_pair(case.config)
    _fresh(bare, traced)
    settings = settings_for(case.config)
    extracted = settings.composite.extract_detailed(list(case.headers), asgi_getter).context
    url = URLS[STATUSES.index(case.status) % len(URLS)]
    headers = _forwarded(case)
    kinds = ["httpx", "httpx-async", "requests"] if case.client == "all" else [case.client]
    before = context.get_current()
    token = context.attach(extracted)
    try:
        if case.streamed:
            with TRACER.start_as_current_span("local", kind=SpanKind.INTERNAL):
                current = trace.get_current_span().get_span_context()
                results = [_client_calls(bare, traced, kind, url, headers) for kind in kinds]
        else:
            current = trace.get_current_span().get_span_context()
            results = [_client_calls(bare, traced, kind, url, headers) for kind in kinds]
    finally:
        context.detach(token)
    assert context.get_current() == before, "a client call left its context attached"
    for plain, with_tracing in results:
        assert with_tracing == plain, "tracewire changed what the client call returned"
    check_emitted(bare.downstream, traced.downstream, current)
    EXPORTER.clear()
    check_nothing_logged_of(v for _, v in case.headers)


def _client_calls(bare: Clients, traced: Clients, kind: str, url: str, headers: Any) -> Any:
    if kind == "httpx-async":
        return (
            LOOP.run_until_complete(bare.async_call(url, headers)),
            LOOP.run_until_complete(traced.async_call(url, headers)),
        )
    return bare.sync_call(kind, url, headers), traced.sync_call(kind, url, headers)


def check_client(data: bytes) -> None:
    check_client_case(decode(data))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "traceparent": check_traceparent,
    "tracestate": check_tracestate,
    "baggage": check_baggage,
    "b3": check_b3,
    "b3multi": check_b3multi,
    "asgi": check_asgi,
    "wsgi": check_wsgi,
    "client": check_client,
}

"""The fuzz checks can fail: each one catches the fault it is there for.

A fuzzer whose invariants never fire finds nothing. Here each check is fed a deliberately
broken header or a deliberately leaky middleware and must raise ``AssertionError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from opentelemetry import context
from opentelemetry.context import create_key, set_value

from tests.fuzz import spec, targets
from tests.fuzz.inputs import Case
from tests.fuzz.seeds import TP

TP_LINE = ((b"traceparent", TP.encode()),)


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": TP + "\r\n"},
        {"traceparent": TP.replace("4bf9", "4BF9")},
        {"traceparent": TP[:-2] + "05"},  # an unknown flag bit sent on
        {"traceparent": "01" + TP[2:]},
        {"traceparent": TP, "tracestate": ",".join(f"k{i}=v" for i in range(33))},
        {"traceparent": TP, "tracestate": "k=v\x00"},
        {"baggage": "k=caf\u00e9"},
        {"baggage": "k=a b"},
        {"b3": "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1"},
        {"x-b3-parentspanid": "05e3ac9a4f6e3b90"},
        {"X-Custom": "1"},
        {"traceparent": TP, "x-b3-sampled": "1", "x-b3-flags": "1"},
    ],
)
def test_check_outgoing_rejects_what_breaks_a_grammar(headers: dict[str, str]) -> None:
    with pytest.raises(AssertionError):
        spec.check_outgoing(headers)


def test_check_outgoing_accepts_what_tracewire_sends() -> None:
    spec.check_outgoing(
        {
            "traceparent": TP,
            "tracestate": "t@v=1,foo@@bar=x y",
            "baggage": "k=caf%C3%A9,n=1",
            "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
        }
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("traceresponse", TP[:-2] + "03"),
        ("traceresponse", TP + " "),
        ("server-timing", TP),
        ("x-trace", TP),
    ],
)
def test_check_response_header_rejects_bad_values(name: str, value: str) -> None:
    with pytest.raises(AssertionError):
        spec.check_response_header(name, value)


# ------------------------------------------------------------------ leaky middlewares


def _server_with(kind: str, wrap: Callable[[Any], Any]) -> targets.Server:
    real = targets.asgi_server(0) if kind == "asgi" else targets.wsgi_server(0)
    leaky = {mode: wrap(app) for mode, app in real.wrapped.items()}
    return targets.Server(
        real.bare_app, real.bare_clients, real.traced_app, real.traced_clients, leaky
    )


def _asgi_adds_a_header(app: Any) -> Any:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-extra", b"1")]}
            await send(message)

        await app(scope, receive, sending)

    return wrapped


def _asgi_swallows_errors(app: Any) -> Any:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        with contextlib.suppress(Exception):
            await app(scope, receive, send)

    return wrapped


_LEAK = create_key("fuzz-test-leak")


def _asgi_leaves_context_attached(app: Any) -> Any:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        context.attach(set_value(_LEAK, True))

    return wrapped


def _wsgi_changes_status(app: Any) -> Any:
    def wrapped(environ: Any, start_response: Any) -> Iterable[bytes]:
        return app(environ, lambda status, headers, *exc: start_response("299 Fake", headers))

    return wrapped


def _wsgi_raises(app: Any) -> Any:
    def wrapped(environ: Any, start_response: Any) -> Iterable[bytes]:
        raise RuntimeError("tracing fault that escaped")

    return wrapped


@pytest.mark.parametrize(
    ("kind", "wrap", "case"),
    [
        ("asgi", _asgi_adds_a_header, Case(headers=TP_LINE)),
        ("asgi", _asgi_swallows_errors, Case(failure="raise-before", headers=TP_LINE)),
        ("asgi", _asgi_leaves_context_attached, Case(headers=TP_LINE)),
        ("wsgi", _wsgi_changes_status, Case(headers=TP_LINE)),
        ("wsgi", _wsgi_raises, Case(headers=TP_LINE)),
    ],
)
def test_server_checks_catch_a_leaky_middleware(
    kind: str, wrap: Callable[[Any], Any], case: Case
) -> None:
    check = targets.check_asgi_case if kind == "asgi" else targets.check_wsgi_case
    before = context.get_current()
    try:
        with pytest.raises(AssertionError):
            check(case, _server_with(kind, wrap))
    finally:
        # The leaky middleware's own mess, cleaned up for the next test.
        context.attach(before)


def test_check_emitted_catches_a_changed_or_invalid_outgoing_header() -> None:
    plain, traced = targets.Downstream(), targets.Downstream()
    current = targets.trace.INVALID_SPAN_CONTEXT
    plain.sent.append([("x-caller", "app")])
    traced.sent.append([("x-caller", "changed"), ("traceparent", TP)])
    with pytest.raises(AssertionError, match="changed or removed"):
        targets.check_emitted(plain, traced, current)
    plain.sent.append([("x-caller", "app")])
    traced.sent.append([("x-caller", "app"), ("traceparent", TP + "\n")])
    with pytest.raises(AssertionError):
        targets.check_emitted(plain, traced, current)
    plain.sent.append([("x-caller", "app")])
    traced.sent.append([("x-caller", "app"), ("traceparent", TP)])
    targets.check_emitted(plain, traced, current)  # and a valid one passes


def test_the_log_check_catches_a_quoted_header_value() -> None:
    value = b"00-4bf92f3577b34da6a3ce929d0e0e4736-secret"
    targets.LOGGED.messages.append(f"bad header {value.decode()}")
    with pytest.raises(AssertionError, match="log"):
        targets.check_nothing_logged_of([value])
    targets.LOGGED.messages.clear()


def test_the_oracles_agree_with_the_spec_examples() -> None:
    assert spec.oracle_traceparent(TP) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        1,
    )
    assert spec.oracle_traceparent(TP + "-x") is None  # version 00 is exactly 55 characters
    assert spec.oracle_traceparent("01" + TP[2:] + "-x") is not None
    assert spec.oracle_traceparent("ff" + TP[2:]) is None
    assert spec.oracle_tracestate(["a=1,a=2", "b=3"]) == [("a", "1"), ("b", "3")]
    assert spec.oracle_tracestate(["@a=1"]) is None
    assert spec.oracle_b3_single("0") == (0, 0, "0")
    assert spec.oracle_b3_single("a3ce929d0e0e4736-e457b5a2e4d86bd1-1-0000000000000000") is None
    assert spec.oracle_b3_multi(None, None, "1", None) is None
    assert spec.oracle_b3_multi("a3ce929d0e0e4736", "e457b5a2e4d86bd1", "True", None) == (
        0xA3CE929D0E0E4736,
        0xE457B5A2E4D86BD1,
        "1",
    )

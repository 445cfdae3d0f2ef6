"""One CLIENT span per urllib3 retry inside a requests ``HTTPAdapter``, each attempt sent with
fresh trace headers whose parent is that attempt's own span.

Runs against whichever urllib3 major version is installed (1.26 and 2.x): only APIs both
have are used here (``Retry(total=, connect=, status_forcelist=, backoff_factor=,
raise_on_status=)``, ``Retry.sleep``).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import requests
import urllib3
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

import tracewire.requests
from tests.conftest import Tracing
from tests.support.flaky import Attempt, FlakyServer
from tests.support.servers import HOST
from tracewire.requests import TracewireAdapter

URLLIB3_MAJOR = int(urllib3.__version__.split(".")[0])


def retry(**kwargs: Any) -> Retry:
    kwargs.setdefault("backoff_factor", 0)
    kwargs.setdefault("respect_retry_after_header", False)
    return Retry(**kwargs)


def session_for(tracing: Tracing, max_retries: Retry, how: str = "adapter") -> requests.Session:
    session = requests.Session()
    if how == "adapter":
        adapter = TracewireAdapter(
            HTTPAdapter(max_retries=max_retries), tracer_provider=tracing.provider
        )
        session.mount("http://", adapter)
    else:  # instrument_session wraps the adapter already mounted, keeping its retries
        session.mount("http://", HTTPAdapter(max_retries=max_retries))
        tracewire.requests.instrument_session(session, tracer_provider=tracing.provider)
    return session


def client_spans(tracing: Tracing) -> list[ReadableSpan]:
    spans = [s for s in tracing.spans() if s.kind == SpanKind.CLIENT]
    return sorted(spans, key=lambda s: s.start_time or 0)


def sent_parent(attempt: Attempt) -> tuple[int, int]:
    """(trace id, parent span id) of the one ``traceparent`` the attempt carried."""
    values = attempt.values("traceparent")
    assert len(values) == 1, values  # fresh headers, never a stale one beside them
    _, trace_id, span_id, _ = values[0].split("-")
    return int(trace_id, 16), int(span_id, 16)


def check_attempts_match_spans(attempts: list[Attempt], spans: list[ReadableSpan]) -> None:
    """Each attempt that reached the server was sent with its own span as the parent."""
    ids = [(s.context.trace_id, s.context.span_id) for s in spans]
    assert len(set(ids)) == len(ids)
    for attempt, span in zip(attempts, spans[len(spans) - len(attempts) :], strict=True):
        assert sent_parent(attempt) == (span.context.trace_id, span.context.span_id)


def check_one_trace(spans: list[ReadableSpan], outer: ReadableSpan) -> None:
    for span in spans:
        assert span.context.trace_id == outer.context.trace_id
        assert span.parent is not None
        assert span.parent.span_id == outer.context.span_id
        assert span.name == "GET"


def check_status_description(span: ReadableSpan) -> None:
    assert span.attributes is not None
    if span.status.status_code == StatusCode.ERROR and span.status.description:
        # Only the class name (error.type), never the message with its host and port.
        assert span.status.description == span.attributes["error.type"]
        assert str(span.attributes.get("server.port", "")) not in span.status.description


def outer_span(tracing: Tracing) -> ReadableSpan:
    (span,) = [s for s in tracing.spans() if s.name == "outer"]
    return span


@pytest.mark.parametrize("how", ["adapter", "instrument_session"])
@pytest.mark.parametrize("failures", [1, 2])
def test_each_status_retry_is_its_own_span(tracing: Tracing, failures: int, how: str) -> None:
    with FlakyServer(fail_first=failures) as server:
        session = session_for(tracing, retry(total=failures, status_forcelist=[503]), how)
        with tracing.provider.get_tracer("test").start_as_current_span("outer"):
            response = session.get(server.url + "/flaky?x=1")
        assert response.status_code == 200
        assert response.text == "ok"
        attempts = list(server.attempts)
    spans = client_spans(tracing)
    assert [a.status for a in attempts] == [503] * failures + [200]
    assert len(spans) == failures + 1
    assert [s.attributes["http.response.status_code"] for s in spans] == [503] * failures + [200]
    for span in spans[:-1]:
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes["error.type"] == "503"
    assert spans[-1].status.status_code == StatusCode.UNSET
    assert "error.type" not in spans[-1].attributes
    for span in spans:
        assert span.attributes["url.full"] == server.url + "/flaky?x=1"
        assert span.attributes["server.address"] == HOST
        assert span.attributes["server.port"] == server.port
    check_attempts_match_spans(attempts, spans)
    check_one_trace(spans, outer_span(tracing))
    # Every span ended, and an attempt ends before the next begins.
    for earlier, later in itertools.pairwise(spans):
        assert earlier.end_time is not None and later.start_time is not None
        assert earlier.end_time <= later.start_time


def test_exhausted_status_retries_keep_every_attempt(tracing: Tracing) -> None:
    # raise_on_status=False: urllib3 hands back the last 503 once the retries are used up.
    with FlakyServer(fail_first=10) as server:
        session = session_for(
            tracing, retry(total=2, status_forcelist=[503], raise_on_status=False)
        )
        with tracing.provider.get_tracer("test").start_as_current_span("outer"):
            assert session.get(server.url + "/down").status_code == 503
        attempts = list(server.attempts)
    spans = client_spans(tracing)
    assert len(attempts) == len(spans) == 3
    assert [s.attributes["http.response.status_code"] for s in spans] == [503, 503, 503]
    assert all(s.status.status_code == StatusCode.ERROR for s in spans)
    check_attempts_match_spans(attempts, spans)
    check_one_trace(spans, outer_span(tracing))


def test_retry_error_after_the_last_503(tracing: Tracing) -> None:
    # raise_on_status=True (the default): the last 503 becomes a RetryError for the caller.
    with FlakyServer(fail_first=10) as server:
        session = session_for(tracing, retry(total=1, status_forcelist=[503]))
        with (
            tracing.provider.get_tracer("test").start_as_current_span("outer"),
            pytest.raises(requests.exceptions.RetryError),
        ):
            session.get(server.url + "/down")
        attempts = list(server.attempts)
    spans = client_spans(tracing)
    assert len(attempts) == len(spans) == 2
    check_attempts_match_spans(attempts, spans)
    check_one_trace(spans, outer_span(tracing))
    assert spans[0].attributes["http.response.status_code"] == 503
    last = spans[1]
    assert last.status.status_code == StatusCode.ERROR
    assert last.attributes["error.type"] == "requests.exceptions.RetryError"
    for span in spans:
        check_status_description(span)


def test_retry_error_keeps_the_last_attempts_status(tracing: Tracing) -> None:
    with FlakyServer(fail_first=10) as server:
        session = session_for(tracing, retry(total=1, status_forcelist=[503]))
        with pytest.raises(requests.exceptions.RetryError):
            session.get(server.url + "/down")
    spans = client_spans(tracing)
    assert len(spans) == 2
    assert [s.attributes.get("http.response.status_code") for s in spans] == [503, 503]


def test_post_is_not_retried_and_makes_one_span(tracing: Tracing) -> None:
    # urllib3 retries only idempotent methods by default: one attempt, one span.
    with FlakyServer(fail_first=1) as server:
        session = session_for(tracing, retry(total=3, status_forcelist=[503]))
        assert session.post(server.url + "/once", data=b"body").status_code == 503
        attempts = list(server.attempts)
    spans = client_spans(tracing)
    assert len(attempts) == len(spans) == 1
    assert spans[0].name == "POST"
    check_attempts_match_spans(attempts, spans)


class _ListenOnRetry(Retry):
    """A Retry that lets the server start listening when urllib3 sleeps before a retry."""

    server: FlakyServer | None = None

    def sleep(self, response: Any = None) -> None:
        if self.server is not None:
            self.server.listen()
        super().sleep(response)


def test_connection_refused_then_a_retry_gets_through(tracing: Tracing) -> None:
    with FlakyServer(listening=False) as server:

        class ListenOnRetry(_ListenOnRetry):
            pass

        ListenOnRetry.server = server
        session = session_for(tracing, ListenOnRetry(total=1, connect=1, backoff_factor=0))
        with tracing.provider.get_tracer("test").start_as_current_span("outer"):
            assert session.get(server.url + "/late").status_code == 200
        attempts = list(server.attempts)
    spans = client_spans(tracing)
    assert len(spans) == 2
    assert len(attempts) == 1  # the refused attempt never reached the server
    refused, answered = spans
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.attributes["error.type"] == "urllib3.exceptions.NewConnectionError"
    assert "http.response.status_code" not in refused.attributes
    check_status_description(refused)
    assert answered.attributes["http.response.status_code"] == 200
    assert answered.status.status_code == StatusCode.UNSET
    check_attempts_match_spans(attempts, spans)
    check_one_trace(spans, outer_span(tracing))


def test_connection_refused_on_every_attempt(tracing: Tracing) -> None:
    with FlakyServer(listening=False) as server:  # bound, never listening: refused
        session = session_for(tracing, retry(total=2, connect=2))
        with (
            tracing.provider.get_tracer("test").start_as_current_span("outer"),
            pytest.raises(requests.exceptions.ConnectionError),
        ):
            session.get(server.url + "/never")
        assert server.attempts == []
    spans = client_spans(tracing)
    assert len(spans) == 3
    assert [s.attributes["error.type"] for s in spans] == [
        "urllib3.exceptions.NewConnectionError",
        "urllib3.exceptions.NewConnectionError",
        "requests.exceptions.ConnectionError",
    ]
    for span in spans:
        assert span.status.status_code == StatusCode.ERROR
        check_status_description(span)
    check_one_trace(spans, outer_span(tracing))


def test_no_retries_configured_is_one_span_per_call(tracing: Tracing) -> None:
    with FlakyServer(fail_first=1) as server:
        session = session_for(tracing, Retry(0, read=False))
        assert session.get(server.url + "/plain").status_code == 503
        assert session.get(server.url + "/plain").status_code == 200
        attempts = list(server.attempts)
    spans = client_spans(tracing)
    assert len(spans) == len(attempts) == 2
    check_attempts_match_spans(attempts, spans)
    assert spans[0].context.trace_id != spans[1].context.trace_id  # no parent: two traces


def test_urllib3_major_version_is_known() -> None:
    # The retry machinery is checked against urllib3 1.26 and 2.x (see the module docstring).
    assert URLLIB3_MAJOR in (1, 2), urllib3.__version__

"""Nothing lost at shutdown: a real server, one request, SIGTERM, the receiver has its span.

The batch processor's schedule delay is set to an hour, so only tracewire's flush on stop can
deliver the span. Each server is also run once without the SDK set-up, to check that its exit
status on SIGTERM is unchanged (uvicorn re-raises the signal and dies by it; werkzeug and
Django runserver die by its default action; gunicorn and hypercorn exit 0).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.figures import record
from tests.support.reliability import (
    PYTHON,
    SERVERS,
    new_ids,
    running,
    server_env,
    terminate,
    traceparent,
)
from tests.support.servers import wait_for
from tracewire.demo.receiver import OTLPReceiver

pytestmark = pytest.mark.slow

HOLD_BATCHES = {"OTEL_BSP_SCHEDULE_DELAY": "3600000"}


def _one_request(url: str) -> str:
    import httpx

    trace_id, parent_id = new_ids()
    response = httpx.get(
        url + "/hello", headers={"traceparent": traceparent(trace_id, parent_id)}, timeout=10
    )
    assert response.status_code == 200
    assert response.json()["trace_id"] == trace_id
    return trace_id


@pytest.mark.parametrize("name", list(SERVERS))
def test_sigterm_flushes_the_last_request_and_keeps_the_exit_status(name: str) -> None:
    with running(name, server_env(None, RELIABILITY_CONFIGURE="no")) as plain:
        _one_request(plain.url)
        expected_code, _ = terminate(plain)

    with OTLPReceiver() as receiver:
        env = server_env(receiver.endpoint, **HOLD_BATCHES)
        with running(name, env) as server:
            trace_id = _one_request(server.url)
            assert receiver.spans(trace_id) == []  # held in the batch queue
            code, _ = terminate(server)
            log = server.log_tail()
        spans = receiver.wait_for_spans(1, trace_id=trace_id, timeout=10)
    record("shutdown_flush", name, exit_status=code, spans=len(spans))
    assert [s.kind for s in spans] == ["SERVER"], log
    assert code == expected_code, log


@pytest.mark.parametrize("name", ["uvicorn", "gunicorn-sync", "werkzeug"])
def test_a_stalled_collector_holds_the_stop_for_at_most_the_flush_timeout(name: str) -> None:
    flush_timeout = 2.0
    with running(name, server_env(None, RELIABILITY_CONFIGURE="no")) as plain:
        _one_request(plain.url)
        expected_code, plain_seconds = terminate(plain)

    # Every export waits 30 s for its answer: without the bound, the stop would too.
    with OTLPReceiver(stall_seconds=30) as receiver:
        env = server_env(
            receiver.endpoint, RELIABILITY_FLUSH_TIMEOUT=str(flush_timeout), **HOLD_BATCHES
        )
        with running(name, env) as server:
            _one_request(server.url)
            code, seconds = terminate(server)
            log = server.log_tail()
        attempts = receiver.attempts
    record(
        "stalled_collector_stop_seconds",
        round(seconds, 2),
        server=name,
        without_tracewire=round(plain_seconds, 2),
        flush_timeout=flush_timeout,
    )
    assert attempts >= 1, log  # the flush did try to export
    assert code == expected_code, log
    # The bound plus the server's own stop time, with a wide margin for a loaded machine;
    # far below the 30 s stall.
    assert seconds < plain_seconds + flush_timeout + 8, (seconds, plain_seconds, log)


@pytest.mark.parametrize(
    "name", ["uvicorn", "uvicorn-workers", "hypercorn", "gunicorn-sync", "gunicorn-gthread"]
)
def test_a_request_in_flight_at_sigterm_is_answered_and_its_span_flushed(
    name: str, tmp_path: Path
) -> None:
    """The servers that drain: the request finishes after the signal, its span after that."""
    import httpx

    with OTLPReceiver() as receiver:
        env = server_env(receiver.endpoint, RELIABILITY_MARKS=str(tmp_path), **HOLD_BATCHES)
        with running(name, env) as server:
            trace_id, parent_id = new_ids()
            outcome: dict[str, object] = {}

            def call() -> None:
                try:
                    response = httpx.get(
                        server.url + "/slow?ms=1500",
                        headers={"traceparent": traceparent(trace_id, parent_id)},
                        timeout=30,
                    )
                    outcome["status"] = response.status_code
                    outcome["trace_id"] = response.json()["trace_id"]
                except Exception as exc:
                    outcome["error"] = repr(exc)

            caller = threading.Thread(target=call)
            caller.start()
            wait_for((tmp_path / trace_id).exists, timeout=15)
            code, _ = terminate(server)
            caller.join(30)
            log = server.log_tail()
        spans = receiver.wait_for_spans(1, trace_id=trace_id, timeout=10)
    assert outcome == {"status": 200, "trace_id": trace_id}, (outcome, log)
    assert spans[0].kind == "SERVER"
    assert spans[0].attributes["http.response.status_code"] == 200
    assert code in (0, -15), log


def test_django_autoreloader_kills_its_server_process_so_nothing_can_flush() -> None:
    """The documented limit (docs/sdk.md): on SIGTERM, runserver's reloader exits and
    SIGKILLs the process that serves; use --noreload where the last spans matter."""
    argv = [
        PYTHON, "-m", "django", "runserver", "{host}:{port}",
        "--settings=tests.support.reliability_django",
    ]  # fmt: skip
    with OTLPReceiver() as receiver:
        with running("django-autoreload", server_env(receiver.endpoint, **HOLD_BATCHES), argv) as s:
            trace_id = _one_request(s.url)
            code, _ = terminate(s)
        assert code == 0
        with pytest.raises(TimeoutError):
            receiver.wait_for_spans(1, trace_id=trace_id, timeout=3)

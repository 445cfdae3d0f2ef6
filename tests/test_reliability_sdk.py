"""The stop, fork and log machinery of ``tracewire.sdk.configure`` in detail, each in a fresh
process (signal handlers and the log limit are per process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.reliability import ROOT
from tracewire import sdk


def _run(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("value", [-1, 601, "5", True, None])
def test_flush_timeout_is_validated(value: object) -> None:
    with pytest.raises(ValueError, match="flush_timeout"):
        sdk.configure("svc", exporter="none", set_global=False, flush_timeout=value)  # type: ignore[arg-type]


def test_sigterm_chains_to_the_handler_installed_before_and_flushes_first() -> None:
    result = _run(
        """
        import os, signal
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
        from tracewire import sdk

        order = []
        class Recording(SpanExporter):
            def export(self, spans):
                order.append("exported %d" % len(spans))
                return SpanExportResult.SUCCESS

        signal.signal(signal.SIGTERM, lambda signum, frame: order.append("previous handler"))
        provider = sdk.configure("svc", exporter=Recording(), set_global=False)
        with provider.get_tracer("t").start_as_current_span("queued"):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        signal.getsignal(signal.SIGTERM)  # a bytecode boundary: the handler has run
        print(order)
        """
    )
    assert result.returncode == 0, result.stderr
    # Still alive (the previous handler decided), flushed before it ran.
    assert result.stdout.strip() == "['exported 1', 'previous handler']"


def test_sigterm_with_the_default_action_flushes_then_dies_by_the_signal() -> None:
    result = _run(
        """
        import os, signal, sys
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
        from tracewire import sdk

        class Recording(SpanExporter):
            def export(self, spans):
                print("exported", len(spans), flush=True)
                return SpanExportResult.SUCCESS

        provider = sdk.configure("svc", exporter=Recording(), set_global=False)
        with provider.get_tracer("t").start_as_current_span("queued"):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        signal.getsignal(signal.SIGTERM)
        print("survived", flush=True)
        """
    )
    assert result.returncode == -15
    assert result.stdout.split("\n")[0] == "exported 1"
    assert "survived" not in result.stdout


@pytest.mark.parametrize("where", ["ignored", "thread"])
def test_an_ignored_sigterm_and_a_set_up_off_the_main_thread_are_left_alone(where: str) -> None:
    result = _run(
        f"""
        import signal, threading
        from tracewire import sdk
        where = {where!r}
        if where == "ignored":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            sdk.configure("svc", exporter="none", set_global=False)
        else:
            options = {{"exporter": "none", "set_global": False}}
            worker = threading.Thread(target=sdk.configure, args=("svc",), kwargs=options)
            worker.start()
            worker.join()
        print(signal.Handlers(signal.getsignal(signal.SIGTERM)).name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("SIG_IGN" if where == "ignored" else "SIG_DFL")


def test_shutdown_on_exit_false_installs_nothing() -> None:
    result = _run(
        """
        import signal
        from tracewire import sdk
        sdk.configure("svc", exporter="none", set_global=False, shutdown_on_exit=False)
        print(signal.Handlers(signal.getsignal(signal.SIGTERM)).name)
        """
    )
    assert result.stdout.strip() == "SIG_DFL", result.stderr


def test_normal_exit_with_a_dead_collector_waits_at_most_the_flush_timeout() -> None:
    # The exporter's own retries would take 10 s; flush_timeout=1 bounds the exit.
    result = _run(
        """
        import socket, time
        from tracewire import sdk
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: connections are refused
        provider = sdk.configure("svc", exporter="otlp", endpoint=f"http://127.0.0.1:{port}",
                                 set_global=False, flush_timeout=1)
        with provider.get_tracer("t").start_as_current_span("doomed"):
            pass
        print(time.monotonic(), flush=True)
        """
    )
    import time

    ended = time.monotonic()
    assert result.returncode == 0, result.stderr
    started = float(result.stdout.split()[0])
    assert ended - started < 1 + 4, (ended - started, result.stderr)  # far below 10 s
    assert "not exported within 1.0 s" in result.stderr


def test_the_export_log_limit_passes_a_kind_once_and_counts_the_rest() -> None:
    result = _run(
        """
        import logging
        from tracewire import sdk

        seen = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())
        logging.getLogger().addHandler(Keep())
        other = logging.getLogger("myapp")
        exporter_log = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        sdk.configure("svc", exporter="console", set_global=False, shutdown_on_exit=False)
        for i in range(5):
            exporter_log.warning("Transient error %s, retrying in %.2fs.", "refused", i)
            exporter_log.error("Failed to export batch")
            other.warning("app record %d", i)
        print(len(seen), sum(m.startswith("app record") for m in seen))
        print(sdk.suppressed_log_records())
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # One of each exporter kind, all five app records.
    assert lines[0] == "7 5"
    assert lines[1] == "{'opentelemetry.exporter.otlp.proto.http.trace_exporter': 8}"


def test_limit_export_logs_false_adds_no_filter() -> None:
    result = _run(
        """
        import logging
        from tracewire import sdk
        sdk.configure("svc", exporter="console", set_global=False, shutdown_on_exit=False,
                      limit_export_logs=False)
        log = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        print(len(log.filters), sdk.suppressed_log_records())
        """
    )
    assert result.stdout.strip() == "0 {}", result.stderr

"""Spans from every worker reach the collector: gunicorn --preload (SDK set up in the master,
before the fork), gunicorn with post_fork, uvicorn --workers 2; and what configure does in a
forked child (re-creates the exporters it built, warns once for an instance it was given)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

from tests.support.figures import record
from tests.support.reliability import (
    APPS,
    GUNICORN,
    GUNICORN_CONF,
    PYTHON,
    ROOT,
    new_ids,
    running,
    server_env,
    traceparent,
)
from tracewire.demo.receiver import OTLPReceiver

WORKERS = 3
FAST_BATCHES = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


def _gunicorn(worker: str, preload: bool) -> list[str]:
    argv = [GUNICORN, "-c", GUNICORN_CONF, "-k", worker, "-w", str(WORKERS)]
    if worker == "gthread":
        argv += ["--threads", "2"]
    if preload:
        argv.append("--preload")
    return [*argv, "-b", "{host}:{port}", f"{APPS}:wsgi_app"]


SETUPS: dict[str, tuple[list[str], str, int]] = {
    # name: (argv, RELIABILITY_CONFIGURE, workers)
    "gunicorn-sync-preload": (_gunicorn("sync", True), "import", WORKERS),
    "gunicorn-gthread-preload": (_gunicorn("gthread", True), "import", WORKERS),
    "gunicorn-sync-post_fork": (_gunicorn("sync", False), "post_fork", WORKERS),
    "uvicorn-workers": (
        [
            PYTHON, "-m", "uvicorn", f"{APPS}:asgi_app", "--workers", "2",
            "--host", "{host}", "--port", "{port}", "--log-level", "warning",
        ],
        "import",
        2,
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
def test_spans_from_every_worker_reach_the_receiver(setup: str) -> None:
    argv, mode, workers = SETUPS[setup]
    with OTLPReceiver() as receiver:
        env = server_env(receiver.endpoint, RELIABILITY_CONFIGURE=mode, **FAST_BATCHES)
        with running(setup, env, argv) as server:
            by_pid: dict[int, list[str]] = {}
            # New connections are spread over the workers by the kernel: keep asking (bounded)
            # until each worker answered a few times.
            with httpx.Client(timeout=10) as client:
                for _ in range(600):
                    trace_id, parent_id = new_ids()
                    response = client.get(
                        server.url + "/hello",
                        headers={
                            "traceparent": traceparent(trace_id, parent_id),
                            "connection": "close",
                        },
                    )
                    assert response.status_code == 200
                    seen = response.json()
                    assert seen["trace_id"] == trace_id
                    by_pid.setdefault(seen["pid"], []).append(trace_id)
                    if len(by_pid) == workers and min(map(len, by_pid.values())) >= 5:
                        break
            assert len(by_pid) == workers, (by_pid.keys(), server.log_tail())
            wanted = {t for traces in by_pid.values() for t in traces}

            def all_arrived(spans: list[Any]) -> bool:
                return wanted <= {s.trace_id for s in spans if s.kind == "SERVER"}

            receiver.wait_for(all_arrived, timeout=30)
            log = server.log_tail()
    record("fork_workers_exporting", len(by_pid), setup=setup, traces=len(wanted))
    assert "Traceback" not in log, log


# ------------------------------------------------------------------------- after os.fork()

CHILD_SCRIPT = """
import logging, os, sys
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from tracewire import sdk

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("tracewire").addHandler(Keep())
logging.getLogger("tracewire").setLevel(logging.INFO)

endpoint = sys.argv[1]
given = sys.argv[2] == "instance"
exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces") if given else "otlp"
provider = sdk.configure(
    service_name="forked", exporter=exporter, endpoint=endpoint, set_global=False,
    shutdown_on_exit=False,
)
tracer = provider.get_tracer("t")

def one(name):
    with tracer.start_as_current_span(name):
        pass
    assert provider.force_flush(10_000)

one("parent-before")  # the exporter now holds a pooled connection to the receiver
before = id(sdk.get_exporters(provider)[0])
pid = os.fork()
if pid == 0:
    for i in range(3):
        one(f"child-{i}")
    renewed = id(sdk.get_exporters(provider)[0]) != before
    warned = sum("created before this process" in r for r in records)
    print(f"CHILD renewed={renewed} warnings={warned}", flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
one("parent-after")
warned = sum("created before this process" in r for r in records)
print(f"PARENT status={status} warnings={warned}", flush=True)
"""


def _fork_run(endpoint: str, given: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = ROOT
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD_SCRIPT), endpoint, given],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        who, _, rest = line.partition(" ")
        for pair in rest.split():
            key, _, value = pair.partition("=")
            found[f"{who.lower()}.{key}"] = value
    return found


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_exporter_configure_built_is_re_created_in_a_forked_child() -> None:
    with OTLPReceiver() as receiver:
        found = _fork_run(receiver.endpoint, "name")
        names = {s.name for s in receiver.wait_for_spans(5, timeout=15)}
    assert found == {
        "child.renewed": "True",
        "child.warnings": "0",
        "parent.status": "0",
        "parent.warnings": "0",
    }
    assert names == {"parent-before", "child-0", "child-1", "child-2", "parent-after"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_exporter_instance_used_after_fork_warns_once_in_the_child() -> None:
    with OTLPReceiver() as receiver:
        found = _fork_run(receiver.endpoint, "instance")
        receiver.wait_for_spans(5, timeout=15)
    assert found == {
        "child.renewed": "False",  # an instance cannot be rebuilt
        "child.warnings": "1",  # three exports, one warning
        "parent.status": "0",
        "parent.warnings": "0",
    }

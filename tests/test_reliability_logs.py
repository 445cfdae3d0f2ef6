"""'Exporter down' is logged once per kind per minute, measured over 75 s.

Two processes run side by side for 75 s, each serving a request every 20 ms through
the WSGI middleware with the OTLP collector down (connection refused): one with
``tracewire.sdk.configure``'s rate limit on the export path's loggers (the default), one with
``limit_export_logs=False`` (what the OpenTelemetry exporter logs on its own). Every log record
that reaches the root logger is counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.figures import record
from tests.support.reliability import ROOT
from tests.support.servers import free_port

RUN_SECONDS = 75  # a kind passes at the start, then once past 60 s: at most twice

SCRIPT = """
import json, logging, sys, time
from tracewire import TracewireWSGIMiddleware, sdk

class Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []
    def emit(self, record):
        self.records.append((record.name, record.levelname, record.getMessage()))

counter = Count()
logging.getLogger().addHandler(counter)
logging.getLogger().setLevel(logging.INFO)

endpoint, limit, seconds = sys.argv[1], sys.argv[2] == "on", float(sys.argv[3])
provider = sdk.configure(
    "logs", exporter="otlp", endpoint=endpoint, limit_export_logs=limit,
    set_global=False, shutdown_on_exit=False,
)

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

traced = TracewireWSGIMiddleware(app, tracer_provider=provider)
environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "127.0.0.1",
           "SERVER_PORT": "80", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1"}
served = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    body = traced(dict(environ), lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"ok"
    body.close()
    served += 1
    time.sleep(0.02)
print(json.dumps({"records": counter.records, "suppressed": sdk.suppressed_log_records(),
                  "served": served}))
"""


@pytest.mark.slow
def test_exporter_down_is_logged_once_per_kind_per_minute() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PYTHONPATH=ROOT, OTEL_BSP_SCHEDULE_DELAY="500")
    runs = {
        mode: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), endpoint, mode, str(RUN_SECONDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for mode in ("on", "off")
    }
    results = {}
    for mode, proc in runs.items():
        out, err = proc.communicate(timeout=RUN_SECONDS + 60)
        assert proc.returncode == 0, err
        results[mode] = json.loads(out.splitlines()[-1])
    limited, unlimited = results["on"], results["off"]
    kinds = {(name, level, _template(message)) for name, level, message in limited["records"]}
    suppressed = sum(limited["suppressed"].values())
    record(
        "export_log_records",
        len(limited["records"]),
        seconds=RUN_SECONDS,
        kinds=len(kinds),
        unlimited=len(unlimited["records"]),
        suppressed=suppressed,
        served=limited["served"],
    )

    assert limited["served"] > 1000 and unlimited["served"] > 1000  # the app kept serving
    # Without the limit the exporter logs a retry warning every few seconds.
    assert len(unlimited["records"]) >= 15, unlimited["records"]
    # With it: each kind at most twice in 75 s (at the start, and once the minute is over).
    per_kind: dict[tuple[str, str, str], int] = {}
    for name, level, message in limited["records"]:
        key = (name, level, _template(message))
        per_kind[key] = per_kind.get(key, 0) + 1
    assert max(per_kind.values()) <= 2, per_kind
    assert len(limited["records"]) * 4 <= len(unlimited["records"]), (limited, unlimited)
    assert suppressed >= len(unlimited["records"]) // 2, (suppressed, limited["suppressed"])
    # A kind that passed again says how many were held back in between.
    again = [m for _, _, m in limited["records"] if "similar records suppressed" in m]
    assert again, limited["records"]


def _template(message: str) -> str:
    """A message with its numbers and the suppression note removed: its kind."""
    import re

    message = re.sub(r" \(\d+ similar records suppressed by tracewire .*\)$", "", message)
    return re.sub(r"[0-9.]+", "#", message)

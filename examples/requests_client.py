"""requests: instrument one session. Each attempt (redirect hop, retry) is its own CLIENT span.

Run::

    python examples/requests_client.py http://127.0.0.1:8000/items/42
"""

from __future__ import annotations

import sys

import requests
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

import tracewire.sdk
from tracewire.requests import instrument_session


def make_session(tracer_provider: TracerProvider | None = None) -> requests.Session:
    return instrument_session(requests.Session(), tracer_provider=tracer_provider)  # <- the line


if __name__ == "__main__":
    tracewire.sdk.configure(service_name="requests-example")
    target = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/items/42"
    with trace.get_tracer("example").start_as_current_span("one call"):
        print(make_session().get(target, timeout=10).status_code)

"""gunicorn configuration for the WSGI server tests (``-c python:tests.wsgi_gunicorn_conf``).

It does what docs/server-wsgi.md recommends: the app (and its tracewire middleware) may be
imported in the master (``--preload``); the SDK with its exporter thread is set up in each
worker after the fork. Spans go over OTLP/HTTP to ``WSGI_TEST_OTLP`` (a test receiver).
"""

from __future__ import annotations

import os
from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    from tests.wsgi_apps import install_sendfile_counter
    from tracewire import sdk

    sdk.configure(
        service_name=f"wsgi-{os.environ['WSGI_TEST_APP']}",
        exporter="otlp",
        endpoint=os.environ["WSGI_TEST_OTLP"],
        processor="batch",
    )
    install_sendfile_counter()

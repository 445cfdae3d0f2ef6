"""gunicorn configuration for the reliability suites (``-c python:<this module>``).

With ``RELIABILITY_CONFIGURE=post_fork`` the SDK is set up in each worker after the fork (the
set-up docs/sdk.md recommends without ``--preload``); otherwise this file does nothing.
"""

from __future__ import annotations

import os
from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    if os.environ.get("RELIABILITY_CONFIGURE") == "post_fork":
        from tests.support.reliability_apps import configure_sdk

        configure_sdk()

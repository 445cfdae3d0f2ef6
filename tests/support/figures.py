"""Figures a reliability test measured, for docs/reliability.md.

With ``RELIABILITY_FIGURES=/path/file.jsonl`` set, ``record`` appends one JSON line per figure;
otherwise it does nothing. Tests assert their bounds whatever happens here.
"""

from __future__ import annotations

import json
import os
import threading
import time

_lock = threading.Lock()


def record(name: str, value: object, **details: object) -> None:
    path = os.environ.get("RELIABILITY_FIGURES")
    if not path:
        return
    line = json.dumps({"name": name, "value": value, "at": time.time(), **details}, default=str)
    with _lock, open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")

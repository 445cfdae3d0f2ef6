"""Run one fuzz target under atheris (libFuzzer), coverage-guided over tracewire's code.

Usage, from the repository root (see docs/fuzzing.md)::

    python -m tests.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR ...]
    python -m tests.fuzz.run --list

Without a corpus directory the seed corpus ``tests/fuzz/corpus/TARGET`` is used read-only,
new inputs going to a temporary directory. A failing input is written by libFuzzer as
``crash-<sha1>`` (``-artifact_prefix=`` decides where); keep it under
``tests/fuzz/regressions/TARGET/`` and the pytest suite replays it from then on.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGET_NAMES = ("traceparent", "tracestate", "baggage", "b3", "b3multi", "asgi", "wsgi", "client")


def _usage() -> int:
    print(__doc__, file=sys.stderr)
    return 2


def _launcher(name: str) -> str:
    """An executable that starts this target: libFuzzer's -fork/-jobs modes re-run argv[0]."""
    folder = Path(tempfile.mkdtemp(prefix=f"tracewire-fuzz-{name}-launcher-"))
    script = folder / "fuzz"
    script.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {name} "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        return _usage()
    if argv[1] == "--list":
        print("\n".join(TARGET_NAMES))
        return 0
    name = argv[1]
    if name not in TARGET_NAMES:
        print(f"unknown target {name!r}; targets: {', '.join(TARGET_NAMES)}", file=sys.stderr)
        return 2
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install -e '.[fuzz]'", file=sys.stderr)
        return 3
    sys.path.insert(0, str(ROOT))
    # Coverage feedback from tracewire's own code (and the harness, so the fuzzer also learns
    # which oracle branches it reached); the libraries around it are not instrumented.
    with atheris.instrument_imports(include=["tracewire", "tests.fuzz"]):
        from tests.fuzz.targets import TARGETS
    check = TARGETS[name]

    options = [a for a in argv[2:] if a.startswith("-")]
    corpora = [a for a in argv[2:] if not a.startswith("-")]
    if not corpora:
        # libFuzzer writes new inputs into the first directory: keep the seeds clean.
        work = tempfile.mkdtemp(prefix=f"tracewire-fuzz-{name}-")
        corpora = [work, str(HERE / "corpus" / name)]
    if not any(o.startswith("-dict=") for o in options):
        options.append(f"-dict={HERE / 'headers.dict'}")
    if not any(o.startswith("-max_len=") for o in options):
        options.append("-max_len=8192")
    if not any(o.startswith("-timeout=") for o in options):
        options.append("-timeout=20")
    program = argv[0]
    if any(o.startswith(("-fork=", "-jobs=", "-workers=")) for o in options):
        program = _launcher(name)
    # libFuzzer ends the process itself; its last line says "Done N runs in S second(s)".
    atheris.Setup([program, *options, *corpora], check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

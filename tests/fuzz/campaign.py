"""A bounded fuzz pass over every target: what ``.ci/run`` and ``tox -e fuzz`` run.

Usage, from the repository root::

    python -m tests.fuzz.campaign                       # CI's pass: about 2 minutes in all
    python -m tests.fuzz.campaign --parser-seconds 600 --server-seconds 3600
    python -m tests.fuzz.campaign --targets asgi,wsgi --server-seconds 14400 --keep tests/fuzz/grown

Each target runs as its own process (``python -m tests.fuzz.run``) for a fixed time, from the
seed corpus, new inputs going to a scratch directory (or ``--keep DIR``). Prints one line per
target with the number of inputs executed. A crash prints the failing input in base64 (the
machine that found it may be gone by the time someone reads the log), keeps the file under
``--artifacts``, and makes the exit status 1. Exit status 3: atheris is not installed.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fuzz.run import TARGET_NAMES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PARSERS = ("traceparent", "tracestate", "baggage", "b3", "b3multi")
DONE_RE = re.compile(r"Done (\d+) runs in (\d+) second")
PULSE_RE = re.compile(r"^#(\d+)\s", re.MULTILINE)
CORPUS_RE = re.compile(r"corp: (\d+)/")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.campaign", description=__doc__)
    parser.add_argument("--targets", default=",".join(TARGET_NAMES))
    parser.add_argument("--parser-seconds", type=int, default=10)
    parser.add_argument("--server-seconds", type=int, default=25)
    parser.add_argument("--artifacts", type=Path, default=None, help="where crash files go")
    parser.add_argument("--keep", type=Path, default=None, help="keep the grown corpus here")
    return parser.parse_args(argv)


def run_target(name: str, seconds: int, artifacts: Path, work: Path) -> tuple[bool, str]:
    """Fuzz one target; (ok, summary line)."""
    work.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.run",
        name,
        f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}/{name}-",
        "-print_final_stats=1",
        str(work),
        str(HERE / "corpus" / name),
    ]
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=seconds * 3 + 120,
            check=False,
        )
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout or b""
        output = partial.decode("utf-8", "replace") if isinstance(partial, bytes) else partial
        code = -1
        output += "\n(the fuzzer outlived its time limit and was stopped)"
    elapsed = time.monotonic() - started
    found = DONE_RE.search(output)
    pulses = PULSE_RE.findall(output)
    runs = int(found[1]) if found else int(pulses[-1]) if pulses else 0
    corpus = CORPUS_RE.findall(output)
    grown = f", corpus {corpus[0]} -> {corpus[-1]}" if corpus else ""
    rate = runs / max(elapsed, 1e-9)
    line = f"fuzz {name}: {runs} inputs in {elapsed:.0f} s ({rate:.0f}/s){grown}"
    if code == 0 and found:
        return True, line + ", no crash"
    crashes = sorted(artifacts.glob(f"{name}-*"))
    lines = [x for x in output.splitlines() if not x.startswith("INFO: Instrumenting")]
    # The Python exception (the invariant that broke) first, then the end of the output.
    start = next((i for i, x in enumerate(lines) if "Uncaught Python exception" in x), None)
    print(f"---- fuzz {name} failed (exit {code}):", file=sys.stderr)
    if start is not None:
        print("\n".join(lines[start : start + 40]), file=sys.stderr)
        print("---- the end of its output:", file=sys.stderr)
    print("\n".join(lines[-25:]), file=sys.stderr)
    for crash in crashes:
        data = crash.read_bytes()
        print(f"---- failing input {crash} ({len(data)} bytes), base64:", file=sys.stderr)
        print(base64.b64encode(data).decode(), file=sys.stderr)
        print(
            f"     keep it: echo <that base64> | base64 -d > tests/fuzz/regressions/{name}/<name>"
            " (see docs/fuzzing.md)",
            file=sys.stderr,
        )
    return False, line + f", FAILED (exit {code}, {len(crashes)} crash file(s) in {artifacts})"


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    if importlib.util.find_spec("atheris") is None:
        print("fuzz: atheris is not installed here: pip install -e '.[fuzz]'", file=sys.stderr)
        return 3
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(TARGET_NAMES))
    if unknown:
        print(f"fuzz: unknown target(s) {unknown}; known: {', '.join(TARGET_NAMES)}")
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="tracewire-fuzz-"))
    artifacts = args.artifacts or scratch / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    keep = args.keep or scratch / "corpus"
    lines: list[str] = []
    failed = False
    for name in names:
        seconds = args.parser_seconds if name in PARSERS else args.server_seconds
        ok, line = run_target(name, seconds, artifacts, keep / name)
        print(line, flush=True)
        lines.append(line)
        failed |= not ok
    total = sum(int(m[1]) for m in (re.search(r": (\d+) inputs", x) for x in lines) if m)
    print(f"fuzz: {total} inputs over {len(names)} targets; {'FAILED' if failed else 'no crash'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

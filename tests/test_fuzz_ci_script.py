"""``.ci/run`` tests every Python that pyproject.toml claims, and reports the ones it cannot.

``bash .ci/run --plan`` prints which interpreter and venv each claimed version gets, and stops;
these tests run it against the real machine and against a made-up one where versions are
missing. The fuzz pass it calls (``tests.fuzz.campaign``) is smoke-tested (slow) when atheris
is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / ".ci" / "run"
README_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[all]' && "
    ".venv/bin/python -m pytest -q -p no:cacheprovider"
)


def claimed() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    return sorted(
        set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', text)),
        key=lambda v: int(v.split(".")[1]),
    )


def plan(env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["bash", str(CI), "--plan"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    assert README_COMMAND in (ROOT / "README.md").read_text()
    assert README_COMMAND in CI.read_text()


def test_every_claimed_version_is_either_tested_or_reported_absent() -> None:
    versions = claimed()
    assert versions[0] == "3.10" and len(versions) >= 4, versions
    out = plan()
    for version in versions:
        tested = re.search(rf"^== python {re.escape(version)}: \S+ -> \.venv", out, re.M)
        absent = f"== python {version}: CLAIMED BUT ABSENT" in out
        assert tested or absent, f"{version} neither tested nor reported:\n{out}"
        assert not (tested and absent)
    found = re.findall(r"^== python (3\.\d+): \S+ -> ", out, re.M)
    assert f"slow suites on: {found[0]} {found[-1]}" in out


def test_a_missing_version_is_reported_in_a_clear_line(tmp_path: Path) -> None:
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no python3 outside pyenv to stand in as the default")
    # A machine whose pyenv holds only the interpreter running this test.
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    bin_dir = tmp_path / "versions" / f"{here}.0" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / f"python{here}").symlink_to(sys.executable)
    env = {
        **os.environ,
        "PYENV_ROOT": str(tmp_path),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    out = plan(env)
    default = subprocess.run(
        [system_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    present = {here, default}
    for version in claimed():
        on_pathless_machine = shutil.which(f"python{version}", path=env["PATH"]) is not None
        if version in present or on_pathless_machine:
            continue
        assert (
            f"== python {version}: CLAIMED BUT ABSENT on this machine (no python{version} under "
            f"{tmp_path}/versions or on PATH): not tested"
        ) in out, out
    assert f"== python {here}: {bin_dir / f'python{here}'} -> " in out or here == default


@pytest.mark.parametrize(
    ("source", "code", "result"),
    [
        ("def helper():\n    pass\n", 5, "FAILED (pytest exit 5: no tests collected)"),
        ("def test_one():\n    assert True\n", 0, "ok: 1 passed"),
        ("def test_one():\n    assert False\n", 1, "FAILED (exit 1): 1 failed"),
    ],
)
def test_a_step_fails_on_no_tests_as_on_failed_tests(
    tmp_path: Path, source: str, code: int, result: str
) -> None:
    module = tmp_path / "test_module.py"
    module.write_text(source)
    pytest_run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)]
    done = subprocess.run(
        ["bash", str(CI), "--step", "a step", *pytest_run],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == code, done.stdout + done.stderr
    summary = done.stdout.rstrip().splitlines()[-1]
    assert summary.split()[:2] == ["a", "step"]
    assert result in summary, summary


@pytest.mark.slow  # ~5 s of process start-up; .ci/run's own fuzz pass covers it in CI
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_the_fuzz_pass_runs_and_counts_inputs() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.campaign",
            "--targets",
            "traceparent,asgi",
            "--parser-seconds",
            "1",
            "--server-seconds",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    counts = re.findall(r"^fuzz (\w+): (\d+) inputs", done.stdout, re.M)
    assert [name for name, _ in counts] == ["traceparent", "asgi"]
    assert all(int(n) > 0 for _, n in counts)
    assert done.stdout.rstrip().endswith("no crash")

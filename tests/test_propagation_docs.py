"""The runnable examples of docs/propagation.md (the Python blocks that assert what they show)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "propagation.md"
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "assert " in b]


def test_the_doc_has_runnable_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{i}" for i in range(len(BLOCKS))])
def test_doc_example_runs(block: str) -> None:
    exec(compile(block, str(DOC), "exec"), {})

"""Does a received trace hold together? The demo's pass/fail rule, in one place.

The seed scenario's chain, each span the parent of the next::

    my-server SERVER (GET /process) -> my-server CLIENT -> my-downstream SERVER
        [-> my-downstream CLIENT -> my-third SERVER]          (with --hops 3)

Usage::

    chain = expected_chain(hops=2)
    receiver.wait_for(lambda spans: all_arrived(spans, chain), timeout)
    verdict = check(receiver.spans(), chain, incoming=None)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tracewire.demo.receiver import ReceivedSpan

__all__ = [
    "DOWNSTREAM_NAME",
    "ENTRY_PATH",
    "SERVER_NAME",
    "THIRD_NAME",
    "Hop",
    "Verdict",
    "all_arrived",
    "check",
    "describe",
    "expected_chain",
    "missing",
]

SERVER_NAME = "my-server"
DOWNSTREAM_NAME = "my-downstream"
THIRD_NAME = "my-third"
ENTRY_PATH = "/process"


@dataclass(frozen=True)
class Hop:
    service: str
    kind: str

    def __str__(self) -> str:
        return f"{self.service} {self.kind}"


def expected_chain(hops: int) -> tuple[Hop, ...]:
    """The spans a run with ``hops`` services must produce, root first."""
    chain = [Hop(SERVER_NAME, "SERVER"), Hop(SERVER_NAME, "CLIENT"), Hop(DOWNSTREAM_NAME, "SERVER")]
    if hops == 3:
        chain += [Hop(DOWNSTREAM_NAME, "CLIENT"), Hop(THIRD_NAME, "SERVER")]
    elif hops != 2:
        raise ValueError(f"hops must be 2 or 3, got {hops!r}")
    return tuple(chain)


def _hop(span: ReceivedSpan) -> Hop:
    return Hop(span.service or "?", span.kind)


def missing(spans: Sequence[ReceivedSpan], chain: Sequence[Hop]) -> list[Hop]:
    """The hops of ``chain`` with no span (of that service and kind) among ``spans`` yet."""
    have = Counter(_hop(s) for s in spans)
    lacking: list[Hop] = []
    for hop, wanted in Counter(chain).items():
        lacking.extend([hop] * max(0, wanted - have[hop]))
    return lacking


def all_arrived(spans: Sequence[ReceivedSpan], chain: Sequence[Hop]) -> bool:
    """Whether every hop of ``chain`` has a span, whatever trace it landed in."""
    return not missing(spans, chain)


def describe(span: ReceivedSpan) -> str:
    return f"{span.service or '?'} {span.kind} {span.name!r} ({span.span_id})"


@dataclass(frozen=True)
class Verdict:
    """``trace_id`` of the entry span, the chain found (root first), what is wrong (if any)."""

    trace_id: str | None
    chain: tuple[ReceivedSpan, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _entry(spans: Sequence[ReceivedSpan], first: Hop) -> ReceivedSpan | None:
    candidates = [s for s in spans if _hop(s) == first]
    for span in candidates:
        if span.attributes.get("url.path") == ENTRY_PATH:
            return span
    return candidates[0] if candidates else None


def check(
    spans: Sequence[ReceivedSpan],
    chain: Sequence[Hop],
    incoming: tuple[str, str] | None = None,
) -> Verdict:
    """Check that ``spans`` form one trace with ``chain`` as a parent chain.

    ``incoming`` is the ``(trace_id, span_id)`` (lowercase hex) of a header the request
    carried; the entry span must then continue it.
    """
    root = _entry(spans, chain[0])
    if root is None:
        return Verdict(None, (), (f"no {chain[0]} span for {ENTRY_PATH} arrived",))
    problems: list[str] = []
    trace_id = root.trace_id
    strays = [s for s in spans if s.trace_id != trace_id]
    for span in strays:
        problems.append(
            f"{describe(span)} is in trace {span.trace_id}, not in {trace_id}: "
            "the trace headers did not get through, or were not understood"
        )
    if incoming is not None:
        want_trace, want_parent = incoming
        if trace_id != want_trace:
            problems.append(
                f"the trace does not continue the incoming header: trace {trace_id}, "
                f"header's trace {want_trace}"
            )
        if root.parent_id != want_parent:
            problems.append(
                f"{describe(root)} has parent {root.parent_id}, expected the incoming "
                f"header's span {want_parent}"
            )
    elif root.parent_id is not None:
        problems.append(f"{describe(root)} has parent {root.parent_id} but no header was sent")

    found = [root]
    same_trace = [s for s in spans if s.trace_id == trace_id]
    for hop in chain[1:]:
        parent = found[-1]
        child = next(
            (s for s in same_trace if s.parent_id == parent.span_id and _hop(s) == hop), None
        )
        if child is None:
            problems.append(f"no {hop} span is a child of {describe(parent)}")
            break
        found.append(child)
    return Verdict(trace_id, tuple(found), tuple(problems))

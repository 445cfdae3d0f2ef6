"""Render received spans as a tree per trace, with services, kinds, durations and time bars.

Usage::

    print(render(receiver.spans(trace_id), unicode=supports_unicode(sys.stdout)))

Example output (one trace, three spans)::

    trace 4bf92f3577b34da6a3ce929d0e0e4736 · 3 spans · 163.2 ms
    GET /process          my-server      SERVER  163.2 ms  ████████████████████████
    └─ GET                my-server      CLIENT   58.1 ms  ···············█████████
       └─ GET /downstream my-downstream  SERVER   55.0 ms  ················████████
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from tracewire.demo.receiver import ReceivedSpan

__all__ = [
    "ASCII",
    "UNICODE",
    "Glyphs",
    "render",
    "render_trace",
    "supports_unicode",
]


@dataclass(frozen=True)
class Glyphs:
    branch: str
    last: str
    pipe: str
    blank: str
    full: str
    empty: str
    dot: str


UNICODE = Glyphs("├─ ", "└─ ", "│  ", "   ", "█", "·", " · ")
ASCII = Glyphs("|- ", "`- ", "|  ", "   ", "#", ".", " - ")


def supports_unicode(stream: TextIO) -> bool:
    """Whether ``stream`` can print the box and block characters."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "".join(vars(UNICODE).values()).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def _bar(span: ReceivedSpan, start: int, total: int, width: int, glyphs: Glyphs) -> str:
    if total <= 0:
        return glyphs.full * width
    first = min(width - 1, int((span.start_ns - start) * width / total))
    last = min(width, max(first + 1, round((span.end_ns - start) * width / total)))
    return glyphs.empty * first + glyphs.full * (last - first) + glyphs.empty * (width - last)


class _Walk:
    """Lays out a span tree depth first, each span once (a malformed trace must not loop)."""

    def __init__(self, children: dict[str, list[ReceivedSpan]], glyphs: Glyphs) -> None:
        self.children = children
        self.glyphs = glyphs
        self.rows: list[tuple[str, ReceivedSpan]] = []
        self.seen: set[str] = set()

    def __call__(self, span: ReceivedSpan, prefix: str = "", connector: str = "") -> None:
        if span.span_id in self.seen:
            return
        self.seen.add(span.span_id)
        self.rows.append((prefix + connector + span.name, span))
        glyphs = self.glyphs
        kids = self.children.get(span.span_id, [])
        deeper = prefix + (
            "" if not connector else (glyphs.blank if connector == glyphs.last else glyphs.pipe)
        )
        for index, child in enumerate(kids):
            self(child, deeper, glyphs.last if index == len(kids) - 1 else glyphs.branch)


def render_trace(
    spans: Sequence[ReceivedSpan], *, unicode: bool = True, bar_width: int = 24
) -> list[str]:
    """The lines for one trace's spans (all with the same trace id)."""
    if not spans:
        return []
    glyphs = UNICODE if unicode else ASCII
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.end_ns))
    ids = {s.span_id for s in ordered}
    children: dict[str, list[ReceivedSpan]] = {}
    roots: list[ReceivedSpan] = []
    for span in ordered:
        if span.parent_id is not None and span.parent_id in ids and span.parent_id != span.span_id:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)
    walk = _Walk(children, glyphs)
    for root in roots:
        walk(root)
    for span in ordered:  # spans in a parent cycle have no root: show each on its own
        if span.span_id not in walk.seen:
            walk.children = {}
            walk(span)
    rows = walk.rows

    start = min(s.start_ns for s in ordered)
    end = max(s.end_ns for s in ordered)
    count = f"{len(ordered)} span" + ("" if len(ordered) == 1 else "s")
    header = f"trace {ordered[0].trace_id}{glyphs.dot}{count}{glyphs.dot}{_ms(end - start)}"
    remote = sorted({r.parent_id for r in roots if r.parent_id is not None})
    if remote:
        header += f"{glyphs.dot}continues remote parent {', '.join(remote)}"
    name_w = max(len(label) for label, _ in rows)
    service_w = max(len(s.service or "?") for _, s in rows)
    kind_w = max(len(s.kind) for _, s in rows)
    dur_w = max(len(_ms(s.duration_ns)) for _, s in rows)
    lines = [header]
    for label, span in rows:
        bar = _bar(span, start, end - start, bar_width, glyphs)
        lines.append(
            f"{label:<{name_w}}  {span.service or '?':<{service_w}}  {span.kind:<{kind_w}}  "
            f"{_ms(span.duration_ns):>{dur_w}}  {bar}"
        )
    return lines


def render(spans: Iterable[ReceivedSpan], *, unicode: bool = True, bar_width: int = 24) -> str:
    """Every trace in ``spans`` as a tree, traces in order of their first span."""
    traces: dict[str, list[ReceivedSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        traces.setdefault(span.trace_id, []).append(span)
    blocks = [
        "\n".join(render_trace(group, unicode=unicode, bar_width=bar_width))
        for group in traces.values()
    ]
    return "\n\n".join(blocks)

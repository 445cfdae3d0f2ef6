"""``tracewire check --request``: the broken-trace question answered without deploying.

For one request (method, path, the peer's address, headers) it shows how each propagator
reads the headers, which context wins and why the others lose, what the client address is
behind trusted proxies, which ``incoming`` rule matches and what the SERVER span's parent
would be.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.baggage import get_all as get_all_baggage
from opentelemetry.context import Context
from opentelemetry.trace import get_current_span

from tracewire import trust
from tracewire.carriers import headers_getter
from tracewire.compiled import compile_settings
from tracewire.propagators import INVALID_KEY
from tracewire.server import RequestView
from tracewire.settings import Settings

__all__ = ["explain", "parse_request"]


def parse_request(text: str) -> tuple[str, str, str | None]:
    """``(method, path, peer)`` from ``"GET /public/x from 203.0.113.9"``."""
    words = text.split()
    if len(words) not in (2, 4) or (len(words) == 4 and words[2] != "from"):
        raise ValueError(f"--request {text!r}: expected 'METHOD PATH [from ADDRESS]'")
    return words[0], words[1], words[3] if len(words) == 4 else None


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"-H {text!r}: expected 'NAME: VALUE'")
    return name.strip().lower(), value.strip()


def _describe_context(context: Context) -> str:
    span_context = get_current_span(context).get_span_context()
    if span_context.is_valid:
        sampled = "sampled" if span_context.trace_flags.sampled else "not sampled"
        return f"trace {span_context.trace_id:032x}, parent {span_context.span_id:016x}, {sampled}"
    if context.get(INVALID_KEY):
        return "its header is present but invalid: ignored"
    entries = get_all_baggage(context)
    if entries:
        return f"baggage: {', '.join(sorted(entries))}"
    return "nothing found"


def explain(settings: Settings, request: str, header_texts: Sequence[str]) -> list[str]:
    """The lines ``tracewire check --request`` prints."""
    method, path, peer = parse_request(request)
    carrier: dict[str, list[str]] = {}
    for name, value in (_header(h) for h in header_texts):
        carrier.setdefault(name, []).append(value)
    plan = compile_settings(settings)
    lines = [f"request: {method} {path}" + (f" from {peer}" if peer else "")]
    lines.append("each propagator, alone:")
    for name, propagator in plan.propagator.extractors:
        try:
            found = _describe_context(propagator.extract(carrier, Context(), headers_getter))
        except Exception as exc:
            found = f"raised {type(exc).__name__}: costs only this format"
        lines.append(f"  {name}: {found}")
    extracted = plan.propagator.extract_detailed(carrier, headers_getter, plan.base_context)
    lines.append(_winner(extracted, settings.extract_policy))
    lines.extend(
        f"  another trace, kept as a span link: {sc.trace_id:032x}" for sc in extracted.conflicts
    )
    view = RequestView(
        method=method,
        scheme="http",
        path=path,
        carrier=carrier,
        getter=headers_getter,
        native=carrier,
        client=peer,
    )
    inbound = trust.plain(extracted)
    if plan.inbound is not None:
        inbound = plan.inbound.apply(view, extracted, lambda trace_id, name: None)
    lines.extend(_outcome(view, inbound, peer))
    return lines


def _winner(extracted: object, policy: str) -> str:
    fmt = getattr(extracted, "format", None)
    if fmt is None:
        return "winner: none: the request starts a new trace"
    order = "the first valid one in extract order" if policy == "first" else "the last valid one"
    return f"winner: {fmt} ({order}, extract_policy={policy})"


def _outcome(view: RequestView, inbound: trust.Inbound, peer: str | None) -> list[str]:
    lines = []
    if view.peer is not None:
        lines.append(f"client address: {view.client} (forwarded by the trusted proxy {peer})")
    elif peer is not None:
        lines.append(f"client address: {peer} (the socket peer)")
    rule = inbound.rule or "no rule matched: continue as received"
    lines.append(f"incoming rule: {rule}")
    lines.append(f"tracewire.parent.source = {inbound.source}")
    if inbound.parent is not None:
        sampled = "sampled" if inbound.parent.trace_flags.sampled else "not sampled"
        lines.append(f"the SERVER span's parent: {inbound.parent.span_id:016x} ({sampled})")
    else:
        lines.append("the SERVER span starts a new trace")
    if inbound.links:
        lines.append(f"span links: {len(inbound.links)}")
    entries = get_all_baggage(inbound.context)
    lines.append(f"baggage the app sees: {', '.join(sorted(entries)) or 'none'}")
    return lines

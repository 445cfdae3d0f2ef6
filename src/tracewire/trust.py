"""Who may continue our traces: the inbound continuation policy (setting ``incoming``).

A public endpoint that accepts any caller's ``traceparent`` lets the caller pick our trace id
and, through the sampled flag, whether we record; it accepts any ``baggage`` and re-sends it.
``incoming`` is an ordered list of rules; the first whose conditions all hold decides, and a
request no rule matches is continued as before. The vocabulary follows OpenTelemetry's trace
continuation proposal (OTEP 5055): ``continue`` (CONTINUE), ``restart`` (RESTART_WITH_LINK),
``ignore`` (RESTART_WITHOUT_LINK).

Conditions (all must hold; none at all, or ``*``, matches every request):

* ``path:PATTERN[,PATTERN]``: the request path (the ``excluded_paths`` pattern forms);
* ``net:CIDR[,CIDR]``: the client's address (behind ``trusted_proxies``, see
  :mod:`tracewire.forwarded`);
* ``method:GET[,POST]``;
* ``ours`` / ``!ours``: the incoming ``tracestate`` has (has not) our ``tracestate_key``;
* in code, ``when=callable(request_view) -> bool`` for anything else.

What a rule does:

* the action: ``continue`` (the default), ``restart`` (a new trace, linked to the caller's
  with ``tracewire.link.reason=restart``), ``ignore`` (a new trace, no link);
* ``sampled=honor|ignore``: with ``ignore`` the caller's sampled flag neither forces nor
  suppresses recording; our own sampler decides (the ids are still continued by ``continue``);
* ``baggage=accept|drop|KEY[,KEY]``: keep the caller's baggage, drop it, or keep only those
  keys.

The text form (environment variables, config strings) is one rule per ``;``::

    path:/public/* restart sampled=ignore baggage=drop; net:10.0.0.0/8 continue; * restart
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from opentelemetry.baggage import clear as clear_baggage
from opentelemetry.baggage import get_all as get_all_baggage
from opentelemetry.baggage import set_baggage
from opentelemetry.context import Context, set_value
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

from tracewire import semconv
from tracewire.forwarded import Networks, client_address, parse_address
from tracewire.matching import PathMatcher, PatternSpec, validate_patterns
from tracewire.propagation import Extracted
from tracewire.propagators.b3 import DEBUG_KEY as B3_DEBUG_KEY

__all__ = [
    "ACTIONS",
    "ALIASES",
    "BAGGAGE",
    "CONTINUE",
    "LINK_REASON",
    "SAMPLED",
    "Condition",
    "Decision",
    "Inbound",
    "InboundPolicy",
    "Policy",
    "RootSampled",
    "Rule",
    "parent_source",
    "parse_rule",
    "parse_rules",
    "plain",
    "to_rule",
]

ACTIONS = ("continue", "restart", "ignore")
# OpenTelemetry's proposed names for the same strategies.
ALIASES = {"restart_with_link": "restart", "restart_without_link": "ignore"}
SAMPLED = ("honor", "ignore")
BAGGAGE = ("accept", "drop")

Condition = Callable[[Any], bool]


@dataclass(frozen=True)
class Rule:
    """One rule of ``incoming``: conditions that must all hold, and what to do.

    Args:
        paths, networks, methods: the request path patterns, client networks (CIDRs) and
            methods the rule is for; empty means any.
        ours: ``True``: only requests whose ``tracestate`` has our ``tracestate_key``;
            ``False``: only those without; ``None``: either.
        when: ``when(request_view) -> bool``, anything else (an exception counts as false).
        action: ``continue``, ``restart`` or ``ignore``.
        sampled: ``honor`` or ``ignore`` the caller's sampled flag.
        baggage: ``accept``, ``drop``, or the keys to keep.
    """

    paths: Sequence[PatternSpec] = ()
    networks: Sequence[str] = ()
    methods: Sequence[str] = ()
    ours: bool | None = None
    when: Condition | None = field(default=None, compare=False)
    action: str = "continue"
    sampled: str = "honor"
    baggage: str | Sequence[str] = "accept"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "paths", _strings(self.paths, "paths", allow_patterns=True))
        set_(self, "networks", _strings(self.networks, "networks"))
        set_(self, "methods", tuple(m.upper() for m in _strings(self.methods, "methods")))
        action = ALIASES.get(str(self.action).lower(), self.action)
        set_(self, "action", _word("action", action, ACTIONS))
        set_(self, "sampled", _word("sampled", self.sampled, SAMPLED))
        if isinstance(self.baggage, str) and self.baggage.strip().lower() in BAGGAGE:
            set_(self, "baggage", self.baggage.strip().lower())
        else:
            keys = _strings(self.baggage, "baggage")
            if not keys:  # an empty allowlist would drop every member without saying so
                raise ValueError("baggage= needs accept, drop, or the keys to keep")
            set_(self, "baggage", keys)
        if self.ours is not None and not isinstance(self.ours, bool):
            raise TypeError(f"ours must be True, False or None, got {self.ours!r}")
        if self.when is not None and not callable(self.when):
            raise TypeError(f"when must be a callable or None, got {type(self.when).__name__}")
        validate_patterns(self.paths, "paths")
        Networks(self.networks, "networks")  # an invalid network fails here

    def __str__(self) -> str:
        parts: list[str] = []
        if self.paths:
            parts.append("path:" + ",".join(_show(p) for p in self.paths))
        if self.networks:
            parts.append("net:" + ",".join(self.networks))
        if self.methods:
            parts.append("method:" + ",".join(self.methods))
        if self.ours is not None:
            parts.append("ours" if self.ours else "!ours")
        if self.when is not None:
            parts.append(f"when:{getattr(self.when, '__name__', 'callable')}")
        parts.append(self.action if parts else f"* {self.action}")
        if self.sampled != "honor":
            parts.append(f"sampled={self.sampled}")
        if self.baggage != "accept":
            shown = self.baggage if isinstance(self.baggage, str) else ",".join(self.baggage)
            parts.append(f"baggage={shown}")
        return " ".join(parts)


def _show(pattern: PatternSpec) -> str:
    return f"re:{pattern.pattern}" if isinstance(pattern, re.Pattern) else pattern


def _strings(value: object, name: str, *, allow_patterns: bool = False) -> tuple[Any, ...]:
    items: tuple[Any, ...]
    if isinstance(value, str):
        items = tuple(v.strip() for v in value.split(",") if v.strip())
    elif isinstance(value, Sequence):
        items = tuple(value)
    else:
        raise TypeError(f"{name} must be a sequence of strings, got {type(value).__name__}")
    for item in items:
        ok = isinstance(item, str) or (allow_patterns and isinstance(item, re.Pattern))
        if not ok or (isinstance(item, str) and not item.strip()):
            raise TypeError(f"{name} must be a sequence of non-empty strings, got {item!r}")
    return items


def _word(name: str, value: object, choices: Sequence[str]) -> str:
    word = value.strip().lower() if isinstance(value, str) else None
    if word is None or word not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return word


# ------------------------------------------------------------------------------ text form
_CONDITIONS = {"path": "paths", "net": "networks", "method": "methods"}


def _put(found: dict[str, Any], name: str, value: Any, token: str) -> None:
    # A part given twice would silently lose one of them ("path:/a path:/b" drops /a).
    if name in found:
        raise ValueError(f"{token!r} repeats a part: give each once (values joined by ',')")
    if isinstance(value, str) and not value.strip():
        # "net:" from an unset variable must not mean "any network".
        raise ValueError(f"{token!r} has no value")
    found[name] = value


def _condition(token: str, found: dict[str, Any]) -> bool:
    """Fold a condition token into ``found``; ``False`` if it is not one."""
    kind, colon, value = token.partition(":")
    if colon and kind in _CONDITIONS:
        _put(found, _CONDITIONS[kind], value, token)
        return True
    if token in ("ours", "!ours"):
        _put(found, "ours", token == "ours", token)
        return True
    return token == "*"


def _outcome(token: str, found: dict[str, Any]) -> bool:
    """Fold an action token (``restart``, ``sampled=ignore``, ``baggage=...``) into ``found``."""
    name, eq, value = token.partition("=")
    if not eq:
        if token.lower() in (*ACTIONS, *ALIASES):
            _put(found, "action", token, token)
            return True
        return False
    if name in ("sampled", "baggage"):
        _put(found, name, value, token)
        return True
    return False


def parse_rule(text: str) -> Rule:
    """One rule from its text form, e.g. ``path:/public/* restart sampled=ignore``."""
    found: dict[str, Any] = {}
    for token in text.split():
        if not (_condition(token, found) or _outcome(token, found)):
            raise ValueError(
                f"unknown part {token!r}; conditions: path:, net:, method:, ours, !ours, *; "
                f"actions: {', '.join(ACTIONS)}, sampled=honor|ignore, baggage=accept|drop|KEYS"
            )
    return Rule(**found)


def parse_rules(text: str, label: str) -> tuple[Rule, ...]:
    """The rules of ``text`` (one per ``;``); ``ValueError`` naming the rule and the part."""
    rules: list[Rule] = []
    for number, part in enumerate((p.strip() for p in text.split(";")), 1):
        if not part:
            continue
        try:
            rules.append(parse_rule(part))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid rule {number} {part!r} in {label}: {exc}") from None
    return tuple(rules)


def to_rule(value: object, label: str, number: int) -> Rule:
    """A rule from code: a ``Rule``, its text form, or a mapping of ``Rule``'s fields."""
    try:
        if isinstance(value, Rule):
            return value
        if isinstance(value, str):
            return parse_rule(value)
        if isinstance(value, Mapping):
            return Rule(**value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid rule {number} {value!r} in {label}: {exc}") from None
    raise TypeError(
        f"{label} must be rules (tracewire.trust.Rule, their text form, or mappings), "
        f"got {type(value).__name__} in rule {number}"
    )


# ------------------------------------------------------------------------------- decision
class Decision(NamedTuple):
    """What the matched rule (or the default) says for one request."""

    rule: str | None  # the rule's text, None when no rule matched
    action: str
    sampled: str
    baggage: str | frozenset[str]


CONTINUE = Decision(None, "continue", "honor", "accept")


class _Compiled:
    __slots__ = ("decision", "methods", "networks", "ours", "paths", "when")

    def __init__(self, rule: Rule, label: str) -> None:
        self.paths = PathMatcher(rule.paths, label) if rule.paths else None
        self.networks = Networks(rule.networks, label) if rule.networks else None
        self.methods = frozenset(rule.methods)
        self.ours = rule.ours
        self.when = rule.when
        baggage = rule.baggage if isinstance(rule.baggage, str) else frozenset(rule.baggage)
        self.decision = Decision(str(rule), rule.action, rule.sampled, baggage)


class Policy:
    """The compiled ``incoming`` rules; ``decide`` is called once per request."""

    def __init__(self, rules: Sequence[Rule], label: str) -> None:
        self.rules = tuple(_Compiled(rule, label) for rule in rules)
        # A when= condition may read any request header: the adapter must not pre-filter them.
        self.reads_all_headers = any(rule.when is not None for rule in rules)

    def decide(self, view: Any, client: Any, ours: bool) -> Decision:
        """The decision for ``view`` whose client is ``client`` (an IP address or ``None``)."""
        for rule in self.rules:
            if self._matches(rule, view, client, ours):
                return rule.decision
        return CONTINUE

    @staticmethod
    def _matches(rule: _Compiled, view: Any, client: Any, ours: bool) -> bool:
        return (
            (rule.paths is None or rule.paths(view.path))
            and (rule.networks is None or client in rule.networks)
            and (not rule.methods or view.method.upper() in rule.methods)
            and (rule.ours is None or rule.ours == ours)
            and (rule.when is None or _holds(rule.when, view))
        )


def _holds(condition: Condition, view: Any) -> bool:
    try:
        return bool(condition(view))
    except Exception as exc:  # a user's callable: it costs its rule, not the request
        from tracewire._instrument import fault

        fault("incoming-rule", exc)
        return False


# ------------------------------------------------------------------- applying the decision
LINK_REASON = semconv.LINK_REASON


class Inbound(NamedTuple):
    """The incoming context after the policy: what the SERVER span starts from."""

    context: Context
    parent: SpanContext | None
    links: list[Link] | None
    source: str  # tracewire.parent.source
    rule: str | None  # the rule that decided, in its text form


_SOURCES: dict[tuple[str, str | None], str] = {}  # (kind, format) -> the text, made once


def _source(kind: str, fmt: str | None) -> str:
    text = _SOURCES.get((kind, fmt))
    if text is None:
        text = f"{kind}:{fmt}"
        if len(_SOURCES) < 256:  # formats are few; stay bounded whatever a propagator says
            _SOURCES[(kind, fmt)] = text
    return text


def parent_source(extracted: Extracted) -> str:
    """``tracewire.parent.source`` for a request no rule changed."""
    if extracted.parent is None:
        return "none" if extracted.invalid is None else _source("invalid", extracted.invalid)
    return "conflict" if extracted.conflicts else _source("header", extracted.format)


def plain(extracted: Extracted) -> Inbound:
    """The incoming context as extracted (no policy): other traces become links."""
    conflicts = extracted.conflicts
    links = [Link(sc) for sc in conflicts] if conflicts else None
    return Inbound(extracted.context, extracted.parent, links, parent_source(extracted), None)


RootSampled = Callable[[int, str], "bool | None"]


class InboundPolicy:
    """Everything tracewire decides about a request's incoming context, compiled once.

    Args:
        rules: the ``incoming`` rules.
        trusted: the trusted proxies, and ``header`` the one they write.
        tracestate_key: our own ``tracestate`` member (for ``ours`` conditions), or ``None``.
    """

    def __init__(
        self, rules: Sequence[Rule], trusted: Networks, header: str, tracestate_key: str | None
    ) -> None:
        self.policy = Policy(rules, "incoming") if rules else None
        self.trusted = trusted
        self.header = header
        self.tracestate_key = tracestate_key

    def apply(self, view: Any, extracted: Extracted, root_sampled: RootSampled) -> Inbound:
        """Resolve the client behind trusted proxies, decide, and rewrite the context."""
        if self.trusted:
            self._resolve_client(view)
        decision = self._decide(view, extracted.parent)
        if decision.rule is None:
            return plain(extracted)
        return _applied(extracted, decision, root_sampled, view.method)

    def _resolve_client(self, view: Any) -> None:
        values = view.getter.get(view.carrier, self.header)
        resolved = client_address(view.client, values, self.header, self.trusted)
        if resolved != view.client:
            view.peer, view.client = view.client, resolved

    def _decide(self, view: Any, parent: SpanContext | None) -> Decision:
        if self.policy is None:
            return CONTINUE
        key = self.tracestate_key
        ours = parent is not None and key is not None and parent.trace_state.get(key) is not None
        return self.policy.decide(view, parse_address(view.client or ""), ours)


def _applied(
    extracted: Extracted, decision: Decision, root_sampled: RootSampled, name: str
) -> Inbound:
    context = _baggage(extracted.context, decision.baggage)
    parent = extracted.parent
    if decision.action != "continue" or parent is None:
        return _restart(extracted, context, decision)
    if decision.sampled == "ignore":
        parent, context = _resample(parent, context, root_sampled, name)
    return plain(extracted)._replace(context=context, parent=parent, rule=decision.rule)


def _baggage(context: Context, keep: str | frozenset[str]) -> Context:
    if keep == "accept":
        return context
    entries = get_all_baggage(context)
    if not entries:
        return context
    context = clear_baggage(context)
    if keep == "drop":
        return context
    for key, value in entries.items():
        if key in keep:
            context = set_baggage(key, value, context)
    return context


def _restart(extracted: Extracted, context: Context, decision: Decision) -> Inbound:
    """A new trace: the caller's context is no parent (and, for ``restart``, a link)."""
    context = set_span_in_context(INVALID_SPAN, context)
    links: list[Link] = []
    parent = extracted.parent
    if decision.action == "restart" and parent is not None:
        links.append(Link(parent, {LINK_REASON: "restart"}))
    if decision.action == "restart":
        links.extend(Link(sc) for sc in extracted.conflicts)
    source = f"policy:{decision.action}" if parent is not None else parent_source(extracted)
    return Inbound(context, None, links or None, source, decision.rule)


def _resample(
    parent: SpanContext, context: Context, root_sampled: RootSampled, name: str
) -> tuple[SpanContext, Context]:
    """The same parent ids with the sampled flag our own sampler chose (``sampled=ignore``)."""
    sampled = root_sampled(parent.trace_id, name)
    if sampled is None:  # a sampler that does not follow the parent's flag decides anyway
        return parent, context
    flags = (parent.trace_flags & ~TraceFlags.SAMPLED) | (TraceFlags.SAMPLED if sampled else 0)
    chosen = SpanContext(
        parent.trace_id,
        parent.span_id,
        is_remote=True,
        trace_flags=TraceFlags(flags),
        trace_state=parent.trace_state,
    )
    # B3's debug state would force recording downstream: the caller does not decide that either.
    context = set_value(B3_DEBUG_KEY, None, context)
    return chosen, set_span_in_context(NonRecordingSpan(chosen), context)

"""Trace context by hand, for carriers that are not HTTP: message headers, dicts, gRPC metadata.

Usage::

    headers: dict[str, str] = {}
    tracewire.inject(headers, destination="orders.queue.internal")   # producer
    context = tracewire.extract(message.headers, source=peer_address)  # consumer

They apply the same settings and policies as the HTTP hooks: the settings of the tracewire
middleware serving the current request, else the process default (``tracewire.configure``),
else the environment; ``inject`` follows ``propagate_to`` / ``baggage_to`` / ``inject_to`` /
``tracestate_key`` for ``destination``, ``extract`` follows ``incoming`` and
``trusted_proxies`` for ``source``.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, MutableSequence
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import Getter, Setter

from tracewire import outbound
from tracewire._log import warn_once
from tracewire.authority import parse_authority, split_url
from tracewire.carriers import headers_getter, headers_setter, pairs_getter, pairs_setter
from tracewire.compiled import Compiled
from tracewire.defaults import effective

__all__ = ["extract", "inject"]


def _accessors(carrier: object) -> tuple[Getter[Any], Setter[Any]]:
    if isinstance(carrier, MutableMapping | Mapping):
        return headers_getter, headers_setter
    if isinstance(carrier, MutableSequence):
        return pairs_getter, pairs_setter
    raise TypeError(
        "carrier must be a mapping of headers or a list of (name, value) pairs, "
        f"got {type(carrier).__name__}"
    )


def _destination(destination: str) -> outbound.Destination:
    """``host``, ``host:port`` or a URL."""
    if "://" in destination:
        scheme, host, port = split_url(destination)
        return outbound.Destination(host, port, scheme)
    parsed = parse_authority(destination)
    if parsed is None:
        raise ValueError(f"destination {destination!r} is not a host, host:port or URL")
    return outbound.Destination(parsed[0], parsed[1], None)


def _remove(carrier: Any, keys: list[str]) -> None:
    names = {key.lower() for key in keys}
    if isinstance(carrier, MutableSequence):
        carrier[:] = [pair for pair in carrier if str(pair[0]).lower() not in names]
        return
    for key in keys:
        carrier.pop(key, None)


def inject(carrier: Any, *, destination: str | None = None, context: Context | None = None) -> None:
    """Write the trace headers for ``destination`` into ``carrier``.

    Args:
        carrier: a mapping of headers (``dict``, httpx/requests headers) or a list of
            ``(name, value)`` pairs (gRPC metadata).
        destination: where the carrier goes: a host, ``host:port`` or URL, checked against
            ``propagate_to``, ``baggage_to`` and ``inject_to``. ``None``: nothing to check
            against, so nothing is injected when those settings restrict destinations.
        context: the context to inject (default: the current one).
    """
    setter = _accessors(carrier)[1]
    current = get_current() if context is None else context
    plan = effective(current)
    if destination is None:
        if not plan.open_to_all or plan.routes:
            warn_once(
                "manual-inject-no-destination",
                "tracewire.inject() without destination= injects nothing while propagate_to, "
                "baggage_to or inject_to restrict destinations; pass destination=",
            )
            return
        to = outbound.Destination("", None, None)
    else:
        to = _destination(destination)
    prepared = outbound.prepare(plan, current, current, to)
    if prepared is not None:
        recorder = outbound.Recorder(setter, _remove)
        present = {str(name).lower() for name in _names(carrier)}
        outbound.write(carrier, prepared, recorder, present, quiet=True)


def _names(carrier: Any) -> list[Any]:
    if isinstance(carrier, MutableSequence):
        return [pair[0] for pair in carrier]
    return list(carrier)


class _MessageView:
    """What the incoming rules can see of a message: its peer (``source``), nothing else."""

    __slots__ = ("carrier", "client", "getter", "method", "path", "peer")

    def __init__(self, carrier: Any, getter: Getter[Any], source: str | None) -> None:
        self.carrier = carrier
        self.getter = getter
        self.client = source
        self.peer: str | None = None
        self.method = ""
        self.path = ""


def extract(carrier: Any, *, source: str | None = None) -> Context:
    """The context the trace headers of ``carrier`` give, after the ``incoming`` rules.

    Args:
        carrier: a mapping of headers or a list of ``(name, value)`` pairs.
        source: the sender's address, for ``net:`` conditions and ``trusted_proxies``
            (``path:`` and ``method:`` conditions never match a message).

    A ``restart``/``ignore`` decision gives a context without the caller's span (a new trace
    starts from it); the baggage follows the rule's ``baggage``.
    """
    getter = _accessors(carrier)[0]
    plan: Compiled = effective(None)
    extracted = plan.propagator.extract_detailed(carrier, getter, Context())
    if plan.inbound is None:
        return extracted.context
    view = _MessageView(carrier, getter, source)
    return plan.inbound.apply(view, extracted, lambda trace_id, name: None).context

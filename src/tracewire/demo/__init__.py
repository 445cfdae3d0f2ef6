"""``tracewire demo``: two (or three) real services, one request, one trace printed as a tree.

Usage::

    tracewire demo [--hops 3] [--propagators b3multi] [--config env|code|framework]
                   [--header 'traceparent: 00-...'] [--show-headers]
                   [--otlp-endpoint http://127.0.0.1:4318] [--timeout 30]

The demo starts an OTLP/HTTP receiver in its own process, then my-server (Starlette under
uvicorn), my-downstream (Flask under gunicorn) and, with ``--hops 3``, my-third (Flask under
werkzeug), each a child process exporting its spans to the receiver. ``--config`` picks how the
services are told the propagators: the environment, ``tracewire.configure()`` in code, or the
apps' own config (a Starlette ``Config``, Flask's ``app.config``). It sends one
``GET /process``, waits until every span arrived, prints the trace and checks it: exit code 0
only if all spans form one trace with the expected parent chain (and continue the incoming
header, if one was given). Every child process is stopped on the way out, whatever happens.

Exit codes: 0 the trace holds together; 1 it does not, or a service failed; 2 bad arguments;
130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    get_current_span,
    set_span_in_context,
)

from tracewire.carriers import headers_getter, headers_setter
from tracewire.demo import services
from tracewire.demo.processes import HOST, Service, ServiceFailed, ServiceGroup, free_port
from tracewire.demo.receiver import OTLPReceiver, ReceivedSpan
from tracewire.demo.tree import render, supports_unicode
from tracewire.demo.verify import Hop, Verdict, check, expected_chain, missing
from tracewire.settings import Settings

__all__ = [
    "B3_HEADERS",
    "CONFIG_SHOWN",
    "DROPPED_VARIABLES",
    "GUNICORN_ARGS",
    "PROG",
    "UVICORN_ARGS",
    "WERKZEUG_RUNNER",
    "WIRE_HEADERS",
    "Plan",
    "Terminated",
    "UsageError",
    "build_parser",
    "main",
    "make_plan",
    "run",
]

PROG = "tracewire demo"
B3_HEADERS = frozenset(h for h in services.TRACE_HEADERS if h == "b3" or h.startswith("x-b3-"))
# Variables the demo owns in the services' environment: where spans go and what is sampled.
DROPPED_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


class UsageError(Exception):
    """Bad arguments: reported in one line, exit code 2, nothing started."""


class Terminated(Exception):
    """SIGTERM arrived; unwinds like Ctrl-C so that every child is stopped."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Start real services on loopback ports, send one request through them and print "
            "the resulting trace as a tree. Exit code 0 only if it is one trace with the "
            "right parent chain."
        ),
    )
    parser.add_argument(
        "--hops",
        type=int,
        choices=(2, 3),
        default=2,
        help="2: my-server -> my-downstream (default); 3: ... -> my-third (requests)",
    )
    parser.add_argument(
        "--propagators",
        metavar="LIST",
        help="propagators for every service, e.g. 'b3multi' or 'tracecontext,baggage,b3' "
        "(default: OTEL_PROPAGATORS / TRACEWIRE_PROPAGATORS, else tracecontext,baggage)",
    )
    parser.add_argument(
        "--config",
        choices=services.CONFIG_MODES,
        default="env",
        help="how the services get the propagators: env (TRACEWIRE_PROPAGATORS, default), "
        "code (tracewire.configure()), framework (Starlette Config / Flask app.config)",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header for the request to /process, e.g. 'traceparent: 00-...-...-01' or "
        "'b3: ...'; the trace must continue it (repeatable)",
    )
    parser.add_argument(
        "--show-headers",
        action="store_true",
        help="print the trace headers each service received",
    )
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="also export the spans to this OTLP/HTTP collector, e.g. http://127.0.0.1:4318 "
        "(default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT if set)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest wait for the services to start, and for the spans to arrive (default 30)",
    )
    parser.add_argument("--ascii", action="store_true", help="draw the tree with ASCII only")
    return parser


# ------------------------------------------------------------------------------------ the plan


@dataclass
class Plan:
    """Everything decided from the arguments and the environment, before anything starts."""

    hops: int
    settings: Settings
    config: str
    env: dict[str, str]
    headers: list[tuple[str, str]]
    incoming: tuple[str, str] | None
    extra_endpoint: str | None
    show_headers: bool
    timeout: float
    unicode: bool
    chain: tuple[Hop, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.chain = expected_chain(self.hops)


def _parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name or not value or any(c in name for c in " \t\r\n"):
        raise UsageError(f"--header {text!r}: expected 'NAME: VALUE', e.g. 'traceparent: 00-...'")
    if any(c in value for c in "\r\n"):
        raise UsageError(f"--header {name}: the value must be one line")
    return name.lower(), value


def _extra_endpoint(argument: str | None, environ: Mapping[str, str]) -> str | None:
    source = "--otlp-endpoint"
    url = (argument or "").strip()
    if not url:
        full = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if full:
            url, source = full, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        elif base:
            # A base URL always gets the signal path, as the OTLP exporter spec says.
            url, source = base.rstrip("/") + "/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT"
        else:
            return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"{source} {url!r}: expected an OTLP/HTTP URL such as http://127.0.0.1:4318"
        )
    return url


def _incoming(settings: Settings, headers: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The ``(trace_id, span_id)`` my-server will continue; ``UsageError`` if it would not."""
    if not headers:
        return None
    carrier: dict[str, str] = {}
    for name, value in headers:
        if name in carrier:
            raise UsageError(f"--header {name} is given twice")
        carrier[name] = value
    extracted = settings.composite.extract_detailed(carrier, headers_getter)
    span_context = get_current_span(extracted.context).get_span_context()
    in_use = ", ".join(name for name, _ in settings.composite.extractors) or "none"
    if span_context.is_valid:
        if not span_context.trace_flags.sampled:
            raise UsageError(
                "the incoming header says 'not sampled': with parent-based sampling no service "
                "would record a span. Use a sampled header (flags 01, or B3 sampled=1)"
            )
        return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    trace_names = [n for n, _ in headers if n in services.TRACE_HEADERS]
    context_names = [n for n in trace_names if n not in ("baggage", "tracestate")]
    if not context_names:
        return None  # e.g. only baggage: a new trace is what should happen
    hint = ""
    if any(n in B3_HEADERS for n in context_names) and not any(
        name.startswith("b3") for name, _ in settings.composite.extractors
    ):
        hint = "; B3 headers need --propagators b3 (or b3multi), e.g. 'b3,tracecontext,baggage'"
    elif "traceparent" in context_names and not any(
        name == "tracecontext" for name, _ in settings.composite.extractors
    ):
        hint = "; traceparent needs the tracecontext propagator"
    raise UsageError(
        f"my-server would not continue --header {context_names[0]}: the propagators in use "
        f"({in_use}) find no valid trace context in it{hint}"
    )


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    try:
        if args.propagators is not None:
            return Settings.from_env(env).replace_from(
                "--propagators", propagators=args.propagators
            )
        return Settings.from_env(env)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid settings for the services: {exc}") from None


def _propagation_env(config: str, settings: Settings, env: dict[str, str]) -> None:
    """Tell the services the propagators the way ``--config`` says."""
    names = ",".join(str(p) for p in settings.propagators)
    if config == "env":
        # Both: TRACEWIRE_PROPAGATORS would otherwise win over OTEL_PROPAGATORS.
        env["OTEL_PROPAGATORS"] = env["TRACEWIRE_PROPAGATORS"] = names
        return
    # Not in the environment, so that only the code or the framework config can set them.
    for name in (
        "OTEL_PROPAGATORS",
        "TRACEWIRE_PROPAGATORS",
        "TRACEWIRE_EXTRACT",
        "TRACEWIRE_INJECT",
    ):
        env.pop(name, None)
    env[services.ENV_PROPAGATORS] = names


def make_plan(args: argparse.Namespace, environ: Mapping[str, str], stdout: TextIO) -> Plan:
    env = {k: v for k, v in environ.items() if k not in DROPPED_VARIABLES}
    settings = _settings(args, env)
    if not all(isinstance(p, str) for p in settings.propagators):  # pragma: no cover
        raise UsageError("the demo takes propagator names only")
    _propagation_env(args.config, settings, env)
    env[services.ENV_CONFIG] = args.config
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout:g}")
    headers = [_parse_header(h) for h in args.header]
    incoming = _incoming(settings, headers)
    env.update(
        {
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            # Export within ~0.1 s of a span's end rather than the default 5 s.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return Plan(
        hops=args.hops,
        settings=settings,
        config=args.config,
        env=env,
        headers=headers,
        incoming=incoming,
        extra_endpoint=_extra_endpoint(args.otlp_endpoint, environ),
        show_headers=args.show_headers,
        timeout=args.timeout,
        unicode=not args.ascii and supports_unicode(stdout),
    )


# ------------------------------------------------------------------------------------ the run


UVICORN_ARGS = (
    "--factory",
    "tracewire.demo.services:create_server",
    "--host",
    HOST,
    "--log-level",
    "warning",
    "--no-access-log",
    "--lifespan",
    "on",
)
GUNICORN_ARGS = (
    "--workers",
    "1",
    "--worker-class",
    "gthread",
    "--threads",
    "4",
    "--graceful-timeout",
    "5",
    "--log-level",
    "warning",
    "tracewire.demo.services:create_downstream()",
)
WERKZEUG_RUNNER = (sys.executable, "-m", "tracewire.demo.services")


def _gunicorn_available() -> bool:
    return os.name == "posix" and importlib.util.find_spec("gunicorn") is not None


def _config_file(plan: Plan, folder: str, env: dict[str, str]) -> None:
    """For ``--config framework``: the env file my-server's Starlette ``Config`` reads."""
    if plan.config != "framework":
        return
    path = os.path.join(folder, "my-server.env")
    with open(path, "w", encoding="utf-8") as file:
        file.write(f"TRACEWIRE_PROPAGATORS={env[services.ENV_PROPAGATORS]}\n")
    env[services.ENV_FILE] = path


def _services(
    plan: Plan, receiver: OTLPReceiver, folder: str
) -> tuple[list[Service], dict[str, str]]:
    python = sys.executable
    ports = {name: free_port() for name in ("my-server", "my-downstream", "my-third")}
    urls = {name: f"http://{HOST}:{port}" for name, port in ports.items()}
    env = dict(plan.env)
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.traces_url
    env[services.ENV_DOWNSTREAM_URL] = urls["my-downstream"]
    if plan.hops == 3:
        env[services.ENV_THIRD_URL] = urls["my-third"]
    else:
        env.pop(services.ENV_THIRD_URL, None)
    if plan.extra_endpoint:
        env[services.ENV_EXTRA_OTLP] = plan.extra_endpoint
    else:
        env.pop(services.ENV_EXTRA_OTLP, None)
    _config_file(plan, folder, env)

    what = {"my-server": "Starlette on uvicorn", "my-third": "Flask on werkzeug"}
    server_argv = [python, "-m", "uvicorn", *UVICORN_ARGS, "--port", str(ports["my-server"])]
    started = [Service("my-server", server_argv, ports["my-server"], env)]
    if _gunicorn_available():
        what["my-downstream"] = "Flask on gunicorn"
        bind = f"{HOST}:{ports['my-downstream']}"
        downstream_argv = [python, "-m", "gunicorn", "--bind", bind, *GUNICORN_ARGS]
    else:
        what["my-downstream"] = "Flask on werkzeug"
        downstream_argv = [*WERKZEUG_RUNNER, "my-downstream", "--port", str(ports["my-downstream"])]
    started.append(Service("my-downstream", downstream_argv, ports["my-downstream"], env))
    if plan.hops == 3:
        third_argv = [*WERKZEUG_RUNNER, "my-third", "--port", str(ports["my-third"])]
        started.append(Service("my-third", third_argv, ports["my-third"], env))
    return started, what


def _warm_up_headers(settings: Settings) -> dict[str, str] | None:
    """Headers carrying a not-sampled context in the services' formats, if they can carry it."""
    unsampled = SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    carrier: dict[str, str] = {}
    settings.inject_propagator.inject(
        carrier, set_span_in_context(NonRecordingSpan(unsampled)), headers_setter
    )
    extracted = settings.composite.extract_detailed(carrier, headers_getter)
    found = get_current_span(extracted.context).get_span_context()
    # Only if my-server reads it back as "not sampled"; otherwise it would start a real trace.
    if found.is_valid and not found.trace_flags.sampled:
        return carrier
    return None


def _say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


def _show_headers(out: TextIO, answer: Any, plan: Plan) -> None:
    _say(out, "trace headers each service received:")
    hops: list[tuple[str, Any]] = []
    node = answer
    while isinstance(node, dict) and "service" in node:
        hops.append((str(node["service"]), node.get("received")))
        node = node.get("downstream", node.get("third"))
    width = max((len(name) for name, _ in hops), default=0)
    for index, (name, received) in enumerate(hops):
        if not isinstance(received, dict) or not received:
            note = (
                "(none: the demo sent no trace headers, so this is where the trace starts)"
                if index == 0
                else "(none)"
            )
            _say(out, f"  {name:<{width}}  {note}")
            continue
        for line, (header, value) in enumerate(received.items()):
            label = name if line == 0 else ""
            _say(out, f"  {label:<{width}}  {header}: {value}")


def _timeout_report(
    spans: Sequence[ReceivedSpan], plan: Plan, group: ServiceGroup, receiver: OTLPReceiver
) -> str:
    lacking = ", ".join(str(h) for h in missing(spans, plan.chain))
    lines = [
        f"timed out after {plan.timeout:g}s waiting for spans: missing {lacking}; "
        f"{len(spans)} span(s) arrived in {receiver.requests} export request(s)",
    ]
    for service in group.services:
        tail = service.log_tail(5)
        if tail:
            lines.append(f"  {service.name} log:")
            lines.extend("    " + line for line in tail.splitlines())
    return "\n".join(lines)


def _send(out: TextIO, plan: Plan, entry: Service, group: ServiceGroup) -> httpx.Response:
    """The request to ``/process`` (after an unsampled warm-up one, where possible)."""
    url = entry.url + "/process"
    with httpx.Client(timeout=plan.timeout) as client:
        warm_up = _warm_up_headers(plan.settings)
        if warm_up is not None:
            # First requests pay for lazy imports and new connections; an unsampled request
            # pays them without recording anything, so the trace shows steady-state timings.
            with contextlib.suppress(httpx.HTTPError):
                client.get(url, headers=warm_up)
            _say(out, "warm-up request sent (not sampled: it records no spans)")
        begin = time.monotonic()
        try:
            response = client.get(url, headers=plan.headers)
        except httpx.HTTPError as exc:
            group.check_alive()
            raise ServiceFailed(entry, f"did not answer GET /process: {exc}") from exc
    took = (time.monotonic() - begin) * 1000
    shown = "".join(f"  [{n}: {v}]" for n, v in plan.headers)
    _say(out, f"GET {url}{shown} -> {response.status_code} in {took:.1f} ms")
    return response


CONFIG_SHOWN = {
    "env": "the environment",
    "code": "code: tracewire.configure()",
    "framework": "the apps' config: Starlette Config, Flask app.config",
}


def run(plan: Plan, out: TextIO) -> int:
    with (
        OTLPReceiver() as receiver,
        ServiceGroup() as group,
        tempfile.TemporaryDirectory(prefix="tracewire-demo-") as folder,
    ):
        started, what = _services(plan, receiver, folder)
        propagators = ", ".join(n for n, _ in plan.settings.composite.extractors) or "none"
        _say(
            out,
            f"{PROG}: {len(started)} services, propagators: {propagators} "
            f"(set in {CONFIG_SHOWN[plan.config]})",
        )
        width = max(len(s.name) for s in started)
        for service in started:
            group.add(service)
            _say(out, f"  {service.name:<{width}}  {what[service.name]:<20}  {service.url}")
        _say(out, f"  spans -> the demo's OTLP receiver at {receiver.traces_url}")
        if plan.extra_endpoint:
            _say(out, f"  spans -> also {plan.extra_endpoint}")

        begin = time.monotonic()
        group.start_all(plan.timeout)
        _say(out, f"services ready in {time.monotonic() - begin:.1f} s")

        response = _send(out, plan, started[0], group)
        try:
            answer: Any = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            _say(out, f"  answer: {response.text[:300]}")

        try:
            receiver.wait_for(lambda spans: not missing(spans, plan.chain), plan.timeout)
        except TimeoutError:
            _say(out, _timeout_report(receiver.spans(), plan, group, receiver))
            return 1
        spans = receiver.spans()
        verdict = check(spans, plan.chain, plan.incoming)
        _say(out)
        _say(out, render(spans, unicode=plan.unicode))
        _say(out)
        if plan.show_headers:
            _show_headers(out, answer, plan)
            _say(out)
        return _report(out, verdict, plan, response.status_code, _wire_problems(answer, plan))


# The header each propagator's context travels in: what a hop must have received.
WIRE_HEADERS = {"tracecontext": "traceparent", "b3": "b3", "b3multi": "x-b3-traceid"}


def _wire_problems(answer: Any, plan: Plan) -> list[str]:
    """Each downstream hop must have received the headers of the inject list, and no others."""
    expected = {
        WIRE_HEADERS[name]
        for name, _ in plan.settings.inject_propagator.injectors
        if name in WIRE_HEADERS
    }
    problems: list[str] = []
    node = answer.get("downstream") if isinstance(answer, dict) else None
    while isinstance(node, dict) and "service" in node:
        got = {h for h in WIRE_HEADERS.values() if h in (node.get("received") or {})}
        if got != expected:
            problems.append(
                f"{node['service']} received {', '.join(sorted(got)) or 'no trace header'}, "
                f"expected {', '.join(sorted(expected)) or 'none'}"
            )
        node = node.get("third")
    return problems


def _report(
    out: TextIO, verdict: Verdict, plan: Plan, status: int, wire: Sequence[str] = ()
) -> int:
    if verdict.trace_id is not None:
        _say(out, f"trace id: {verdict.trace_id}")
    problems = [*verdict.problems, *wire]
    if status != 200:
        problems.append(f"GET /process answered {status}, not 200")
    if problems:
        _say(out, "FAILED: the trace does not hold together:")
        for problem in problems:
            _say(out, f"  - {problem}")
        return 1
    chain = " -> ".join(str(h) for h in plan.chain)
    continued = " continuing the incoming header" if plan.incoming else ""
    _say(out, f"OK: one trace{continued}, {chain}")
    if plan.extra_endpoint:
        _say(
            out,
            f"look it up by trace id in your backend (spans also sent to {plan.extra_endpoint})",
        )
    return 0


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into an exception while the demo runs, so cleanup code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str]) -> int:
    """Run the demo with command-line arguments ``argv``; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error
        return exc.code if isinstance(exc.code, int) else 2
    out = sys.stdout
    try:
        plan = make_plan(args, os.environ, out)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        with _sigterm_unwinds():
            return run(plan, out)
    except ServiceFailed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; every service was stopped", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{PROG}: terminated; every service was stopped", file=sys.stderr)
        return 143

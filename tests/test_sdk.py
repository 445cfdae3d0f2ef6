"""tracewire.sdk.configure: real SDK providers, real exporters, the real OTLP receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tracewire import sdk
from tracewire.demo.receiver import OTLPReceiver

OTEL_VARIABLES = (
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def providers() -> Iterator[list[TracerProvider]]:
    made: list[TracerProvider] = []
    yield made
    for provider in made:
        provider.shutdown()


def configure(providers: list[TracerProvider], *args: object, **kwargs: object) -> TracerProvider:
    kwargs.setdefault("set_global", False)
    kwargs.setdefault("shutdown_on_exit", False)
    provider = sdk.configure(*args, **kwargs)  # type: ignore[arg-type]
    providers.append(provider)
    return provider


def memory(provider: TracerProvider) -> InMemorySpanExporter:
    (exporter,) = sdk.get_exporters(provider)
    assert isinstance(exporter, InMemorySpanExporter)
    return exporter


class ThreadRecordingExporter(SpanExporter):
    """Notes which thread each export runs on (the caller's for simple, a worker for batch)."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.names: list[str] = []
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.threads.append(threading.current_thread().name)
        self.names.extend(s.name for s in spans)
        self.exported.set()
        return SpanExportResult.SUCCESS


# ------------------------------------------------------------------------ service and resource


def test_memory_exporter_sees_spans_at_once_with_the_service_name(providers):
    provider = configure(providers, "checkout", exporter="memory")
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    (span,) = memory(provider).get_finished_spans()
    assert span.name == "work"
    assert span.resource.attributes["service.name"] == "checkout"


def test_service_name_and_attributes_come_from_the_environment(providers, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=core")
    provider = configure(providers, exporter="memory")
    attributes = provider.resource.attributes
    assert attributes["service.name"] == "from-env"
    assert attributes["deployment.environment"] == "test"
    assert attributes["team"] == "core"


def test_arguments_win_over_the_environment(providers, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=core,region=eu")
    provider = configure(
        providers, "from-code", exporter="memory", resource_attributes={"team": "payments"}
    )
    attributes = provider.resource.attributes
    assert attributes["service.name"] == "from-code"
    assert attributes["team"] == "payments"
    assert attributes["region"] == "eu"


def test_service_name_in_resource_attributes_is_used_when_nothing_else_names_it(
    providers, monkeypatch
):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=attr-name")
    provider = configure(providers, exporter="memory")
    assert provider.resource.attributes["service.name"] == "attr-name"


# ---------------------------------------------------------------------------------- exporters


def test_exporter_from_otel_traces_exporter(providers, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "memory")
    provider = configure(providers, "svc")
    assert isinstance(memory(provider), InMemorySpanExporter)


def test_exporter_none_records_but_exports_nothing(providers):
    provider = configure(providers, "svc", exporter="none")
    assert sdk.get_exporters(provider) == ()
    with provider.get_tracer("t").start_as_current_span("work") as span:
        assert span.is_recording()


def test_several_exporters_each_get_every_span(providers):
    custom = ThreadRecordingExporter()
    provider = configure(providers, "svc", exporter=["memory", custom], processor="simple")
    with provider.get_tracer("t").start_as_current_span("work"):
        pass
    exporters = sdk.get_exporters(provider)
    assert exporters[1] is custom
    assert [s.name for s in exporters[0].get_finished_spans()] == ["work"]  # type: ignore[attr-defined]
    assert custom.names == ["work"]


def test_comma_separated_exporters_from_the_environment(providers, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "memory, console")
    provider = configure(providers, "svc")
    kinds = [type(e).__name__ for e in sdk.get_exporters(provider)]
    assert kinds == ["InMemorySpanExporter", "ConsoleSpanExporter"]


def test_batch_is_the_default_and_simple_exports_on_the_calling_thread(providers, monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # the batch worker exports soon
    batched, simple = ThreadRecordingExporter(), ThreadRecordingExporter()
    batch_provider = configure(providers, "svc", exporter=batched)
    simple_provider = configure(providers, "svc", exporter=simple, processor="simple")
    for provider in (batch_provider, simple_provider):
        with provider.get_tracer("t").start_as_current_span("work"):
            pass
    assert simple.threads == [threading.current_thread().name]
    assert batched.exported.wait(10)
    assert batched.names == ["work"]
    assert batched.threads[0] != threading.current_thread().name


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"exporter": "zipkin"}, "exporter"),
        ({"exporter": 42}, "exporter"),
        ({"exporter": []}, "exporter"),
        ({"exporter": ["memory", "none"]}, "exporter"),
        ({"sampler": "sometimes"}, "sampler"),
        ({"sampler": "always_on", "sampler_arg": 0.5}, "sampler_arg"),
        ({"sampler_arg": 0.5}, "sampler_arg"),
        ({"sampler": "traceidratio", "sampler_arg": 1.5}, "sampler_arg"),
        ({"processor": "eager"}, "processor"),
        ({"endpoint": "localhost:4318"}, "endpoint"),
        ({"endpoint": "ftp://collector"}, "endpoint"),
    ],
)
def test_bad_arguments_name_the_argument(providers, kwargs, named):
    with pytest.raises(ValueError, match=named) as info:
        configure(providers, "svc", **kwargs)
    if named in ("exporter", "sampler", "processor") and "none" not in str(kwargs):
        assert "valid choices" in str(info.value)


def test_bad_exporter_message_lists_the_choices():
    with pytest.raises(ValueError) as info:
        sdk.configure("svc", exporter="zipkin", set_global=False)
    assert (
        str(info.value) == "invalid exporter 'zipkin'; valid choices: otlp, console, memory, none"
    )


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER 'jaeger'; valid choices"):
        sdk.configure("svc", set_global=False)


def test_empty_service_name_is_rejected():
    with pytest.raises(ValueError, match="service_name"):
        sdk.configure("", exporter="memory", set_global=False)


# ----------------------------------------------------------------------------------- sampling


def _remote_parent(sampled: bool) -> object:
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def test_default_sampler_follows_the_parent(providers):
    provider = configure(providers, "svc", exporter="memory")
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        assert root.is_recording()
    child = tracer.start_span("child", context=_remote_parent(sampled=False))  # type: ignore[arg-type]
    assert not child.is_recording()
    child.end()
    continued = tracer.start_span("continued", context=_remote_parent(sampled=True))  # type: ignore[arg-type]
    assert continued.is_recording()
    continued.end()
    assert [s.name for s in memory(provider).get_finished_spans()] == ["root", "continued"]


def test_sampler_from_the_environment(providers, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    provider = configure(providers, "svc", exporter="memory")
    with provider.get_tracer("t").start_as_current_span("work") as span:
        assert not span.is_recording()
    assert memory(provider).get_finished_spans() == ()


@pytest.mark.parametrize(
    ("sampler", "arg", "root_recorded"),
    [
        ("parentbased_always_off", None, False),
        ("always_on", None, True),
        ("traceidratio", 0.0, False),
        ("parentbased_traceidratio", 1.0, True),
        (ALWAYS_OFF, None, False),
    ],
)
def test_sampler_argument(providers, sampler, arg, root_recorded):
    provider = configure(providers, "svc", exporter="memory", sampler=sampler, sampler_arg=arg)
    with provider.get_tracer("t").start_as_current_span("root") as span:
        assert span.is_recording() is root_recorded


def test_parent_based_ratio_still_follows_a_sampled_parent(providers):
    provider = configure(
        providers, "svc", exporter="memory", sampler="parentbased_traceidratio", sampler_arg=0.0
    )
    span = provider.get_tracer("t").start_span("child", context=_remote_parent(sampled=True))  # type: ignore[arg-type]
    assert span.is_recording()
    span.end()


# -------------------------------------------------------------------------- disabled, missing


def test_sdk_disabled_records_and_exports_nothing(providers, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = configure(providers, "svc", exporter="memory")
    assert sdk.get_exporters(provider) == ()
    with provider.get_tracer("t").start_as_current_span("work") as span:
        assert not span.is_recording()


def test_sdk_disabled_does_not_need_the_otlp_package(providers, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    provider = configure(providers, "svc", exporter="otlp")
    assert sdk.get_exporters(provider) == ()


def test_missing_otlp_package_gives_the_install_line(monkeypatch):
    # A None entry in sys.modules makes the import fail exactly as for a missing package.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ImportError, match=r"pip install 'tracewire\[otlp\]'"):
        sdk.configure("svc", exporter="otlp", set_global=False)


def test_grpc_protocol_without_the_grpc_package_gives_the_install_line(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(ImportError, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
        sdk.configure("svc", exporter="otlp", set_global=False)


def test_unsupported_protocol_names_the_variable(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL 'http/json'"):
        sdk.configure("svc", exporter="otlp", set_global=False)


# ------------------------------------------------------------------------- OTLP to a receiver


def _one_span(provider: TracerProvider, name: str) -> None:
    with provider.get_tracer("t").start_as_current_span(name):
        pass
    assert provider.force_flush(5_000)


@pytest.mark.parametrize("form", ["base", "full"])
def test_otlp_endpoint_argument(providers, form):
    with OTLPReceiver() as receiver:
        endpoint = receiver.endpoint if form == "base" else receiver.traces_url
        provider = configure(providers, "svc", exporter="otlp", endpoint=endpoint)
        _one_span(provider, f"via-{form}")
        (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.name, span.service) == (f"via-{form}", "svc")


@pytest.mark.parametrize(
    ("variable", "suffix"),
    [("OTEL_EXPORTER_OTLP_ENDPOINT", ""), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces")],
)
def test_otlp_endpoint_from_the_standard_variables(providers, monkeypatch, variable, suffix):
    with OTLPReceiver() as receiver:
        monkeypatch.setenv(variable, receiver.endpoint + suffix)
        provider = configure(providers, "svc")  # default exporter: otlp
        _one_span(provider, "from-env")
        (span,) = receiver.wait_for_spans(1, timeout=10)
    assert span.name == "from-env"


def test_otlp_exporter_helper_sends_to_a_second_collector(providers):
    with OTLPReceiver() as first, OTLPReceiver() as second:
        provider = configure(
            providers,
            "svc",
            exporter=["otlp", sdk.otlp_exporter(second.endpoint)],
            endpoint=first.endpoint,
        )
        _one_span(provider, "twice")
        assert [s.name for s in first.wait_for_spans(1, timeout=10)] == ["twice"]
        assert [s.name for s in second.wait_for_spans(1, timeout=10)] == ["twice"]


# ------------------------------------------------------------------ global provider and atexit


def _run_child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in OTEL_VARIABLES}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_global_provider_and_flush_at_exit_in_a_fresh_process():
    with OTLPReceiver() as receiver:
        result = _run_child(
            """
            from opentelemetry import trace
            from tracewire.sdk import configure
            provider = configure(service_name="child", exporter="otlp")
            assert trace.get_tracer_provider() is provider
            with trace.get_tracer("t").start_as_current_span("before-exit"):
                pass
            # no shutdown here: the atexit hook must flush the batch
            """,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "60000"},
        )
        assert result.returncode == 0, result.stderr
        (span,) = receiver.wait_for_spans(1, timeout=10)
    assert (span.name, span.service) == ("before-exit", "child")


def test_second_global_configure_warns_and_keeps_the_first():
    result = _run_child(
        """
        import logging
        from opentelemetry import trace
        from tracewire.sdk import configure
        logging.basicConfig()
        first = configure(service_name="one", exporter="none")
        second = configure(service_name="two", exporter="none")
        assert trace.get_tracer_provider() is first
        assert second is not first
        """,
        {},
    )
    assert result.returncode == 0, result.stderr
    assert "already set" in result.stderr

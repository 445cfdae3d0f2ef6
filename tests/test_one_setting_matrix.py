"""One service, one setting, end to end: the propagators a service chooses reach its clients.

For Starlette, FastAPI, Flask and a raw WSGI app, the propagators are chosen in code
(``Settings`` or keyword settings), in the framework's config (Flask ``app.config``, a
Starlette ``Config`` env file) or in the environment (``TRACEWIRE_PROPAGATORS``,
``OTEL_PROPAGATORS``). A request arrives in one format (W3C, b3, b3multi) at the real server
(uvicorn / werkzeug); the app calls a real downstream server with one of the clients
(httpx sync, httpx async, a requests session, the httpx and requests global switches), all
built *without* settings. The downstream records the headers it got and is traced by
tracewire with the same propagators. Checked for every call:

* the outgoing trace headers are exactly those of the serving app's inject list;
* their ids are the trace id and the CLIENT span's id;
* the upstream SERVER span continues the incoming trace, the CLIENT span is its child, and
  the downstream SERVER span is the CLIENT span's child (one exporter for every service).

The default run covers a diagonal (every framework with every client, every mode and format
per framework); the whole cross product is marked slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.one_setting import (
    CLIENTS,
    FORMATS,
    MODES,
    TIMEOUT,
    Clients,
    Downstream,
    Service,
    SharedTracing,
    Trace,
    build_app,
    clean_globals,
    expected_names,
    global_switch,
    incoming,
    new_case,
    outgoing_ids,
    serve,
    trace_header_names,
)


@pytest.fixture(scope="module")
def shared() -> Iterator[SharedTracing]:
    with SharedTracing() as tracing:
        yield tracing


@pytest.fixture(scope="module")
def downstream(shared: SharedTracing) -> Iterator[Downstream]:
    with Downstream(shared.provider) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with clean_globals(monkeypatch):
        yield


# The propagators the service chooses for each incoming format. None of them is the
# default (tracecontext,baggage), so a client that ignored the app's choice would show.
CHOSEN = {
    "tracecontext": ("tracecontext", "b3multi"),
    "b3": ("b3",),
    "b3multi": ("b3multi",),
}


def check_call(
    kind: str,
    fmt: str,
    propagators: tuple[str, ...],
    url: str,
    driver: httpx.Client,
    shared: SharedTracing,
    downstream: Downstream,
) -> None:
    sent = incoming(fmt)
    case = new_case()
    target = downstream.url(propagators, case)
    with global_switch(kind, shared.provider):
        r = driver.get(f"{url}/call", params={"kind": kind, "target": target}, headers=sent.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == 200
    assert int(body["trace_id"], 16) == sent.trace_id, "the app did not continue the trace"

    got = downstream.got(case)
    assert trace_header_names(got) == expected_names(propagators), (
        f"sent {sorted(trace_header_names(got))}, the app injects {list(propagators)}"
    )
    hop = Trace.of(shared.wait_spans(sent.trace_id, 3), sent.span_id)
    assert int(body["span_id"], 16) == hop.upstream.context.span_id
    for name in propagators:
        assert outgoing_ids(got, name) == (sent.trace_id, hop.client.context.span_id), name
    hop.assert_chain()


def run_case(
    framework: str,
    mode: str,
    fmt: str,
    kinds: tuple[str, ...],
    shared: SharedTracing,
    downstream: Downstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    propagators = CHOSEN[fmt]
    if mode == "env_tracewire":
        monkeypatch.setenv("TRACEWIRE_PROPAGATORS", ",".join(propagators))
    elif mode == "env_otel":
        monkeypatch.setenv("OTEL_PROPAGATORS", ",".join(propagators))
    # Clients and app are built under that environment, like a real service's start-up.
    service = Service(Clients(shared.provider))
    app, wsgi = build_app(framework, mode, propagators, service, shared.provider, tmp_path)
    failures: list[str] = []
    try:
        # The driver is made before any global switch is turned on: it stays untraced.
        with serve(app, wsgi=wsgi) as server, httpx.Client(timeout=TIMEOUT) as driver:
            for kind in kinds:
                try:
                    check_call(kind, fmt, propagators, server.url, driver, shared, downstream)
                except (AssertionError, TimeoutError) as exc:
                    failures.append(f"{kind}: {exc}")
    finally:
        service.clients.close()
    assert not failures, "\n".join(failures)


def _diagonal() -> list[Any]:
    cases = []
    for i, (framework, modes) in enumerate(MODES.items()):
        for j, kind in enumerate(CLIENTS):
            mode = modes[(i + j) % len(modes)]
            fmt = FORMATS[(i + 2 * j) % len(FORMATS)]
            cases.append(
                pytest.param(framework, mode, fmt, kind, id=f"{framework}-{mode}-{fmt}-{kind}")
            )
    return cases


@pytest.mark.parametrize(("framework", "mode", "fmt", "kind"), _diagonal())
def test_outgoing_calls_follow_the_serving_app(
    framework: str,
    mode: str,
    fmt: str,
    kind: str,
    shared: SharedTracing,
    downstream: Downstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_case(framework, mode, fmt, (kind,), shared, downstream, tmp_path, monkeypatch)


def test_the_diagonal_covers_every_framework_mode_format_and_client() -> None:
    cases = [tuple(p.values) for p in _diagonal()]
    for framework, modes in MODES.items():
        mine = [c for c in cases if c[0] == framework]
        assert {c[1] for c in mine} == set(modes), framework
        assert {c[2] for c in mine} == set(FORMATS), framework
        assert {c[3] for c in mine} == set(CLIENTS), framework


@pytest.mark.slow
@pytest.mark.parametrize(
    ("framework", "mode", "fmt"),
    [
        pytest.param(framework, mode, fmt, id=f"{framework}-{mode}-{fmt}")
        for framework, modes in MODES.items()
        for mode in modes
        for fmt in FORMATS
    ],
)
def test_full_matrix(
    framework: str,
    mode: str,
    fmt: str,
    shared: SharedTracing,
    downstream: Downstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_case(framework, mode, fmt, CLIENTS, shared, downstream, tmp_path, monkeypatch)

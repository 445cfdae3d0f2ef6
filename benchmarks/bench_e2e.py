"""End to end: uvicorn (1 worker) serving bare / SDK floor / tracewire / contrib, under load.

One server process serves every variant under ``/<prefix>/items/42`` (``/bare``, ``/floor``,
``/tracewire``, ``/contrib``), so the variants share the process, the server, the event loop
and the tracer provider (the mode's sampler, a ``BatchSpanProcessor`` by default, an exporter
that drops spans) and differ only by the middleware. The load alternates between the variants,
in an order rotated each round, with the workload's request headers (``traceparent``,
``tracestate``, ``baggage``) on every request. Load: ``wrk`` when installed
(``apt-get install -y wrk``), else ``benchmarks.loadgen`` (raw-socket keep-alive connections in
a separate process).

Run alone::

    python -m benchmarks.bench_e2e --seconds 2 --rounds 8
    python -m benchmarks.bench_e2e serve --port 8000 --mode sampled   # the server alone
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._harness import MODE_TEXT, MODES, Tracing, request_headers
from benchmarks.bench_asgi import APPS, ASGIApp, Receive, Scope, Send, wrap
from benchmarks.floors import PATH, QUERY
from benchmarks.loadgen import LoadGenerator, LoadResult

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
E2E_VARIANTS = (
    ("bare", "bare"),
    ("sdk floor", "floor"),
    ("tracewire", "tracewire"),
    ("contrib", "contrib"),
)
PREFIX = {"bare": "bare", "sdk floor": "floor", "tracewire": "tracewire", "contrib": "contrib"}


class Dispatch:
    """One ASGI app serving every variant under its path prefix, plus ``/_stats``."""

    def __init__(self, app_name: str, processor: str, mode: str) -> None:
        self.tracing = Tracing(processor, mode)
        self.apps: dict[str, ASGIApp] = {
            PREFIX[name]: wrap(name, APPS[app_name](), self.tracing.provider, mode)
            for name, _ in E2E_VARIANTS
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        prefix = scope["path"].split("/", 2)[1]
        app = self.apps.get(prefix)
        if app is not None:
            await app(scope, receive, send)
            return
        if prefix == "_stats":
            self.tracing.flush()
            body = json.dumps({"exported": self.tracing.exporter.count}).encode()
            status = 200
        else:
            body, status = b"not found", 404
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def serve(port: int, app_name: str, processor: str, mode: str) -> None:
    import uvicorn

    uvicorn.run(
        Dispatch(app_name, processor, mode),
        host=HOST,
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"e2e server exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"e2e server did not listen on {port} within {timeout}s")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux ``/proc``), or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(request_headers("sampled")[1:]))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_P = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_COMPLETED = re.compile(r"(\d+) requests in")


def wrk_run(
    url: str, headers: Sequence[tuple[str, str]], connections: int, seconds: float
) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers:
        if name != "host":
            command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, url], check=True, capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    rps = _RPS.search(out)
    percentiles = {q: float(v) * _UNIT[u] for q, v, u in _P.findall(out)}
    if rps is None or "Non-2xx" in out or "Socket errors" in out or "99" not in percentiles:
        raise RuntimeError(f"wrk run failed:\n{out}")
    done = _COMPLETED.search(out)
    return LoadResult(
        requests=int(done.group(1)) if done else 0,
        rps=float(rps.group(1)),
        p50_ms=percentiles.get("50", float("nan")),
        p99_ms=percentiles["99"],
        errors=0,
        generator_cpu_share=float("nan"),
    )


def run_e2e(
    seconds: float = 2.0,
    rounds: int = 8,
    modes: Sequence[str] = ("sampled", "unsampled-parent"),
    app_name: str = "raw",
    processor: str = "batch",
    load: str = "auto",
    connections: int = 32,
    processes: int = 1,
) -> list[dict[str, Any]]:
    """One result dict per mode: req/s, p50 and p99 per variant, and the ratios."""
    if load == "auto":
        load = "wrk" if shutil.which("wrk") else "python"
    results = []
    for mode in modes:
        results.append(
            _run_mode(seconds, rounds, mode, app_name, processor, load, connections, processes)
        )
    return results


def _run_mode(
    seconds: float,
    rounds: int,
    mode: str,
    app_name: str,
    processor: str,
    load: str,
    connections: int,
    processes: int,
) -> dict[str, Any]:
    port = _free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_e2e",
        "serve",
        "--port",
        str(port),
        "--app",
        app_name,
        "--processor",
        processor,
        "--mode",
        mode,
    ]
    headers = request_headers(mode)
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    generator: LoadGenerator | None = None
    try:
        _wait_port(port, proc)
        for name, _ in E2E_VARIANTS:  # every path once through: imports, caches
            for _ in range(50):
                status, _body = _get(port, f"/{PREFIX[name]}{PATH}?{QUERY}")
                if status != 200:
                    raise RuntimeError(f"e2e {name}: HTTP {status}")
        if load == "python":
            generator = LoadGenerator(HOST, port, processes)

        def one(name: str, duration: float) -> LoadResult:
            path = f"/{PREFIX[name]}{PATH}?{QUERY}"
            before = _cpu_seconds(proc.pid)
            if load == "wrk":
                result = wrk_run(f"http://{HOST}:{port}{path}", headers, connections, duration)
            else:
                assert generator is not None
                result = generator.run(path, headers, connections, duration)
            after = _cpu_seconds(proc.pid)
            if before is not None and after is not None and result.requests:
                # The server's own CPU per request: what the middleware costs it, whatever
                # share of the machine it got (req/s depends on that share).
                result.server_cpu_us = (after - before) / result.requests * 1e6
            return result

        for name, _ in E2E_VARIANTS:  # a short warm-up under load
            one(name, min(1.0, seconds))
        per_round: dict[str, list[LoadResult]] = {name: [] for name, _ in E2E_VARIANTS}
        for index in range(rounds):
            shift = index % len(E2E_VARIANTS)
            for name, _ in (*E2E_VARIANTS[shift:], *E2E_VARIANTS[:shift]):
                per_round[name].append(one(name, seconds))
        status, body = _get(port, "/_stats")
        exported = json.loads(body)["exported"] if status == 200 else None
    finally:
        if generator is not None:
            generator.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    variants: dict[str, Any] = {}
    for name, role in E2E_VARIANTS:
        runs = per_round[name]
        variants[name] = {
            "role": role,
            "rps": round(statistics.median(r.rps for r in runs), 1),
            "p50_ms": round(statistics.median(r.p50_ms for r in runs), 3),
            "p99_ms": round(statistics.median(r.p99_ms for r in runs), 3),
            "server_cpu_us_per_request": _median_or_none([r.server_cpu_us for r in runs]),
            "rounds": [r.as_dict() for r in runs],
        }

    def ratio(a: str, b: str) -> float | None:
        x, y = variants[a]["rps"], variants[b]["rps"]
        return round(x / y, 4) if y else None

    def paired(a: str, b: str) -> float | None:
        # Median over rounds of a's req/s over b's in the same round: adjacent windows, so
        # a change of the machine's load between rounds cancels out.
        pairs = [x.rps / y.rps for x, y in zip(per_round[a], per_round[b], strict=True) if y.rps]
        return round(statistics.median(pairs), 4) if pairs else None

    def cpu_overhead(name: str) -> float | None:
        x = variants[name]["server_cpu_us_per_request"]
        y = variants["bare"]["server_cpu_us_per_request"]
        return None if x is None or y is None else round(x - y, 2)

    notes = [
        f"uvicorn 1 worker, {app_name} app; {processor} span processor; "
        f"{seconds:g} s per variant per round, {rounds} round(s), {connections} connections",
        "load: wrk -t1 --latency"
        if load == "wrk"
        else f"load: benchmarks.loadgen, {processes} process(es), raw-socket keep-alive",
    ]
    if load == "python":
        busiest = max(r.generator_cpu_share for v in per_round.values() for r in v)
        if busiest > 0.9:
            notes.append(
                f"WARNING: the load generator used {busiest:.0%} of a core: it may have been "
                "the bottleneck (add --load-processes or install wrk)"
            )
    if mode == "sampled" and not exported:
        raise RuntimeError("e2e sampled: the server exported no spans")
    return {
        "suite": f"asgi[{app_name}] uvicorn",
        "mode": mode,
        "mode_text": MODE_TEXT[mode],
        "kind": "end-to-end",
        "load": load,
        "variants": variants,
        # The graded ratio: paired per round (see ``paired``); the ratio of the medians beside.
        "tracewire_vs_floor_rps": paired("tracewire", "sdk floor"),
        "tracewire_vs_floor_rps_of_medians": ratio("tracewire", "sdk floor"),
        "tracewire_vs_bare_rps": ratio("tracewire", "bare"),
        "floor_vs_bare_rps": ratio("sdk floor", "bare"),
        "contrib_vs_bare_rps": ratio("contrib", "bare"),
        "tracewire_vs_contrib_rps": ratio("tracewire", "contrib"),
        # Not graded: the server's CPU per request over bare, a steadier view on a busy machine.
        "server_cpu_overhead_us": {
            name: cpu_overhead(name) for name, _ in E2E_VARIANTS if name != "bare"
        },
        "exported_spans": exported,
        "notes": notes,
    }


def _median_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def print_e2e(results: Sequence[dict[str, Any]], out: Any = None) -> None:
    out = out or sys.stdout
    for result in results:
        print(f"\n== {result['suite']} | {result['mode']}: {result['mode_text']}", file=out)
        print(
            f"{'variant':<12} {'req/s':>9} {'x bare':>7} {'x floor':>8} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'server CPU us/req':>18}",
            file=out,
        )
        v = result["variants"]
        for name, data in v.items():
            xb = data["rps"] / v["bare"]["rps"] if v["bare"]["rps"] else float("nan")
            xf = data["rps"] / v["sdk floor"]["rps"] if v["sdk floor"]["rps"] else float("nan")
            cpu = data.get("server_cpu_us_per_request")
            print(
                f"{name:<12} {data['rps']:>9.0f} {xb:>7.3f} {xf:>8.3f} {data['p50_ms']:>8.2f} "
                f"{data['p99_ms']:>8.2f} {'' if cpu is None else f'{cpu:.1f}':>18}",
                file=out,
            )
        print(
            f"   tracewire / floor req/s, paired per round (graded): "
            f"{result['tracewire_vs_floor_rps']}; server CPU over bare, us/request: "
            f"{result.get('server_cpu_overhead_us')}",
            file=out,
        )
        print(f"   exported spans: {result['exported_spans']}", file=out)
        for note in result["notes"]:
            print(f"   note: {note}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_e2e", description=__doc__)
    parser.add_argument("command", nargs="?", default="bench", choices=("bench", "serve"))
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--app", choices=sorted(APPS), default="raw")
    parser.add_argument("--processor", choices=("batch", "simple"), default="batch")
    parser.add_argument("--mode", choices=(*MODES, "all"), default=None)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load-processes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.app, args.processor, args.mode or "sampled")
        return 0
    modes = (
        ("sampled", "unsampled-parent")
        if args.mode is None
        else MODES
        if args.mode == "all"
        else (args.mode,)
    )
    print_e2e(
        run_e2e(
            args.seconds,
            args.rounds,
            modes,
            args.app,
            args.processor,
            args.load,
            args.connections,
            args.load_processes,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A small HTTP/1.1 load generator for the end-to-end run when ``wrk`` is not installed.

Keep-alive connections on raw sockets driven by ``selectors``, one request in flight per
connection, in worker processes of their own (so the generator does not share a GIL with the
orchestrating process). Each worker records every request's latency; the parent merges them
for the percentiles. A worker also reports its CPU share of the window: near 100 % means the
generator, not the server, was the bottleneck, and the run says so.

Only loopback addresses are accepted.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_END = b"\r\n\r\n"


def request_bytes(host: str, port: int, path: str, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _complete(buffer: bytes) -> int:
    """Length of the first full response in ``buffer`` (0 if incomplete); -1 if not a 200."""
    end = buffer.find(_END)
    if end < 0:
        return 0
    head = buffer[:end].lower()
    if head[9:12] != b"200":
        return -1
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        return -1  # the benchmark apps always send one
    stop = head.find(b"\r\n", at + 2)
    length = int(head[at + 17 : stop if stop > 0 else len(head)])
    total = end + 4 + length
    return total if len(buffer) >= total else 0


def _worker(job: tuple[str, int, bytes, int, float]) -> dict[str, Any]:
    host, port, payload, connections, seconds = job
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(connections):
        sock = socket.create_connection((host, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    buffers: dict[int, bytes] = {}
    started: dict[int, int] = {}
    latencies: list[int] = []
    errors = 0
    cpu0 = time.process_time()
    begin = time.perf_counter_ns()
    deadline = begin + int(seconds * 1e9)
    hard_stop = deadline + 5_000_000_000
    for sock in socks:
        fd = sock.fileno()
        buffers[fd] = b""
        started[fd] = time.perf_counter_ns()
        sock.sendall(payload)
        selector.register(sock, selectors.EVENT_READ)
    in_flight = len(socks)
    while in_flight and time.perf_counter_ns() < hard_stop:
        for key, _ in selector.select(timeout=1.0):
            sock = key.fileobj  # type: ignore[assignment]
            fd = key.fd
            data = sock.recv(65536)
            if not data:
                errors += 1
                selector.unregister(sock)
                in_flight -= 1
                continue
            buffer = buffers[fd] + data
            size = _complete(buffer)
            if size == 0:
                buffers[fd] = buffer
                continue
            now = time.perf_counter_ns()
            if size < 0:
                errors += 1
                size = len(buffer)
            elif now <= deadline:
                latencies.append((now - started[fd]) // 1000)
            buffers[fd] = buffer[size:]
            if now < deadline:
                started[fd] = now
                sock.sendall(payload)
            else:
                selector.unregister(sock)
                in_flight -= 1
    window = (min(time.perf_counter_ns(), deadline) - begin) / 1e9
    cpu = time.process_time() - cpu0
    for sock in socks:
        sock.close()
    selector.close()
    return {
        "latencies_us": latencies,
        "errors": errors,
        "window_s": window,
        "cpu_share": cpu / max(window, 1e-9),
    }


@dataclass
class LoadResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    generator_cpu_share: float  # the busiest worker's CPU time / the window
    server_cpu_us: float | None = None  # filled in by the e2e run: server CPU per request

    def as_dict(self) -> dict[str, Any]:
        return {
            "server_cpu_us": None if self.server_cpu_us is None else round(self.server_cpu_us, 2),
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "errors": self.errors,
            "generator_cpu_share": round(self.generator_cpu_share, 3),
        }


def percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])


class LoadGenerator:
    """``processes`` worker processes, started once and reused for every run."""

    def __init__(self, host: str, port: int, processes: int = 1) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"load only goes to loopback addresses, not {host}")
        self.host = host
        self.port = port
        self.processes = max(1, processes)
        self.pool = multiprocessing.get_context("spawn").Pool(self.processes)

    def run(
        self, path: str, headers: Sequence[tuple[str, str]], connections: int, seconds: float
    ) -> LoadResult:
        payload = request_bytes(self.host, self.port, path, headers)
        per = [connections // self.processes] * self.processes
        for i in range(connections % self.processes):
            per[i] += 1
        jobs = [(self.host, self.port, payload, n, seconds) for n in per if n]
        parts = self.pool.map(_worker, jobs)
        latencies = sorted(v for part in parts for v in part["latencies_us"])
        window = max(part["window_s"] for part in parts)
        return LoadResult(
            requests=len(latencies),
            rps=len(latencies) / window if window > 0 else 0.0,
            p50_ms=percentile(latencies, 0.50) / 1000,
            p99_ms=percentile(latencies, 0.99) / 1000,
            errors=sum(part["errors"] for part in parts),
            generator_cpu_share=max(part["cpu_share"] for part in parts),
        )

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

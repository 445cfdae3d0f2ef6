"""A lean HTTP/1.1 load generator: N keep-alive connections over asyncio streams.

The load tests measure the servers, not the client: httpx's pool costs more CPU per request
than a small service does, on a 2-core machine. This client speaks just enough HTTP/1.1 for
our JSON answers (``Content-Length`` bodies, ``Connection: close`` honoured by reconnecting).
Every request and the whole run are bounded by timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    close = lines[0].startswith("HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection":
            close = value.strip().lower() == "close"
    body = await reader.readexactly(length) if length else b""
    return status, body, close


async def run(
    host: str,
    port: int,
    path: str,
    headers: Sequence[Mapping[str, str]],
    concurrency: int,
    request_timeout: float = 60.0,
    total_timeout: float = 900.0,
) -> list[Any]:
    """GET ``path`` once per entry of ``headers`` (each request's own headers) over
    ``concurrency`` connections. Returns ``(status, body)`` or ``("error", repr)`` per request,
    in the order of ``headers``."""
    results: list[Any] = [None] * len(headers)
    pending = list(range(len(headers) - 1, -1, -1))

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while pending:
                index = pending.pop()
                extra = "".join(f"{k}: {v}\r\n" for k, v in headers[index].items())
                request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
                for attempt in range(2):  # a keep-alive connection the server just closed
                    reused = writer is not None
                    try:
                        if writer is None:
                            reader, writer = await asyncio.wait_for(
                                asyncio.open_connection(host, port), request_timeout
                            )
                        assert reader is not None
                        writer.write(request)
                        status, body, close = await asyncio.wait_for(
                            _read_response(reader), request_timeout
                        )
                        results[index] = (status, body)
                        if close:
                            writer.close()
                            writer = None
                        break
                    except (ConnectionError, asyncio.IncompleteReadError) as exc:
                        if writer is not None:
                            writer.close()
                        writer = None
                        if attempt == 1 or not reused:
                            results[index] = ("error", repr(exc))
                            break
                    except Exception as exc:
                        results[index] = ("error", repr(exc))
                        if writer is not None:
                            writer.close()
                        writer = None
                        break
        finally:
            if writer is not None:
                writer.close()

    await asyncio.wait_for(
        asyncio.gather(*(connection() for _ in range(concurrency))), total_timeout
    )
    return results

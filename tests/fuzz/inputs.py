"""Fuzz input bytes <-> a synthetic request: a settings choice, an app behaviour, header lines.

The same decoder serves atheris (which mutates raw bytes), the hypothesis tests (which build
``Case`` objects and ``encode`` them) and the corpus and regression files (raw bytes on disk),
so a crash found by any of them replays in all of them.

Layout::

    byte 0          config: bits 0-2 settings (CONFIGS), bits 3-4 response propagation mode
    byte 1          app: bits 0-1 status, bit 2 streamed body, bit 3 outgoing client call,
                    bits 4-5 client kind, bits 6-7 failure mode (none / raise before / after
                    the response started / forward the caller's trace headers downstream)
    then records    op byte: bits 0-3 name (NAMES; 15 = the name follows as length + bytes),
                             bits 4-5 spelling (lower / UPPER / Title / aLtErNaTe),
                             bit 6 repeated (a count byte follows: 2..257 lines),
                             bit 7 huge (a factor byte follows: the value repeated 1..256 times)
                    then a length byte and that many value bytes

Bounds keep one input cheap: at most ``MAX_LINES`` header lines and ``MAX_BYTES`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NAMES = (
    b"traceparent",
    b"tracestate",
    b"baggage",
    b"b3",
    b"x-b3-traceid",
    b"x-b3-spanid",
    b"x-b3-sampled",
    b"x-b3-flags",
    b"x-b3-parentspanid",
    b"host",
    b"user-agent",
    b"content-type",
    b"cookie",
    b"x-request-id",
    b"accept",
)
RAW_NAME = 15

MAX_LINES = 3000
MAX_BYTES = 512 * 1024

STATUSES = (200, 204, 404, 500)
FAILURES = ("none", "raise-before", "raise-after", "forward")
CLIENTS = ("httpx", "httpx-async", "requests", "all")
RESPONSE_MODES = ("none", "traceresponse", "server-timing", "none")


@dataclass(frozen=True)
class Case:
    """One synthetic request and how the app answers it."""

    config: int = 0
    response_mode: str = "none"
    status: int = 200
    streamed: bool = False
    client_call: bool = False
    client: str = "httpx"
    failure: str = "none"
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())

    @property
    def header_bytes(self) -> int:
        return sum(len(n) + len(v) for n, v in self.headers)


def _spell(name: bytes, spelling: int) -> bytes:
    if spelling == 1:
        return name.upper()
    if spelling == 2:
        return name.title()
    if spelling == 3:
        return bytes(c ^ 0x20 if i % 2 and 0x61 <= c <= 0x7A else c for i, c in enumerate(name))
    return name


def decode(data: bytes) -> Case:
    """The request ``data`` describes; never raises, whatever the bytes."""
    config = data[0] if data else 0
    app = data[1] if len(data) > 1 else 0
    headers: list[tuple[bytes, bytes]] = []
    total = 0
    pos = 2
    size = len(data)
    while pos < size and len(headers) < MAX_LINES and total < MAX_BYTES:
        op = data[pos]
        pos += 1
        index = op & 0x0F
        if index == RAW_NAME:
            length = data[pos] if pos < size else 0
            name = data[pos + 1 : pos + 1 + length]
            pos += 1 + length
        else:
            name = _spell(NAMES[index], (op >> 4) & 0x03)
        repeat = 1
        if op & 0x40:
            repeat = 2 + (data[pos] if pos < size else 0)
            pos += 1
        factor = 1
        if op & 0x80:
            factor = 1 + (data[pos] if pos < size else 0)
            pos += 1
        length = data[pos] if pos < size else 0
        value = data[pos + 1 : pos + 1 + length] * factor
        pos += 1 + length
        for _ in range(repeat):
            if len(headers) >= MAX_LINES or total >= MAX_BYTES:
                break
            headers.append((name, value))
            total += len(name) + len(value)
    return Case(
        config=config & 0x07,
        response_mode=RESPONSE_MODES[(config >> 3) & 0x03],
        status=STATUSES[app & 0x03],
        streamed=bool(app & 0x04),
        client_call=bool(app & 0x08),
        client=CLIENTS[(app >> 4) & 0x03],
        failure=FAILURES[(app >> 6) & 0x03],
        headers=tuple(headers),
    )


def encode(case: Case) -> bytes:
    """Bytes that ``decode`` turns back into ``case`` (values over 255 bytes are split into a
    chunk and a repeat factor when they are one, else the header is cut to 255 bytes)."""
    config = case.config | RESPONSE_MODES.index(case.response_mode) << 3
    app = (
        STATUSES.index(case.status)
        | case.streamed << 2
        | case.client_call << 3
        | CLIENTS.index(case.client) << 4
        | FAILURES.index(case.failure) << 6
    )
    out = bytearray((config, app))
    for name, value in case.headers:
        op = NAMES.index(name) if name in NAMES else RAW_NAME
        chunk, factor = value, 1
        if len(value) > 255:
            chunk, factor = _as_repeat(value)
        record = bytearray()
        if op == RAW_NAME:
            record += bytes((len(name[:255]),)) + name[:255]
        if factor > 1:
            op |= 0x80
            record += bytes((factor - 1,))
        record += bytes((len(chunk),)) + chunk
        out += bytes((op,)) + record
    return bytes(out)


def _as_repeat(value: bytes) -> tuple[bytes, int]:
    for width in range(1, 256):
        factor, rest = divmod(len(value), width)
        if not rest and factor <= 256 and value[:width] * factor == value:
            return value[:width], factor
    return value[:255], 1


def header_text(value: bytes) -> str:
    """How servers hand a header value to Python: bytes decoded as latin-1."""
    return value.decode("latin-1")

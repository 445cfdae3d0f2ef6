"""The seed corpus: valid and nearly valid inputs for every target, so the fuzzer starts deep.

``python -m tests.fuzz.seeds`` (re)writes ``tests/fuzz/corpus/<target>/seed-*``; the pytest
suite checks that the files on disk are what this module makes, and replays them.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from tests.fuzz.inputs import CLIENTS, FAILURES, RESPONSE_MODES, STATUSES, Case, encode

CORPUS = Path(__file__).parent / "corpus"
REGRESSIONS = Path(__file__).parent / "regressions"

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACEPARENTS = [
    TP,
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-fields",
    "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
    f" {TP}\t",
    f"{TP}-",
    f"{TP},{TP}",
]
TRACESTATES = [
    "vendor=abc,t@v=1,foo@@bar=x y",
    "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7",
    ",".join(f"k{i}=v{i}" for i in range(32)),
    ",".join(f"k{i}=v{i}" for i in range(33)),
    "a=" + "x" * 256 + ",b=1",
    ",".join(f"long{i:02d}=" + "y" * 256 for i in range(32)),
    ",".join(
        [*(f"s{i}=v" for i in range(4)), *(f"k{i:02d}" * 60 + "=" + "y" * 256 for i in range(20))]
    ),
    "dup=1,dup=2,other=3",
    "bad key=1",
    "k=v ",
]
BAGGAGES = [
    "user=alice,note=caf%C3%A9;prop=1,n=%FF",
    "a=1 , b = 2;p;q=r",
    "k=v;p=1;",
    ",".join(f"m{i}=v" for i in range(64)),
    ",".join(f"m{i}=v" for i in range(200)),
    "big=" + "z" * 4000 + ",small=1",
    "plus=a+b,pct=%25,eq=a=b",
    'bad"value=1,ok=2',
]
B3S = [
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d",
    "a3ce929d0e0e4736-e457b5a2e4d86bd1",
    "a3ce929d0e0e4736-e457b5a2e4d86bd1-0",
    "0",
    "1",
    "d",
    "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-",
    "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
]
MULTI = [
    (b"x-b3-traceid", b"80f198ee56343ba864fe8b2a57d3eff7"),
    (b"x-b3-spanid", b"e457b5a2e4d86bd1"),
]


def _lines(values: list[str], utf8: bool = False) -> bytes:
    return bytes((1 if utf8 else 0,)) + "\n".join(values).encode("utf-8")


def _header_cases() -> list[tuple[bytes, bytes]]:
    """Header lists that reach every rule: valid anchors, repeats, big and odd values."""
    enc = str.encode
    return [
        (b"traceparent", enc(TP)),
        (b"tracestate", enc(TRACESTATES[0])),
        (b"baggage", enc(BAGGAGES[0])),
        (b"b3", enc(B3S[1])),
        *MULTI,
        (b"x-b3-sampled", b"1"),
        (b"x-b3-flags", b"1"),
        (b"host", b"api.internal:8080"),
        (b"user-agent", b"fuzz/1.0 \xe9\x00"),
    ]


def seeds() -> dict[str, list[bytes]]:
    full = tuple(_header_cases())
    cases: list[Case] = []
    for config in range(8):
        cases.append(Case(config=config, headers=full))
        cases.append(Case(config=config, headers=((b"traceparent", TP.encode()),)))
    for mode in RESPONSE_MODES[:3]:
        for status in STATUSES:
            cases.append(Case(config=1, response_mode=mode, status=status, headers=full))
    for client in CLIENTS:
        for failure in FAILURES:
            cases.append(
                Case(config=1, client_call=True, client=client, failure=failure, headers=full)
            )
    cases.append(Case(streamed=True, client_call=True, client="all", headers=full))
    cases.append(Case(headers=((b"traceparent", TP.encode()),) * 3))
    cases.append(Case(headers=((b"TraceParent", TP.encode()), (b"x-other", b"\r\n\x00"))))
    cases.append(Case(headers=((b"baggage", b"k=" + b"v" * 255 * 40),)))
    cases.append(Case(headers=((b"traceparent", TP.encode() + b"\r\nx: y"),)))
    cases.append(Case(headers=tuple((b"tracestate", f"k{i}=v".encode()) for i in range(40))))
    server = [encode(c) for c in cases]
    return {
        "traceparent": [_lines([tp]) for tp in TRACEPARENTS] + [_lines(TRACEPARENTS[:2])],
        "tracestate": [_lines([ts]) for ts in TRACESTATES] + [_lines(TRACESTATES[:2])],
        "baggage": [_lines([b]) for b in BAGGAGES] + [_lines(BAGGAGES[:2], utf8=True)],
        "b3": [_lines([b]) for b in B3S] + [_lines(B3S[:2])],
        "b3multi": [
            encode(Case(headers=(*MULTI, (b"x-b3-sampled", s)))) for s in (b"1", b"true", b"0")
        ]
        + [
            encode(Case(headers=(*MULTI, (b"x-b3-flags", b"1")))),
            encode(Case(headers=((b"x-b3-sampled", b"0"),))),
            encode(Case(headers=(*MULTI, (b"b3", B3S[0].encode())))),
            encode(Case(headers=(*MULTI, MULTI[0]))),
        ],
        "asgi": server,
        "wsgi": server,
        "client": server,
    }


def file_name(data: bytes) -> str:
    return "seed-" + hashlib.sha1(data).hexdigest()[:16]


def write(root: Path = CORPUS) -> int:
    count = 0
    for target, inputs in seeds().items():
        folder = root / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for data in inputs:
            (folder / file_name(data)).write_bytes(data)
            count += 1
    return count


if __name__ == "__main__":
    print(f"wrote {write()} seed files under {CORPUS}", file=sys.stderr)

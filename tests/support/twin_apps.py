"""One small service written twice, as a raw ASGI app and as a raw WSGI app, answering alike:

- ``/ok`` (any method; the body is read): ``200 ok``;
- ``/café`` (sent as ``/caf%C3%A9``): ``200``;
- ``/missing``: ``404``;
- ``/fail``: a ``500`` response the app sends itself;
- ``/raise``: raises :class:`AppFailure` before responding (the server answers 500).

The exception's message carries the kind of text that must never reach a span status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

SECRET_MESSAGE = "db password=hunter2 at http://admin:pw@10.1.2.3:5432/app"


class AppFailure(RuntimeError):
    """What ``/raise`` raises."""


def _route(path: str) -> tuple[int, bytes]:
    if path in ("/ok", "/café"):
        return 200, b"ok"
    if path == "/fail":
        return 500, b"app says no"
    if path == "/raise":
        raise AppFailure(SECRET_MESSAGE)
    return 404, b"not found"


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # read the whole body, as the WSGI twin does
        message = await receive()
        more = message.get("more_body", False)
    status, body = _route(scope["path"])
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


_REASONS = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
    status, body = _route(path)
    start_response(
        f"{status} {_REASONS[status]}",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]

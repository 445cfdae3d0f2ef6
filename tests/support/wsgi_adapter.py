"""A ``requests`` transport adapter that serves requests from a WSGI app in-process.

The counterpart of ``httpx.WSGITransport`` for ``requests``: the session, its hooks and
tracewire's ``TracingAdapter`` run for real; only the socket is left out. Used by the long
runs, where 100,000 requests over loopback would measure the kernel, not tracewire's memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WSGIAdapter(BaseAdapter):
    def __init__(self, app: WSGIApp) -> None:
        super().__init__()
        self.app = app

    def send(  # type: ignore[override]
        self, request: PreparedRequest, stream: bool = False, **kwargs: Any
    ) -> Response:
        url = urlsplit(request.url or "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method or "GET",
            "PATH_INFO": url.path or "/",
            "QUERY_STRING": url.query,
            "SERVER_NAME": url.hostname or "localhost",
            "SERVER_PORT": str(url.port or 80),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": url.scheme or "http",
            "wsgi.input": io.BytesIO(body),  # type: ignore[arg-type]
            "CONTENT_LENGTH": str(len(body)),
        }
        headers: Mapping[str, str] = request.headers
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            environ[key] = value
        status_headers: list[Any] = []

        def start_response(status: str, response_headers: Any, exc_info: Any = None) -> Any:
            status_headers[:] = [status, response_headers]
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        response = Response()
        response.status_code = int(status_headers[0].split(" ", 1)[0])
        response.headers = CaseInsensitiveDict(dict(status_headers[1]))
        response.raw = io.BytesIO(content)
        response._content = content
        response.url = request.url or ""
        response.request = request
        response.reason = status_headers[0].partition(" ")[2]
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass

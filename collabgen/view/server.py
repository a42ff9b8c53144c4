"""The `collabgen view` HTTP server: the standard library's `ThreadingHTTPServer`, GET only.

Routes: `/` (the page), `/static/NAME` (a file of the package's `view/static/`, looked up
by name among the files there, never joined onto a path), and JSON under `/api/`:
`overview`, `conversations?task=&failed=&flag=&gap_min=&gap_max=&q=&offset=&limit=`,
`conversation?id=`, `eval` (the eval report and its seeds) and `eval/seed?index=` (each
policy's conversation of one seed). Nothing of the out dir is served as a file: every answer comes from
`RunView`. Any other method is 405; an unknown path 404. Bound to loopback, a request
naming another host (DNS rebinding) is refused.
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from collabgen.view.data import ListQuery, RunView, ViewError

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def static_files() -> dict[str, bytes]:
    """The page's assets by file name, read once from the package."""
    folder = resources.files("collabgen.view") / "static"
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ViewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, view: RunView, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.view = view
        self.assets = static_files()
        self.loopback = _is_loopback(host)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "collabgen-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the terminal shows the URL, not every request

    # ---------------------------------------------------------------- methods

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: GET only\n", "text/plain; charset=utf-8",
                   extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815

    # ---------------------------------------------------------------- routing

    def _answer(self, send_body: bool) -> None:
        if self.server.loopback and not self._host_is_loopback():
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unknown host\n", "text/plain; charset=utf-8", send_body)
            return
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path in ("/", "/index.html"):
            self._asset("index.html", send_body)
        elif path.startswith("/static/"):
            self._asset(path.removeprefix("/static/"), send_body)
        elif path in _API:
            try:
                data = _API[path](self.server.view, query)
            except ViewError as err:
                self._json({"error": str(err)}, HTTPStatus.NOT_FOUND, send_body)
            except ValueError as err:
                self._json({"error": f"bad query: {err}"}, HTTPStatus.BAD_REQUEST, send_body)
            else:
                self._json(data, HTTPStatus.OK, send_body)
        else:
            self._not_found(send_body)

    def _host_is_loopback(self) -> bool:
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
        return name in _LOOPBACK_NAMES or _is_loopback(name)

    def _asset(self, name: str, send_body: bool) -> None:
        # A name, not a path: "../x", "a/b", "%2e%2e" never match a file of static/.
        body = self.server.assets.get(name)
        if body is None:
            self._not_found(send_body)
            return
        self._send(HTTPStatus.OK, body, _TYPES.get(Path(name).suffix, "application/octet-stream"), send_body)

    def _not_found(self, send_body: bool) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", send_body)

    def _json(self, data: Any, status: HTTPStatus, send_body: bool) -> None:
        body = to_json(data).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", send_body)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, send_body: bool = True,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities (which JSON cannot hold) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def to_json(data: Any) -> str:
    return json.dumps(clean(data), ensure_ascii=False, allow_nan=False, default=str)


# -------------------------------------------------------------------- the API


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values and values[-1] != "" else None


def _number(query: dict[str, list[str]], key: str) -> float | None:
    value = _one(query, key)
    return None if value is None else float(value)


def _flag(query: dict[str, list[str]], key: str) -> bool | None:
    value = _one(query, key)
    if value is None:
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"{key} must be true or false")


def list_query(query: dict[str, list[str]]) -> ListQuery:
    return ListQuery(
        task=_one(query, "task"), failed=_flag(query, "failed"), flag=_one(query, "flag"),
        gap_min=_number(query, "gap_min"), gap_max=_number(query, "gap_max"), text=_one(query, "q"),
        offset=int(_one(query, "offset") or 0), limit=int(_one(query, "limit") or 50),
    )


def _conversation(view: RunView, query: dict[str, list[str]]) -> dict[str, Any]:
    conv_id = _one(query, "id")
    if conv_id is None:
        raise ValueError("id is required")
    return view.conversation(conv_id)


def _eval_seed(view: RunView, query: dict[str, list[str]]) -> dict[str, Any]:
    index = _one(query, "index")
    if index is None:
        raise ValueError("index is required")
    return view.eval_seed(int(index))


_API: dict[str, Callable[[RunView, dict[str, list[str]]], Any]] = {
    "/api/overview": lambda view, _query: view.overview(),
    "/api/conversations": lambda view, query: view.conversations(list_query(query)),
    "/api/conversation": _conversation,
    "/api/eval": lambda view, _query: view.eval_report(),
    "/api/eval/seed": _eval_seed,
}


def serve_in_thread(view: RunView, host: str = "127.0.0.1", port: int = 0) -> tuple[ViewServer, threading.Thread]:
    """Start a server on a background thread (tests; port 0 picks a free port)."""
    server = ViewServer(view, host, port)
    thread = threading.Thread(target=server.serve_forever, name="collabgen-view", daemon=True)
    thread.start()
    return server, thread

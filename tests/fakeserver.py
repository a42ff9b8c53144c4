"""A real local HTTP server that fakes OpenAI and Anthropic chat endpoints.

Used by the test suite so the *real* ``openai`` / ``anthropic`` SDK clients can be
pointed at it via ``base_url``.  Standard library only.

Endpoints
---------
* ``POST /v1/chat/completions`` -- OpenAI chat-completions wire format (non-streaming;
  ``"stream": true`` -> 400).  ``n`` choices supported; a strict
  ``response_format`` json_schema that OpenAI would refuse gets OpenAI's HTTP 400
  (``tests/openai_strict.py``), any other ``response_format`` is ignored.
* ``POST /v1/messages``         -- Anthropic Messages wire format (non-streaming).
* ``GET  /v1/models``           -- OpenAI-style list of the scripted model names.

Usage
-----
    with FakeLLMServer(scripts={"m": lambda c: f"hi #{c.choice_index}"}) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        aclient = anthropic.AsyncAnthropic(base_url=srv.anthropic_base_url, api_key="x")

Faults and what the REAL clients raise (verified in tests/test_fakeserver.py with
openai 3.54 / anthropic 2.12, both on httpx2; ``max_retries=0``):

=============  ==========================================  ==========================================
fault kind     openai.AsyncOpenAI                          anthropic.AsyncAnthropic
=============  ==========================================  ==========================================
"429"          openai.RateLimitError (APIStatusError)      anthropic.RateLimitError (APIStatusError)
               err.response.headers["retry-after"]         err.response.headers["retry-after"]
"500"          openai.InternalServerError                  anthropic.InternalServerError
"503"          openai.InternalServerError                  anthropic.ServiceUnavailableError
                                                           (subclass of InternalServerError)
"529"          openai.InternalServerError                  anthropic.OverloadedError
                                                           (subclass of InternalServerError)
"malformed"    json.JSONDecodeError  (NOT an openai.*      json.JSONDecodeError  (NOT an anthropic.*
               exception! raised by response.json() in     exception, same reason).  It is a
               the SDK's _response.py; subclass of         ValueError.  The SDK does not retry it.
               ValueError).  The SDK does not retry it.
"empty"        no exception; choices[i].message.content    no exception; content[0].text == ""
               == ""
"truncated"    no exception; finish_reason == "length",    no exception; stop_reason == "max_tokens",
               text cut to half                            text cut to half
"huge"         a valid 200 reply padded with ``huge_bytes`` of JSON whitespace (chunked, no
               Content-Length): for bounding reply size.  collabgen refuses it (ReplyTooLarge)
"drip"         a 200 reply sent ``drip_bytes`` at a time, one every ``drip_seconds``: each read
               beats a per-read timeout, so only a whole-request deadline stops it
"slow"         no exception (just slow) unless the client  same
               timeout is shorter -> openai.APITimeoutError
"timeout"      openai.APITimeoutError if the client        anthropic.APITimeoutError if the client
               timeout < slow_seconds; otherwise the       timeout < slow_seconds; otherwise
               dropped connection surfaces as              anthropic.APIConnectionError
               openai.APIConnectionError (APITimeoutError  (APITimeoutError is a subclass of
               is a subclass of APIConnectionError)        APIConnectionError)
unknown model  openai.NotFoundError (404)                  anthropic.NotFoundError (404)
echo_auth_401  openai.AuthenticationError (401), message   anthropic.AuthenticationError (401), message
               quotes the Authorization header, as some    quotes the x-api-key header
               servers echo the key they refuse
stream=true    openai.BadRequestError (400)                anthropic.BadRequestError (400)
=============  ==========================================  ==========================================

Note on retries: with ``max_retries > 0`` both SDKs retry 429, >=500 (incl. 529) and
connection errors / timeouts by themselves, honouring ``retry-after`` (small values).
They do NOT retry the "malformed" JSONDecodeError, nor "empty"/"truncated" replies.

Fault determinism: the decision for an attempt is drawn from
``random.Random(f"{seed}|{body_key}|{attempt_number}")`` (under the lock), i.e. it depends
only on the seed, the request body and how many times that exact body has been seen --
not on the interleaving of concurrent requests -- so runs are reproducible even with
concurrency.  ``max_consecutive`` caps consecutive faults per body key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.openai_strict import refusal as strict_refusal

__all__ = [
    "CallRecord",
    "FakeLLMServer",
    "Faults",
    "Reply",
    "Script",
    "ScriptCall",
    "canonical_key",
    "echo_script",
]


# --------------------------------------------------------------------------- data types


@dataclass
class ScriptCall:
    """What a script sees for one choice of one request."""

    model: str
    # OpenAI-style [{"role", "content"}]; for Anthropic the `system` field is prepended as a
    # {"role": "system"} message and content blocks are flattened to text (joined by "\n").
    messages: list[dict[str, str]]
    choice_index: int  # 0..n-1 (Anthropic always 0)
    seed: int | None  # OpenAI `seed`; Anthropic: int(metadata.user_id) if it parses, else None
    temperature: float | None
    body: dict  # raw JSON request body
    protocol: str  # "openai" | "anthropic"

    @property
    def last_user(self) -> str:
        """Content of the last user message ("" if none)."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return m.get("content", "")
        return ""

    @property
    def system(self) -> str | None:
        for m in self.messages:
            if m.get("role") == "system":
                return m.get("content", "")
        return None


@dataclass
class Reply:
    text: str
    finish_reason: str = "stop"  # "length" means truncated


Script = Callable[[ScriptCall], "str | Reply"]


def echo_script(call: ScriptCall) -> str:
    """Default-ish helper: deterministic echo of the last user message."""
    return f"[{call.model}#{call.choice_index}] {call.last_user}"


DEFAULT_FAULT_KINDS: tuple[str, ...] = ("429", "500", "malformed", "empty", "truncated")
ALL_FAULT_KINDS: frozenset[str] = frozenset(
    {"429", "500", "503", "529", "malformed", "empty", "truncated", "slow", "timeout", "huge", "drip"}
)


@dataclass
class Faults:
    rate: float = 0.0  # probability that an attempt gets a fault
    # also available: "slow", "timeout", "503", "529"
    kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    retry_after: float | str = 0.05  # seconds (or raw header text: "inf", "soon"); Retry-After on 429 and 503
    slow_seconds: float = 2.0  # "slow": sleep then answer; "timeout": sleep then drop connection
    max_consecutive: int = 3  # never fault the same body more than this many times in a row
    seed: int = 0
    huge_bytes: int = 8 << 20  # "huge": whitespace padding streamed after the reply's JSON
    drip_seconds: float = 2.0  # "drip": pause between pieces of the body
    drip_bytes: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - ALL_FAULT_KINDS
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("Faults.rate must be in [0, 1]")


def canonical_key(body: Any) -> str:
    """Stable sha256 of the canonical JSON form of a request body."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CallRecord:
    model: str
    protocol: str  # "openai" | "anthropic" | "" (unknown path)
    body: dict
    status: int  # 0 while in progress / when the connection was dropped before a status
    fault: str | None
    started: float  # time.monotonic() at arrival
    finished: float  # time.monotonic() when the reply was written (0.0 while in progress)
    path: str = ""
    _key: str | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = canonical_key(self.body)
        return self._key

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.fault is None

    @property
    def duration(self) -> float:
        return max(0.0, self.finished - self.started) if self.finished else 0.0


class _Stopped(Exception):
    """Raised inside a handler when the server is shutting down."""


# --------------------------------------------------------------------------- helpers


def _flatten_content(content: Any) -> str:
    """Flatten OpenAI content parts / Anthropic content blocks to plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    parts.append(block["text"])
                elif block.get("type") == "tool_result":
                    parts.append(_flatten_content(block.get("content")))
        return "\n".join(parts)
    return str(content)


def _words(text: str) -> int:
    return len(text.split())


def _as_reply(out: Any) -> Reply:
    if isinstance(out, Reply):
        return out
    if isinstance(out, str):
        return Reply(out)
    raise TypeError(f"script must return str or Reply, got {type(out).__name__}")


def _truncate_half(text: str) -> str:
    return text[: len(text) // 2]


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "max_tokens": "max_tokens",
                   "end_turn": "end_turn", "stop_sequence": "stop_sequence"}


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: many concurrent connections

    def __init__(self, addr: tuple[str, int], fake: FakeLLMServer) -> None:
        self.fake = fake
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "FakeLLM/1.0"
    sys_version = ""
    server: _HTTPServer

    # -- connection tracking so stop() can kill idle keep-alive connections promptly
    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.fake._register_conn(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._unregister_conn(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    # -- body
    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    # -- writing
    def send_json_bytes(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def send_chunked(self, status: int, payload: bytes, padding: int, headers: dict[str, str] | None = None) -> None:
        """`payload` then `padding` bytes of spaces (still valid JSON), chunked: the size is
        not announced, so only counting what arrives can bound it."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        block = b" " * (1 << 16)
        pieces = itertools.chain([payload], itertools.repeat(block, padding // len(block)), [b" " * (padding % len(block))])
        for piece in pieces:
            if piece:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def send_drip(self, status: int, payload: bytes, size: int, pause: float, stop: threading.Event,
                  headers: dict[str, str] | None = None) -> None:
        """Headers at once, then the body `size` bytes every `pause` seconds."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()
        for start in range(0, len(payload), size):
            self.wfile.write(payload[start:start + size])
            self.wfile.flush()
            if stop.wait(pause):
                self.drop()
                return

    def drop(self) -> None:
        """Close the connection without sending any response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --------------------------------------------------------------------------- the server


class FakeLLMServer:
    """Scripted, fault-injecting fake of the OpenAI and Anthropic chat APIs."""

    def __init__(
        self,
        scripts: dict[str, Script] | None = None,
        default: Script | None = None,
        faults: Faults | None = None,
        latency: float = 0.0,
        per_token_latency: float = 0.0,
        max_concurrency: int | None = None,
        rate_limit_headers: dict[str, str] | None = None,
        context_lengths: dict[str, int] | None = None,
        list_context_lengths: bool = True,
        echo_auth_401: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        # Like vLLM: a model's max_model_len is listed by GET /v1/models, and a request whose
        # prompt words plus max_tokens exceed it gets HTTP 400 with vLLM's message.
        self.context_lengths: dict[str, int] = dict(context_lengths or {})
        self.list_context_lengths = list_context_lengths  # False: a server that refuses but does not say
        # Refuse every chat request with a 401 whose message quotes the key header it got,
        # like servers that echo the key they refuse: for checking keys never leak.
        self.echo_auth_401 = echo_auth_401
        self.scripts: dict[str, Script] = dict(scripts or {})
        self.default: Script | None = default
        self._faults: Faults | None = faults
        self.latency = latency
        self.per_token_latency = per_token_latency
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self.rate_limit_headers: dict[str, str] = dict(rate_limit_headers or {})
        # Rewrites each reply's `usage` object (OpenAI or Anthropic shape) as a server would
        # misreport it; returning None leaves `usage` out of the reply.
        self.usage_transform: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None

        self.calls: list[CallRecord] = []
        self.max_in_flight = 0
        self.max_processing = 0
        self.in_flight = 0
        self.processing = 0
        self.total_connections = 0  # TCP connections accepted (keep-alive reuse => stays low)
        self._attempts: dict[str, int] = {}  # body key -> attempts seen
        self._consecutive: dict[str, int] = {}  # body key -> consecutive faults
        self._id_counter = itertools.count(1)

        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeLLMServer:
        if self._httpd is not None:
            return self
        self._stop.clear()
        self._httpd = _HTTPServer((self.host, 0), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
            name=f"FakeLLMServer:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is None:
            return
        self._stop.set()  # wakes sleeping handlers (they drop their connection)
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """For openai.AsyncOpenAI(base_url=...)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For anthropic.AsyncAnthropic(base_url=...)."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ configuration
    @property
    def faults(self) -> Faults | None:
        return self._faults

    @faults.setter
    def faults(self, value: Faults | None) -> None:
        with self._lock:
            self._faults = value
            self._consecutive.clear()

    def set_script(self, model: str, script: Script) -> None:
        with self._lock:
            self.scripts[model] = script

    def reset(self) -> None:
        """Clear recorded calls and all counters (scripts and faults are kept)."""
        with self._lock:
            self.calls.clear()
            self.max_in_flight = 0
            self.max_processing = 0
            self.total_connections = 0
            self._attempts.clear()
            self._consecutive.clear()

    # ------------------------------------------------------------------ inspection
    def ok_calls(self, model: str | None = None) -> list[CallRecord]:
        with self._lock:
            return [c for c in self.calls if c.ok and (model is None or c.model == model)]

    def calls_for(self, model: str) -> list[CallRecord]:
        with self._lock:
            return [c for c in self.calls if c.model == model]

    def faulted_calls(self) -> list[CallRecord]:
        with self._lock:
            return [c for c in self.calls if c.fault is not None]

    # ------------------------------------------------------------------ internals
    def _register_conn(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
            self.total_connections += 1

    def _unregister_conn(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stop.wait(seconds):
            raise _Stopped

    def _script_for(self, model: str) -> Script | None:
        with self._lock:
            return self.scripts.get(model, self.default)

    def _decide_fault(self, key: str) -> tuple[str | None, Faults | None]:
        with self._lock:
            faults = self._faults
            attempt = self._attempts.get(key, 0)
            self._attempts[key] = attempt + 1
            if faults is None or faults.rate <= 0 or not faults.kinds:
                self._consecutive.pop(key, None)
                return None, faults
            if self._consecutive.get(key, 0) >= faults.max_consecutive:
                self._consecutive[key] = 0
                return None, faults
            rng = random.Random(f"{faults.seed}|{key}|{attempt}")
            if rng.random() < faults.rate:
                self._consecutive[key] = self._consecutive.get(key, 0) + 1
                return rng.choice(list(faults.kinds)), faults
            self._consecutive[key] = 0
            return None, faults

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):06d}{uuid.uuid4().hex[:12]}"

    # error bodies ---------------------------------------------------------------
    @staticmethod
    def _error_body(protocol: str, status: int, message: str, param: str | None = None) -> bytes:
        if protocol == "anthropic":
            etype = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                     429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            return json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()
        etype, code = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }.get(status, ("server_error", None))
        return json.dumps(
            {"error": {"message": message, "type": etype, "param": param, "code": code}}
        ).encode()

    # the request pipeline -------------------------------------------------------
    def _handle(self, h: _Handler, method: str) -> None:
        started = time.monotonic()
        path = h.path.split("?", 1)[0].rstrip("/")
        try:
            raw = h._read_body() if method == "POST" else b""
        except (OSError, ValueError):
            h.close_connection = True
            return

        if method == "GET":
            if path in ("/v1/models", "/models"):
                with self._lock:
                    names = sorted(self.scripts)
                data = {"object": "list", "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "fake",
                     **({"max_model_len": self.context_lengths[n]}
                        if n in self.context_lengths and self.list_context_lengths else {})}
                    for n in names]}
                h.send_json_bytes(200, json.dumps(data).encode())
            else:
                h.send_json_bytes(404, self._error_body("openai", 404, f"no route {path}"))
            return

        if path in ("/v1/chat/completions", "/chat/completions"):
            protocol = "openai"
        elif path in ("/v1/messages", "/messages"):
            protocol = "anthropic"
        else:
            protocol = ""

        try:
            body = json.loads(raw.decode("utf-8")) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except (ValueError, UnicodeDecodeError):
            body = {"_raw": raw.decode("utf-8", "replace")}
            bad_json = True
        else:
            bad_json = False

        model = str(body.get("model", ""))
        rec = CallRecord(model=model, protocol=protocol, body=body, status=0, fault=None,
                         started=started, finished=0.0, path=path)
        with self._lock:
            self.calls.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        acquired = False
        try:
            if self._slots is not None:
                while not self._slots.acquire(timeout=0.05):
                    if self._stop.is_set():
                        raise _Stopped
                acquired = True
            with self._lock:
                self.processing += 1
                self.max_processing = max(self.max_processing, self.processing)
            try:
                self._process(h, rec, protocol, body, bad_json)
            finally:
                with self._lock:
                    self.processing -= 1
        except _Stopped:
            rec.finished = time.monotonic()
            h.drop()
        except (ConnectionError, OSError):
            rec.finished = rec.finished or time.monotonic()
            h.close_connection = True
        finally:
            if acquired:
                self._slots.release()  # type: ignore[union-attr]
            with self._lock:
                self.in_flight -= 1

    def _respond(self, h: _Handler, rec: CallRecord, status: int, payload: bytes,
                 headers: dict[str, str] | None = None) -> None:
        rec.status = status
        rec.finished = time.monotonic()
        h.send_json_bytes(status, payload, headers)

    def _process(self, h: _Handler, rec: CallRecord, protocol: str, body: dict, bad_json: bool) -> None:
        proto_for_err = protocol or "openai"
        if not protocol:
            self._sleep(self.latency)
            self._respond(h, rec, 404, self._error_body("openai", 404, f"no route {rec.path}"))
            return
        if bad_json:
            self._respond(h, rec, 400, self._error_body(proto_for_err, 400, "request body is not valid JSON"))
            return
        if self.echo_auth_401:
            sent = h.headers.get("Authorization") or h.headers.get("x-api-key") or "(none)"
            self._sleep(self.latency)
            self._respond(h, rec, 401, self._error_body(
                protocol, 401, f"Incorrect API key provided: {sent}. Check the key and try again."))
            return
        if body.get("stream"):
            self._respond(h, rec, 400, self._error_body(
                proto_for_err, 400, "stream=true is not supported by FakeLLMServer"))
            return
        model = rec.model
        script = self._script_for(model)
        if script is None:
            msg = (f"The model `{model}` does not exist or you do not have access to it."
                   if protocol == "openai" else f"model: {model}")
            self._sleep(self.latency)
            self._respond(h, rec, 404, self._error_body(protocol, 404, msg))
            return
        if protocol == "anthropic" and not isinstance(body.get("messages"), list):
            self._respond(h, rec, 400, self._error_body(protocol, 400, "messages: field required"))
            return
        refused = strict_refusal(body) if protocol == "openai" else None
        if refused is not None:  # OpenAI refuses a strict schema outside its subset (tests/openai_strict.py)
            self._respond(h, rec, 400, self._error_body(protocol, 400, refused, param="response_format"))
            return

        limit = self.context_lengths.get(model)
        if limit is not None:
            asked = sum(_words(m["content"]) for m in self._script_messages(protocol, body)) + int(
                body.get("max_tokens") or 0)
            if asked > limit:
                message = (f"This model's maximum context length is {limit} tokens. However, you requested "
                           f"{asked} tokens in the messages. Please reduce the length of the messages.")
                self._respond(h, rec, 400, self._error_body(protocol, 400, message))
                return

        fault, faults = self._decide_fault(rec.key)
        rec.fault = fault
        retry_after = (faults.retry_after if isinstance(faults.retry_after, str) else f"{faults.retry_after:g}") \
            if faults else "0.05"

        # pure error faults: no script call
        if fault in ("429", "500", "503", "529"):
            self._sleep(self.latency)
            status = int(fault)
            headers = {"Retry-After": retry_after} if status in (429, 503) else {}
            msgs = {429: "Rate limit reached (injected fault)", 500: "Internal server error (injected fault)",
                    503: "Service unavailable (injected fault)", 529: "Overloaded (injected fault)"}
            self._respond(h, rec, status, self._error_body(protocol, status, msgs[status]), headers)
            return
        if fault == "timeout":
            self._sleep(faults.slow_seconds if faults else 2.0)
            rec.finished = time.monotonic()
            h.drop()
            return
        if fault == "slow":
            self._sleep(faults.slow_seconds if faults else 2.0)

        # build replies
        messages = self._script_messages(protocol, body)
        n = 1
        if protocol == "openai":
            try:
                n = max(1, int(body.get("n") or 1))
            except (TypeError, ValueError):
                n = 1
        seed = self._seed(protocol, body)
        temp = body.get("temperature")
        temperature = float(temp) if isinstance(temp, (int, float)) else None

        replies: list[Reply] = []
        if fault == "empty":
            replies = [Reply("", "stop") for _ in range(n)]
        else:
            try:
                for i in range(n):
                    call = ScriptCall(model=rec.model, messages=[dict(m) for m in messages],
                                      choice_index=i, seed=seed, temperature=temperature,
                                      body=body, protocol=protocol)
                    replies.append(_as_reply(script(call)))
            except Exception as exc:  # script bug -> 500 so the test sees something sensible
                self._respond(h, rec, 500, self._error_body(
                    protocol, 500, f"script raised {type(exc).__name__}: {exc}"))
                return
            if fault == "truncated":
                replies = [Reply(_truncate_half(r.text), "length") for r in replies]

        prompt_tokens = sum(_words(m.get("content", "")) for m in messages)
        completion_tokens = sum(_words(r.text) for r in replies)
        self._sleep(self.latency + self.per_token_latency * completion_tokens)

        if protocol == "openai":
            doc = {
                "id": self._new_id("chatcmpl-fake"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": rec.model,
                "choices": [
                    {"index": i,
                     "message": {"role": "assistant", "content": r.text, "refusal": None},
                     "logprobs": None,
                     "finish_reason": r.finish_reason}
                    for i, r in enumerate(replies)
                ],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
                "system_fingerprint": "fp_fake",
            }
        else:
            r = replies[0]
            doc = {
                "id": self._new_id("msg_fake"),
                "type": "message",
                "role": "assistant",
                "model": rec.model,
                "content": [{"type": "text", "text": r.text}],
                "stop_reason": _ANTHROPIC_STOP.get(r.finish_reason, r.finish_reason),
                "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
            }
        if self.usage_transform is not None:
            usage = self.usage_transform(dict(doc["usage"]))
            if usage is None:
                del doc["usage"]
            else:
                doc["usage"] = usage
        payload = json.dumps(doc).encode("utf-8")
        if fault == "malformed":
            payload = payload[: max(1, len(payload) // 2)]  # truncated JSON document
        headers = dict(self.rate_limit_headers)
        headers.setdefault("x-request-id", doc["id"])
        if fault == "huge":
            rec.status, rec.finished = 200, time.monotonic()
            h.send_chunked(200, payload, padding=faults.huge_bytes if faults else 8 << 20, headers=headers)
            return
        if fault == "drip":
            rec.status = 200
            h.send_drip(200, payload, faults.drip_bytes if faults else 1, faults.drip_seconds if faults else 2.0,
                        self._stop, headers)
            rec.finished = time.monotonic()
            return
        self._respond(h, rec, 200, payload, headers)

    @staticmethod
    def _script_messages(protocol: str, body: dict) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if protocol == "anthropic" and body.get("system") is not None:
            out.append({"role": "system", "content": _flatten_content(body["system"])})
        for m in body.get("messages") or []:
            if not isinstance(m, dict):
                continue
            out.append({"role": str(m.get("role", "")), "content": _flatten_content(m.get("content"))})
        return out

    @staticmethod
    def _seed(protocol: str, body: dict) -> int | None:
        if protocol == "openai":
            s = body.get("seed")
            return s if isinstance(s, int) and not isinstance(s, bool) else None
        meta = body.get("metadata")
        if isinstance(meta, dict) and meta.get("user_id") is not None:
            try:
                return int(str(meta["user_id"]).strip())
            except ValueError:
                return None
        return None

"""The benchmark's model server: tests.fakeserver with the scripted math roles, in its own process.

Run apart from the engine so the server's threads never hold the engine's GIL:

    python -m bench.server --latency 0.05 --max-concurrency 32

prints one line `PORT <port>` once it listens, then serves until SIGTERM/SIGINT. Two extra
GET routes serve the benchmark:

- `/bench/calls`: the call log as JSON: per call `[model, status, n, started, slot, finished,
  body]` (monotonic seconds: `started` when the request's headers were parsed, `body` when
  its body had been read, `slot` when it got one of the K processing slots, so `slot - body`
  is its wait in the server's queue) plus the server's own CPU seconds.
- `/bench/reset`: forget the call log (scripts and latency stay).
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import threading
import time

from tests.fakeserver import FakeLLMServer
from tests.scripts import install_math


class BenchServer(FakeLLMServer):
    """FakeLLMServer that also notes when each call took its processing slot."""

    def _process(self, h, rec, protocol, body, bad_json):
        rec.slot = time.monotonic()  # type: ignore[attr-defined]
        rec.body_at = getattr(h, "bench_body_at", rec.started)  # type: ignore[attr-defined]
        super()._process(h, rec, protocol, body, bad_json)

    def _handle(self, h, method: str) -> None:
        read_body = h._read_body

        def timed_read_body() -> bytes:  # when the client had sent the whole request
            body = read_body()
            h.bench_body_at = time.monotonic()
            return body

        h._read_body = timed_read_body
        path = h.path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == "/bench/calls":
            with self._lock:
                calls = [
                    [c.model, c.status, _n(c.body), c.started, getattr(c, "slot", c.started), c.finished,
                     getattr(c, "body_at", c.started)]
                    for c in self.calls
                ]
            usage = resource.getrusage(resource.RUSAGE_SELF)
            doc = {"calls": calls, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                   "max_processing": self.max_processing, "max_in_flight": self.max_in_flight,
                   "latency": self.latency, "per_token_latency": self.per_token_latency,
                   "max_concurrency": self.max_concurrency}
            h.send_json_bytes(200, json.dumps(doc).encode())
            return
        if method == "GET" and path == "/bench/reset":
            self.reset()
            h.send_json_bytes(200, b"{}")
            return
        super()._handle(h, method)


def _n(body: dict) -> int:
    try:
        return max(1, int(body.get("n") or 1))
    except (TypeError, ValueError):
        return 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per call (L)")
    parser.add_argument("--per-token-latency", type=float, default=0.0, help="extra seconds per completion token")
    parser.add_argument("--max-concurrency", type=int, default=32, help="processing slots (K); the rest queue")
    args = parser.parse_args(argv)
    server = BenchServer(latency=args.latency, per_token_latency=args.per_token_latency,
                         max_concurrency=args.max_concurrency)
    install_math(server)
    server.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"PORT {server.port}", flush=True)
    while not done.wait(0.2):
        pass
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()

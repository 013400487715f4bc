"""A webhook receiver on 127.0.0.1 for the tests: it keeps every request it
gets, and answers each path with the statuses it was told, in turn."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self):
        self.received: list[Received] = []
        self.answers: dict[str, list[int]] = {}  # path → statuses still to give (then 204)
        self.extra_headers: dict[str, dict[str, str]] = {}
        self.delays: dict[str, float] = {}  # path → seconds to wait before answering
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                    queued = receiver.answers.get(self.path) or []
                    status = queued.pop(0) if queued else 204
                    delay = receiver.delays.get(self.path, 0)
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                for name, value in receiver.extra_headers.get(self.path, {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A real HTTP server on 127.0.0.1 that serves model files the tests make, with scripted failures."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer: a status, a body, and optionally a lie about the body's length."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    send_bytes: int | None = None  # send only this many bytes of the body (a truncated transfer)
    content_length: int | None = None  # announce this length instead of the body's
    pause_s: float = 0.0  # a slow server: pause this long halfway through the body


class ModelServer:
    """Serves scripted replies per path; the last reply for a path repeats. Counts every request."""

    def __init__(self) -> None:
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.model_server = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="model-server", daemon=True
        )

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def serve(self, path: str, *replies: Reply) -> str:
        """Script the replies for `path` and return its URL."""
        with self._lock:
            self._routes[path] = list(replies)
        return f"http://127.0.0.1:{self._httpd.server_port}{path}"

    def next_reply(self, path: str) -> Reply:
        with self._lock:
            self.hits[path] += 1
            replies = self._routes.get(path)
            if not replies:
                return Reply(b"not found", status=404, content_type="text/plain")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        reply = self.server.model_server.next_reply(self.path)  # type: ignore[attr-defined]
        body = reply.body if reply.send_bytes is None else reply.body[: reply.send_bytes]
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        length = reply.content_length if reply.content_length is not None else len(reply.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        half = len(body) // 2
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client may give up early
            self.wfile.write(body[:half])
            self.wfile.flush()
            time.sleep(reply.pause_s)
            self.wfile.write(body[half:])
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

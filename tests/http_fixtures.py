"""A loopback HTTP server for tests that fetch: files with Range support, counted bytes.

It serves a dict of path -> bytes (or a callable producing a response) and
records every request and every body byte it sends, so a test can assert how
much a client transferred rather than trust it.
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow server)
    stall_after: int | None = None  # send this many body bytes, then stop sending (a hung transfer)


@dataclass
class ServerLog:
    requests: list = field(default_factory=list)  # (method, path, range header or None)
    body_bytes: int = 0
    inflight: int = 0
    max_inflight: int = 0  # most requests being answered at once
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path_prefix: str = "") -> int:
        return sum(1 for _m, p, _r in self.requests if p.startswith(path_prefix))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._counted(head=True)

    def do_GET(self) -> None:
        self._counted(head=False)

    def _counted(self, head: bool) -> None:
        log = self.server.log
        with log.lock:
            log.inflight += 1
            log.max_inflight = max(log.max_inflight, log.inflight)
        try:
            self._answer(head)
        finally:
            with log.lock:
                log.inflight -= 1

    def _answer(self, head: bool) -> None:
        server = self.server
        with server.log.lock:
            server.log.requests.append((self.command, self.path, self.headers.get("Range")))
        routes = server.routes
        route = routes(self.path) if callable(routes) else routes.get(self.path.split("?")[0])
        if callable(route):
            route = route(self.path)
        if route is None:
            route = Response(404, b"not found")
        if isinstance(route, bytes):
            route = Response(200, route)
        if route.delay:
            time.sleep(route.delay)
        body, status = route.body, route.status
        headers = dict(route.headers)
        range_header = self.headers.get("Range")
        if status == 200 and server.ranges:
            headers["Accept-Ranges"] = "bytes"
            match = _RANGE.match(range_header or "")
            if match:
                size = len(body)
                first, last = match.groups()
                if first == "":  # suffix range: the last N bytes
                    start, end = max(0, size - int(last)), size - 1
                else:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                if start >= size or size == 0:
                    status, body = 416, b""
                    headers["Content-Range"] = f"bytes */{size}"
                else:
                    status, body = 206, body[start:end + 1]
                    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        headers.setdefault("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        to_send = body if route.stall_after is None else body[:route.stall_after]
        # counted before sending: the client may have its bytes (and the test read the
        # count) before this thread runs again
        with server.log.lock:
            server.log.body_bytes += len(to_send)
        try:
            self.wfile.write(to_send)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if route.stall_after is not None:
            time.sleep(server.stall_seconds)
            self.close_connection = True


@contextmanager
def serve(routes, *, ranges: bool = True, stall_seconds: float = 5.0) -> Iterator[tuple[str, ServerLog]]:
    """Serve ``routes`` (path -> bytes | Response | callable(path)) on 127.0.0.1; yields (base URL, log)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.routes = routes
    server.ranges = ranges
    server.stall_seconds = stall_seconds
    server.log = ServerLog()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.log
    finally:
        server.shutdown()
        server.server_close()

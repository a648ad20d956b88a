"""A real HTTP server with Range support for the remote tests and benchmarks, on 127.0.0.1 only, with
switches that make it slow or hostile: latency, truncation, lying lengths, ignored ranges, redirect loops."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Behaviour:
    """What the server does; tests flip these between requests."""

    latency: float = 0.0  # seconds slept before answering each request
    ignore_ranges: bool = False  # answer a Range request with 200 and the whole file
    truncate: int | None = None  # send at most this many body bytes, then close (lengths still claim all)
    extra_length: int = 0  # add this to every Content-Length and to the size HEAD reports
    redirect_loop: bool = False  # every request redirects to itself (with a counter)
    status: int | None = None  # answer every request with this status (403, 404, 500)
    list_folders: bool = False  # a folder answers 200 with an HTML listing, ignoring Range (as http.server does)
    flaky: int = 0  # answer the first `flaky` of each distinct request (method, path, range) with `flaky_status`
    flaky_status: int = 503
    retry_after: str | None = None  # sent with the flaky answers (429/503 with Retry-After)
    flaky_seen: dict[str, int] = field(default_factory=dict)
    etag: bool = False  # send a strong ETag, the MD5 of the file (as S3 does for a single-part upload)


@dataclass
class Log:
    """What the server saw: requests, bytes sent, and how many were in flight at once."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header)
    bytes_sent: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_sent = self.in_flight = self.max_in_flight = 0


class RangeServer:
    """Serves files under `root` at http://127.0.0.1:PORT/<relative path>."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.behaviour = Behaviour()
        self.log = Log()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                b, log = server.behaviour, server.log
                with log.lock:
                    log.requests.append((self.command, self.path, self.headers.get("Range", "")))
                    log.in_flight += 1
                    log.max_in_flight = max(log.max_in_flight, log.in_flight)
                try:
                    if b.latency:
                        time.sleep(b.latency)
                finally:  # in flight until its answer starts: the client may send its next request once it has
                    with log.lock:  # the body, before this handler returns
                        log.in_flight -= 1
                self._answer(body, b)

            def _answer(self, body: bool, b: Behaviour) -> None:
                if b.redirect_loop:
                    self.send_response(302)
                    self.send_header("Location", self.path.split("?")[0] + f"?n={len(server.log.requests)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path = os.path.join(server.root, self.path.split("?")[0].lstrip("/"))
                if b.list_folders and os.path.isdir(path):
                    self._listing(body, path)
                    return
                with server.log.lock:
                    key = f"{self.command} {self.path} {self.headers.get('Range', '')}"  # each distinct request
                    seen = b.flaky_seen[key] = b.flaky_seen.get(key, 0) + 1
                if seen <= b.flaky:
                    self.send_response(b.flaky_status)
                    if b.retry_after is not None:
                        self.send_header("Retry-After", b.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if b.status is not None or not os.path.isfile(path):
                    self.send_response(b.status or 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = os.path.getsize(path)
                start, end = 0, size
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if m and not b.ignore_ranges:
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size + b.extra_length}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                if b.etag:
                    with open(path, "rb") as f:
                        self.send_header("ETag", '"' + hashlib.md5(f.read()).hexdigest() + '"')  # noqa: S324
                self.send_header("Content-Length", str(end - start + b.extra_length))
                self.end_headers()
                if not body:
                    return
                todo = end - start if b.truncate is None else min(end - start, b.truncate)
                try:
                    with open(path, "rb") as f:
                        f.seek(start)
                        while todo > 0:
                            chunk = f.read(min(todo, 1 << 20))
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            todo -= len(chunk)
                            with server.log.lock:
                                server.log.bytes_sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what a careful client does with an unwanted body
                if b.truncate is not None or b.extra_length:
                    self.close_connection = True

            def _listing(self, body: bool, path: str) -> None:
                page = "".join(f'<a href="{n}">{n}</a><br>' for n in sorted(os.listdir(path))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                if body:
                    self.wfile.write(page)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


GIB = 1 << 30


def sparse_safetensors(path: Path, tensors: int = 4) -> None:
    """A 1 GiB safetensors file that costs a few KiB of disk: a real header over a sparse data section."""
    each = GIB // tensors
    header = {f"layer{i}.weight": {"dtype": "F32", "shape": [each // 4], "data_offsets": [i * each, (i + 1) * each]}
              for i in range(tensors)}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + tensors * each)

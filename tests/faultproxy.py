"""An HTTP proxy of the tests' own on 127.0.0.1 that behaves as a busy network and a fronting
proxy do, in front of a registry (tests/registrykit.py), on a seeded schedule.

Each request draws its fault from a generator seeded by the seed and what the request is (its
method, its path with an upload's id left out, its Content-Range and length) and how often that
was asked before: a schedule is the seed's whatever order parallel uploads take. The faults,
each with its probability in ``Faults``:

- ``502`` after reading the request (an upstream that failed), ``503`` (overloaded);
- ``429`` with ``Retry-After`` in seconds, or as an HTTP date;
- ``cut``: an upload's body is cut part-way: the proxy reads some of it and closes the
  connection; nothing reaches the registry (the proxy buffers bodies, as nginx does). Its
  chance grows with the body, as a drop per byte sent would: ``pcut`` for a body of
  ``body_cap`` bytes;
- ``stall``: the request waits ``stall`` seconds before it is forwarded (at most
  ``max_stalls`` of them, to keep the tests short);
- any body over ``body_cap`` bytes gets 413, as Cloudflare's cap and nginx's
  ``client_max_body_size`` do: at once when the client sent ``Expect: 100-continue`` (no byte
  of the body is sent), else after reading the body.

A 429, 503 or 413 is answered before the body when the client waits for 100 Continue; a
request that passes gets 100 Continue from the proxy. Every byte of request bodies the proxy
receives is counted (``received``), and every fault injected (``injected``).
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import http.client
import random
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

HOP_HEADERS = {"connection", "keep-alive", "expect", "transfer-encoding", "proxy-connection"}


@dataclass(frozen=True)
class Faults:
    seed: int
    p502: float = 0.06
    p503: float = 0.06
    p429: float = 0.08  # half in seconds, half as a date
    pcut: float = 0.12  # of a body of body_cap bytes; less for a smaller one
    pstall: float = 0.04
    max_stalls: int = 2
    stall: float = 3.0
    body_cap: int = 1 << 20
    methods: tuple[str, ...] = ()  # only requests of these methods draw faults (none: all)


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        faults: Faults,
        before_forward: Callable[[str, str], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.faults = faults
        self.before_forward = before_forward
        self.seen: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.received = 0  # bytes of request bodies read from clients
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.stalls = 0
        self.log: list[tuple[str, str, int, str]] = []  # method, path, body length, fault

    def count(self, n: int) -> None:
        with self.lock:
            self.received += n

    def draw(self, method: str, target: str, content_range: str, length: int) -> str:
        f = self.faults
        path = re.sub(r"/uploads/[^/?]+", "/uploads/ID", target.partition("?")[0])
        key = f"{f.seed} {method} {path} {content_range} {length}"
        with self.lock:
            self.requests += 1
            if (f.methods and method not in f.methods) or length > f.body_cap:
                return ""  # (a body over the cap gets its 413)
            self.seen[key] += 1
            rng = random.Random(f"{key} {self.seen[key]}")
            roll = rng.random()
            fault = ""
            cut = f.pcut * min(1.0, length / f.body_cap)
            for name, p in (("502", f.p502), ("503", f.p503), ("429", f.p429), ("cut", cut),
                            ("stall", f.pstall)):  # fmt: skip
                if roll < p:
                    fault = name
                    break
                roll -= p
            if fault == "429":
                fault = "429s" if rng.random() < 0.5 else "429d"
            if fault == "cut":
                fault = f"cut:{rng.randrange(1, length)}" if length > 1 else ""
            if fault == "stall":
                if self.stalls >= f.max_stalls:
                    fault = ""
                else:
                    self.stalls += 1
            if fault:
                self.injected[fault.partition(":")[0]] += 1
            return fault

    def note(self, method: str, target: str, length: int, fault: str) -> None:
        with self.lock:
            self.log.append((method, target.partition("?")[0], length, fault))


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        proxy = self.server.proxy
        self.connection.settimeout(60)
        while True:
            try:
                if not self._one(proxy):
                    return
            except (OSError, ValueError, http.client.HTTPException):
                return

    def _one(self, proxy: FaultProxy) -> bool:
        """One request; False when the connection is to close."""
        if self.rfile.peek(1)[:1] == b"\x16":  # a TLS handshake: plain HTTP here, as Go says
            self._answer(400, b"Client sent an HTTP request to an HTTPS server.\n", close=True)
            return False
        line = self.rfile.readline(65537)
        if not line:
            return False
        try:
            method, target, _version = line.decode("latin-1").split()
        except ValueError:
            self._answer(400, b"not HTTP\n", close=True)
            return False
        headers = http.client.parse_headers(self.rfile)
        if headers.get("Transfer-Encoding"):
            self._answer(501, b"chunked bodies are not taken here\n", close=True)
            return False
        length = int(headers.get("Content-Length") or 0)
        expect = (headers.get("Expect") or "").lower() == "100-continue"
        fault = proxy.draw(method, target, headers.get("Content-Range") or "", length)
        too_large = length > proxy.faults.body_cap
        proxy.note(method, target, length, "413" if too_large else fault)
        if too_large:
            with proxy.lock:
                proxy.injected["413"] += 1
            if not expect:
                self._drain(proxy, length)
            self._answer(413, b"<html>413 Request Entity Too Large</html>\n", close=True)
            return False
        if expect and fault in ("429s", "429d", "503"):
            self._fault(fault, close=True)
            return False
        if expect:
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        if fault.startswith("cut:"):
            self._drain(proxy, int(fault[4:]))
            self.connection.shutdown(socket.SHUT_RDWR)
            return False
        body = self._drain(proxy, length)
        if fault in ("502", "503", "429s", "429d"):
            self._fault(fault)
            return True
        if fault == "stall":
            time.sleep(proxy.faults.stall)
        if proxy.before_forward is not None:
            proxy.before_forward(method, target)
        status, reason, answer_headers, data = _forward(
            proxy.upstream,
            method,
            target,
            headers,
            body if length or method in ("PUT", "POST", "PATCH") else None,
        )
        self._write(status, reason, answer_headers, data, method == "HEAD")
        return (headers.get("Connection") or "").lower() != "close"

    def _drain(self, proxy: FaultProxy, length: int) -> bytes:
        parts = []
        left = length
        while left > 0:
            data = self.rfile.read1(min(left, 1 << 16)) if hasattr(self.rfile, "read1") else b""
            if not data:
                raise ConnectionResetError("the client closed in the middle of a body")
            proxy.count(len(data))
            parts.append(data)
            left -= len(data)
        return b"".join(parts)

    def _fault(self, fault: str, close: bool = False) -> None:
        if fault == "502":
            self._answer(502, b"<html>502 Bad Gateway</html>\n", close=close)
        elif fault == "503":
            self._answer(503, b"<html>503 Service Unavailable</html>\n", close=close)
        else:
            after = "1" if fault == "429s" else email.utils.formatdate(time.time() + 2, usegmt=True)
            self._answer(429, b"slow down\n", close=close, extra=[("Retry-After", after)])

    def _answer(
        self, status: int, body: bytes, close: bool = False,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:  # fmt: skip
        headers = [("Content-Type", "text/html"), *(extra or [])]
        if close:
            headers.append(("Connection", "close"))
        self._write(status, http.client.responses.get(status, ""), headers, body, False)

    def _write(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, head: bool
    ) -> None:
        out = [f"HTTP/1.1 {status} {reason}\r\n"]
        length = None
        for name, value in headers:
            if name.lower() == "content-length":
                length = value
                continue
            if name.lower() not in HOP_HEADERS or name.lower() == "connection":
                out.append(f"{name}: {value}\r\n")
        out.append(f"Content-Length: {length if head and length else len(body)}\r\n\r\n")
        self.wfile.write("".join(out).encode("latin-1") + (b"" if head else body))
        self.wfile.flush()


def _forward(
    upstream: str, method: str, target: str, headers: http.client.HTTPMessage, body: bytes | None
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    sent = {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}
    connection = http.client.HTTPConnection(upstream, timeout=60)
    try:
        connection.request(method, target, body=body, headers=sent)
        answer = connection.getresponse()
        data = answer.read()
        return answer.status, answer.reason, answer.getheaders(), data
    finally:
        connection.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy


@contextlib.contextmanager
def running_proxy(
    upstream: str, faults: Faults, before_forward: Callable[[str, str], None] | None = None
) -> Iterator[tuple[str, FaultProxy]]:
    """A FaultProxy in front of UPSTREAM (``127.0.0.1:PORT``, plain HTTP) until the block
    ends: its ``127.0.0.1:PORT``, and the proxy (counts)."""
    proxy = FaultProxy(upstream, faults, before_forward)
    server = _Server(proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

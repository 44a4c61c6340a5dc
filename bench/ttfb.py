"""Time to first streamed byte and first token, measured on one keep-alive connection.

A plain blocking socket and a small HTTP/1.1 response reader keep the probe's own cost to a
few microseconds. For each request it records, from the moment the request is written:

- `ttfb`: the first byte of the response body (the stream's first event);
- `ttft`: the first content token (`FIRST_TOKEN_MARKER` seen in the body);
- `total`: the end of the response.

Requests run one after another, so these are unloaded latencies.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Final

RECV_SIZE: Final = 65536
CONNECT_TIMEOUT_S: Final = 5.0
READ_TIMEOUT_S: Final = 10.0


class ProbeError(Exception):
    """The target answered something other than a complete 2xx HTTP/1.1 response."""


@dataclass
class Sample:
    """One request's timings in nanoseconds, from the request write."""

    ttfb_ns: int
    ttft_ns: int
    total_ns: int


@dataclass
class ProbeResult:
    """Percentiles (microseconds) over a probe run."""

    samples: list[Sample] = field(default_factory=list)

    @staticmethod
    def _pct(values: list[int], q: float) -> float:
        ordered = sorted(values)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index] / 1000

    def summary(self) -> dict[str, float | int]:
        ttfb = [s.ttfb_ns for s in self.samples]
        ttft = [s.ttft_ns for s in self.samples]
        total = [s.total_ns for s in self.samples]
        return {
            "count": len(self.samples),
            "ttfb_p50_us": self._pct(ttfb, 50),
            "ttfb_p99_us": self._pct(ttfb, 99),
            "ttft_p50_us": self._pct(ttft, 50),
            "ttft_p99_us": self._pct(ttft, 99),
            "ttft_mean_us": statistics.fmean(ttft) / 1000 if ttft else 0.0,
            "total_p50_us": self._pct(total, 50),
            "total_p99_us": self._pct(total, 99),
        }


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.buffer = b""

    def open(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(READ_TIMEOUT_S)
            self.sock = sock
            self.buffer = b""
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def recv(self) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise ProbeError("connection closed mid-response")
        return data


def _request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder (no trailers expected)."""

    SIZE, DATA, DATA_CRLF, LAST_CRLF, DONE = range(5)

    def __init__(self) -> None:
        self.state = self.SIZE
        self.left = 0
        self.buf = b""

    def feed(self, data: bytes) -> bytes:
        """Consume `data`; return the body bytes it completed."""
        self.buf += data
        out: list[bytes] = []
        while self.state != self.DONE:
            if self.state == self.SIZE:
                line, sep, rest = self.buf.partition(b"\r\n")
                if not sep:
                    break
                self.left = int(line.split(b";")[0], 16)
                self.buf = rest
                self.state = self.DATA if self.left else self.LAST_CRLF
            elif self.state == self.DATA:
                if not self.buf:
                    break
                take = self.buf[: self.left]
                out.append(take)
                self.left -= len(take)
                self.buf = self.buf[len(take) :]
                if not self.left:
                    self.state = self.DATA_CRLF
            else:
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]
                self.state = self.SIZE if self.state == self.DATA_CRLF else self.DONE
        return b"".join(out)

    @property
    def done(self) -> bool:
        return self.state == self.DONE


def _one(conn: _Connection, request: bytes, marker: bytes) -> Sample:
    sock = conn.open()
    start = time.perf_counter_ns()
    sock.sendall(request)
    buf = conn.buffer
    while b"\r\n\r\n" not in buf:
        buf += conn.recv()
    head, _, pending = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    status = int(status_line.split()[1])
    fields = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    chunked = fields.get(b"transfer-encoding", b"").lower() == b"chunked"
    length = int(fields[b"content-length"]) if b"content-length" in fields else None
    if not chunked and length is None:
        raise ProbeError(f"status {status}: neither Content-Length nor chunked encoding")
    keep_alive = fields.get(b"connection", b"").lower() != b"close"

    decoder = _ChunkedDecoder() if chunked else None
    ttfb = ttft = 0
    body = b""
    now = time.perf_counter_ns()
    while True:
        if pending:
            ttfb = ttfb or now
            if decoder is not None:
                body += decoder.feed(pending)
                done = decoder.done
                conn.buffer = decoder.buf if done else b""
            else:
                assert length is not None
                need = length - len(body)
                body += pending[:need]
                conn.buffer = pending[need:]
                done = len(body) >= length
            if not ttft and marker in body:
                ttft = now
            if done:
                break
        pending = conn.recv()
        now = time.perf_counter_ns()
    end = time.perf_counter_ns()
    if not keep_alive:
        conn.close()
    if not 200 <= status < 300:
        raise ProbeError(f"status {status}: {body[:300]!r}")
    if not ttft:
        raise ProbeError(f"first-token marker {marker!r} not in body: {body[:300]!r}")
    return Sample(ttfb_ns=ttfb - start, ttft_ns=ttft - start, total_ns=end - start)


def probe(
    url_host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    marker: bytes,
    count: int,
    warmup: int,
    max_seconds: float = 30.0,
) -> ProbeResult:
    """Send `warmup + count` sequential requests and time the measured ones."""
    conn = _Connection(url_host, port)
    request = _request_bytes(url_host, port, path, body, headers or {})
    result = ProbeResult()
    deadline = time.monotonic() + max_seconds
    try:
        for i in range(warmup + count):
            sample = _one(conn, request, marker)
            if i >= warmup:
                result.samples.append(sample)
            if time.monotonic() > deadline:
                break
    finally:
        conn.close()
    return result

"""A lean HTTP/1.1 keep-alive load generator (the fallback when `wrk` is not installed).

`python bench/loadgen.py --url http://127.0.0.1:8000/v1/responses --body '{...}' -c 64 -d 10`

Each of the `-c` connections sends one POST, waits for the whole answer (Content-Length framing
only, which is what uvicorn sends for a JSON response), and sends the next, until `-d` seconds
have passed. Latencies are kept in memory and the result is printed as one JSON line prefixed
with `BENCH_JSON`, in the same shape as `bench/wrk_post.lua` prints, so that
`bench/bench_gateway.py` reads either. Loopback targets only: the URL must name 127.0.0.1,
localhost or ::1.

It costs 1 to 2.5 times the CPU per request of `wrk` (measured: 10-25 us against wrk's 6-11 us;
one Python event loop, uvloop when it is installed), so on a small machine prefer `wrk`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class _Conn(asyncio.Protocol):
    def __init__(self, request: bytes, stats: _Stats) -> None:
        self.request = request
        self.stats = stats
        self.buf = bytearray()
        self.need = -1  # total bytes of the current answer, once its head is parsed
        self.status_ok = True
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        if time.monotonic() >= self.stats.deadline:
            self.transport.close()  # type: ignore[union-attr]
            return
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.stats.bytes += len(data)
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.status_ok = head[9:10] == b"2"
                start = head.find(b"content-length:")
                if start < 0:
                    self.stats.errors_read += 1
                    self.transport.close()  # type: ignore[union-attr]
                    return
                stop = head.find(b"\r\n", start)
                length = int(head[start + 15 : stop if stop > 0 else None])
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = -1
            self.stats.latencies.append(time.perf_counter_ns() - self.sent_at)
            if not self.status_ok:
                self.stats.errors_status += 1
            self._send()
            if not self.buf:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.stats.errors_read += 1
        if not self.closed.done():
            self.closed.set_result(None)


class _Stats:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.latencies: list[int] = []
        self.bytes = 0
        self.errors_status = 0
        self.errors_read = 0
        self.errors_connect = 0


def _percentile(sorted_ns: list[int], q: float) -> int:
    if not sorted_ns:
        return 0
    idx = min(len(sorted_ns) - 1, max(0, round(q / 100.0 * len(sorted_ns)) - 1))
    return sorted_ns[idx] // 1000


async def run(url: str, body: bytes, concurrency: int, duration_s: float) -> dict[str, float]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in LOOPBACK:
        raise SystemExit(f"loadgen: refusing non-loopback target {host!r}")
    port = parts.port or 80
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    stats = _Stats(start + duration_s)
    conns: list[_Conn] = []
    for _ in range(concurrency):
        try:
            _, proto = await loop.create_connection(lambda: _Conn(request, stats), host, port)
        except OSError:
            stats.errors_connect += 1
            continue
        conns.append(proto)
    # Every connection stops sending at the deadline and closes after its last answer.
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), timeout=duration_s + 30.0)
    elapsed = time.monotonic() - start
    lat = sorted(stats.latencies)
    mean = sum(lat) / len(lat) / 1000 if lat else 0.0
    return {
        "requests": len(lat),
        "duration_us": int(elapsed * 1e6),
        "bytes": stats.bytes,
        "errors_connect": stats.errors_connect,
        "errors_read": stats.errors_read,
        "errors_write": 0,
        "errors_status": stats.errors_status,
        "errors_timeout": 0,
        "lat_mean_us": round(mean, 1),
        "lat_p50_us": _percentile(lat, 50),
        "lat_p90_us": _percentile(lat, 90),
        "lat_p99_us": _percentile(lat, 99),
        "lat_p999_us": _percentile(lat, 99.9),
        "lat_max_us": lat[-1] // 1000 if lat else 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--body", required=True, help="JSON request body")
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    args = p.parse_args()
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(args.url, args.body.encode(), args.concurrency, args.duration))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

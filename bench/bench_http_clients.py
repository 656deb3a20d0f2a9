"""Upstream HTTP client micro-benchmark: the gateway's call to vLLM, with different clients.

    python bench/bench_http_clients.py [--requests 20000] [--concurrency 1,64]
        [--clients httpx,aiohttp,raw] [--json FILE]

Starts the fake vLLM (`tests.fakes.fake_vllm`, own process, loopback), then in this process fires
`--requests` POST /v1/chat/completions at it from `c` concurrent tasks sharing one client, in the
gateway's pattern: `orjson.dumps` the body, send it with JSON headers, read the whole answer,
`orjson.loads` it. For each client and concurrency it prints requests/s, p50/p99 latency, and the
CPU microseconds per request of this process (the client) and of the fake backend.

Clients:

* `httpx`   httpx.AsyncClient, configured and called as gateway/upstream.py does (build_request,
            send(stream=True), aread, aclose; same pool limits and timeouts);
* `aiohttp` aiohttp.ClientSession with a TCPConnector (no cookie jar), `session.post` + `read`;
* `raw`     a minimal HTTP/1.1 keep-alive pool on asyncio protocols with httptools' parser
            (this file), the floor for a Python client on this event loop.

aiohttp is not a dependency of the project: install it next to the gateway's packages to include it
(`python -m venv --system-site-packages /tmp/bench-venv && /tmp/bench-venv/bin/pip install aiohttp`,
then run this file with /tmp/bench-venv/bin/python). A missing client is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import REPO, Server, free_port, start_server, tree_cpu_s

BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"content-type": "application/json"}

Post = Callable[[bytes], Awaitable[dict[str, Any]]]


# --------------------------------------------------------------------------------------------
# Clients: each factory returns (post, close)
# --------------------------------------------------------------------------------------------


async def make_httpx(url: str, max_conns: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=600.0, write=600.0, pool=600.0),
        limits=httpx.Limits(
            max_connections=max_conns, max_keepalive_connections=max_conns, keepalive_expiry=60.0
        ),
    )

    async def post(content: bytes) -> dict[str, Any]:
        request = client.build_request("POST", url, content=content, headers=HEADERS)
        response = await client.send(request, stream=True)
        try:
            await response.aread()
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        parsed: dict[str, Any] = orjson.loads(response.content)
        return parsed

    return post, client.aclose


async def make_aiohttp(url: str, max_conns: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_conns, limit_per_host=max_conns),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=600.0),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
    )

    async def post(content: bytes) -> dict[str, Any]:
        async with session.post(url, data=content, headers=HEADERS) as response:
            raw = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed

    return post, session.close


class _RawConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)  # type: ignore[union-attr]
        return await self.waiter


async def make_raw(url: str, max_conns: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    loop = asyncio.get_running_loop()
    idle: list[_RawConn] = []
    sem = asyncio.Semaphore(max_conns)
    prefix = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
    ).encode()

    async def post(content: bytes) -> dict[str, Any]:
        async with sem:
            while idle and idle[-1].lost:
                idle.pop()
            if idle:
                conn = idle.pop()
            else:
                _, conn = await loop.create_connection(_RawConn, host, port)
            head = prefix + b"content-length: %d\r\n\r\n" % len(content)
            status, raw = await conn.request(head, content)
            if not conn.lost:
                idle.append(conn)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed

    async def close() -> None:
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()

    return post, close


FACTORIES = {"httpx": make_httpx, "aiohttp": make_aiohttp, "raw": make_raw}
MODULES = {"httpx": "httpx", "aiohttp": "aiohttp", "raw": "httptools"}


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def _cpu_self_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run_cell(
    client: str, url: str, concurrency: int, n_requests: int, warmup: int, backend: Server
) -> dict[str, Any]:
    post, close = await FACTORIES[client](url, max(2048, concurrency))
    try:

        async def worker(count: int, lat: list[int]) -> None:
            for _ in range(count):
                t0 = time.perf_counter_ns()
                result = await post(orjson.dumps(BODY))
                lat.append(time.perf_counter_ns() - t0)
                if not result.get("choices"):
                    raise RuntimeError("no choices in the answer")

        async def fire(total: int) -> list[int]:
            lat: list[int] = []
            per, extra = divmod(total, concurrency)
            await asyncio.gather(
                *(worker(per + (1 if i < extra else 0), lat) for i in range(concurrency))
            )
            return lat

        await fire(warmup)
        cpu0, bcpu0, t0 = _cpu_self_s(), tree_cpu_s(backend.pid), time.perf_counter()
        lat = await fire(n_requests)
        wall = time.perf_counter() - t0
        cpu1, bcpu1 = _cpu_self_s(), tree_cpu_s(backend.pid)
    finally:
        await close()
    lat.sort()
    return {
        "client": client,
        "concurrency": concurrency,
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": lat[len(lat) // 2] / 1e6,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6,
        "client_cpu_us_per_req": (cpu1 - cpu0) * 1e6 / len(lat),
        "backend_cpu_us_per_req": (bcpu1 - bcpu0) * 1e6 / len(lat),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=20000, help="measured requests per cell")
    p.add_argument("--warmup", type=int, default=2000, help="warm-up requests per cell")
    p.add_argument("--concurrency", default="1,64")
    p.add_argument("--clients", default="httpx,aiohttp,raw")
    p.add_argument("--repeat", type=int, default=1, help="rounds; the median req/s run is kept")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--content-tokens", type=int, default=16)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    clients = []
    for name in [c.strip() for c in args.clients.split(",") if c.strip()]:
        try:
            __import__(MODULES[name])
        except ImportError:
            print(f"skipping {name}: `pip install {MODULES[name]}` to include it", file=sys.stderr)
            continue
        clients.append(name)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop

    import tempfile

    logdir = Path(tempfile.mkdtemp(prefix="bench-clients-"))
    port = free_port()
    fake = start_server(
        "fake",
        [
            *(sys.executable, "-m", "tests.fakes.fake_vllm", "--port", str(port)),
            *("--model", "tiny", "--content-tokens", str(args.content_tokens)),
        ],
        port,
        "/health",
        logdir,
        REPO,
    )
    url = f"{fake.base}/v1/chat/completions"
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            for _ in range(args.repeat):
                for conc in concurrencies:
                    for client in clients:
                        cell = runner.run(
                            run_cell(client, url, conc, args.requests, args.warmup, fake)
                        )
                        runs.setdefault((client, conc), []).append(cell)
                        print(
                            f"  {client:<8} c={conc:<3} {cell['rps']:8.0f} req/s  "
                            f"p50 {cell['p50_ms']:.3f} ms  p99 {cell['p99_ms']:.3f} ms  "
                            f"client CPU {cell['client_cpu_us_per_req']:.0f} us/req",
                            flush=True,
                        )
    finally:
        fake.stop()
        with contextlib.suppress(OSError):
            for f in logdir.iterdir():
                f.unlink()
            logdir.rmdir()

    cells = []
    for conc in concurrencies:
        for client in clients:
            ordered = sorted(runs[(client, conc)], key=lambda c: c["rps"])
            cells.append(ordered[(len(ordered) - 1) // 2])
    print(f"\nloop: {args.loop}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    print(
        f"{'client':<8} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'client CPU us/req':>17} {'backend CPU us/req':>18}"
    )
    for c in cells:
        print(
            f"{c['client']:<8} {c['concurrency']:>4} {c['rps']:>8.0f} {c['p50_ms']:>7.3f} "
            f"{c['p99_ms']:>7.3f} {c['client_cpu_us_per_req']:>17.0f} "
            f"{c['backend_cpu_us_per_req']:>18.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": cells}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Streaming through the gateway vs the fake vLLM called directly, side by side in one run.

    python bench/bench_streaming.py [--tokens 200] [--token-delay-ms 5] [--ttft-requests 200]
                                    [--concurrency 64] [--duration 10] [--json FILE]

1. Time to first token at concurrency 1: the client sends a streaming request for 8 tokens and
   notes when the first event carrying generated text arrives (direct: a chat chunk with
   non-empty `delta.content`; gateway: `response.output_text.delta`), reading each stream to its
   end so the gateway's upstream connection is reused as in steady use. p50/p99 for both and the
   difference at p50.
2. Throughput at concurrency N: N clients stream whole completions of `--tokens` tokens for
   `--duration` seconds; streamed tokens/s, and the gateway's CPU time per streamed token (its
   process's utime+stime over the window / tokens relayed).

The fake streams one token per chunk every `--token-delay-ms`. The gateway runs one worker with
`think_open_in_prompt: no` (tagless text is streamed at once; see README "Streaming"). The client
is a lean asyncio socket reader (one connection per request, `Connection: close`), so it costs
little CPU next to the servers on a small machine. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import free_port, machine_info, running, start_server, tree_cpu_s

REPO = Path(__file__).resolve().parents[1]


def request_bytes(port: int, path: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + payload


async def one_stream(port: int, raw: bytes, marker: bytes) -> tuple[float, int]:
    """(seconds to the first marker, markers seen) for one streaming request."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    first = -1.0
    count = 0
    tail = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            window = tail + data
            found = window.count(marker)
            if found and first < 0:
                first = time.perf_counter() - start
            count += found
            tail = window[-len(marker) :]
    finally:
        writer.close()
    return first, count


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ttft(port: int, raw: bytes, marker: bytes, n: int) -> list[float]:
    times = []
    for _ in range(n):
        first, _ = await one_stream(port, raw, marker)
        if first >= 0:
            times.append(first * 1000)
    return times


async def throughput(
    port: int, raw: bytes, marker: bytes, concurrency: int, duration: float
) -> tuple[int, int, float]:
    """(streams completed, markers seen, seconds)."""
    deadline = time.monotonic() + duration
    streams = 0
    tokens = 0

    async def client() -> None:
        nonlocal streams, tokens
        while time.monotonic() < deadline:
            _, seen = await one_stream(port, raw, marker)
            streams += 1
            tokens += seen

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return streams, tokens, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--token-delay-ms", type=float, default=5.0)
    p.add_argument("--ttft-requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    logdir = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    fake_port, gw_port = free_port(), free_port()
    config = logdir / "gateway.yaml"
    config.write_text(
        f"base_url: http://127.0.0.1:{fake_port}/v1\nmodel: tiny\nthink_open_in_prompt: 'no'\n"
        "health_check_interval_s: 0\n"
    )
    servers = {}
    servers["fake"] = start_server(
        "fake",
        [sys.executable, "-m", "tests.fakes.fake_vllm", "--port", str(fake_port),
         "--content-tokens", str(args.tokens), "--stream-delay-s", str(args.token_delay_ms / 1000)],
        fake_port, "/health", logdir, REPO,
    )  # fmt: skip
    servers["gateway"] = start_server(
        "gateway",
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
         "--env", str(logdir / "none.yaml"), "--port", str(gw_port)],
        gw_port, "/health", logdir, REPO,
    )  # fmt: skip
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    responses = {"model": "tiny", "input": "hi", "stream": True}
    direct_raw = request_bytes(fake_port, "/v1/chat/completions", chat)
    gateway_raw = request_bytes(gw_port, "/v1/responses", responses)
    direct_short = request_bytes(fake_port, "/v1/chat/completions", {**chat, "max_tokens": 8})
    gateway_short = request_bytes(gw_port, "/v1/responses", {**responses, "max_output_tokens": 8})
    direct_marker = b'"content":"tok'
    gateway_marker = b"event: response.output_text.delta"
    results: dict[str, Any] = {"machine": machine_info("asyncio sockets"), "args": vars(args)}
    with running(servers):
        # warm-up
        asyncio.run(ttft(fake_port, direct_short, direct_marker, 10))
        asyncio.run(ttft(gw_port, gateway_short, gateway_marker, 10))
        d = asyncio.run(ttft(fake_port, direct_short, direct_marker, args.ttft_requests))
        g = asyncio.run(ttft(gw_port, gateway_short, gateway_marker, args.ttft_requests))
        results["ttft_ms"] = {
            "direct": {"p50": pct(d, 0.5), "p99": pct(d, 0.99), "n": len(d)},
            "gateway": {"p50": pct(g, 0.5), "p99": pct(g, 0.99), "n": len(g)},
            "added_p50": statistics.median(g) - statistics.median(d),
        }
        for name, port, raw, marker, pid in (
            ("direct", fake_port, direct_raw, direct_marker, servers["fake"].pid),
            ("gateway", gw_port, gateway_raw, gateway_marker, servers["gateway"].pid),
        ):
            cpu0 = tree_cpu_s(pid)
            streams, tokens, secs = asyncio.run(
                throughput(port, raw, marker, args.concurrency, args.duration)
            )
            cpu = tree_cpu_s(pid) - cpu0
            results[f"throughput_{name}"] = {
                "streams": streams,
                "tokens": tokens,
                "seconds": secs,
                "tokens_per_s": tokens / secs,
                "server_cpu_s": cpu,
                "server_cpu_us_per_token": cpu / tokens * 1e6 if tokens else None,
            }
    t = results["ttft_ms"]
    td, tg = results["throughput_direct"], results["throughput_gateway"]
    print(f"TTFT c=1 ({args.ttft_requests} requests, {args.token_delay_ms} ms/token)")
    print(f"  direct   p50 {t['direct']['p50']:.2f} ms  p99 {t['direct']['p99']:.2f} ms")
    print(f"  gateway  p50 {t['gateway']['p50']:.2f} ms  p99 {t['gateway']['p99']:.2f} ms")
    print(f"  added at p50: {t['added_p50']:.2f} ms")
    print(f"Streaming c={args.concurrency}, {args.tokens} tokens per stream, {args.duration:.0f} s")
    for name, r in (("direct", td), ("gateway", tg)):
        print(
            f"  {name:8} {r['tokens_per_s']:9.0f} tokens/s  {r['streams']:5d} streams  "
            f"server CPU {r['server_cpu_us_per_token']:.1f} us/token"
        )
    print(f"  gateway/direct tokens/s: {tg['tokens_per_s'] / td['tokens_per_s']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Many multi-turn sessions over several fake vLLM backends; one backend killed halfway.

    python bench/bench_routing.py [--sessions 1000] [--backends 4] [--duration 20] [--kill/--no-kill]
                                  [--workers 1] [--json FILE]

Each session is one keep-alive connection sending turn after turn (`POST /v1/responses` with its
`X-Session-ID`) for `--duration` seconds. The gateway answers with `x-gateway-backend`
(`expose_backend_header: true`), so the client knows which replica served each turn. Reported:
throughput, p50/p99 latency, per-backend load balance (max/mean of turns served), the fraction of
turns that stayed on the replica of the session's previous turn, and the errors. With `--kill`,
one backend's process group is killed at half time: its sessions must move to their next choice
(rendezvous order) without a failed turn, and the other sessions must not move. Loopback only;
every process started here is stopped by its process group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import free_port, machine_info, running, start_server, tree_cpu_s

REPO = Path(__file__).resolve().parents[1]


class Turns:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.stayed = 0
        self.moved = 0
        self.moved_off_dead = 0
        self.served: Counter[str] = Counter()


async def session(port: int, key: str, stop_at: float, kill: dict[str, Any], stats: Turns) -> None:
    body = json.dumps({"model": "tiny", "input": "next turn"}).encode()
    request = (
        f"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Session-ID: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    previous: str | None = None
    try:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (h.partition(":") for h in lines[1:] if h)
            )
            await reader.readexactly(int(headers.get("content-length", "0")))
            stats.latencies_ms.append((time.perf_counter() - start) * 1000)
            if status != 200:
                stats.errors += 1
                continue
            backend = headers.get("x-gateway-backend", "?")
            stats.served[backend] += 1
            if previous is not None:
                if backend == previous:
                    stats.stayed += 1
                else:
                    stats.moved += 1
                    if previous == kill.get("url"):
                        stats.moved_off_dead += 1
            previous = backend
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        stats.errors += 1
        print(f"session {key}: {exc!r}", file=sys.stderr)
    finally:
        writer.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def drive(
    port: int, sessions: int, duration: float, kill_fn: Any, kill: dict[str, Any]
) -> Turns:
    stats = Turns()
    stop_at = time.monotonic() + duration

    async def killer() -> None:
        await asyncio.sleep(duration / 2)
        kill["url"] = kill_fn()
        kill["at"] = time.monotonic()

    tasks = [session(port, f"session-{i}", stop_at, kill, stats) for i in range(sessions)]
    if kill_fn is not None:
        tasks.append(killer())
    await asyncio.gather(*tasks)
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--backends", type=int, default=4)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--kill", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    logdir = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    ports = [free_port() for _ in range(args.backends)]
    gw_port = free_port()
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
    config = logdir / "gateway.yaml"
    config.write_text(
        "base_url: [" + ", ".join(urls) + "]\nmodel: tiny\nexpose_backend_header: true\n"
        "health_check_interval_s: 1\neject_after_failures: 1\nconnect_timeout_s: 1\n"
    )
    servers = {}
    for i, port in enumerate(ports):
        servers[f"fake{i}"] = start_server(
            f"fake{i}",
            [sys.executable, "-m", "tests.fakes.fake_vllm", "--port", str(port), "--content-tokens", "16"],
            port, "/health", logdir, REPO,
        )  # fmt: skip
    servers["gateway"] = start_server(
        "gateway",
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--env",
         str(logdir / "none.yaml"), "--port", str(gw_port), "--workers", str(args.workers)],
        gw_port, "/health", logdir, REPO,
    )  # fmt: skip
    victim = servers["fake1"]

    def kill_victim() -> str:
        os.killpg(victim.pid, signal.SIGKILL)
        return urls[1]

    kill: dict[str, Any] = {"url": None, "at": None}
    with running(servers):
        cpu0 = tree_cpu_s(servers["gateway"].pid)
        start = time.perf_counter()
        stats = asyncio.run(
            drive(gw_port, args.sessions, args.duration, kill_victim if args.kill else None, kill)
        )
        elapsed = time.perf_counter() - start
        cpu = tree_cpu_s(servers["gateway"].pid) - cpu0
    turns = len(stats.latencies_ms)
    loads = [stats.served.get(u, 0) for u in urls]
    live_loads = [n for u, n in zip(urls, loads, strict=True) if u != kill["url"]]
    results = {
        "machine": machine_info("asyncio sockets (keep-alive, one connection per session)"),
        "args": vars(args),
        "turns": turns,
        "seconds": elapsed,
        "turns_per_s": turns / elapsed,
        "p50_ms": pct(stats.latencies_ms, 0.5),
        "p99_ms": pct(stats.latencies_ms, 0.99),
        "gateway_cpu_ms_per_turn": cpu / turns * 1000 if turns else None,
        "per_backend": dict(zip(urls, loads, strict=True)),
        "balance_max_over_mean": max(loads) / (sum(loads) / len(loads)) if turns else None,
        "balance_max_over_mean_live": max(live_loads) / (sum(live_loads) / len(live_loads)),
        "stayed_fraction": stats.stayed / max(1, stats.stayed + stats.moved),
        "moved": stats.moved,
        "moved_off_killed_backend": stats.moved_off_dead,
        "moved_other": stats.moved - stats.moved_off_dead,
        "errors": stats.errors,
        "killed": kill["url"],
    }
    print(
        f"{args.sessions} sessions, {args.backends} backends, {args.duration:.0f} s, "
        f"{args.workers} worker(s), kill halfway: {bool(args.kill)}"
    )
    print(
        f"  turns {turns}  ({results['turns_per_s']:.0f}/s)  p50 {results['p50_ms']:.1f} ms  p99 {results['p99_ms']:.1f} ms"
    )
    print(f"  gateway CPU {results['gateway_cpu_ms_per_turn']:.3f} ms/turn")
    print(
        f"  per backend {loads}  max/mean {results['balance_max_over_mean']:.2f} (live backends {results['balance_max_over_mean_live']:.2f})"
    )
    print(
        f"  stayed on their replica {results['stayed_fraction']:.4f}; moved {stats.moved} "
        f"({stats.moved_off_dead} off the killed backend, {stats.moved - stats.moved_off_dead} others)"
    )
    print(f"  errors {stats.errors}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Non-streaming overhead of the gateway against the same fake vLLM called directly (issue 2).

    python bench/bench_gateway.py [--duration 10] [--concurrency 1,64] [--json FILE]
        [--nemo-gym-python /tmp/nemo-gym-venv/bin/python]

Starts, each in its own process on loopback:

* the fake vLLM backend (`python -m tests.fakes.fake_vllm`, 16 content tokens by default);
* the gateway (`python -m gateway.cli serve`, one worker) with a flat config pointing at the fake;
* optionally NeMo Gym's `vllm_model` server (the peer) against the same fake, started the way
  `ng_run` starts it: `NEMO_GYM_CONFIG_DICT=<yaml> NEMO_GYM_CONFIG_PATH=policy_model python app.py`.

Then, for each concurrency, each target gets a warm-up run and a measured run with the same load
generator: direct `POST /v1/chat/completions` to the fake, `POST /v1/responses` and
`POST /v1/chat/completions` through the gateway, and the same two through NeMo Gym. It prints
requests/s, p50/p99 latency, the CPU milliseconds per request of the server under test and of the
backend (utime+stime of the process tree from /proc over the measured window, divided by the
number of requests) and of the load generator, and the errors; then the ratios against the direct
call and against NeMo Gym.

The load generator is `wrk` (C, one thread, a Lua script for the POST body) when installed, else
`bench/loadgen.py` (asyncio + uvloop, 1 to 2.5 times wrk's CPU per request). Every target is on
127.0.0.1 and every run is bounded by `--duration`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
WRK_LUA = BENCH / "wrk_post.lua"
LOADGEN = BENCH / "loadgen.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK_INSTALL_HINT = (
    "wrk is not installed. Install it with `apt-get update && apt-get install -y wrk` "
    "(Debian/Ubuntu; `brew install wrk` on macOS), or pass --generator python to use "
    "bench/loadgen.py (up to 2.5 times wrk's CPU per request, on the same cores as the servers)."
)

CHAT_BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY = {"model": "tiny", "input": "hi"}


# --------------------------------------------------------------------------------------------
# Processes and their CPU time
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def _stat_ticks(pid: int, with_reaped: bool) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0
    # fields[0] is the state (field 3); utime=14, stime=15, cutime=16, cstime=17
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def system_busy_s() -> float:
    """CPU seconds all processes on the machine have used (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def tree_cpu_s(pid: int) -> float:
    """utime+stime of a process, its live descendants (uvicorn workers) and its reaped children."""
    ticks = _stat_ticks(pid, with_reaped=True)
    for child in _descendants(pid):
        ticks += _stat_ticks(child, with_reaped=False)
    return ticks / CLK_TCK


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:PORT
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        # Each server runs in its own session, so its group id is its pid: this stops exactly
        # the processes this script started (uvicorn workers included) and nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_server(
    name: str,
    argv: list[str],
    port: int,
    health_path: str,
    logdir: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 90.0,
) -> Server:
    log = logdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(name, proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.tail()}")
        try:
            with urllib.request.urlopen(server.base + health_path, timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"{name} did not answer {health_path} in {timeout_s:.0f} s:\n{server.tail()}"
    )


def post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


# --------------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    generator_cpu_s: float
    raw: dict[str, Any]


def run_load(
    generator: str, url: str, body: dict[str, Any], concurrency: int, duration_s: float
) -> LoadResult:
    body_s = json.dumps(body, separators=(",", ":"))
    if generator == "wrk":
        wrk = shutil.which("wrk")
        assert wrk is not None
        argv = [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "30s",
            "-s",
            str(WRK_LUA),
            url,
        ]
        env = {**os.environ, "BENCH_BODY": body_s}
    else:
        argv = [
            sys.executable,
            str(LOADGEN),
            "--url",
            url,
            "--body",
            body_s,
            "-c",
            str(concurrency),
            "-d",
            str(duration_s),
        ]
        env = dict(os.environ)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    # wait4 gives the generator's own CPU time (rusage of this one child).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(
            f"load generator failed ({proc.returncode}): {out.decode()[-2000:]}"
            f"{err.decode()[-2000:]}"
        )
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(int(v) for k, v in raw.items() if k.startswith("errors_"))
    return LoadResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        errors=errors,
        p50_ms=raw["lat_p50_us"] / 1000,
        p90_ms=raw["lat_p90_us"] / 1000,
        p99_ms=raw["lat_p99_us"] / 1000,
        mean_ms=raw["lat_mean_us"] / 1000,
        generator_cpu_s=usage.ru_utime + usage.ru_stime,
        raw=raw,
    )


# --------------------------------------------------------------------------------------------
# Targets and measurements
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # e.g. "gateway /v1/responses"
    server: str  # which Server is under test
    path: str
    body: dict[str, Any]
    check: Callable[[Any], bool]


@dataclass
class Cell:
    target: str
    server: str
    concurrency: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    server_cpu_ms_per_req: float
    backend_cpu_ms_per_req: float | None
    generator_cpu_ms_per_req: float
    requests: int
    errors: int
    duration_s: float
    # CPU (in cores) that other processes on the machine used during the measured window:
    # anything above ~0.1 means the numbers were disturbed by something else running.
    others_cpu_cores: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _is_response(body: Any) -> bool:
    return isinstance(body, dict) and body.get("object") == "response" and bool(body.get("output"))


def _is_chat(body: Any) -> bool:
    return isinstance(body, dict) and bool(body.get("choices"))


def measure(
    target: Target,
    servers: dict[str, Server],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    generator: str,
) -> Cell:
    server = servers[target.server]
    backend = servers["fake"] if target.server != "fake" else None
    url = server.base + target.path
    if warmup_s > 0:
        run_load(generator, url, target.body, concurrency, warmup_s)
    cpu0 = tree_cpu_s(server.pid)
    bcpu0 = tree_cpu_s(backend.pid) if backend else 0.0
    busy0, wall0 = system_busy_s(), time.monotonic()
    load = run_load(generator, url, target.body, concurrency, duration_s)
    busy1, wall1 = system_busy_s(), time.monotonic()
    cpu1 = tree_cpu_s(server.pid)
    bcpu1 = tree_cpu_s(backend.pid) if backend else 0.0
    n = max(load.requests, 1)
    ours = (cpu1 - cpu0) + (bcpu1 - bcpu0) + load.generator_cpu_s
    others = max(0.0, (busy1 - busy0) - ours) / (wall1 - wall0)
    return Cell(
        target=target.name,
        server=target.server,
        concurrency=concurrency,
        rps=load.requests / load.duration_s,
        p50_ms=load.p50_ms,
        p90_ms=load.p90_ms,
        p99_ms=load.p99_ms,
        mean_ms=load.mean_ms,
        server_cpu_ms_per_req=(cpu1 - cpu0) * 1000 / n,
        backend_cpu_ms_per_req=(bcpu1 - bcpu0) * 1000 / n if backend else None,
        generator_cpu_ms_per_req=load.generator_cpu_s * 1000 / n,
        requests=load.requests,
        errors=load.errors,
        duration_s=load.duration_s,
        others_cpu_cores=round(others, 3),
    )


def median_cell(cells: list[Cell]) -> Cell:
    """The run with the median throughput (its own latencies and CPU, not mixed across runs)."""
    ordered = sorted(cells, key=lambda c: c.rps)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(cells) > 1:
        chosen.extra["rps_runs"] = [round(c.rps, 1) for c in cells]
    return chosen


# --------------------------------------------------------------------------------------------
# Machine facts and output
# --------------------------------------------------------------------------------------------


def machine_info(generator: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "generator": generator,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    if generator == "wrk":
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        info["wrk"] = (out.stdout + out.stderr).strip().splitlines()[0]
    for mod in ("uvicorn", "fastapi", "starlette", "httpx", "httpcore", "uvloop", "httptools"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    return info


def fmt_table(cells: list[Cell]) -> str:
    head = (
        f"{'target':<34} {'conc':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv CPU ms/req':>14} {'backend CPU':>11} {'gen CPU':>7} {'errors':>6} {'others':>6}"
    )
    lines = [head, "-" * len(head)]
    for c in cells:
        backend = "-" if c.backend_cpu_ms_per_req is None else f"{c.backend_cpu_ms_per_req:.3f}"
        lines.append(
            f"{c.target:<34} {c.concurrency:>4} {c.rps:>8.0f} {c.p50_ms:>7.3f} {c.p99_ms:>7.2f} "
            f"{c.server_cpu_ms_per_req:>14.3f} {backend:>11} {c.generator_cpu_ms_per_req:>7.3f} "
            f"{c.errors:>6} {c.others_cpu_cores:>6.2f}"
        )
    return "\n".join(lines)


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    by = {(c.target, c.concurrency): c for c in cells}
    out: list[dict[str, Any]] = []
    for c in cells:
        if c.server == "fake":
            continue
        direct = by.get(("direct fake /v1/chat/completions", c.concurrency))
        row: dict[str, Any] = {"target": c.target, "concurrency": c.concurrency}
        if direct:
            row["added_p50_ms"] = round(c.p50_ms - direct.p50_ms, 3)
            row["added_p99_ms"] = round(c.p99_ms - direct.p99_ms, 3)
            row["rps_vs_direct"] = round(c.rps / direct.rps, 3)
        if c.server == "gateway":
            peer = by.get((c.target.replace("gateway", "nemo-gym"), c.concurrency))
            if peer:
                row["rps_vs_nemo_gym"] = round(c.rps / peer.rps, 2)
                row["p50_vs_nemo_gym"] = round(c.p50_ms / peer.p50_ms, 2)
                row["cpu_per_req_vs_nemo_gym"] = round(
                    c.server_cpu_ms_per_req / peer.server_cpu_ms_per_req, 2
                )
        out.append(row)
    return out


def fmt_ratios(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'target':<34} {'conc':>4} {'+p50 ms':>8} {'+p99 ms':>8} {'req/s / direct':>14} "
        f"{'req/s / gym':>11} {'p50 / gym':>9} {'CPU / gym':>9}"
    )
    lines = [head, "-" * len(head)]

    def g(row: dict[str, Any], key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    for r in rows:
        lines.append(
            f"{r['target']:<34} {r['concurrency']:>4} {g(r, 'added_p50_ms', '.3f'):>8} "
            f"{g(r, 'added_p99_ms', '.2f'):>8} {g(r, 'rps_vs_direct', '.3f'):>14} "
            f"{g(r, 'rps_vs_nemo_gym', '.2f'):>11} {g(r, 'p50_vs_nemo_gym', '.2f'):>9} "
            f"{g(r, 'cpu_per_req_vs_nemo_gym', '.2f'):>9}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def nemo_gym_app(python: str) -> Path:
    """Where the peer's `responses_api_models/vllm_model/app.py` is installed for `python`."""
    code = (
        "import importlib.util as u; "
        "s = u.find_spec('responses_api_models.vllm_model'); "
        "print(s.submodule_search_locations[0])"
    )
    # Not from the repo root: the repo has its own `responses_api_models` package.
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if out.returncode != 0:
        raise RuntimeError(f"cannot locate NeMo Gym's vllm_model with {python}: {out.stderr}")
    return Path(out.stdout.strip()) / "app.py"


def nemo_gym_config(port: int, head_port: int, backend: str) -> str:
    # The dict `ng_run` hands to each server process in NEMO_GYM_CONFIG_DICT (resolved YAML);
    # the model block is responses_api_models/vllm_model/configs/vllm_model.yaml's.
    return f"""\
head_server:
  host: 127.0.0.1
  port: {head_port}
dry_run: false
policy_model:
  responses_api_models:
    vllm_model:
      entrypoint: app.py
      host: 127.0.0.1
      port: {port}
      base_url: {backend}/v1
      api_key: EMPTY
      model: tiny
      return_token_id_information: false
      uses_reasoning_parser: true
      uses_interleaved_reasoning: true
      chat_template_kwargs: null
      sampling_overrides: null
      extra_body: null
      default_headers: {{}}
"""


@contextlib.contextmanager
def running(servers: dict[str, Server]) -> Iterator[dict[str, Server]]:
    try:
        yield servers
    finally:
        for s in reversed(list(servers.values())):
            s.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per cell")
    p.add_argument("--concurrency", default="1,64", help="comma-separated connection counts")
    p.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is kept")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--content-tokens", type=int, default=16, help="fake reply length")
    p.add_argument("--workers", type=int, default=1, help="gateway workers")
    p.add_argument(
        "--gateway-http",
        default=None,
        help="uvicorn HTTP protocol for the gateway (httptools|h11); default: the CLI's (auto)",
    )
    p.add_argument(
        "--gateway-loop",
        default=None,
        help="uvicorn event loop for the gateway (uvloop|asyncio); default: the CLI's (auto)",
    )
    p.add_argument(
        "--gateway-root",
        default=str(REPO),
        help="directory holding the gateway package to run (e.g. a patched scratch copy)",
    )
    p.add_argument("--nemo-gym-python", default=None, help="python of a venv with nemo-gym")
    p.add_argument("--nemo-gym-app", default=None, help="path of NeMo Gym's vllm_model/app.py")
    p.add_argument(
        "--targets",
        default=None,
        help="comma-separated substrings; only matching targets run (e.g. 'direct,responses')",
    )
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = p.parse_args(argv)

    generator = args.generator
    if generator in ("auto", "wrk") and shutil.which("wrk") is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        if generator == "wrk":
            return 2
        generator = "python"
    elif generator == "auto":
        generator = "wrk"
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    gateway_root = Path(args.gateway_root).resolve()

    logdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    servers: dict[str, Server] = {}
    with running(servers):
        fake_port = free_port()
        servers["fake"] = start_server(
            "fake",
            [
                sys.executable,
                "-m",
                "tests.fakes.fake_vllm",
                "--port",
                str(fake_port),
                "--model",
                "tiny",
                "--content-tokens",
                str(args.content_tokens),
            ],
            fake_port,
            "/health",
            logdir,
            REPO,
        )
        backend = servers["fake"].base

        cfg = logdir / "gateway.yaml"
        cfg.write_text(f"base_url: {backend}/v1\nmodel: tiny\n")
        gw_port = free_port()
        if args.gateway_http or args.gateway_loop:
            if args.workers != 1:
                p.error("--gateway-http/--gateway-loop need --workers 1")
            gw_argv = [
                sys.executable,
                str(BENCH / "serve_gateway.py"),
                "--config",
                str(cfg),
                "--port",
                str(gw_port),
                "--http",
                args.gateway_http or "auto",
                "--loop",
                args.gateway_loop or "auto",
            ]
        else:
            gw_argv = [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(cfg),
                "--env",
                str(logdir / "no-env.yaml"),  # absent on purpose: no env.yaml merge
                "--port",
                str(gw_port),
                "--workers",
                str(args.workers),
            ]
        servers["gateway"] = start_server(
            "gateway",
            gw_argv,
            gw_port,
            "/health",
            logdir,
            gateway_root,
            env={"PYTHONPATH": str(gateway_root)},
        )

        if args.nemo_gym_python:
            app = (
                Path(args.nemo_gym_app) if args.nemo_gym_app else nemo_gym_app(args.nemo_gym_python)
            )
            ng_port = free_port()
            servers["nemo-gym"] = start_server(
                "nemo-gym",
                [args.nemo_gym_python, str(app)],
                ng_port,
                "/",
                logdir,
                app.parent,
                env={
                    "NEMO_GYM_CONFIG_DICT": nemo_gym_config(ng_port, free_port(), backend),
                    "NEMO_GYM_CONFIG_PATH": "policy_model",
                },
            )

        targets = [
            Target("direct fake /v1/chat/completions", "fake", "/v1/chat/completions",
                   CHAT_BODY, _is_chat),
            Target("gateway /v1/responses", "gateway", "/v1/responses", RESPONSES_BODY,
                   _is_response),
            Target("gateway /v1/chat/completions", "gateway", "/v1/chat/completions",
                   CHAT_BODY, _is_chat),
        ]  # fmt: skip
        if "nemo-gym" in servers:
            targets += [
                Target("nemo-gym /v1/responses", "nemo-gym", "/v1/responses", RESPONSES_BODY,
                       _is_response),
                Target("nemo-gym /v1/chat/completions", "nemo-gym", "/v1/chat/completions",
                       CHAT_BODY, _is_chat),
            ]  # fmt: skip
        if args.targets:
            wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
            targets = [t for t in targets if any(w in t.name for w in wanted)]

        for t in targets:
            status, body = post_json(servers[t.server].base + t.path, t.body)
            if status != 200 or not t.check(body):
                raise RuntimeError(f"{t.name}: unexpected answer {status}: {str(body)[:500]}")

        info = machine_info(generator)
        print(
            f"machine: {info['nproc']} CPUs, {info['cpu_model']}, Python {info['python']}; "
            f"generator: {info.get('wrk', 'bench/loadgen.py')}; "
            f"{args.duration:g} s per cell after {args.warmup:g} s warm-up",
            flush=True,
        )
        runs: dict[tuple[str, int], list[Cell]] = {}
        for rep in range(args.repeat):
            for conc in concurrencies:
                for t in targets:
                    cell = measure(t, servers, conc, args.duration, args.warmup, generator)
                    runs.setdefault((t.name, conc), []).append(cell)
                    print(
                        f"  [{rep + 1}/{args.repeat}] {t.name:<34} c={conc:<3} "
                        f"{cell.rps:8.0f} req/s  p50 {cell.p50_ms:.3f} ms  "
                        f"p99 {cell.p99_ms:.2f} ms  CPU {cell.server_cpu_ms_per_req:.3f} ms/req"
                        f"  errors {cell.errors}  others {cell.others_cpu_cores:.2f} cores",
                        flush=True,
                    )
        cells = [median_cell(runs[(t.name, conc)]) for conc in concurrencies for t in targets]

    rows = ratios(cells)
    print()
    print(
        "CPU columns: ms of CPU per request of the server under test, of the fake backend behind"
        " it, of the load generator; others: cores used by other processes during the window."
    )
    print(fmt_table(cells))
    print()
    print("Ratios (gateway and NeMo Gym vs the direct call; gateway vs NeMo Gym, same endpoint):")
    print(fmt_ratios(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": vars(args) | {"generator": generator},
                    "results": [asdict(c) for c in cells],
                    "ratios": rows,
                },
                indent=2,
            )
        )
        print(f"\nwrote {args.json}")
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    else:
        print(f"server logs in {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The launcher with real processes: a tiny stand-in server (engine `command`) on 127.0.0.1.

The stand-in answers GET /health, spawns a `sleep 300` child (to prove that whole process groups
die) and prints `CHILD <pid>` to its log. Every process is stopped by pid / process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.launch.launcher import CommandServer, Launcher, pool_callbacks
from gateway.launch.servers import BackendConfig
from gateway.launch.supervisor import (
    CleanupError,
    LaunchError,
    Replica,
    ReplicaState,
    StartupError,
    StartupTimeout,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="process checks read /proc"
)

STAND_IN = r"""
import argparse, http.server, os, subprocess, sys

p = argparse.ArgumentParser()
p.add_argument("--host")
p.add_argument("--port", type=int)
p.add_argument("--sick-file")
p.add_argument("--once-marker")
p.add_argument("--escape", action="store_true")
a = p.parse_args()
if a.once_marker:
    if os.path.exists(a.once_marker):
        print("stand-in: refusing to start twice", flush=True)
        sys.exit(7)
    open(a.once_marker, "w").close()
if a.sick_file and os.path.exists(a.sick_file):
    os.remove(a.sick_file)
child = subprocess.Popen(["sleep", "300"], start_new_session=a.escape)
print(f"CHILD {child.pid}", flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = a.sick_file and os.path.exists(a.sick_file)
        self.send_response(503 if sick or self.path != "/health" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        print(f"POST {self.path}", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer((a.host, a.port), Handler)
print("stand-in: ready", flush=True)
server.serve_forever()
"""

FAST = {
    "heartbeat_interval_s": 0.2,
    "heartbeat_timeout_s": 1.0,
    "heartbeat_failures": 2,
    "restart_backoff_s": 0.05,
    "stop_grace_s": 3.0,
    "startup_timeout_s": 15.0,
}


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (orphans may wait for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def child_pids(log: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^CHILD (\d+)$", log.read_text(), re.MULTILINE)]


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def record(self, kind: str) -> Callable[[Replica], None]:
        def callback(replica: Replica) -> None:
            self.seen.append((kind, replica.name, replica.restarts))

        return callback

    def kinds(self, name: str) -> list[str]:
        return [k for k, n, _ in self.seen if n == name]

    def callbacks(self) -> dict[str, Callable[[Replica], None]]:
        return {k: self.record(k) for k in ("on_up", "on_down", "on_give_up")}


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return script


@pytest.fixture
def make_config(tmp_path: Path, stand_in: Path) -> Callable[..., BackendConfig]:
    def make(**kw: Any) -> BackendConfig:
        data: dict[str, Any] = {
            "engine": "command",
            "name": "fake",
            "command": [
                sys.executable,
                "-u",
                str(stand_in),
                "--host",
                "{host}",
                "--port",
                "{port}",
            ],
            "output_dir": str(tmp_path / "logs"),
            **FAST,
            **kw,
        }
        return BackendConfig.model_validate(data)

    return make


@pytest.fixture
def cleanup() -> Iterator[list[int]]:
    """Pids a test saw; any left alive at the end are killed (by pid) and the test fails."""
    pids: list[int] = []
    yield pids
    left = [p for p in pids if alive(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left alive: {left}"


async def test_fleet_start_restart_and_stop(
    make_config: Callable[..., BackendConfig], cleanup: list[int]
) -> None:
    events = Events()
    launcher = Launcher(make_config(replicas=2), **events.callbacks())
    async with launcher:
        r0, r1 = launcher.replicas
        urls = launcher.endpoints()
        assert urls == [r0.url, r1.url] and r0.url != r1.url
        assert all(u.startswith("http://127.0.0.1:") and u.endswith("/v1") for u in urls)
        assert await launcher.acheck_health()
        assert events.kinds("fake-0") == ["on_up"] and events.kinds("fake-1") == ["on_up"]
        assert launcher.list_endpoints()["fake-1"]["health"] == r1.health_url
        async with httpx.AsyncClient() as http:
            assert (await http.get(r0.health_url)).status_code == 200

        old_pid = r0.pid
        assert old_pid is not None and r0.pgid == old_pid
        (old_child,) = child_pids(r0.log_path)
        cleanup += [old_pid, old_child, r1.pid or 0, *child_pids(r1.log_path)]
        assert os.getpgid(old_child) == old_pid  # the child shares the replica's group

        os.kill(old_pid, signal.SIGKILL)
        await wait_for(lambda: events.kinds("fake-0") == ["on_up", "on_down", "on_up"])
        assert r0.state == ReplicaState.UP and r0.restarts == 1
        assert r0.pid not in (None, old_pid)
        assert r0.url == urls[0]  # same port after a restart
        assert not alive(old_child), "the dead leader's child must go with its group"
        cleanup += [r0.pid or 0, *child_pids(r0.log_path)]
        assert "exited with code -9" in (r0.last_error or "")
        assert events.kinds("fake-1") == ["on_up"]

    # after stop: every leader and child is gone, on_down fired for both
    assert r0.state == ReplicaState.STOPPED and r1.state == ReplicaState.STOPPED
    for pid in cleanup:
        assert not alive(pid), pid
    assert events.kinds("fake-0")[-1] == "on_down" and events.kinds("fake-1")[-1] == "on_down"
    assert launcher.endpoints(healthy_only=True) == []


async def test_unhealthy_replica_is_restarted(
    make_config: Callable[..., BackendConfig], tmp_path: Path, cleanup: list[int]
) -> None:
    sick = tmp_path / "sick"
    events = Events()
    async with Launcher(make_config(args={"sick-file": str(sick)}), **events.callbacks()) as fleet:
        (replica,) = fleet.replicas
        first_pid = replica.pid or 0
        cleanup += [first_pid, *child_pids(replica.log_path)]
        sick.touch()  # /health -> 503 while the process stays alive
        await wait_for(lambda: events.kinds("fake-0") == ["on_up", "on_down", "on_up"])
        assert replica.pid != first_pid and not alive(first_pid)
        assert "2 consecutive failed health checks" in (replica.last_error or "")
        cleanup += [replica.pid or 0, *child_pids(replica.log_path)]


async def test_startup_exit_quotes_the_log_tail(
    make_config: Callable[..., BackendConfig],
) -> None:
    code = "print('boom: unknown flag --frobnicate', flush=True); raise SystemExit(3)"
    launcher = Launcher(make_config(command=[sys.executable, "-c", code]))
    with pytest.raises(StartupError) as info:
        await launcher.astart()
    err = info.value
    assert not isinstance(err, StartupTimeout)
    assert err.returncode == 3 and err.replica == "fake-0"
    assert "exited with code 3" in str(err)
    assert "boom: unknown flag --frobnicate" in str(err) and "boom" in err.log_tail
    assert launcher.replicas[0].state == ReplicaState.FAILED


async def test_startup_timeout(make_config: Callable[..., BackendConfig]) -> None:
    code = "import time; print('loading weights...', flush=True); time.sleep(300)"
    launcher = Launcher(make_config(command=[sys.executable, "-c", code], startup_timeout_s=1.0))
    started = time.monotonic()
    with pytest.raises(StartupTimeout, match="within 1 s") as info:
        await launcher.astart()
    assert time.monotonic() - started < 8
    assert "loading weights..." in str(info.value)
    assert launcher.replicas[0].pid is None  # stopped after the timeout


async def test_one_bad_replica_fails_the_fleet(
    make_config: Callable[..., BackendConfig], stand_in: Path, cleanup: list[int]
) -> None:
    good = make_config(name="good")
    bad = make_config(name="bad", command=[sys.executable, "-c", "raise SystemExit(2)"])
    events = Events()
    launcher = Launcher([good, bad], **events.callbacks())
    with pytest.raises(StartupError, match="bad-0: exited with code 2"):
        await launcher.astart()
    for replica in launcher.replicas:
        assert replica.pid is None
    cleanup += child_pids(launcher.replicas[0].log_path)


async def test_gives_up_after_max_restarts(
    make_config: Callable[..., BackendConfig], tmp_path: Path, cleanup: list[int]
) -> None:
    events = Events()
    given_up = asyncio.Event()

    def on_give_up(replica: Replica) -> None:
        events.record("on_give_up")(replica)
        given_up.set()

    config = make_config(args={"once-marker": str(tmp_path / "once")}, max_restarts=2)
    callbacks = {**events.callbacks(), "on_give_up": on_give_up}
    async with Launcher(config, **callbacks) as fleet:
        (replica,) = fleet.replicas
        pid = replica.pid or 0
        cleanup += [pid, *child_pids(replica.log_path)]
        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(given_up.wait(), 10)
        assert replica.state == ReplicaState.FAILED and replica.restarts == 2
        assert events.kinds("fake-0") == ["on_up", "on_down", "on_give_up"]
        assert "refusing to start twice" in (replica.last_error or "")
        assert replica.pid is None
    assert replica.state == ReplicaState.FAILED


def test_blocking_context_manager_and_profile_hooks(
    make_config: Callable[..., BackendConfig], stand_in: Path, cleanup: list[int]
) -> None:
    threads = threading.active_count()
    server = CommandServer(
        command=[sys.executable, "-u", str(stand_in), "--host", "{host}", "--port", "{port}"],
        port=None,
        output_dir=str(stand_in.parent / "logs"),
        debug_mode=True,
        **FAST,
    )
    with server:
        assert server.check_health()
        assert server.get_health_endpoint().endswith("/health")
        pid = server.replica.pid or 0
        cleanup += [pid, *child_pids(server.replica.log_path)]
        server.start_profile()
        server.stop_profile()
        log = server.replica.log_path.read_text()
        assert "POST /start_profile" in log and "POST /stop_profile" in log
    # debug mode verified the cleanup (no CleanupError); the loop thread is gone
    assert not server.check_health()
    assert threading.active_count() == threads
    for p in cleanup:
        assert not alive(p)


async def test_blocking_call_from_the_home_loop_is_refused(
    make_config: Callable[..., BackendConfig], cleanup: list[int]
) -> None:
    launcher = Launcher(make_config())
    assert not await launcher.acheck_health()  # not started: no probe, nothing claimed
    async with launcher:
        cleanup += [launcher.replicas[0].pid or 0, *child_pids(launcher.replicas[0].log_path)]
        with pytest.raises(RuntimeError, match="use the async method"):
            launcher.check_health()
        with pytest.raises(LaunchError, match="already started"):
            await launcher.astart()
        assert await launcher.acheck_health()  # a second start did not harm the first
        # another thread may use the blocking API
        assert await asyncio.to_thread(launcher.check_health)


def test_cli_runs_until_sigterm(
    make_config: Callable[..., BackendConfig], tmp_path: Path, cleanup: list[int]
) -> None:
    config = tmp_path / "stack.yaml"
    backends = make_config(replicas=2).model_dump(exclude_none=True)
    config.write_text(yaml.safe_dump({"backends": backends}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.launch.launcher", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    cleanup.append(proc.pid)
    try:
        assert proc.stdout is not None
        ups = []
        for line in proc.stdout:
            if line.startswith("gateway launch: up "):
                ups.append(line.split()[-1])
                if len(ups) == 2:
                    break
        assert len(ups) == 2 and all(u.endswith("/v1") for u in ups), ups
        logs = sorted((tmp_path / "logs").glob("fake-*.log"))
        cleanup += [pid for log in logs for pid in child_pids(log)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in cleanup:
        assert not alive(pid)


def test_pool_callbacks(make_config: Callable[..., BackendConfig], cleanup: list[int]) -> None:
    class Pool:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def add(self, url: str) -> None:
            self.calls.append(("add", url))

        def mark_down(self, url: str) -> None:
            self.calls.append(("down", url))

        async def mark_up(self, url: str) -> None:  # async methods work too
            self.calls.append(("up", url))

    pool = Pool()
    launcher = Launcher(make_config(), **pool_callbacks(pool))
    launcher.start()
    try:
        (replica,) = launcher.replicas
        url = replica.url
        cleanup += [replica.pid or 0, *child_pids(replica.log_path)]
        os.kill(replica.pid or 0, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while len(pool.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        cleanup += [replica.pid or 0, *child_pids(replica.log_path)]
    finally:
        launcher.stop()
    assert pool.calls == [("add", url), ("down", url), ("up", url), ("down", url)]


async def test_escaped_process_is_stopped_and_reported_in_debug_mode(
    make_config: Callable[..., BackendConfig], cleanup: list[int]
) -> None:
    launcher = Launcher(make_config(args={"escape": True}, debug_mode=True))
    await launcher.astart()
    (replica,) = launcher.replicas
    (escaped,) = child_pids(replica.log_path)
    cleanup += [replica.pid or 0, escaped]
    assert os.getpgid(escaped) != replica.pgid  # it left the group
    with pytest.raises(CleanupError, match="left the process group") as info:
        await launcher.astop()
    assert info.value.pids == [escaped]
    assert not alive(escaped) and not alive(cleanup[0])


async def test_port_in_use_is_refused(
    make_config: Callable[..., BackendConfig], cleanup: list[int]
) -> None:
    async with Launcher(make_config()) as first:
        (replica,) = first.replicas
        cleanup += [replica.pid or 0, *child_pids(replica.log_path)]
        second = Launcher(make_config(name="second", base_port=replica.spec.port))
        with pytest.raises(StartupError, match="already in use"):
            await second.astart()

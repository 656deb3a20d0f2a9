"""Keeping one backend process alive: spawn, health wait, heartbeat, restart with backoff, stop.

A `Replica` owns one OS process group (the engine is started with ``start_new_session=True``) and
its log file. `start()` waits for ``GET /health`` to answer 200; a failure raises `StartupError`
quoting the tail of the log. A heartbeat task then probes ``/health`` every
``heartbeat_interval_s``: when the process has exited, or after ``heartbeat_failures`` consecutive
failed probes, the replica is marked down (``on_down``), its whole group is stopped and it is
restarted with exponential backoff (``on_up`` once healthy again). After ``max_restarts`` restarts
it gives up (error log + ``on_give_up``).

Stopping sends SIGTERM to the process group, waits ``stop_grace_s``, then SIGKILLs what is left.
Every spawned process carries a unique token in its environment (`TOKEN_ENV`), which children
inherit, so descendants that left the group (their own session, double fork) are found by a
``/proc`` scan and stopped too. With ``debug_mode`` such escapees, and anything still alive after
the stop, raise `CleanupError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shlex
import signal
import socket
import subprocess
import textwrap
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx

logger = logging.getLogger("gateway.launch")

TOKEN_ENV = "GATEWAY_LAUNCH_TOKEN"
_PROC = Path("/proc")
_KILL_WAIT_S = 5.0
_POLL_S = 0.05


class LaunchError(RuntimeError):
    """Base class of the launcher's errors."""


class StartupError(LaunchError):
    """A replica did not become healthy: it exited, could not be spawned, or its port was taken."""

    def __init__(
        self,
        message: str,
        *,
        replica: str,
        log_path: Path | None = None,
        log_tail: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.replica = replica
        self.log_path = log_path
        self.log_tail = log_tail
        self.returncode = returncode


class StartupTimeout(StartupError):
    """A replica was still running but not healthy when ``startup_timeout_s`` ran out."""


class CleanupError(LaunchError):
    """Processes outlived a stop, or (debug mode) had escaped the replica's process group."""

    def __init__(self, message: str, pids: list[int]) -> None:
        super().__init__(message)
        self.pids = pids


class ReplicaState(StrEnum):
    NEW = "new"
    STARTING = "starting"
    UP = "up"
    DOWN = "down"  # detected down; being restarted
    FAILED = "failed"  # start-up failed, or gave up restarting
    STOPPED = "stopped"


@dataclass(frozen=True)
class ProcessSpec:
    """Everything needed to run one replica: argv, full environment, address, log file."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    host: str
    port: int
    log_path: Path
    health_path: str = "/health"
    cwd: Path | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` as a client reaches it (a wildcard bind address -> loopback)."""
        return f"http://{connect_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL, ending in ``/v1``."""
        return f"{self.base_url}/v1"

    @property
    def health_url(self) -> str:
        return f"{self.base_url}{self.health_path}"


@dataclass(frozen=True)
class SupervisionPolicy:
    startup_timeout_s: float = 600.0
    heartbeat_interval_s: float = 5.0  # 0 disables the heartbeat
    heartbeat_timeout_s: float = 5.0
    heartbeat_failures: int = 3
    max_restarts: int = 5
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    stop_grace_s: float = 15.0
    debug_mode: bool = False

    def backoff(self, attempt: int) -> float:
        """Delay before restart number ``attempt`` (1-based): doubling, capped."""
        return float(min(self.restart_backoff_s * 2 ** (attempt - 1), self.restart_backoff_max_s))


ReplicaCallback = Callable[["Replica"], Awaitable[None] | None]


def connect_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (TIME_WAIT sockets do not count)."""
    bind_host = host.strip("[]")
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, port))
        except OSError:
            return True
    return False


# --- processes, seen through /proc -------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    start_time: int  # clock ticks since boot: tells a pid apart from a later reuse


def read_proc(pid: int) -> ProcInfo | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(pid, int(rest[1]), int(rest[2]), rest[0], int(rest[19]))


def list_processes() -> list[ProcInfo]:
    if not _PROC.is_dir():
        return []
    out = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (info := read_proc(int(entry.name))) is not None:
            out.append(info)
    return out


def is_alive(info: ProcInfo) -> bool:
    """The same process (pid and start time) still exists and is not a zombie."""
    now = read_proc(info.pid)
    return now is not None and now.start_time == info.start_time and now.state not in ("Z", "X")


def descendants(pid: int, procs: Iterable[ProcInfo]) -> list[ProcInfo]:
    children: dict[int, list[ProcInfo]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    out: list[ProcInfo] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return out


def processes_with_token(token: str, procs: Iterable[ProcInfo]) -> list[ProcInfo]:
    """Processes whose environment holds ``TOKEN_ENV=token`` (our own, wherever they went)."""
    needle = f"{TOKEN_ENV}={token}".encode()
    out = []
    for p in procs:
        try:
            environ = (_PROC / str(p.pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            out.append(p)
    return out


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group."""
    if _PROC.is_dir():
        return any(p.pgid == pgid and p.state not in ("Z", "X") for p in list_processes())
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pid(info: ProcInfo, sig: signal.Signals) -> None:
    if is_alive(info):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(info.pid, sig)


def _kill_group_at_exit(pgid: int) -> None:
    """Last resort for a replica that was never stopped (garbage collected or interpreter exit)."""
    _signal_group(pgid, signal.SIGKILL)


# --- the replica -------------------------------------------------------------------------------


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    token: str
    log_offset: int
    finalizer: weakref.finalize[[int], Replica]
    tracked: dict[int, ProcInfo] = field(default_factory=dict)


class Replica:
    """One supervised backend process (see the module docstring)."""

    def __init__(
        self,
        spec: ProcessSpec,
        policy: SupervisionPolicy | None = None,
        *,
        index: int = 0,
        on_up: ReplicaCallback | None = None,
        on_down: ReplicaCallback | None = None,
        on_give_up: ReplicaCallback | None = None,
    ) -> None:
        self.spec = spec
        self.policy = policy or SupervisionPolicy()
        self.index = index
        self.state = ReplicaState.NEW
        self.restarts = 0
        self.last_error: str | None = None
        self.on_up = on_up
        self.on_down = on_down
        self.on_give_up = on_give_up
        self._run: _Running | None = None
        self._log_offset = 0
        self._heartbeat: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"<Replica {self.name} {self.state} {self.url} pid={self.pid}>"

    # --- views ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients and the backend pool, ending in ``/v1``."""
        return self.spec.url

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    @property
    def health_url(self) -> str:
        return self.spec.health_url

    @property
    def log_path(self) -> Path:
        return self.spec.log_path

    @property
    def pid(self) -> int | None:
        return self._run.proc.pid if self._run else None

    @property
    def pgid(self) -> int | None:
        """The process group id (the leader's pid, thanks to ``start_new_session``)."""
        return self.pid

    @property
    def returncode(self) -> int | None:
        return self._run.proc.poll() if self._run else None

    def launch_command(self) -> list[str]:
        return list(self.spec.argv)

    def log_tail(self, max_lines: int = 40, max_bytes: int = 16_384) -> str:
        """The last lines written to the log by the current (or last) start attempt."""
        try:
            with open(self.spec.log_path, "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, size - max_bytes))
                data = log.read()
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-max_lines:])

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn, wait until healthy (else `StartupError`), call ``on_up``, start the heartbeat."""
        if self.state in (ReplicaState.STARTING, ReplicaState.UP, ReplicaState.DOWN):
            raise LaunchError(f"{self.name} is already started ({self.state})")
        self.state = ReplicaState.STARTING
        self.restarts = 0
        self._stopping = False
        try:
            await self._launch()
        except BaseException as exc:
            self.state = ReplicaState.FAILED
            self.last_error = str(exc)
            raise
        self.state = ReplicaState.UP
        logger.info("%s is up at %s (pid %s)", self.name, self.url, self.pid)
        await self._emit(self.on_up)
        if self.policy.heartbeat_interval_s > 0:
            self._heartbeat = asyncio.create_task(self._supervise(), name=f"heartbeat {self.name}")

    async def stop(self) -> None:
        """Stop the heartbeat and the whole process tree; ``on_down`` if it was up."""
        was_up = self.state == ReplicaState.UP
        self._stopping = True
        task, self._heartbeat = self._heartbeat, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._terminate()
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = None
            if self.state != ReplicaState.FAILED:
                self.state = ReplicaState.STOPPED
        if was_up:
            await self._emit(self.on_down)

    async def check_health(self, timeout: float | None = None) -> bool:
        """One ``GET /health`` probe: True on 200 (False when no process is running)."""
        if self._run is None:
            return False
        try:
            resp = await self._http().get(
                self.health_url, timeout=timeout or self.policy.heartbeat_timeout_s
            )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def post(self, path: str, timeout: float = 600.0) -> httpx.Response:
        """POST to the replica's server root (``/start_profile``, ``/stop_profile``, ...)."""
        if self._run is None:
            raise LaunchError(f"{self.name} is not running ({self.state})")
        return await self._http().post(f"{self.base_url}{path}", timeout=timeout)

    def _http(self) -> httpx.AsyncClient:
        # Created in, and closed by `stop()` in, the event loop that runs this replica.
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False)
        return self._client

    # --- internals -----------------------------------------------------------------------------

    async def _launch(self) -> None:
        if port_in_use(self.spec.host, self.spec.port):
            raise StartupError(
                f"{self.name}: port {self.spec.port} on {self.spec.host} is already in use",
                replica=self.name,
                log_path=self.spec.log_path,
            )
        self._spawn()
        try:
            await self._wait_healthy()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._terminate()
            raise

    def _spawn(self) -> None:
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        env = {**spec.env, TOKEN_ENV: token}
        with open(spec.log_path, "ab") as log:
            self._log_offset = log.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(
                f"[launcher {stamp}] starting {self.name}: {shlex.join(spec.argv)}\n".encode()
            )
            log.flush()
            try:
                proc = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=spec.cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                log.write(f"[launcher] cannot execute {spec.argv[0]!r}: {exc}\n".encode())
                raise StartupError(
                    f"{self.name}: cannot execute {spec.argv[0]!r}: {exc}",
                    replica=self.name,
                    log_path=spec.log_path,
                ) from exc
        finalizer = weakref.finalize(self, _kill_group_at_exit, proc.pid)
        self._run = _Running(proc, token, self._log_offset, finalizer)

    def _startup_error(
        self, what: str, cls: type[StartupError] = StartupError, rc: int | None = None
    ) -> StartupError:
        tail = self.log_tail()
        quoted = textwrap.indent(tail, "  | ", lambda _: True) if tail else "  (the log is empty)"
        message = (
            f"{self.name}: {what}\n"
            f"command: {shlex.join(self.spec.argv)}\n"
            f"log: {self.spec.log_path}, last lines:\n{quoted}"
        )
        return cls(
            message, replica=self.name, log_path=self.spec.log_path, log_tail=tail, returncode=rc
        )

    async def _wait_healthy(self) -> None:
        assert self._run is not None
        proc = self._run.proc
        loop = asyncio.get_running_loop()
        timeout = self.policy.startup_timeout_s
        deadline = loop.time() + timeout
        delay = _POLL_S
        while True:
            rc = proc.poll()
            if rc is not None:
                raise self._startup_error(f"exited with code {rc} during start-up", rc=rc)
            remaining = deadline - loop.time()
            probe_timeout = max(0.05, min(self.policy.heartbeat_timeout_s, remaining))
            if await self.check_health(timeout=probe_timeout) and proc.poll() is None:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._startup_error(
                    f"GET {self.health_url} did not answer 200 within {timeout:g} s",
                    StartupTimeout,
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _exit_reason(self) -> str | None:
        rc = self.returncode
        return None if rc is None else f"the process exited with code {rc}"

    def _track_descendants(self) -> None:
        if self._run is not None:
            for p in descendants(self._run.proc.pid, list_processes()):
                self._run.tracked.setdefault(p.pid, p)

    async def _supervise(self) -> None:
        try:
            await self._heartbeat_loop()
        except Exception:
            # A bug here must not leave a replica that looks up but is no longer watched.
            logger.exception("%s: supervision failed; giving up on this replica", self.name)
            self.state = ReplicaState.FAILED
            await self._emit(self.on_give_up)

    async def _heartbeat_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.policy.heartbeat_interval_s)
            reason = self._exit_reason()
            if reason is None:
                if self.policy.debug_mode:
                    self._track_descendants()
                if await self.check_health():
                    failures = 0
                    continue
                failures += 1
                if failures < self.policy.heartbeat_failures:
                    continue
                reason = f"{failures} consecutive failed health checks"
            failures = 0
            if not await self._recover(reason):
                return

    async def _recover(self, reason: str) -> bool:
        """Down -> stop what is left -> restart with backoff. False when it gave up."""
        self.state = ReplicaState.DOWN
        self.last_error = reason
        logger.warning("%s is down (%s)", self.name, reason)
        await self._emit(self.on_down)
        try:
            await self._terminate()
        except CleanupError as exc:
            logger.error("%s: %s", self.name, exc)
        while not self._stopping and self.restarts < self.policy.max_restarts:
            self.restarts += 1
            delay = self.policy.backoff(self.restarts)
            logger.warning(
                "%s: restart %d/%d in %.3g s",
                self.name,
                self.restarts,
                self.policy.max_restarts,
                delay,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return False
            try:
                await self._launch()
            except StartupError as exc:
                self.last_error = str(exc)
                logger.warning("%s: restart %d failed: %s", self.name, self.restarts, exc)
                continue
            self.state = ReplicaState.UP
            logger.info("%s is up again at %s (pid %s)", self.name, self.url, self.pid)
            await self._emit(self.on_up)
            return True
        if self._stopping:
            return False
        self.state = ReplicaState.FAILED
        logger.error(
            "%s: GIVING UP after %d restarts; last error: %s\nlog %s, last lines:\n%s",
            self.name,
            self.restarts,
            self.last_error,
            self.spec.log_path,
            self.log_tail(),
        )
        await self._emit(self.on_give_up)
        return False

    async def _emit(self, callback: ReplicaCallback | None) -> None:
        if callback is None:
            return
        try:
            result = callback(self)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("%s: callback %r failed", self.name, callback)

    async def _terminate(self) -> None:
        """Stop the process group and every descendant that escaped it; verify nothing is left."""
        run = self._run
        if run is None:
            return
        pgid = run.proc.pid
        procs = list_processes()
        members = {p.pid: p for p in procs if p.pgid == pgid}
        escaped = {**run.tracked}
        for p in [*descendants(pgid, procs), *processes_with_token(run.token, procs)]:
            escaped.setdefault(p.pid, p)
        escaped = {pid: p for pid, p in escaped.items() if pid not in members and is_alive(p)}

        _signal_group(pgid, signal.SIGTERM)
        for p in escaped.values():
            _signal_pid(p, signal.SIGTERM)
        if not await self._wait_gone(run, escaped.values(), self.policy.stop_grace_s):
            logger.warning(
                "%s: still running %g s after SIGTERM, sending SIGKILL",
                self.name,
                self.policy.stop_grace_s,
            )
            _signal_group(pgid, signal.SIGKILL)
            for p in escaped.values():
                _signal_pid(p, signal.SIGKILL)
            await self._wait_gone(run, escaped.values(), _KILL_WAIT_S)
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.proc.wait(timeout=0)
        run.finalizer.detach()
        self._run = None

        left = [p.pid for p in escaped.values() if is_alive(p)]
        left += [p.pid for p in processes_with_token(run.token, list_processes()) if is_alive(p)]
        if group_alive(pgid):
            left.append(pgid)
        if left:
            message = f"processes {sorted(set(left))} are still alive after stopping {self.name}"
            if self.policy.debug_mode:
                raise CleanupError(message, sorted(set(left)))
            logger.error("%s", message)
        if escaped:
            pids = sorted(escaped)
            message = f"{self.name}: processes {pids} had left the process group (stopped them)"
            if self.policy.debug_mode:
                raise CleanupError(message, pids)
            logger.warning("%s", message)
        elif self.policy.debug_mode:
            logger.info("%s: cleanup verified, process group %d is empty", self.name, pgid)

    async def _wait_gone(self, run: _Running, extra: Iterable[ProcInfo], within: float) -> bool:
        extra = list(extra)
        deadline = time.monotonic() + within
        while True:
            run.proc.poll()  # reap the leader so it does not linger as our zombie
            if not group_alive(run.proc.pid) and not any(is_alive(p) for p in extra):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL_S)

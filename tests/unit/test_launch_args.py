"""Launcher config -> argv and environment: pure, no process is started."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.launch.launcher import (
    CommandServer,
    Launcher,
    SGLangServer,
    VLLMCPUServer,
    VLLMServer,
    create_server,
    load_server_config,
)
from gateway.launch.servers import (
    BackendConfig,
    LaunchConfigError,
    args_to_flags,
    assign_gpus,
    flag_name,
    launch_command,
    layer_env,
    plan_replicas,
)
from gateway.launch.supervisor import ProcessSpec, SupervisionPolicy


def cfg(**kw: Any) -> BackendConfig:
    return BackendConfig.model_validate({"model": "m", "base_port": 8100, **kw})


# --- args -> flags -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        ({"tensor-parallel-size": 4}, ["--tensor-parallel-size", "4"]),
        ({"--tensor-parallel-size": "4"}, ["--tensor-parallel-size", "4"]),
        ({"tensor_parallel_size": 4}, ["--tensor-parallel-size", "4"]),
        ({"--max_model_len": 2048}, ["--max-model-len", "2048"]),
        ({"gpu-memory-utilization": 0.9}, ["--gpu-memory-utilization", "0.9"]),
        ({"trust-remote-code": True}, ["--trust-remote-code"]),
        ({"trust-remote-code": False}, []),
        ({"quantization": None}, []),
        ({"kv-cache-dtype": {"auto": "fp8"}}, ["--kv-cache-dtype", '{"auto":"fp8"}']),
        ({"allowed-origins": ["a", "b"]}, ["--allowed-origins", '["a","b"]']),
        ({"-O": 3}, ["-O", "3"]),
        ({"some-unknown-flag": "x"}, ["--some-unknown-flag", "x"]),
        ({"max_model_len": 1, "max-model-len": 2}, ["--max-model-len", "2"]),
        (
            ["--tensor-parallel-size", 4, "--trust-remote-code"],
            ["--tensor-parallel-size", "4", "--trust-remote-code"],
        ),
        (["--max_model_len", "1"], ["--max_model_len", "1"]),  # a list passes through as is
        ({}, []),
        (None, []),
    ],
)
def test_args_to_flags(args: Any, flags: list[str]) -> None:
    assert args_to_flags(args) == flags


def test_dict_order_is_kept() -> None:
    flags = args_to_flags({"b": 1, "enforce-eager": True, "a": "x"})
    assert flags == ["--b", "1", "--enforce-eager", "--a", "x"]


@pytest.mark.parametrize(
    ("key", "flag"),
    [("a_b", "--a-b"), ("--a_b", "--a-b"), ("a-b", "--a-b"), ("-x", "-x")],
)
def test_flag_name(key: str, flag: str) -> None:
    assert flag_name(key) == flag


@pytest.mark.parametrize(
    "args", [{"port": 1}, {"--host": "0.0.0.0"}, ["--port=9"], ["--host", "h"]]
)
def test_host_and_port_belong_to_the_launcher(args: Any) -> None:
    with pytest.raises(ValueError, match="use `host` / `base_port`"):
        cfg(args=args)


# --- env layering ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (({"A": "1"}, {"A": "2"}), {"A": "2"}),
        (({"A": "1", "B": "x"}, {"A": None}), {"B": "x"}),
        (({"A": 1, "B": 0.5, "C": True, "D": False},), {"A": "1", "B": "0.5", "C": "1", "D": "0"}),
        (({"A": "1"}, None, {}), {"A": "1"}),
    ],
)
def test_layer_env(layers: tuple[Any, ...], expected: dict[str, str]) -> None:
    assert layer_env(*layers) == expected


def test_env_layers_later_wins() -> None:
    c = cfg(
        engine="vllm-cpu",
        replicas=2,
        args={"kv-cache-memory-bytes": 1 << 28},
        env={"G": "group", "R": "group", "VLLM_ENABLE_V1_MULTIPROCESSING": "1"},
        replica_env=[{"R": "replica0"}],
    )
    base = {"PATH": "/bin", "G": "os", "L": "os", "X": "os"}
    specs = plan_replicas(c, base_env=base, env={"L": "launcher", "X": None})
    assert specs[0].env == {
        "PATH": "/bin",
        "G": "group",
        "L": "launcher",
        "R": "replica0",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",  # the group's env beats the engine default
    }
    assert specs[1].env["R"] == "group"


def test_vllm_cpu_engine_default_env() -> None:
    c = cfg(engine="vllm-cpu", env={"VLLM_CPU_KVCACHE_SPACE": 1})
    (spec,) = plan_replicas(c, base_env={})
    assert spec.env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


def test_vllm_cpu_needs_a_kv_cache_size() -> None:
    with pytest.raises(LaunchConfigError, match="KV-cache size"):
        plan_replicas(cfg(engine="vllm-cpu"), base_env={})
    # from the launcher's own environment is enough
    plan_replicas(cfg(engine="vllm-cpu"), base_env={"VLLM_CPU_KVCACHE_SPACE": "2"})


# --- CUDA_VISIBLE_DEVICES ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "per", "devices", "expected"),
    [
        (2, 0, None, [None, None]),
        (2, 1, None, ["0", "1"]),
        (2, 2, None, ["0,1", "2,3"]),
        (3, 2, None, ["0,1", "2,3", "4,5"]),
        (2, 2, ["4", "5", "6", "7"], ["4,5", "6,7"]),
        (1, 2, [3, 1, 0], ["3,1"]),
    ],
)
def test_assign_gpus(
    replicas: int, per: int, devices: list[Any] | None, expected: list[str | None]
) -> None:
    assert assign_gpus(replicas, per, devices) == expected


def test_assign_gpus_not_enough() -> None:
    with pytest.raises(LaunchConfigError, match="need 4 devices, only 3"):
        assign_gpus(2, 2, ["0", "1", "2"])


def test_gpus_from_config_and_visible_devices() -> None:
    specs = plan_replicas(cfg(replicas=2, gpus_per_replica=2), base_env={})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0,1", "2,3"]
    # slices of what the scheduler gave this process
    specs = plan_replicas(
        cfg(replicas=2, gpus_per_replica=1), base_env={"CUDA_VISIBLE_DEVICES": "4,6"}
    )
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["4", "6"]
    specs = plan_replicas(cfg(replicas=2, gpus_per_replica=1, gpu_ids=[7, 5]), base_env={})
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["7", "5"]
    # a replica's own env has the last word
    specs = plan_replicas(
        cfg(replicas=2, gpus_per_replica=1, replica_env=[{}, {"CUDA_VISIBLE_DEVICES": "9"}]),
        base_env={},
    )
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "9"]
    # no GPUs wanted: the variable is left alone
    (spec,) = plan_replicas(cfg(), base_env={"CUDA_VISIBLE_DEVICES": "3"})
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "3"


# --- launch commands ---------------------------------------------------------------------------


def test_vllm_serve_command() -> None:
    c = cfg(served_model_name="tiny", args={"tensor-parallel-size": 2, "enforce-eager": True})
    assert launch_command(c, index=1) == [
        "vllm", "serve", "m", "--host", "127.0.0.1", "--port", "8101",
        "--served-model-name", "tiny", "--tensor-parallel-size", "2", "--enforce-eager",
    ]  # fmt: skip


def test_vllm_module_command_with_python() -> None:
    c = cfg(python="/venv/bin/python")
    assert launch_command(c) == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m",
        "--host", "127.0.0.1", "--port", "8100",
    ]  # fmt: skip


def test_vllm_cpu_command() -> None:
    c = cfg(engine="vllm-cpu", python="/cpu/bin/python", args={"kv-cache-memory-bytes": 268435456})
    assert launch_command(c) == [
        "/cpu/bin/python", "-m", "vllm.entrypoints.launchers.api_server.entry", "--model", "m",
        "--host", "127.0.0.1", "--port", "8100", "--kv-cache-memory-bytes", "268435456",
    ]  # fmt: skip
    assert launch_command(cfg(engine="vllm-cpu"))[0] == sys.executable


def test_sglang_command() -> None:
    c = cfg(engine="sglang", python="py", served_model_name="s", args=["--tp", "4"])
    assert launch_command(c) == [
        "py", "-m", "sglang.launch_server", "--model-path", "m", "--host", "127.0.0.1",
        "--port", "8100", "--served-model-name", "s", "--tp", "4",
    ]  # fmt: skip


def test_custom_command_placeholders() -> None:
    c = BackendConfig(
        engine="command",
        name="fake",
        host="0.0.0.0",
        base_port=9000,
        command=["srv", "--bind={host}:{port}", "--id", "{name}/{index}"],
        args={"extra": "{port}"},
    )
    assert launch_command(c, index=2) == [
        "srv", "--bind=0.0.0.0:9002", "--id", "fake-2/2", "--extra", "9002",
    ]  # fmt: skip


def test_nsys_prefix() -> None:
    c = cfg(output_dir="out", profile={"nsys": True, "nsys_args": ["--trace=cuda,nvtx"]})
    argv = launch_command(c)
    assert argv[:5] == ["nsys", "profile", "--trace=cuda,nvtx", "-o", "out/vllm-0-%p"]
    assert argv[5:8] == ["vllm", "serve", "m"]
    c = cfg(profile={"nsys": True, "nsys_args": ["-o", "/tmp/r"]})
    assert launch_command(c)[:5] == ["nsys", "profile", "-o", "/tmp/r", "vllm"]
    assert launch_command(cfg())[0] == "vllm"


def test_seed_profile_shape() -> None:
    c = cfg(profile={"enabled": True, "tool": "nsys", "args": ["--stats=true"]})
    assert c.profile.nsys and c.profile.nsys_args == ["--stats=true"]
    with pytest.raises(ValueError, match="not supported"):
        cfg(profile={"enabled": True, "tool": "amd"})


# --- config validation and loading -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"engine": "vllm"}, "needs `model`"),
        ({"engine": "command"}, "needs `command`"),
        ({"engine": "vllm", "model": "m", "command": ["x"]}, "only for engine `command`"),
        ({"model": "m", "replicas": 1, "replica_env": [{}, {}]}, "2 entries for 1 replicas"),
        ({"model": "m", "base_port": 65535, "replicas": 2}, "above 65535"),
        ({"model": "m", "bogus": 1}, "bogus"),
        ({"model": "m", "engine": "tgi"}, "engine"),
    ],
)
def test_config_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BackendConfig.model_validate(data)


def test_free_ports_are_distinct() -> None:
    specs = plan_replicas(cfg(base_port=None, replicas=3), base_env={})
    assert len({s.port for s in specs}) == 3
    assert all(s.url == f"http://127.0.0.1:{s.port}/v1" for s in specs)


def test_spec_urls_and_log_paths() -> None:
    (spec,) = plan_replicas(cfg(host="0.0.0.0", output_dir="logs", name="pol"), base_env={})
    assert spec.name == "pol-0"
    assert spec.url == "http://127.0.0.1:8100/v1"
    assert spec.health_url == "http://127.0.0.1:8100/health"
    assert spec.log_path == Path("logs/pol-0.log")


def test_load_backends_yaml(tmp_path: Path) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text(
        "gateway_key: ignored\n"
        "backends:\n"
        "  engine: vllm-cpu\n"
        "  model: /models/tiny\n"
        "  served_model_name: tiny\n"
        "  replicas: 2\n"
        "  base_port: 8100\n"
        "  args: {max-model-len: 2048, enforce-eager: true, kv-cache-memory-bytes: 268435456}\n"
        "  env: {VLLM_ENABLE_V1_MULTIPROCESSING: '0'}\n"
        "  replica_env: [{}, {OMP_NUM_THREADS: 1}]\n"
        "  profile: {nsys: false, nsys_args: []}\n"
    )
    (c,) = load_server_config(path)
    assert c.engine == "vllm-cpu" and c.replicas == 2 and c.replica_env[1] == {"OMP_NUM_THREADS": 1}
    launcher = Launcher(c)
    assert launcher.endpoints() == ["http://127.0.0.1:8100/v1", "http://127.0.0.1:8101/v1"]
    assert "--enforce-eager" in launcher.get_launch_command()[1]
    assert launcher.list_endpoints()["vllm-cpu-1"]["chat_completions"] == (
        "http://127.0.0.1:8101/v1/chat/completions"
    )


def test_load_several_groups_and_seed_shape(tmp_path: Path) -> None:
    groups = load_server_config(
        {
            "backends": [
                {"name": "policy", "model": "a", "base_port": 8000},
                {"name": "judge", "engine": "sglang", "model": "b", "base_port": 9000},
            ]
        }
    )
    assert [g.name for g in groups] == ["policy", "judge"]
    with pytest.raises(LaunchConfigError, match="distinct"):
        Launcher([groups[0], groups[0]])

    seed = tmp_path / "seed.yaml"
    seed.write_text(
        "backend: vllm\nmodel: meta/llama\nport: 8000\noutput_dir: ./server_logs\n"
        "env_vars: {OMP_NUM_THREADS: '16'}\n"
        "config:\n  api_server_args: {tensor-parallel-size: '4', trust-remote-code: true}\n"
        "heartbeat_interval: 2\nstartup_timeout: 30\ndebug_mode: true\n"
    )
    (c,) = load_server_config(seed)
    assert c.base_port == 8000 and c.env == {"OMP_NUM_THREADS": "16"}
    assert args_to_flags(c.args) == ["--tensor-parallel-size", "4", "--trust-remote-code"]
    assert (c.heartbeat_interval_s, c.startup_timeout_s, c.debug_mode) == (2, 30, True)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(LaunchConfigError, match="cannot read"):
        load_server_config(tmp_path / "missing.yaml")
    with pytest.raises(LaunchConfigError, match="invalid backend config"):
        load_server_config({"backends": {"engine": "vllm"}})


# --- single servers (seed API) -----------------------------------------------------------------


def test_server_classes() -> None:
    server = VLLMServer(
        model="meta/llama",
        env_vars={"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
        config={"api_server_args": {"tensor-parallel-size": "4", "trust-remote-code": True}},
    )
    assert server.get_backend_name() == "vllm"
    assert server.port == 8000  # the older module's default
    assert server.get_launch_command() == [
        "vllm", "serve", "meta/llama", "--host", "127.0.0.1", "--port", "8000",
        "--tensor-parallel-size", "4", "--trust-remote-code",
    ]  # fmt: skip
    assert server.get_health_endpoint() == "http://127.0.0.1:8000/health"
    assert server.list_endpoints()["completions"] == "http://127.0.0.1:8000/v1/completions"
    assert server.replica.spec.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"

    assert isinstance(create_server("sglang", "m", port=9000), SGLangServer)
    assert isinstance(
        create_server("vllm-cpu", "m", env={"VLLM_CPU_KVCACHE_SPACE": "1"}), VLLMCPUServer
    )
    cmd = create_server("command", command=["x", "{port}"], port=None)
    assert isinstance(cmd, CommandServer)
    assert cmd.get_launch_command() == ["x", str(cmd.port)]
    assert cmd.list_endpoints() == {"base": cmd.replica.url, "health": cmd.get_health_endpoint()}
    with pytest.raises(LaunchConfigError, match="unknown backend"):
        create_server("tgi", "m")
    with pytest.raises(TypeError, match="one replica"):
        VLLMServer("m", replicas=2)


def test_supervision_policy_from_config() -> None:
    c = cfg(heartbeat_interval_s=0.2, max_restarts=2, restart_backoff_s=0.5, stop_grace_s=1)
    policy = c.supervision()
    assert policy == SupervisionPolicy(
        startup_timeout_s=600,
        heartbeat_interval_s=0.2,
        heartbeat_timeout_s=5,
        heartbeat_failures=3,
        max_restarts=2,
        restart_backoff_s=0.5,
        restart_backoff_max_s=60,
        stop_grace_s=1,
    )
    assert [policy.backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert SupervisionPolicy(restart_backoff_s=10, restart_backoff_max_s=15).backoff(3) == 15


def test_process_spec_ipv6() -> None:
    spec = ProcessSpec("x", ("a",), {}, "::", 1, Path("l"))
    assert spec.url == "http://[::1]:1/v1"

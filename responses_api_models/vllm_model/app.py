"""NeMo Gym-style entrypoint: `python app.py` serves the gateway for the config in $NEMO_GYM_CONFIG_DICT.

NeMo Gym starts each server as `NEMO_GYM_CONFIG_DICT=<yaml> NEMO_GYM_CONFIG_PATH=<instance> python app.py`;
this file keeps that contract so a Gym stack can launch the gateway in place of its vllm_model server.
"""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig, OmegaConf

from gateway.cli import serve
from gateway.config import ConfigError, model_server_config


def main() -> int:
    raw = os.environ.get("NEMO_GYM_CONFIG_DICT")
    if raw is None:
        print(
            "app.py: set NEMO_GYM_CONFIG_DICT (or use `gateway serve --config FILE`)",
            file=sys.stderr,
        )
        return 2
    merged = OmegaConf.create(raw)
    assert isinstance(merged, DictConfig)
    try:
        cfg = model_server_config(merged, os.environ.get("NEMO_GYM_CONFIG_PATH"))
    except ConfigError as exc:
        print(f"app.py: config error: {exc}", file=sys.stderr)
        return 2
    serve(cfg, cfg.host or "127.0.0.1", cfg.port or 8080, cfg.num_workers or 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

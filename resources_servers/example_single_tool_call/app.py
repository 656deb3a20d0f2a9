"""A complete resources server in NeMo Gym's shape: one tool (`POST /get_weather`) and `/verify`.

NeMo Gym starts it as `NEMO_GYM_CONFIG_DICT=<yaml> NEMO_GYM_CONFIG_PATH=<instance> python app.py`;
`ng_run` does the same. Tools are plain POST routes named like the function tools the model sees.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict


class GetWeatherRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str


class VerifyRequest(BaseModel):
    responses_create_params: dict[str, Any]
    response: dict[str, Any]


def create_app() -> FastAPI:
    app = FastAPI(title="example_single_tool_call", docs_url=None, redoc_url=None)

    @app.get("/")
    @app.get("/health")
    async def alive() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/seed_session")
    async def seed_session() -> dict[str, Any]:
        return {}

    @app.post("/get_weather")
    async def get_weather(body: GetWeatherRequest) -> dict[str, str]:
        return {"city": body.city, "weather_description": f"The weather in {body.city} is cold."}

    @app.post("/verify")
    async def verify(body: VerifyRequest) -> dict[str, Any]:
        """Reward 1.0 when the model called get_weather with a city, else 0.0."""
        reward = 0.0
        for item in body.response.get("output") or []:
            if item.get("type") == "function_call" and item.get("name") == "get_weather":
                try:
                    args = json.loads(item.get("arguments") or "")
                except json.JSONDecodeError:
                    continue
                if isinstance(args, dict) and isinstance(args.get("city"), str):
                    reward = 1.0
        return {**body.model_dump(), "reward": reward}

    return app


def main() -> int:
    raw = os.environ.get("NEMO_GYM_CONFIG_DICT")
    name = os.environ.get("NEMO_GYM_CONFIG_PATH")
    if raw is None or name is None:
        print("set NEMO_GYM_CONFIG_DICT and NEMO_GYM_CONFIG_PATH (ng_run does)", file=sys.stderr)
        return 2
    merged = OmegaConf.create(raw)
    assert isinstance(merged, DictConfig)
    block = OmegaConf.to_container(
        merged[name]["resources_servers"]["example_single_tool_call"], resolve=True
    )
    assert isinstance(block, dict)
    uvicorn.run(
        create_app(),
        host=str(block.get("host") or "127.0.0.1"),
        port=int(block.get("port") or 8090),
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

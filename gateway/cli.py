"""The `gateway` command.

    gateway serve --config FILE [--env env.yaml] [--host H] [--port P] [--workers N] [key=value ...]
    gateway launch --config FILE            start and supervise the `backends:` of FILE
    gateway make-tiny-model DIR [--scripted] build a tiny Qwen3 model vLLM can serve offline

`serve` launches the config's `backends:` first (if any) and puts them in the gateway's pool.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from omegaconf import OmegaConf

from gateway.app import STATE_DIR_ENV, create_app
from gateway.config import ConfigError, ModelServerConfig, merge_configs, model_server_config
from gateway.launch import launcher as launch_cli
from gateway.launch import tiny_model
from gateway.metrics import MULTIPROC_ENV
from gateway.routing.session import SECRET_ENV

CONFIG_ENV = "GATEWAY_CONFIG_JSON"


def tune_gc() -> None:
    """A serving process allocates many short-lived objects per request: move everything loaded
    at start-up out of the collector's view and collect young objects less often (measured:
    p99 at 64 clients 31 -> 9 ms, docs/benchmarks.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def app_from_env() -> FastAPI:
    """uvicorn factory for `--workers N`: each worker rebuilds the app from the parent's config."""
    app = create_app(ModelServerConfig.model_validate_json(os.environ[CONFIG_ENV]))
    tune_gc()
    return app


def serve(cfg: ModelServerConfig, host: str, port: int, workers: int) -> None:
    # Every worker must sign and verify the same session cookies.
    if not cfg.session_secret and not os.environ.get(SECRET_ENV):
        os.environ[SECRET_ENV] = secrets.token_urlsafe(32)
    print(f"gateway: serving model {cfg.model!r} on http://{host}:{port}/v1", flush=True)
    print(f"gateway: backends {', '.join(cfg.base_url) or '(none yet)'}", flush=True)
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": 30,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers > 1:
        os.environ[CONFIG_ENV] = cfg.model_dump_json()
        # Shared by the workers: metrics files, and the backend list admin changes write.
        for env in (MULTIPROC_ENV, STATE_DIR_ENV):
            if not os.environ.get(env):
                os.environ[env] = tempfile.mkdtemp(prefix="gateway-")
        uvicorn.run("gateway.cli:app_from_env", factory=True, workers=workers, **common)
    else:
        app = create_app(cfg)
        tune_gc()
        uvicorn.run(app, **common)


def run_serve(args: argparse.Namespace) -> int:
    try:
        merged = merge_configs([args.config], args.env, args.overrides)
        cfg = model_server_config(merged, args.server_name)
    except ConfigError as exc:
        print(f"gateway: config error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"gateway: config error: {args.config}: {exc}", file=sys.stderr)
        return 2
    host = args.host or cfg.host or "127.0.0.1"
    port = args.port or cfg.port or 8080
    workers = args.workers or cfg.num_workers or 1
    fleet = None
    if merged.get("backends") is not None:
        backends = OmegaConf.to_container(merged["backends"], resolve=True)
        fleet = launch_cli.Launcher(launch_cli.load_server_config({"backends": backends}))
        print("gateway: starting launched backends ...", flush=True)
        fleet.start()
        launched = [u for u in fleet.endpoints() if u not in cfg.base_url]
        cfg = cfg.model_copy(update={"base_url": [*cfg.base_url, *launched]})
    try:
        serve(cfg, host, port, workers)
    finally:
        if fleet is not None:
            fleet.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve /v1/responses and /v1/chat/completions")
    p_serve.add_argument("--config", required=True, help="YAML with one model-server block")
    p_serve.add_argument("--env", default="env.yaml", help="env.yaml with ${...} values")
    p_serve.add_argument("--server-name", default=None, help="which model server, if several")
    p_serve.add_argument("--host", default=None)
    p_serve.add_argument("--port", type=int, default=None)
    p_serve.add_argument("--workers", type=int, default=None)
    p_serve.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model=foo")
    p_serve.set_defaults(handler=run_serve)
    launch_cli.add_subcommand(sub)
    tiny_model.add_subcommand(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

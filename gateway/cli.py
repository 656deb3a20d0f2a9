"""`gateway serve --config FILE [--env env.yaml] [--host H] [--port P] [--workers N] [key=value ...]`."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI

from gateway.app import STATE_DIR_ENV, create_app
from gateway.config import ConfigError, ModelServerConfig, load_config
from gateway.metrics import MULTIPROC_ENV
from gateway.routing.session import SECRET_ENV

CONFIG_ENV = "GATEWAY_CONFIG_JSON"


def app_from_env() -> FastAPI:
    """uvicorn factory for `--workers N`: each worker rebuilds the app from the parent's config."""
    return create_app(ModelServerConfig.model_validate_json(os.environ[CONFIG_ENV]))


def serve(cfg: ModelServerConfig, host: str, port: int, workers: int) -> None:
    # Every worker must sign and verify the same session cookies.
    if not cfg.session_secret and not os.environ.get(SECRET_ENV):
        os.environ[SECRET_ENV] = secrets.token_urlsafe(32)
    print(f"gateway: serving model {cfg.model!r} on http://{host}:{port}/v1", flush=True)
    print(f"gateway: backends {', '.join(cfg.base_url)}", flush=True)
    common = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "timeout_keep_alive": 30,
    }
    if workers > 1:
        os.environ[CONFIG_ENV] = cfg.model_dump_json()
        # Shared by the workers: metrics files, and the backend list admin changes write.
        for env in (MULTIPROC_ENV, STATE_DIR_ENV):
            if not os.environ.get(env):
                os.environ[env] = tempfile.mkdtemp(prefix="gateway-")
        uvicorn.run("gateway.cli:app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(cfg), **common)  # type: ignore[arg-type]


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
    args = parser.parse_args(argv)

    if args.command == "serve":
        try:
            cfg = load_config(args.config, args.env, args.overrides, args.server_name)
        except ConfigError as exc:
            print(f"gateway: config error: {exc}", file=sys.stderr)
            return 2
        host = args.host or cfg.host or "127.0.0.1"
        port = args.port or cfg.port or 8080
        workers = args.workers or cfg.num_workers or 1
        serve(cfg, host, port, workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

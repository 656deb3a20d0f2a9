"""Run the gateway (one worker) with a chosen uvicorn HTTP protocol and event loop.

    python bench/serve_gateway.py --config FILE --port P --http h11 --loop asyncio

For the HTTP-stack comparison only: the settings are those of `gateway.cli.serve` for one worker
(same app, log level, access log off, keep-alive), except `--http` and `--loop`, which the CLI
leaves at uvicorn's `auto` (httptools and uvloop when installed).
"""

from __future__ import annotations

import argparse

import uvicorn

from gateway.app import create_app
from gateway.config import load_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http", default="auto", choices=("auto", "httptools", "h11"))
    p.add_argument("--loop", default="auto", choices=("auto", "uvloop", "asyncio"))
    args = p.parse_args()
    cfg = load_config(args.config, env_path=None)
    uvicorn.run(
        create_app(cfg),
        host=args.host,
        port=args.port,
        http=args.http,
        loop=args.loop,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()

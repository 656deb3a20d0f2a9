"""Keeping the pool true: active health probes, and membership shared by every worker.

Admin changes to the backend list are written to `backends.json` in a state directory that all
workers of one gateway share (`gateway serve` sets one up); each worker picks changes up on its
next probe round, so several workers behave as one gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway.config import ModelServerConfig
from gateway.routing.pool import BackendPool
from gateway.upstream import Backend

log = logging.getLogger("gateway.routing")


class Membership:
    """The backend list persisted in `<state_dir>/backends.json` (nothing without a state dir)."""

    def __init__(self, state_dir: str | None) -> None:
        self._path = Path(state_dir) / "backends.json" if state_dir else None
        self._seen: float | None = None

    def load(self, default: list[str]) -> list[str]:
        urls = self._read()
        return default if urls is None else urls

    def save(self, urls: list[str]) -> None:
        if self._path is None:
            return
        tmp = self._path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(urls))
        os.replace(tmp, self._path)
        self._seen = self._path.stat().st_mtime

    def changed(self) -> list[str] | None:
        """The list, when the file changed since this worker last read or wrote it."""
        if self._path is None:
            return None
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime == self._seen:
            return None
        return self._read()

    def _read(self) -> list[str] | None:
        if self._path is None:
            return None
        try:
            self._seen = self._path.stat().st_mtime
            urls = orjson.loads(self._path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return [str(u) for u in urls] if isinstance(urls, list) else None


async def sync_members(
    pool: BackendPool, urls: list[str], make_backend: Callable[[str], Backend]
) -> None:
    wanted = [u.rstrip("/") for u in urls]
    for url in wanted:
        if pool.get(url) is None:
            pool.add(make_backend(url))
    for state in pool.states:
        if state.url not in wanted:
            await pool.remove(state.url)


async def maintain(
    pool: BackendPool,
    membership: Membership,
    cfg: ModelServerConfig,
    make_backend: Callable[[str], Backend],
) -> None:
    """Forever: follow membership changes, probe every backend's `/health`."""
    while True:
        with contextlib.suppress(Exception):
            urls = membership.changed()
            if urls is not None:
                await sync_members(pool, urls, make_backend)
        try:
            await pool.probe_once(cfg.health_check_timeout_s)
        except Exception:  # a probe round must never kill the loop
            log.exception("health probe round failed")
        await asyncio.sleep(cfg.health_check_interval_s)

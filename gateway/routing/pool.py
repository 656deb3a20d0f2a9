"""The backend pool: membership, health, in-flight counts, and which backend serves a request.

Placement is rendezvous (highest-random-weight) hashing of the session key over the healthy
backends: every gateway worker and every gateway replica computes the same owner with no shared
state, and when a backend leaves only the sessions it owned move, each to its own next choice.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.errors import GatewayError
from gateway.upstream import Backend

log = logging.getLogger("gateway.routing")

Policy = Literal["session", "round_robin", "least_inflight"]


def rendezvous_score(key: str, backend_id: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{backend_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(key: str, backend_ids: list[str]) -> list[str]:
    """Backend ids, best owner first, for a session key."""
    return sorted(backend_ids, key=lambda b: rendezvous_score(key, b), reverse=True)


@dataclass
class BackendState:
    backend: Backend
    healthy: bool = True
    in_flight: int = 0
    consecutive_failures: int = 0  # requests that failed on the backend's side, in a row
    probe_failures: int = 0  # `/health` probes that failed, in a row
    ejections: int = 0
    ejected_at: float = 0.0

    @property
    def url(self) -> str:
        return self.backend.base_url


@dataclass
class PoolEvents:
    """Hooks for metrics; each receives the backend URL."""

    on_eject: Callable[[str], None] = lambda url: None
    on_readmit: Callable[[str], None] = lambda url: None
    on_spill: Callable[[str], None] = lambda url: None


class BackendPool:
    def __init__(
        self,
        backends: list[Backend],
        *,
        policy: Policy = "session",
        max_inflight: int = 0,
        spill: bool = True,
        eject_after_failures: int = 3,
        eject_cooldown_s: float = 0.0,
        retry_after_s: int = 1,
        events: PoolEvents | None = None,
    ) -> None:
        self._states: dict[str, BackendState] = {}
        for backend in backends:
            self._states[backend.base_url] = BackendState(backend)
        self.policy = policy
        self.max_inflight = max_inflight
        self.spill = spill
        self.eject_after_failures = eject_after_failures
        self.eject_cooldown_s = eject_cooldown_s
        self.retry_after_s = retry_after_s
        self.events = events or PoolEvents()
        self._round_robin = itertools.count()

    # --- membership -------------------------------------------------------------------------

    @property
    def backends(self) -> list[Backend]:
        return [s.backend for s in self._states.values()]

    @property
    def states(self) -> list[BackendState]:
        return list(self._states.values())

    def get(self, url: str) -> BackendState | None:
        return self._states.get(url.rstrip("/"))

    def add(self, backend: Backend) -> bool:
        if backend.base_url in self._states:
            return False
        self._states[backend.base_url] = BackendState(backend)
        log.info("backend added: %s", backend.base_url)
        return True

    async def remove(self, url: str) -> bool:
        state = self._states.pop(url.rstrip("/"), None)
        if state is None:
            return False
        log.info("backend removed: %s", state.url)
        await state.backend.aclose()
        return True

    async def aclose(self) -> None:
        for state in self._states.values():
            await state.backend.aclose()

    # --- health -----------------------------------------------------------------------------

    def mark_down(self, url: str) -> None:
        state = self.get(url)
        if state is not None and state.healthy:
            state.healthy = False
            state.ejections += 1
            state.ejected_at = time.monotonic()
            log.warning("backend ejected: %s", state.url)
            self.events.on_eject(state.url)

    def mark_up(self, url: str) -> None:
        """A health probe succeeded. An ejected backend waits out the cool-down first: a
        stalled engine can keep answering `/health` while its requests time out."""
        state = self.get(url)
        if state is not None:
            # A probe clears probe failures only: a stalled engine's `/health` must not clear
            # the request failures that will eject it (`record_success` does that).
            state.probe_failures = 0
            cooled = time.monotonic() - state.ejected_at >= self.eject_cooldown_s
            if not state.healthy and cooled:
                state.consecutive_failures = 0
                state.healthy = True
                log.warning("backend re-admitted: %s", state.url)
                self.events.on_readmit(state.url)

    def record_failure(self, state: BackendState) -> None:
        """A request to this backend failed on the backend's side (connect, timeout, 5xx)."""
        state.consecutive_failures += 1
        if state.consecutive_failures >= self.eject_after_failures:
            self.mark_down(state.url)

    def record_success(self, state: BackendState) -> None:
        state.consecutive_failures = 0

    async def probe_once(self, timeout_s: float) -> None:
        states = list(self._states.values())
        results = await asyncio.gather(*(s.backend.is_healthy(timeout_s) for s in states))
        for state, ok in zip(states, results, strict=True):
            if ok:
                self.mark_up(state.url)
            else:
                state.probe_failures += 1
                if state.probe_failures >= self.eject_after_failures:
                    self.mark_down(state.url)

    # --- placement --------------------------------------------------------------------------

    def order(self, key: str) -> list[BackendState]:
        """Backends to try for this key, best first; healthy ones only while any is healthy."""
        states = list(self._states.values())
        if not states:
            raise GatewayError(
                503, "No backend is configured.", type="server_error", code="backend_unavailable"
            )
        healthy = [s for s in states if s.healthy] or states
        if len(healthy) == 1:
            return healthy
        by_url = {s.url: s for s in healthy}
        ranked = [by_url[u] for u in rank(key, list(by_url))]
        if self.policy == "round_robin":
            start = next(self._round_robin) % len(ranked)
            ranked = healthy[start:] + healthy[:start]
        elif self.policy == "least_inflight":
            ranked.sort(key=lambda s: s.in_flight)  # stable: ties keep the session order
        return ranked

    def choose(self, key: str) -> list[BackendState]:
        """`order`, with saturated backends moved out; 429 when nothing can take the request."""
        ordered = self.order(key)
        if self.max_inflight <= 0:
            return ordered
        free = [s for s in ordered if s.in_flight < self.max_inflight]
        if free and free[0] is not ordered[0]:
            if not self.spill:
                free = []
            else:
                self.events.on_spill(ordered[0].url)
        if not free:
            raise GatewayError(
                429,
                "Every backend is at its in-flight limit; retry shortly.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"retry-after": str(self.retry_after_s)},
            )
        return free

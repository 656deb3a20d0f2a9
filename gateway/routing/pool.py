"""The backend pool and placement by rendezvous (highest-random-weight) hashing.

Every gateway worker and replica computes the same owner for a session key with no shared
state, and when a backend leaves only the sessions it owned move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from gateway.upstream import Backend


def rendezvous_score(key: str, backend_id: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{backend_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class BackendPool:
    def __init__(self, backends: Sequence[Backend]) -> None:
        if not backends:
            raise ValueError("the pool needs at least one backend")
        self.backends = list(backends)
        self._ids = [b.base_url for b in self.backends]

    def pick(self, session_key: str) -> Backend:
        if len(self.backends) == 1:
            return self.backends[0]
        best = max(range(len(self._ids)), key=lambda i: rendezvous_score(session_key, self._ids[i]))
        return self.backends[best]

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()

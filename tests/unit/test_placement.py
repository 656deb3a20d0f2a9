"""Rendezvous placement: 10,000 session keys over 8 backends, then one leaves."""

from collections import Counter

from gateway.routing.pool import rank


def owners(keys, backends):
    return {k: rank(k, backends)[0] for k in keys}


def test_removing_a_backend_moves_only_its_sessions_and_spreads_them():
    backends = [f"http://10.0.0.{i}:8000/v1" for i in range(8)]
    keys = [f"session-{i}" for i in range(10_000)]
    before = owners(keys, backends)
    load = Counter(before.values())
    assert max(load.values()) / min(load.values()) < 1.25  # even spread to start with

    gone = backends[3]
    after = owners(keys, [b for b in backends if b != gone])
    moved = [k for k in keys if before[k] != after[k]]
    # only the sessions of the backend that left move ...
    assert all(before[k] == gone for k in moved)
    assert len(moved) == load[gone]
    assert 0.10 < len(moved) / len(keys) < 0.15  # about 1/8
    # ... and they spread over the other 7 instead of piling onto one
    spread = Counter(after[k] for k in moved)
    assert len(spread) == 7
    assert max(spread.values()) < 2 * len(moved) / 7


def test_every_process_computes_the_same_owner():
    backends = ["http://a/v1", "http://b/v1", "http://c/v1"]
    assert rank("episode-1", backends) == rank("episode-1", list(reversed(backends)))

"""Several fake backends on 127.0.0.1: affinity, failover, ejection, saturation, admin, metrics."""

from __future__ import annotations

import concurrent.futures
import time
from contextlib import ExitStack

import httpx

from gateway.app import create_app
from gateway.config import ModelServerConfig
from gateway.launch.servers import free_port
from tests.fakes.fake_vllm import FakeVLLM, Reply, serve_in_thread


class Fleet:
    """Fakes that can be stopped and restarted on the same port, plus a gateway over them."""

    def __init__(self, exits: ExitStack, n: int, **config) -> None:
        self.fakes = [FakeVLLM(model="tiny") for _ in range(n)]
        self.ports = [free_port() for _ in range(n)]
        self._servers: list[ExitStack | None] = [None] * n
        for i in range(n):
            self.start(i)
        exits.callback(self.stop_all)
        self.urls = [f"http://127.0.0.1:{p}/v1" for p in self.ports]
        self.cfg = ModelServerConfig(
            base_url=self.urls,
            model="tiny",
            **{"retry_backoff_s": 0.01, "health_check_interval_s": 0.1, "admin_key": "k", **config},
        )
        self.url = exits.enter_context(serve_in_thread(create_app(self.cfg)))
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(self, i: int) -> None:
        stack = ExitStack()
        stack.enter_context(serve_in_thread(self.fakes[i].app, port=self.ports[i]))
        self._servers[i] = stack

    def stop(self, i: int) -> None:
        stack = self._servers[i]
        if stack is not None:
            stack.close()
            self._servers[i] = None

    def stop_all(self) -> None:
        for i in range(len(self.fakes)):
            self.stop(i)

    def served(self) -> list[int]:
        return [len(f.chat_requests()) for f in self.fakes]

    def owner(self, session: str) -> int:
        before = self.served()
        r = self.ask(session)
        assert r.status_code == 200, r.text
        after = self.served()
        return next(i for i in range(len(after)) if after[i] > before[i])

    def ask(self, session: str, path: str = "/v1/responses") -> httpx.Response:
        body = (
            {"input": "x"}
            if path == "/v1/responses"
            else {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        )
        return self.http.post(path, json=body, headers={"X-Session-ID": session})

    def health(self) -> dict[str, bool]:
        view = self.http.get("/admin/backends", headers={"authorization": "Bearer k"}).json()
        return {b["url"]: b["healthy"] for b in view["backends"]}


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sticky_across_turns_and_endpoints():
    with ExitStack() as exits:
        fleet = Fleet(exits, 3, expose_backend_header=True)
        owner = fleet.owner("episode-7")
        assert fleet.ask("episode-7").headers["x-gateway-backend"] == fleet.urls[owner]
        for _ in range(3):
            assert fleet.owner("episode-7") == owner
            fleet.ask("episode-7", "/v1/chat/completions")
        assert fleet.served()[owner] == 8 and sum(fleet.served()) == 8
        # the key reaches the backend, for a router in front of vLLM
        assert fleet.fakes[owner].chat_requests()[-1].headers["x-session-id"] == "episode-7"


def test_killed_backend_moves_only_its_sessions_and_loses_nothing():
    with ExitStack() as exits:
        fleet = Fleet(exits, 3, eject_after_failures=1, eject_cooldown_s=30)
        sessions = [f"s{i}" for i in range(30)]
        before = {s: fleet.owner(s) for s in sessions}
        victim = before["s0"]
        fleet.stop(victim)
        # no request is lost: connection failures move to the session's next choice
        after = {s: fleet.owner(s) for s in sessions}
        for s in sessions:
            if before[s] == victim:
                assert after[s] != victim
            else:
                assert after[s] == before[s], "a session whose backend lived must not move"
        assert not fleet.health()[fleet.urls[victim]]


def test_dead_backend_is_ejected_and_readmitted_after_recovery():
    with ExitStack() as exits:
        fleet = Fleet(exits, 2, eject_after_failures=2, eject_cooldown_s=0.2)
        fleet.stop(1)
        assert wait_for(lambda: not fleet.health()[fleet.urls[1]])
        fleet.start(1)
        assert wait_for(lambda: fleet.health()[fleet.urls[1]])
        metrics = fleet.http.get("/metrics").text
        assert "gateway_backend_ejections_total" in metrics


def test_stalled_backend_is_ejected_and_readmitted_after_it_recovers():
    with ExitStack() as exits:
        fleet = Fleet(exits, 2, read_timeout_s=0.2, eject_after_failures=2, eject_cooldown_s=1.0)
        key = next(k for k in (f"k{i}" for i in range(50)) if fleet.owner(k) == 0)
        fleet.fakes[0].set_default(Reply(stall_s=1.0))  # generation stalls; /health stays up
        for _ in range(2):
            assert fleet.ask(key).status_code == 504
        assert not fleet.health()[fleet.urls[0]]
        assert fleet.owner(key) == 1  # the session now lands on its next choice
        time.sleep(0.3)
        assert not fleet.health()[fleet.urls[0]], "re-admitted during the cool-down"
        fleet.fakes[0].set_default(Reply())  # recovered
        assert wait_for(lambda: fleet.health()[fleet.urls[0]], 5)
        assert fleet.owner(key) == 0  # and the session is back on its own replica


def test_saturated_backend_spills_and_all_saturated_is_429():
    with ExitStack() as exits:
        fleet = Fleet(exits, 2, max_inflight_per_backend=1)
        for fake in fleet.fakes:
            fake.set_default(Reply(stall_s=0.6))
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(fleet.ask, "same-session") for _ in range(2)]
            time.sleep(0.2)
            third = fleet.ask("same-session")
            results = [f.result() for f in futures]
        assert [r.status_code for r in results] == [200, 200]
        assert fleet.served() == [1, 1]  # the second request spilled to the other backend
        assert third.status_code == 429
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "rate_limit_exceeded"
        assert "gateway_spills_total" in fleet.http.get("/metrics").text


def test_no_spill_keeps_stickiness_and_answers_429():
    with ExitStack() as exits:
        fleet = Fleet(exits, 2, max_inflight_per_backend=1, spill_when_saturated=False)
        for fake in fleet.fakes:
            fake.set_default(Reply(stall_s=0.5))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(fleet.ask, "sticky")
            time.sleep(0.2)
            second = fleet.ask("sticky")
            assert first.result().status_code == 200
        assert second.status_code == 429
        assert sum(fleet.served()) == 1


def test_admin_adds_and_removes_backends():
    with ExitStack() as exits:
        fleet = Fleet(exits, 1, admin_key="k")
        extra = FakeVLLM(model="tiny")
        extra_url = exits.enter_context(serve_in_thread(extra.app)) + "/v1"
        auth = {"authorization": "Bearer k"}
        assert fleet.http.post("/admin/backends", json={"url": extra_url}).status_code == 401
        r = fleet.http.post("/admin/backends", json={"url": extra_url}, headers=auth)
        assert r.status_code == 201 and len(r.json()["backends"]) == 2
        for i in range(20):
            fleet.ask(f"a{i}")
        assert len(extra.chat_requests()) > 0
        r = fleet.http.request("DELETE", "/admin/backends", json={"url": extra_url}, headers=auth)
        assert r.status_code == 200
        served = len(extra.chat_requests())
        for i in range(10):
            fleet.ask(f"a{i}")
        assert len(extra.chat_requests()) == served
        bad = fleet.http.post("/admin/backends", json={"url": "ftp://x"}, headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "url"


def test_admin_off_without_key():
    with ExitStack() as exits:
        fleet = Fleet(exits, 1, admin_key=None)
        assert fleet.http.get("/admin/backends").status_code == 404


def test_metrics_exposition():
    with ExitStack() as exits:
        fleet = Fleet(exits, 2, admin_key="k")
        fleet.ask("m1")
        fleet.ask("m1", "/v1/chat/completions")
        text = fleet.http.get("/metrics").text
        assert 'gateway_requests_total{backend="http://127.0.0.1' in text
        assert 'route="responses",status="200"' in text
        assert "gateway_request_duration_seconds_bucket" in text
        assert "gateway_backend_in_flight" in text and "gateway_backend_healthy" in text


def test_data_parallel_rank_pinned_per_session():
    with ExitStack() as exits:
        fleet = Fleet(exits, 1, data_parallel_size=4)
        ranks = set()
        for _ in range(3):
            fleet.ask("dp-session")
            ranks.add(fleet.fakes[0].chat_requests()[-1].headers["x-data-parallel-rank"])
        assert len(ranks) == 1
        others = set()
        for i in range(40):
            fleet.ask(f"dp{i}")
            others.add(fleet.fakes[0].chat_requests()[-1].headers["x-data-parallel-rank"])
        assert others == {"0", "1", "2", "3"}

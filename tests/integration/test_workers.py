"""`gateway serve --workers 2` behaves as one gateway: same placement, same cookies, same members."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
from contextlib import ExitStack

import httpx

from gateway.launch.servers import free_port
from tests.fakes.fake_vllm import FakeVLLM, serve_in_thread
from tests.integration.test_routing_http import wait_for


def test_two_workers_act_as_one(tmp_path):
    with ExitStack() as exits:
        fakes = [FakeVLLM(model="tiny") for _ in range(3)]
        urls = [exits.enter_context(serve_in_thread(f.app)) + "/v1" for f in fakes]
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "base_url: [" + ", ".join(urls[:2]) + "]\nmodel: tiny\nadmin_key: k\n"
            "health_check_interval_s: 0.2\n"
        )
        port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("GATEWAY_SESSION_SECRET", "GATEWAY_STATE_DIR", "PROMETHEUS_MULTIPROC_DIR")
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(config),
                "--env",
                str(tmp_path / "none.yaml"),
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

        exits.callback(stop)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, 30), proc.stdout.read1().decode() if proc.stdout else ""

        def fresh() -> httpx.Client:  # a new connection each time, so both workers answer
            return httpx.Client(
                base_url=base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
            )

        with fresh() as c:
            first = c.post("/v1/responses", json={"input": "x"})
            cookie = first.headers["set-cookie"].split(";")[0]
        pids: set[str] = set()
        sent = 1

        def one_turn(_: int) -> str:
            with fresh() as c:
                r = c.post("/v1/responses", json={"input": "x"}, headers={"cookie": cookie})
                assert r.status_code == 200
                assert "set-cookie" not in r.headers  # every worker trusts the same signature
                return str(c.get("/health").headers.get("x-gateway-worker"))

        # Which worker accepts a connection is up to the kernel: send parallel turns until
        # both have answered (bounded).
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for _ in range(20):
                pids.update(pool.map(one_turn, range(16)))
                sent += 16
                if len(pids) == 2:
                    break
        assert len(pids) == 2, "both workers should have served"
        counts = [len(f.chat_requests()) for f in fakes]
        assert sorted(counts) == [0, 0, sent]  # one session, one backend, whichever worker served

        # an admin change made through one worker reaches the other
        with fresh() as c:
            r = c.post(
                "/admin/backends", json={"url": urls[2]}, headers={"authorization": "Bearer k"}
            )
            assert r.status_code == 201

        def both_see_three() -> bool:
            seen = set()
            for _ in range(10):
                with fresh() as c:
                    view = c.get("/admin/backends", headers={"authorization": "Bearer k"})
                    seen.add((view.headers["x-gateway-worker"], len(view.json()["backends"])))
            return {n for _, n in seen} == {3} and len(seen) == 2

        assert wait_for(both_see_three, 10)
        with fresh() as c:
            metrics = c.get("/metrics").text
        assert 'gateway_requests_total{backend="' in metrics
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("gateway_requests_total{") and 'route="responses"' in line
        )
        assert total == sent  # counted across both workers

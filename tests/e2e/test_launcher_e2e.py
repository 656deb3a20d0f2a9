"""The launcher with a real vLLM: a killed replica is restarted and the gateway serves again;
stopping leaves no process of the replica (engine core included) alive."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.config import ModelServerConfig
from gateway.launch.launcher import Launcher
from gateway.launch.tiny_model import SCRIPTED_PLAIN_ANSWER
from tests.e2e.conftest import SERVED_MODEL_NAME, launch_config
from tests.fakes.fake_vllm import serve_in_thread

pytestmark = pytest.mark.e2e


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def ask(url: str) -> httpx.Response:
    body = {"model": "x", "input": "hi", "reasoning": {"effort": "none"}}
    return httpx.post(f"{url}/v1/responses", json=body, timeout=120)


def test_killed_replica_is_restarted_and_stop_leaves_nothing(tiny_model_dir, tmp_path):
    python, model_dir = tiny_model_dir
    events: list[str] = []
    fleet = Launcher(
        launch_config(
            python,
            model_dir,
            tmp_path,
            heartbeat_interval_s=0.5,
            heartbeat_failures=2,
            restart_backoff_s=0.5,
        ),
        on_up=lambda r: events.append("up"),
        on_down=lambda r: events.append("down"),
    )
    fleet.start()
    try:
        replica = fleet.replicas[0]
        cfg = ModelServerConfig(
            base_url=fleet.endpoints(), model=SERVED_MODEL_NAME, health_check_interval_s=0.5
        )
        with serve_in_thread(create_app(cfg)) as gateway:
            assert ask(gateway).json()["output"][0]["content"][0]["text"] == SCRIPTED_PLAIN_ANSWER
            first_pid = replica.pid
            assert (
                first_pid is not None and len(group_members(first_pid)) >= 2
            )  # server + engine core
            os.kill(first_pid, signal.SIGKILL)

            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if replica.pid not in (None, first_pid) and events.count("up") >= 2:
                    break
                time.sleep(0.5)
            assert events[-2:] == ["down", "up"], events
            assert replica.pid != first_pid
            assert group_members(first_pid) == [], (
                "the killed replica's engine core was left behind"
            )
            # the gateway's pool re-admits the restarted replica on its next probe
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and ask(gateway).status_code != 200:
                time.sleep(0.5)
            assert ask(gateway).json()["output"][0]["content"][0]["text"] == SCRIPTED_PLAIN_ANSWER
        second_pid = replica.pid
    finally:
        fleet.stop()
    assert second_pid is not None
    assert group_members(second_pid) == [], "a process of the replica outlived stop()"

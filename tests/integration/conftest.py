"""Real HTTP on 127.0.0.1: a fake vLLM and the gateway, each under uvicorn in its own thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from gateway.config import ModelServerConfig
from tests.fakes.fake_vllm import FakeVLLM, serve_in_thread


@pytest.fixture
def fake() -> Iterator[FakeVLLM]:
    yield FakeVLLM(model="tiny")


@pytest.fixture
def stack() -> Iterator[Callable[..., Stack]]:
    """Start fake backends and a gateway in front of them: `stack(n_backends=1, **config)`."""
    with ExitStack() as exits:

        def start(n_backends: int = 1, fakes: list[FakeVLLM] | None = None, **config: Any) -> Stack:
            fakes = fakes or [FakeVLLM(model="tiny") for _ in range(n_backends)]
            urls = [exits.enter_context(serve_in_thread(f.app)) + "/v1" for f in fakes]
            cfg = ModelServerConfig(
                base_url=config.pop("base_url", urls),
                model="tiny",
                **{"retry_backoff_s": 0.01, **config},
            )
            gateway_url = exits.enter_context(serve_in_thread(create_app(cfg)))
            return Stack(fakes, gateway_url, cfg)

        yield start


class Stack:
    def __init__(self, fakes: list[FakeVLLM], url: str, cfg: ModelServerConfig) -> None:
        self.fakes = fakes
        self.fake = fakes[0]
        self.url = url
        self.cfg = cfg
        self.http = httpx.Client(base_url=url, timeout=30)
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.http.post(path, json=body, **kw)

    def last_chat_body(self, fake_index: int = 0) -> dict[str, Any]:
        chats = [r for r in self.fakes[fake_index].requests if r.path == "/v1/chat/completions"]
        return chats[-1].json

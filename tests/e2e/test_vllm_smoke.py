"""Smoke tests of the e2e fixture: real vLLM + the scripted tiny model return real reasoning and
tool calls (these bodies are what the gateway's fake backend must reproduce)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.launch.tiny_model import (
    SCRIPTED_PLAIN_ANSWER,
    SCRIPTED_REASONING,
    SCRIPTED_TEXT,
    SCRIPTED_TOOL_ARGUMENTS,
    SCRIPTED_TOOL_NAME,
)
from tests.e2e.conftest import VLLMServer

pytestmark = pytest.mark.e2e

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def _post(server: VLLMServer, body: dict[str, Any]) -> httpx.Response:
    # The first request after start-up can take seconds (lazy initialisation in vLLM).
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60.0)


def test_non_stream_reasoning_and_tool_call(vllm_server: VLLMServer) -> None:
    resp = _post(
        vllm_server,
        {"model": vllm_server.model, "messages": MESSAGES, "tools": TOOLS, "temperature": 0},
    )
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    message = choice["message"]
    assert message["reasoning"] == SCRIPTED_REASONING
    assert message["content"] == SCRIPTED_TEXT
    assert len(message["tool_calls"]) == 1
    call = message["tool_calls"][0]
    assert call["type"] == "function"
    assert call["function"]["name"] == SCRIPTED_TOOL_NAME
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert call["function"]["arguments"] == SCRIPTED_TOOL_ARGUMENTS
    assert choice["finish_reason"] == "tool_calls"
    usage = resp.json()["usage"]
    assert usage["completion_tokens"] == 8  # <think> R </think> T <tool_call> J </tool_call> EOS


def test_stream_reasoning_and_tool_call(vllm_server: VLLMServer) -> None:
    body = {
        "model": vllm_server.model,
        "messages": MESSAGES,
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    reasoning, content = "", ""
    calls: dict[int, dict[str, str]] = {}
    finish_reason = None
    usage = None
    done = False
    with httpx.stream(
        "POST", f"{vllm_server.base_url}/chat/completions", json=body, timeout=60.0
    ) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line[len("data: ") :]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                delta = choice["delta"]
                reasoning += delta.get("reasoning") or ""
                content += delta.get("content") or ""
                for tc in delta.get("tool_calls") or []:
                    call = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
                    fn = tc.get("function") or {}
                    call["name"] += fn.get("name") or ""
                    call["arguments"] += fn.get("arguments") or ""
                finish_reason = choice.get("finish_reason") or finish_reason
    assert done
    assert reasoning == SCRIPTED_REASONING
    assert content == SCRIPTED_TEXT
    assert calls == {0: {"name": SCRIPTED_TOOL_NAME, "arguments": SCRIPTED_TOOL_ARGUMENTS}}
    assert finish_reason == "tool_calls"
    assert usage is not None and usage["completion_tokens"] == 8


def test_thinking_off_gives_plain_answer(vllm_server: VLLMServer) -> None:
    resp = _post(
        vllm_server,
        {
            "model": vllm_server.model,
            "messages": MESSAGES,
            "tools": TOOLS,
            "chat_template_kwargs": {"enable_thinking": False},
        },
    )
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["message"]["content"] == SCRIPTED_PLAIN_ANSWER
    assert choice["message"]["reasoning"] is None
    assert not choice["message"].get("tool_calls")
    assert choice["finish_reason"] == "stop"


def test_context_length_error(vllm_server: VLLMServer) -> None:
    long = "word " * (vllm_server.max_model_len + 100)
    resp = _post(
        vllm_server,
        {"model": vllm_server.model, "messages": [{"role": "user", "content": long}]},
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == 400
    assert "maximum context length" in error["message"]

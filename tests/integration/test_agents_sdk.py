"""The OpenAI Agents SDK runs a tool-using agent through the gateway."""

from __future__ import annotations

import asyncio

from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI

from tests.fakes.fake_vllm import Reply, ToolCall

set_tracing_disabled(True)

CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    CALLS.append(city)
    return f"It is sunny in {city}."


def test_agent_tool_loop(stack):
    s = stack()
    s.fake.script(
        Reply(
            content=None,
            reasoning="Need the weather.",
            tool_calls=[ToolCall("get_weather", '{"city": "Paris"}')],
        ),
        Reply(content="Paris is sunny."),
    )
    CALLS.clear()

    async def run() -> str:
        client = AsyncOpenAI(base_url=f"{s.url}/v1", api_key="test", max_retries=0)
        agent = Agent(
            name="weather",
            instructions="Answer with the tool.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="tiny", openai_client=client),
            model_settings=ModelSettings(temperature=0.0),
        )
        result = await Runner.run(agent, "Weather in Paris?")
        for raw in result.raw_responses:
            assert raw.response_id.startswith("resp_")
        await client.close()
        return str(result.final_output)

    assert asyncio.run(run()) == "Paris is sunny."
    assert CALLS == ["Paris"]
    second = s.fake.chat_requests()[1].json["messages"]
    # the replayed reasoning + function call became one assistant message, the output a tool message
    assert second[0] == {"role": "system", "content": "Answer with the tool."}
    assert second[2]["role"] == "assistant" and second[2]["reasoning"] == "Need the weather."
    assert second[2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert second[3]["role"] == "tool" and second[3]["content"] == "It is sunny in Paris."
    assert second[3]["tool_call_id"] == second[2]["tool_calls"][0]["id"]


def test_agent_tool_loop_streamed(stack):
    s = stack()
    s.fake.script(
        Reply(
            content=None,
            reasoning="Need it.",
            tool_calls=[ToolCall("get_weather", '{"city": "Rome"}')],
        ),
        Reply(content="Rome is sunny."),
    )
    CALLS.clear()

    async def run() -> tuple[str, list[str]]:
        client = AsyncOpenAI(base_url=f"{s.url}/v1", api_key="test", max_retries=0)
        agent = Agent(
            name="weather",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="tiny", openai_client=client),
        )
        result = Runner.run_streamed(agent, "Weather in Rome?")
        deltas = []
        async for event in result.stream_events():
            if (
                event.type == "raw_response_event"
                and event.data.type == "response.output_text.delta"
            ):
                deltas.append(event.data.delta)
        await client.close()
        return str(result.final_output), deltas

    final, deltas = asyncio.run(run())
    assert final == "Rome is sunny."
    assert "".join(deltas) == "Rome is sunny."
    assert CALLS == ["Rome"]
    assert all(r.json.get("stream") is True for r in s.fake.chat_requests())

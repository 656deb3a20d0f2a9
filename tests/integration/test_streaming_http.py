"""`stream: true` over real HTTP: every event validated, every ordering rule checked."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.contract import check_stream, parse_sse, validate_response
from tests.fakes.fake_vllm import ErrorReply, FakeVLLM, Reply, ToolCall

TOOLS = [
    {
        "type": "function",
        "name": n,
        "parameters": {"type": "object", "properties": {}},
        "strict": True,
    }
    for n in ("get_weather", "get_time")
]


def stream(s, body, **kw):
    r = s.post("/v1/responses", {**body, "stream": True}, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.content)
    return events, check_stream(events)


def types(events):
    return [e["type"] for e in events]


def test_auto_mode_holds_tagless_text_until_decided_then_streams(stack):
    s = stack()
    s.fake.script(
        Reply(content="plain words here"),
        Reply(content="x", stream_chunks=["<think>r</think>", "a", "b"]),
    )
    events, _ = stream(s, {"input": "hi"})
    # nothing decides whether "plain words" is reasoning until the end: one delta, same result
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == [
        "plain words here"
    ]
    events, _final = stream(s, {"input": "hi"})
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["a", "b"]


def test_reasoning_then_text_streams_token_by_token(stack):
    s = stack()
    s.fake.script(Reply(content="Hello there friend", reasoning="Let me think"))
    events, final = stream(s, {"input": "hi"})
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hello ", "there ", "friend"]  # one delta per backend chunk
    summary = [e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    assert "".join(summary) == "Let me think" and len(summary) == 3
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens"] > 0 and final["status"] == "completed"
    sent = s.last_chat_body()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_stream_matches_non_stream(stack):
    s = stack()
    reply = Reply(
        content="<think>a b</think>c d",
        tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="chatcmpl-tool-1")],
    )
    s.fake.script(reply, reply)
    plain = s.post("/v1/responses", {"input": "x", "tools": TOOLS}).json()
    _, streamed = stream(s, {"input": "x", "tools": TOOLS})

    def strip(r):
        return [{k: v for k, v in i.items() if k not in ("id",)} for i in r["output"]]

    assert strip(plain) == strip(streamed)
    assert plain["usage"] == streamed["usage"]


def test_reasoning_content_mode_events(stack):
    s = stack(reasoning_output="content")
    s.fake.script(Reply(content="ok", reasoning="raw thought"))
    events, final = stream(s, {"input": "hi"})
    assert "response.reasoning_text.delta" in types(events)
    assert "response.reasoning_summary_text.delta" not in types(events)
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "raw thought"}]


def test_several_function_calls_stream_incrementally(stack):
    s = stack()
    s.fake.script(
        Reply(
            content=None,
            reasoning="two calls",
            tool_calls=[
                ToolCall("get_weather", '{"city": "Paris"}'),
                ToolCall("get_time", '{"tz": "CET"}'),
            ],
        )
    )
    events, final = stream(s, {"input": "x", "tools": TOOLS})
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [
        (0, "reasoning"),
        (1, "function_call"),
        (2, "function_call"),
    ]
    arg_deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert len(arg_deltas) > 2  # arguments arrive in pieces
    calls = final["output"][1:]
    assert [(c["name"], c["arguments"]) for c in calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", '{"tz": "CET"}'),
    ]


def test_think_tags_split_across_chunks(stack):
    s = stack()
    s.fake.script(
        Reply(
            content="<thi", stream_chunks=["<thi", "nk>deep ", "thought</th", "ink>Answer", " here"]
        )
    )
    _, final = stream(s, {"input": "x"})
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "deep thought"}]
    assert final["output"][1]["content"][0]["text"] == "Answer here"


def test_lone_close_tag_and_unclosed_think(stack):
    s = stack()
    s.fake.script(
        Reply(content="x", stream_chunks=["the template ", "opened it</think>", "answer"]),
        Reply(content="x", stream_chunks=["<think>cut ", "off"], finish_reason="length"),
    )
    _, final = stream(s, {"input": "x"})
    assert final["output"][0]["summary"][0]["text"] == "the template opened it"
    assert final["output"][1]["content"][0]["text"] == "answer"
    events, cut = stream(s, {"input": "x"})
    assert events[-1]["type"] == "response.incomplete"
    assert [i["type"] for i in cut["output"]] == ["reasoning"]
    assert cut["output"][0]["status"] == "incomplete"


def test_hermes_text_tool_calls_when_backend_has_no_parser(stack):
    s = stack(tool_call_text_parser="hermes", think_open_in_prompt="no")
    s.fake.script(
        Reply(
            content="x",
            stream_chunks=[
                "Checking.",
                "<tool_",
                'call>{"name": "get_weather", ',
                '"arguments": {"city": "Oslo"}}</tool_call>',
            ],
            finish_reason="stop",
        )
    )
    _events, final = stream(s, {"input": "x", "tools": TOOLS})
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Checking."
    assert final["output"][1]["arguments"] == '{"city":"Oslo"}'


def test_length_gives_response_incomplete(stack):
    s = stack()
    s.fake.script(Reply(content="a b c", finish_reason="length"))
    events, final = stream(s, {"input": "x"})
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][-1]["status"] == "incomplete"


def test_context_length_on_stream_is_a_well_formed_incomplete_stream(stack):
    s = stack(fakes=[FakeVLLM(model="tiny", max_model_len=16)])
    events, final = stream(s, {"input": "word " * 200})
    assert types(events)[-1] == "response.incomplete"
    assert final["output"][0]["content"][0]["text"] == ""


def test_error_before_first_byte_is_plain_http_error(stack):
    s = stack()
    s.fake.script(ErrorReply(400, "bad temperature", param="temperature"))
    r = s.post("/v1/responses", {"input": "x", "stream": True})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "bad temperature"


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        (Reply(content="a b c d", fail_after_chunks=2), "Internal server error"),
        (Reply(content="a b c d", drop_after_chunks=2), "dropped"),
    ],
)
def test_mid_stream_failure_is_response_failed(stack, reply, needle):
    s = stack()
    s.fake.script(reply)
    events, final = stream(s, {"input": "x"})
    assert events[-1]["type"] == "response.failed"
    assert final["error"]["code"] == "server_error" and needle in final["error"]["message"]


def test_mid_stream_read_timeout_is_response_failed(stack):
    s = stack(read_timeout_s=0.5)
    s.fake.script(Reply(content="a b c", stream_delay_s=2.0))
    events, final = stream(s, {"input": "x"})
    assert events[-1]["type"] == "response.failed"
    assert "timed out" in final["error"]["message"]


def test_logprobs_on_text_deltas(stack):
    s = stack()
    events, final = stream(
        s, {"input": "x", "top_logprobs": 1, "include": ["message.output_text.logprobs"]}
    )
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert deltas and all(len(d["logprobs"]) == 1 for d in deltas)
    assert final["output"][0]["content"][0]["logprobs"][0]["token"] == "Hello"


def test_training_token_ids_identical_to_non_streaming(stack):
    s = stack(return_token_id_information=True)
    reply = Reply(content="the answer", reasoning="think")
    s.fake.script(reply, reply)
    plain = s.post("/v1/responses", {"input": "q"}).json()
    _, streamed = stream(s, {"input": "q"})
    for key in ("prompt_token_ids", "generation_token_ids", "generation_log_probs"):
        assert plain["output"][-1][key] == streamed["output"][-1][key], key
    assert plain["output"][-1]["generation_token_ids"]


def test_client_disconnect_cancels_upstream(stack):
    s = stack(think_open_in_prompt="no")  # text streams at once (no lone-</think> hold)
    s.fake.script(Reply(content="tok " * 200, stream_delay_s=0.02))
    with (
        httpx.Client(base_url=s.url, timeout=10) as client,
        client.stream("POST", "/v1/responses", json={"input": "x", "stream": True}) as r,
    ):
        for line in r.iter_lines():
            if "output_text.delta" in line:
                break  # read a little, then hang up
    deadline = time.monotonic() + 5
    while s.fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.fake.disconnects == 1  # the backend saw the connection close long before 200 tokens


def test_sdk_stream_helper_accumulates(stack):
    s = stack()
    s.fake.script(Reply(content="Hello world", reasoning="hmm"))
    with s.client.responses.stream(model="m", input="hi") as events:
        for _ in events:
            pass
        final = events.get_final_response()
    assert final.output_text == "Hello world"
    assert final.output[0].type == "reasoning"
    validate_response(final.model_dump(mode="json"))


def test_sdk_stream_helper_function_calls(stack):
    s = stack()
    s.fake.script(
        Reply(
            content=None,
            reasoning="plan",
            tool_calls=[ToolCall("get_weather", '{"city": "Paris"}'), ToolCall("get_time", "{}")],
        )
    )
    with s.client.responses.stream(model="m", input="hi", tools=TOOLS) as events:
        for _ in events:
            pass
        final = events.get_final_response()
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", "{}"),
    ]


def test_chat_completions_stream_passthrough(stack):
    s = stack()
    s.fake.script(Reply(content="hi there", reasoning="why"))
    r = s.post(
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "q"}], "stream": True},
    )
    assert r.status_code == 200
    lines = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [orjson.loads(line) for line in lines[:-1]]
    assert all(c["model"] == "tiny" for c in chunks)
    content = "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"]
    )
    assert content == "<think>why</think>hi there"
    from openai.types.chat import ChatCompletionChunk

    for c in chunks:
        ChatCompletionChunk.model_validate(c)


def test_chat_completions_stream_with_sdk_and_context_length(stack):
    s = stack(fakes=[FakeVLLM(model="tiny", max_model_len=32)], chat_reasoning_output="field")
    pieces = [
        c.choices[0].delta.content or ""
        for c in s.client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "q"}], stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == "Hello"
    overflow = list(
        s.client.chat.completions.create(
            model="x", messages=[{"role": "user", "content": "w " * 300}], stream=True
        )
    )
    assert overflow[-1].choices[0].finish_reason == "length"


def test_slow_client_back_pressure(stack):
    """A client that stops reading stalls the backend instead of the gateway buffering the
    completion: 50 MB of text cannot all be sent while the client reads nothing."""
    s = stack(fakes=[FakeVLLM(model="tiny", max_model_len=100_000)], think_open_in_prompt="no")
    total = 5000
    s.fake.script(Reply(content="x", stream_chunks=["x" * 10_000] * total))
    with (
        httpx.Client(base_url=s.url, timeout=60) as client,
        client.stream("POST", "/v1/responses", json={"input": "x", "stream": True}) as r,
    ):
        chunks = r.iter_raw()
        next(chunks)  # the first bytes, then the client stops reading
        time.sleep(1.5)
        stalled = s.fake.chunks_sent
        assert stalled < total // 2, (
            f"the backend ran ahead of a client that reads nothing: {stalled}"
        )
        received = sum(len(c) for c in chunks)  # now read everything
    assert s.fake.chunks_sent >= total
    assert received > total * 10_000


def test_long_sse_line_with_all_prompt_token_ids(stack):
    """vLLM puts every prompt token id on the first chunk: a line of several hundred KB."""
    s = stack(
        fakes=[FakeVLLM(model="tiny", max_model_len=1_000_000)], return_token_id_information=True
    )
    long_input = "word " * 100_000
    _, final = stream(s, {"input": long_input})
    assert len(final["output"][-1]["prompt_token_ids"]) > 100_000

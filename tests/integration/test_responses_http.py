"""`/v1/responses` over real HTTP with the real openai SDK, against a fake vLLM."""

from __future__ import annotations

import openai
import pytest

from tests.contract import validate_response
from tests.fakes.fake_vllm import ErrorReply, FakeVLLM, Reply, ToolCall


def test_plain_text_via_sdk(stack):
    s = stack()
    response = s.client.responses.create(model="whatever", input="hi")
    assert response.output_text == "Hello"
    assert response.status == "completed" and response.model == "tiny"
    validate_response(response.model_dump(mode="json"))
    sent = s.last_chat_body()
    assert sent["model"] == "tiny"
    assert sent["messages"] == [{"role": "user", "content": "hi"}]


def test_reasoning_and_tool_calls(stack):
    s = stack()
    s.fake.script(
        Reply(
            content=None,
            reasoning="I should call two tools.",
            tool_calls=[ToolCall("get_weather", '{"city": "Paris"}'), ToolCall("get_time", "{}")],
        )
    )
    tools = [
        {"type": "function", "name": n, "parameters": {"type": "object"}, "strict": False}
        for n in ("get_weather", "get_time")
    ]
    raw = s.post("/v1/responses", {"model": "m", "input": "weather?", "tools": tools}).json()
    validate_response(raw)
    assert [i["type"] for i in raw["output"]] == ["reasoning", "function_call", "function_call"]
    assert raw["output"][0]["summary"] == [
        {"type": "summary_text", "text": "I should call two tools."}
    ]
    calls = raw["output"][1:]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert calls[0]["arguments"] == '{"city": "Paris"}'
    assert calls[0]["call_id"].startswith("chatcmpl-tool-") and calls[0]["id"].startswith("fc_")
    assert s.last_chat_body()["tools"][0] == {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}, "strict": False},
    }


def test_think_tags_in_content(stack):
    s = stack()
    s.fake.script(Reply(content="<think>\nhmm\n</think>\n\nAnswer."))
    raw = s.post("/v1/responses", {"input": "q"}).json()
    validate_response(raw)
    assert raw["output"][0]["summary"][0]["text"] == "\nhmm\n"
    assert raw["output"][1]["content"][0]["text"] == "\n\nAnswer."


def test_length_cut_is_incomplete(stack):
    s = stack()
    s.fake.script(Reply(content="a b c d", finish_reason="length"))
    raw = s.post("/v1/responses", {"input": "q", "max_output_tokens": 4}).json()
    validate_response(raw)
    assert raw["status"] == "incomplete"
    assert raw["incomplete_details"] == {"reason": "max_output_tokens"}
    assert s.last_chat_body()["max_tokens"] == 4


def test_context_length_400_becomes_empty_incomplete(stack):
    s = stack(fakes=[FakeVLLM(model="tiny", max_model_len=16)])
    raw = s.post("/v1/responses", {"input": "word " * 200}).json()
    validate_response(raw)
    assert raw["status"] == "incomplete"
    assert raw["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["type"] for i in raw["output"]] == ["message"]
    assert raw["output"][0]["content"][0]["text"] == ""


def test_context_length_can_be_propagated(stack):
    s = stack(
        fakes=[FakeVLLM(model="tiny", max_model_len=16)], propagate_context_overflow_errors=True
    )
    r = s.post("/v1/responses", {"input": "word " * 200})
    assert r.status_code == 400
    err = r.json()["error"]
    assert "maximum context length is 16 tokens" in err["message"]
    assert err["code"] == "context_length_exceeded"


def test_other_backend_400_keeps_status_and_message(stack):
    s = stack()
    s.fake.script(
        ErrorReply(400, "max_tokens must be a positive integer, not a string", param="max_tokens")
    )
    r = s.post("/v1/responses", {"input": "q"})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "max_tokens must be a positive integer, not a string",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": None,
        }
    }


def test_client_errors_are_openai_shaped(stack):
    s = stack()
    with pytest.raises(openai.BadRequestError) as info:
        s.client.responses.create(
            model="m",
            input=[
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "a"}, {"type": "bogus"}],
                }
            ],
        )
    assert info.value.param == "input[0].content[1].type"
    assert info.value.code == "invalid_value"
    r = s.http.post(
        "/v1/responses", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = s.post("/v1/responses", [1, 2])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_type"
    r = s.post("/v1/responses", {"input": "x", "tools": [{"type": "web_search"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0].type"
    r = s.http.get("/v1/nope")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert s.fake.chat_requests() == []  # nothing invalid reached the backend


def test_oversize_body_is_413(stack):
    s = stack(max_request_bytes=1000)
    r = s.post("/v1/responses", {"input": "x" * 5000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_backend_unreachable_is_503(stack):
    s = stack(base_url=["http://127.0.0.1:9/v1"], max_retries=1)
    r = s.post("/v1/responses", {"input": "x"})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "server_error"


def test_backend_timeout_is_504(stack):
    s = stack(read_timeout_s=0.3)
    s.fake.script(Reply(stall_s=2.0))
    r = s.post("/v1/responses", {"input": "x"})
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "timeout"


def test_retries_before_first_byte_are_bounded(stack):
    s = stack(max_retries=2)
    s.fake.script(ErrorReply(503, "busy", type="ServiceUnavailableError"), Reply(content="ok"))
    assert s.post("/v1/responses", {"input": "x"}).json()["output"][0]["content"][0]["text"] == "ok"
    assert len(s.fake.chat_requests()) == 2

    s.fake.reset()
    s.fake.set_default(
        ErrorReply(429, "slow down", type="TooManyRequests", headers={"retry-after": "0"})
    )
    r = s.post("/v1/responses", {"input": "x"})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["retry-after"] == "0"
    assert len(s.fake.chat_requests()) == 3  # one try + max_retries, never forever


def test_backend_500_is_not_retried_and_becomes_502(stack):
    s = stack()
    s.fake.script(ErrorReply(500, "Internal server error", type="InternalServerError"))
    r = s.post("/v1/responses", {"input": "x"})
    assert r.status_code == 502
    assert "Internal server error" in r.json()["error"]["message"]
    assert len(s.fake.chat_requests()) == 1


def test_training_mode_token_ids_inline(stack):
    s = stack(return_token_id_information=True)
    s.fake.script(Reply(content="answer", reasoning="why"))
    raw = s.post("/v1/responses", {"input": "q"}).json()
    validate_response(raw)
    last = raw["output"][-1]
    sent = s.last_chat_body()
    assert sent["logprobs"] is True and sent["return_token_ids"] is True
    assert sent["return_tokens_as_token_ids"] is True and sent["top_logprobs"] == 0
    assert len(last["prompt_token_ids"]) > 0
    assert len(last["generation_token_ids"]) == len(last["generation_log_probs"]) > 0
    assert "prompt_token_ids" not in raw["output"][0]
    assert not any(r.path == "/tokenize" for r in s.fake.requests)  # no extra round trip


def test_training_mode_tokenize_fallback(stack):
    s = stack(return_token_id_information=True, backend_returns_token_ids=False)
    raw = s.post("/v1/responses", {"input": "q"}).json()
    validate_response(raw)
    tokenize = [r for r in s.fake.requests if r.path == "/tokenize"]
    assert len(tokenize) == 1
    assert tokenize[0].json["messages"] == [{"role": "user", "content": "q"}]
    assert raw["output"][-1]["prompt_token_ids"]


def test_multi_turn_token_continuity_forwarded(stack):
    s = stack(return_token_id_information=True)
    first = s.post("/v1/responses", {"input": "q"}).json()
    history = [
        {"role": "user", "content": "q"},
        *first["output"],
        {"role": "user", "content": "again"},
    ]
    second = s.post("/v1/responses", {"input": history})
    assert second.status_code == 200, second.text
    assistant = s.last_chat_body()["messages"][1]
    assert assistant["generation_token_ids"] == first["output"][-1]["generation_token_ids"]
    assert assistant["prompt_token_ids"] == first["output"][-1]["prompt_token_ids"]


def test_logprobs_include(stack):
    s = stack()
    raw = s.post(
        "/v1/responses",
        {"input": "q", "top_logprobs": 2, "include": ["message.output_text.logprobs"]},
    ).json()
    validate_response(raw)
    logprobs = raw["output"][0]["content"][0]["logprobs"]
    assert [e["token"] for e in logprobs][:1] == ["Hello"]
    assert len(logprobs[0]["top_logprobs"]) == 2


def test_structured_output_and_params_forwarded(stack):
    s = stack(sampling_overrides={"temperature": 0.0})
    body = {
        "input": "q",
        "temperature": 0.9,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "a",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "metadata": {
            "extra_body": '{"top_k": 3}',
            "chat_template_kwargs": '{"enable_thinking": false}',
        },
    }
    raw = s.post("/v1/responses", body).json()
    validate_response(raw)
    sent = s.last_chat_body()
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["temperature"] == 0.0 and sent["top_k"] == 3
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert raw["temperature"] == 0.9  # the echo says what the client asked

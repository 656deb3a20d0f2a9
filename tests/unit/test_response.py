"""Chat completion -> Response: table-driven, every result validated with openai's types."""

import pytest

from gateway.config import ModelServerConfig
from gateway.translate.request import responses_to_chat
from gateway.translate.response import chat_to_response, empty_response, usage
from gateway.translate.tokens import TokenDataError, TokenInfo, extract_token_info
from tests.contract import validate_response


def cfg(**kw):
    return ModelServerConfig(base_url="http://b/v1", model="served", **kw)


def completion(message, finish="stop", usage_body=None, logprobs=None, **top):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "served",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "logprobs": logprobs,
                "finish_reason": finish,
                "stop_reason": None,
            }
        ],
        "usage": usage_body
        or {
            "prompt_tokens": 5,
            "completion_tokens": 3,
            "total_tokens": 8,
            "prompt_tokens_details": None,
        },
        **top,
    }


def translate(comp, c=None, body=None, **kw):
    c = c or cfg()
    echo = responses_to_chat(body or {"input": "hi"}, c).echo
    out = chat_to_response(comp, c, echo, response_id="resp_x", created_at=1, **kw)
    validate_response(out)
    return out


def shape(out):
    """(type, main text) per item."""
    result = []
    for item in out["output"]:
        if item["type"] == "message":
            result.append(("message", item["content"][0]["text"]))
        elif item["type"] == "reasoning":
            result.append(("reasoning", [s["text"] for s in item["summary"]]))
        else:
            result.append(("function_call", item["name"], item["arguments"]))
    return result


CASES = [
    ({"content": "Hello"}, {}, [("message", "Hello")]),
    ({"content": None}, {}, [("message", "")]),
    ({"content": "x", "reasoning": "why"}, {}, [("reasoning", ["why"]), ("message", "x")]),
    ({"content": "x", "reasoning_content": "old"}, {}, [("reasoning", ["old"]), ("message", "x")]),
    (
        {"content": "<think>a</think>b<think>c</think>d"},
        {},
        [("reasoning", ["a", "c"]), ("message", "bd")],
    ),
    (
        {"content": "<think>a</think>b"},
        {"uses_reasoning_parser": False},
        [("message", "<think>a</think>b")],
    ),
    ({"content": "lone</think>ans"}, {}, [("reasoning", ["lone"]), ("message", "ans")]),
    ({"content": "r", "reasoning": "p"}, {}, [("reasoning", ["p"]), ("message", "r")]),
    (
        {
            "content": None,
            "reasoning": "plan",
            "tool_calls": [
                {
                    "id": "chatcmpl-tool-1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": 1}'},
                },
                {
                    "id": "chatcmpl-tool-2",
                    "type": "function",
                    "function": {"name": "g", "arguments": "{}"},
                },
            ],
        },
        {},
        [("reasoning", ["plan"]), ("function_call", "f", '{"a": 1}'), ("function_call", "g", "{}")],
    ),
    (
        {"content": 'ok<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>'},
        {"tool_call_text_parser": "hermes"},
        [("message", "ok"), ("function_call", "f", '{"a":1}')],
    ),
    (
        {"content": 'ok<tool_call>{"name": "f", "arguments": {}}</tool_call>'},
        {},
        [("message", 'ok<tool_call>{"name": "f", "arguments": {}}</tool_call>')],
    ),
]


@pytest.mark.parametrize(("message", "options", "expected"), CASES)
def test_items(message, options, expected):
    assert shape(translate(completion(message), cfg(**options))) == expected


def test_function_call_ids_and_status():
    comp = completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "chatcmpl-tool-abc",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                }
            ],
        },
        finish="tool_calls",
    )
    out = translate(comp)
    call = out["output"][0]
    assert call["call_id"] == "chatcmpl-tool-abc" and call["id"].startswith("fc_")
    assert out["status"] == "completed" and call["status"] == "completed"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_incomplete(finish, reason):
    out = translate(completion({"content": "cut"}, finish=finish))
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": reason}
    assert out["output"][-1]["status"] == "incomplete"
    assert out["completed_at"] is None


def test_reasoning_rendering_modes():
    comp = completion({"content": "x", "reasoning": "r"})
    summary = translate(comp)["output"][0]
    assert (
        summary["summary"] == [{"type": "summary_text", "text": "r"}] and summary["content"] is None
    )
    content = translate(comp, cfg(reasoning_output="content"))["output"][0]
    assert content["summary"] == [] and content["content"] == [
        {"type": "reasoning_text", "text": "r"}
    ]
    both = translate(comp, cfg(reasoning_output="both"))["output"][0]
    assert both["summary"][0]["text"] == both["content"][0]["text"] == "r"


def test_usage_all_ints():
    assert usage(None)["total_tokens"] == 0
    u = usage(
        {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 6},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    )
    assert u == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 0},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 14,
    }


def test_echo_of_request_params():
    body = {
        "input": "hi",
        "instructions": "be brief",
        "temperature": 0.3,
        "max_output_tokens": 9,
        "metadata": {"a": "b"},
        "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": True}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "user": "u",
    }
    out = translate(completion({"content": "x"}), body=body)
    assert out["instructions"] == "be brief" and out["temperature"] == 0.3
    assert out["max_output_tokens"] == 9 and out["metadata"] == {"a": "b"}
    assert out["tools"][0]["name"] == "f" and out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False and out["user"] == "u" and out["model"] == "served"


def lp(token, logprob):
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}


def test_text_logprobs_only_text_tokens():
    comp = completion(
        {"content": "Hi there", "reasoning": "hmm"},
        logprobs={"content": [lp("hm", -1.0), lp("m", -1.0), lp("Hi", -0.1), lp(" there", -0.2)]},
    )
    out = translate(comp, want_logprobs=True)
    tokens = [e["token"] for e in out["output"][1]["content"][0]["logprobs"]]
    assert tokens == ["Hi", " there"]


def test_token_info_attached_to_last_item():
    comp = completion({"content": "x", "reasoning": "r"})
    info = TokenInfo([1, 2], [3, 4], [-0.1, -0.2])
    out = translate(comp, token_info=info)
    assert "generation_token_ids" not in out["output"][0]
    assert out["output"][-1]["generation_token_ids"] == [3, 4]
    assert out["output"][-1]["prompt_token_ids"] == [1, 2]


def test_extract_token_info_sources():
    inline = completion(
        {"content": "x"}, logprobs={"content": [lp("token_id:7", -0.5)]}, prompt_token_ids=[1, 2]
    )
    inline["choices"][0]["token_ids"] = [7]
    assert extract_token_info(inline) == TokenInfo([1, 2], [7], [-0.5])
    from_logprobs = completion({"content": "x"}, logprobs={"content": [lp("token_id:7", -0.5)]})
    assert extract_token_info(from_logprobs) == TokenInfo(None, [7], [-0.5])
    bundle = completion(
        {
            "content": "x",
            "prompt_token_ids": [1],
            "generation_token_ids": [2],
            "generation_log_probs": [-1.0],
        }
    )
    assert extract_token_info(bundle) == TokenInfo([1], [2], [-1.0])


@pytest.mark.parametrize(
    "comp",
    [
        completion({"content": "x"}),  # no logprobs at all
        completion({"content": "x", "prompt_token_ids": [1]}),  # partial bundle
        completion({"content": "x"}, logprobs={"content": [lp("a", -0.5)]}),  # no ids anywhere
        {
            **completion({"content": "x"}, logprobs={"content": [lp("token_id:7", -0.5)]}),
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "x"},
                    "finish_reason": "stop",
                    "token_ids": [8],
                    "logprobs": {"content": [lp("token_id:7", -0.5)]},
                }
            ],
        },  # disagreeing ids
        {
            **completion({"content": "x"}),
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "x"},
                    "finish_reason": "stop",
                    "token_ids": [8, 9],
                    "logprobs": {"content": [lp("x", -0.5)]},
                }
            ],
        },  # length mismatch
    ],
)
def test_extract_token_info_refuses_to_guess(comp):
    with pytest.raises(TokenDataError):
        extract_token_info(comp)


def test_empty_response_is_valid_incomplete():
    c = cfg()
    echo = responses_to_chat({"input": "hi"}, c).echo
    out = empty_response(c, echo, response_id="resp_e", created_at=1, reason="length")
    validate_response(out)
    assert out["status"] == "incomplete" and out["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    assert [i["type"] for i in out["output"]] == ["message"]
    assert out["output"][0]["content"][0]["text"] == ""

"""Responses request -> chat body: table-driven."""

import pytest

from gateway.config import ModelServerConfig
from gateway.errors import GatewayError
from gateway.translate.request import responses_to_chat


def cfg(**kw):
    return ModelServerConfig(base_url="http://b/v1", model="served", **kw)


def chat(body, **kw):
    return responses_to_chat(body, cfg(**kw)).chat


def test_string_input_and_model_overwrite():
    out = chat({"model": "anything", "input": "hi"})
    assert out == {"messages": [{"role": "user", "content": "hi"}], "model": "served"}


MESSAGE_CASES = [
    # message without "type" (the Agents SDK's first turn)
    (
        [{"role": "user", "content": "hi"}],
        None,
        [{"role": "user", "content": "hi"}],
    ),
    # parts: input_text + input_image
    (
        [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AA",
                        "detail": "low",
                    },
                ],
            }
        ],
        None,
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
                    },
                ],
            }
        ],
    ),
    # instructions + leading system/developer fold into one system message
    (
        [
            {"role": "system", "content": "S"},
            {"role": "developer", "content": [{"type": "input_text", "text": "D"}]},
            {"role": "user", "content": "u"},
            {"role": "developer", "content": "later"},
        ],
        "I",
        [
            {"role": "system", "content": "I\n\nS\n\nD"},
            {"role": "user", "content": "u"},
            {"role": "developer", "content": "later"},
        ],
    ),
    # replayed output items merge into one assistant message; outputs become tool messages
    (
        [
            {"role": "user", "content": "weather?"},
            {
                "id": "rs_1",
                "type": "reasoning",
                "summary": [
                    {"type": "summary_text", "text": "A"},
                    {"type": "summary_text", "text": "B"},
                ],
                "content": None,
                "encrypted_content": None,
                "status": None,
            },
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Let me ", "annotations": [], "logprobs": []},
                    {"type": "output_text", "text": "check.", "annotations": []},
                ],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "c1",
                "name": "w",
                "arguments": "{}",
                "status": "completed",
            },
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "rain"}],
            },
        ],
        None,
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"a":1}'},
                    },
                ],
                "reasoning": "A\n\nB",
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
        ],
    ),
    # raw reasoning content (reasoning_text) wins over summary; a lone function call has null content
    (
        [
            {"role": "user", "content": "q"},
            {
                "id": "rs_2",
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "raw"}],
                "status": "completed",
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ],
        None,
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
                "reasoning": "raw",
            },
        ],
    ),
    # refusal parts replay as text
    (
        [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": "no"}],
            }
        ],
        None,
        [{"role": "assistant", "content": "no"}],
    ),
]


@pytest.mark.parametrize(("items", "instructions", "expected"), MESSAGE_CASES)
def test_input_items(items, instructions, expected):
    body = {"model": "m", "input": items}
    if instructions is not None:
        body["instructions"] = instructions
    assert chat(body)["messages"] == expected


def test_developer_role_replaced_and_reasoning_field_choice():
    items = [
        {"role": "user", "content": "u"},
        {"role": "developer", "content": "d"},
        {"type": "reasoning", "id": "r", "summary": [{"type": "summary_text", "text": "R"}]},
        {"role": "assistant", "content": "a"},
    ]
    out = chat(
        {"input": items},
        replace_developer_role_with_system=True,
        reasoning_field="reasoning_content",
    )
    assert out["messages"][1] == {"role": "system", "content": "d"}
    assert out["messages"][2] == {"role": "assistant", "content": "a", "reasoning_content": "R"}
    both = chat({"input": items}, reasoning_field="both")["messages"][2]
    assert both["reasoning"] == both["reasoning_content"] == "R"
    inline = chat({"input": items}, preserve_reasoning_in_assistant_content=True)["messages"][2]
    assert inline == {"role": "assistant", "content": "<think>R</think>a"}
    dropped = chat({"input": items}, uses_interleaved_reasoning=False)["messages"][2]
    assert dropped == {"role": "assistant", "content": "a"}


def test_parameters():
    body = {
        "input": "x",
        "max_output_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [
            {
                "type": "function",
                "name": "f",
                "description": "d",
                "parameters": {"type": "object"},
                "strict": True,
            },
            {"type": "function", "name": "g", "parameters": None, "strict": None},
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "s",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "reasoning": {"effort": "low", "summary": "auto"},
        "top_logprobs": 3,
        "include": ["message.output_text.logprobs"],
        "user": "u1",
        "store": False,
        "metadata": {"k": "v"},
        "top_k": 20,
    }
    out = chat(body)
    assert out["max_tokens"] == 50
    assert (out["temperature"], out["top_p"]) == (0.2, 0.9)
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "d",
                "parameters": {"type": "object"},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "g"}},
    ]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["parallel_tool_calls"] is False
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
    }
    assert out["reasoning_effort"] == "low"
    assert (out["logprobs"], out["top_logprobs"]) == (True, 3)
    assert out["user"] == "u1"
    assert out["top_k"] == 20
    assert "metadata" not in out and "store" not in out


@pytest.mark.parametrize(
    ("tool_choice", "expected_tools", "expected_choice"),
    [
        ("required", ["f", "g"], "required"),
        ("none", ["f", "g"], "none"),
        (
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "g"}],
            },
            ["g"],
            "required",
        ),
    ],
)
def test_tool_choice_forms(tool_choice, expected_tools, expected_choice):
    tools = [{"type": "function", "name": n, "parameters": {}, "strict": False} for n in ("f", "g")]
    out = chat({"input": "x", "tools": tools, "tool_choice": tool_choice})
    assert [t["function"]["name"] for t in out["tools"]] == expected_tools
    assert out["tool_choice"] == expected_choice


def test_no_tools_means_no_tool_choice_sent():
    out = chat({"input": "x", "tools": [], "tool_choice": "auto", "parallel_tool_calls": True})
    assert "tools" not in out and "tool_choice" not in out and "parallel_tool_calls" not in out


def test_json_object_and_effort_none():
    out = chat(
        {"input": "x", "text": {"format": {"type": "json_object"}}, "reasoning": {"effort": "none"}}
    )
    assert out["response_format"] == {"type": "json_object"}
    assert out["chat_template_kwargs"] == {"enable_thinking": False}
    assert "reasoning_effort" not in out


def test_template_kwargs_extra_body_and_overrides_precedence():
    c = cfg(
        chat_template_kwargs={"enable_thinking": True, "a": 1},
        extra_body={"top_k": 5, "min_p": 0.1, "temperature": 9.0},
        sampling_overrides={"temperature": 0.0},
    )
    body = {
        "input": "x",
        "temperature": 0.7,
        "top_k": 7,
        "metadata": {
            "chat_template_kwargs": '{"enable_thinking": false}',
            "extra_body": '{"seed": 3}',
        },
    }
    out = responses_to_chat(body, c).chat
    assert out["chat_template_kwargs"] == {"enable_thinking": False, "a": 1}
    assert out["top_k"] == 7  # explicit request field beats extra_body
    assert out["min_p"] == 0.1 and out["seed"] == 3
    assert out["temperature"] == 0.0  # sampling_overrides win over everything


def test_training_flags():
    out = chat({"input": "x"}, return_token_id_information=True)
    assert out["logprobs"] is True and out["top_logprobs"] == 0
    assert out["return_tokens_as_token_ids"] is True and out["return_token_ids"] is True
    out = chat({"input": "x"}, return_token_id_information=True, backend_returns_token_ids=False)
    assert "return_token_ids" not in out


def test_token_fields_forwarded_on_assistant_message():
    items = [
        {"role": "user", "content": "q"},
        {
            "type": "message",
            "role": "assistant",
            "content": "a",
            "prompt_token_ids": [1, 2],
            "generation_token_ids": [3],
            "generation_log_probs": [-0.5],
        },
        {"role": "user", "content": "q2"},
    ]
    msg = chat({"input": items})["messages"][1]
    assert msg == {
        "role": "assistant",
        "content": "a",
        "prompt_token_ids": [1, 2],
        "generation_token_ids": [3],
        "generation_log_probs": [-0.5],
    }


def test_echo_defaults():
    echo = responses_to_chat({"input": "x"}, cfg()).echo
    assert echo["tool_choice"] == "auto" and echo["parallel_tool_calls"] is True
    assert echo["text"] == {"format": {"type": "text"}} and echo["metadata"] == {}
    assert echo["truncation"] == "disabled" and echo["tools"] == []


def test_sequential_reasoning_guard():
    items = [{"role": "user", "content": "q"}, {"type": "reasoning", "id": "r", "summary": []}]
    assert responses_to_chat({"input": items}, cfg(sequential_reasoning_allowed=False)).skip_backend
    assert not responses_to_chat({"input": items}, cfg()).skip_backend


ERROR_CASES = [
    ({}, "input", "missing_required_parameter"),
    ({"input": 3}, "input", "invalid_type"),
    ({"input": "x", "bogus": 1}, "bogus", "unknown_parameter"),
    ({"input": "x", "conversation": "c"}, "conversation", "unsupported_parameter"),
    (
        {"input": "x", "previous_response_id": "resp_1"},
        "previous_response_id",
        "unsupported_parameter",
    ),
    ({"input": "x", "background": True}, "background", "unsupported_parameter"),
    ({"input": "x", "prompt": {"id": "p"}}, "prompt", "unsupported_parameter"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_parameter"),
    (
        {
            "input": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "bad"}]},
            ]
        },
        "input[1].content[1].type",
        "invalid_value",
    ),
    ({"input": [{"type": "computer_call"}]}, "input[0].type", "invalid_value"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "unsupported_parameter"),
    ({"input": [{"role": "wizard", "content": "a"}]}, "input[0].role", "invalid_value"),
    (
        {"input": [{"role": "user", "content": "a", "extra": 1}]},
        "input[0].extra",
        "unknown_parameter",
    ),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
        "input[0].arguments",
        "invalid_type",
    ),
    (
        {"input": [{"type": "reasoning", "id": "r", "summary": [], "encrypted_content": "zz"}]},
        "input[0].encrypted_content",
        "unsupported_parameter",
    ),
    (
        {
            "input": [
                {"type": "reasoning", "id": "r", "summary": [{"type": "output_text", "text": "x"}]}
            ]
        },
        "input[0].summary[0].type",
        "invalid_value",
    ),
    (
        {
            "input": [
                {
                    "type": "reasoning",
                    "id": "r",
                    "summary": [],
                    "content": [{"type": "reasoning_text"}],
                }
            ]
        },
        "input[0].content[0].text",
        "invalid_type",
    ),
    (
        {"input": [{"type": "reasoning", "id": "r"}]},
        "input[0].summary",
        "missing_required_parameter",
    ),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"input": "x", "temperature": "hot"}, "temperature", "invalid_type"),
    (
        {"input": "x", "include": ["reasoning.encrypted_content"]},
        "include[0]",
        "unsupported_parameter",
    ),
    ({"input": "x", "include": ["nope"]}, "include[0]", "invalid_value"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice", "invalid_value"),
    (
        {
            "input": "x",
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": {"type": "function", "name": "g"},
        },
        "tool_choice.name",
        "invalid_value",
    ),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
    (
        {"input": "x", "metadata": {"extra_body": "{not json"}},
        "metadata.extra_body",
        "invalid_value",
    ),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k", "invalid_type"),
    ({"input": "x", "truncation": "auto"}, "truncation", "unsupported_parameter"),
    (
        {
            "input": [
                {"type": "message", "role": "assistant", "content": "a", "prompt_token_ids": [1]}
            ]
        },
        "input[0].generation_token_ids",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(("body", "param", "code"), ERROR_CASES)
def test_errors_name_the_parameter(body, param, code):
    with pytest.raises(GatewayError) as info:
        responses_to_chat(body, cfg())
    err = info.value
    assert err.status == 400
    assert (err.param, err.code) == (param, code)
    assert err.body()["error"]["type"] == "invalid_request_error"

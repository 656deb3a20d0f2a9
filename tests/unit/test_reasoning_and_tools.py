import pytest

from gateway.translate.reasoning import split_think
from gateway.translate.tool_calls import TextToolCall, split_hermes


@pytest.mark.parametrize(
    ("text", "reasoning", "rest", "truncated"),
    [
        ("hello", [], "hello", False),
        ("<think>abc</think>hello", ["abc"], "hello", False),
        ("<think>\n a \n</think>\n\nhi ", ["\n a \n"], "\n\nhi ", False),
        ("<think>A</think>x<think>B</think>y", ["A", "B"], "xy", False),
        # the chat template opened <think> in the prompt: a lone closing tag
        ("thinking here</think>answer", ["thinking here"], "answer", False),
        ("lone</think>a<think>b</think>c", ["lone", "b"], "ac", False),
        # cut by the length limit inside reasoning
        ("<think>never closed", ["never closed"], "", True),
        ("pre<think>cut", ["cut"], "pre", True),
        ("<think></think>answer", [], "answer", False),
        ("", [], "", False),
    ],
)
def test_split_think(text, reasoning, rest, truncated):
    out = split_think(text)
    assert out.reasoning == reasoning
    assert out.text == rest
    assert out.truncated_in_reasoning is truncated


@pytest.mark.parametrize(
    ("text", "rest", "calls"),
    [
        ("no calls", "no calls", []),
        (
            'a<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>b',
            "ab",
            [TextToolCall("f", '{"x":1}')],
        ),
        (
            '<tool_call>{"name":"f","arguments":"{}"}</tool_call><tool_call>{"name":"g"}</tool_call>',
            "",
            [TextToolCall("f", "{}"), TextToolCall("g", "{}")],
        ),
        ("x<tool_call>not json</tool_call>", "x<tool_call>not json</tool_call>", []),
        ('<tool_call>{"name": "f"', '<tool_call>{"name": "f"', []),
        (
            '<tool_call>{"arguments": {}}</tool_call>',
            '<tool_call>{"arguments": {}}</tool_call>',
            [],
        ),
    ],
)
def test_split_hermes(text, rest, calls):
    assert split_hermes(text) == (rest, calls)

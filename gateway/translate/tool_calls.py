"""Tool calls written as text by a model whose backend runs without a tool parser."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"


@dataclass(frozen=True)
class TextToolCall:
    name: str
    arguments: str  # a JSON string, as in the Responses API


def split_hermes(text: str) -> tuple[str, list[TextToolCall]]:
    """Remove every well-formed `<tool_call>{"name", "arguments"}</tool_call>` block from text.

    A block that is unclosed (cut by the length limit) or whose body is not a JSON object with a
    string `name` stays in the text untouched: the caller sees exactly what the model wrote.
    """
    calls: list[TextToolCall] = []
    kept: list[str] = []
    pos = 0
    while True:
        start = text.find(HERMES_OPEN, pos)
        if start == -1:
            kept.append(text[pos:])
            break
        end = text.find(HERMES_CLOSE, start + len(HERMES_OPEN))
        if end == -1:
            kept.append(text[pos:])
            break
        call = parse_hermes_body(text[start + len(HERMES_OPEN) : end])
        if call is None:
            kept.append(text[pos : end + len(HERMES_CLOSE)])
        else:
            kept.append(text[pos:start])
            calls.append(call)
        pos = end + len(HERMES_CLOSE)
    return "".join(kept), calls


def parse_hermes_body(body: str) -> TextToolCall | None:
    try:
        obj = orjson.loads(body.strip())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", {})
    arguments = args if isinstance(args, str) else orjson.dumps(args).decode()
    return TextToolCall(name=obj["name"], arguments=arguments)

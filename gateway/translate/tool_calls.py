"""Tool calls written as text (hermes `<tool_call>{json}</tool_call>`) by a model whose backend
runs without a tool parser.

`split_hermes` on a whole text and `HermesStream` fed chunks give the same result for any chunking.
A block that is unclosed (cut by the length limit) or whose body is not a JSON object with a string
`name` stays in the text untouched: the caller sees exactly what the model wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from gateway.translate.reasoning import held_suffix

HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"


@dataclass(frozen=True)
class TextToolCall:
    name: str
    arguments: str  # a JSON string, as in the Responses API


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


HermesSegment = tuple[Literal["text"], str] | tuple[Literal["call"], TextToolCall]


class HermesStream:
    """Incremental hermes tool-call splitter: text passes through, calls come out whole."""

    def __init__(self) -> None:
        self._buf = ""
        self._in_call = False

    def feed(self, chunk: str) -> list[HermesSegment]:
        self._buf += chunk
        out: list[HermesSegment] = []
        while self._buf:
            if not self._in_call:
                i = self._buf.find(HERMES_OPEN)
                if i == -1:
                    keep = held_suffix(self._buf, HERMES_OPEN)
                    if len(self._buf) > keep:
                        out.append(("text", self._buf[: len(self._buf) - keep]))
                    self._buf = self._buf[len(self._buf) - keep :]
                    break
                if i:
                    out.append(("text", self._buf[:i]))
                self._buf = self._buf[i:]
                self._in_call = True
            end = self._buf.find(HERMES_CLOSE, len(HERMES_OPEN))
            if end == -1:
                break
            block = self._buf[: end + len(HERMES_CLOSE)]
            call = parse_hermes_body(block[len(HERMES_OPEN) : end])
            out.append(("text", block) if call is None else ("call", call))
            self._buf = self._buf[end + len(HERMES_CLOSE) :]
            self._in_call = False
        return out

    def finish(self) -> list[HermesSegment]:
        rest, self._buf, self._in_call = self._buf, "", False
        return [("text", rest)] if rest else []


def split_hermes(text: str) -> tuple[str, list[TextToolCall]]:
    """Remove every well-formed tool-call block from text; return (text, calls)."""
    stream = HermesStream()
    texts: list[str] = []
    calls: list[TextToolCall] = []
    for segment in [*stream.feed(text), *stream.finish()]:
        if segment[0] == "text":
            texts.append(segment[1])
        else:
            calls.append(segment[1])
    return "".join(texts), calls

"""Split `<think>...</think>` reasoning out of generated text, whitespace kept byte for byte.

Two forms with one meaning: `split_think` on a whole text, and `ThinkStream` fed chunks as they
arrive. Fed any chunking of a text, `ThinkStream` yields exactly what `split_think` returns.

`open_in_prompt` says whether the chat template opened `<think>` in the prompt:
- `auto`: a `</think>` seen before any `<think>` means the template opened it, so the text before
  it is reasoning. Streaming must then hold text until a tag (or the end) decides.
- `yes`: the output starts inside reasoning (a leading `<think>` is tolerated).
- `no`: only `<think>` opens reasoning; a lone `</think>` is plain text. Streams without holding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

OPEN = "<think>"
CLOSE = "</think>"

OpenInPrompt = Literal["auto", "yes", "no"]


@dataclass
class ThinkSplit:
    reasoning: list[str] = field(default_factory=list)
    text: str = ""
    # True when the text ends inside an unclosed `<think>` (generation cut by the length limit).
    truncated_in_reasoning: bool = False


def split_think(text: str, open_in_prompt: OpenInPrompt = "auto") -> ThinkSplit:
    """Every reasoning block in order, and the remaining text. Empty blocks are dropped."""
    stream = ThinkStream(open_in_prompt)
    return collect([*stream.feed(text), *stream.finish()], stream.truncated)


def collect(segments: list[Segment], truncated: bool) -> ThinkSplit:
    """Assemble a ThinkStream's segments into whole reasoning blocks and text."""
    out = ThinkSplit(truncated_in_reasoning=truncated)
    block: list[str] = []
    texts: list[str] = []
    for kind, piece in segments:
        if kind == "reasoning":
            block.append(piece)
        elif kind == "end_reasoning":
            out.reasoning.append("".join(block))
            block = []
        else:
            texts.append(piece)
    out.text = "".join(texts)
    return out


def reasoning_field(obj: dict[str, Any]) -> Any:
    """vLLM's reasoning on a message or delta: `reasoning` (>= 0.16), else `reasoning_content`."""
    value = obj.get("reasoning")
    return obj.get("reasoning_content") if value is None else value


def pop_reasoning_field(obj: dict[str, Any]) -> Any:
    """`reasoning_field`, removing both field names from obj."""
    value = reasoning_field(obj)
    obj.pop("reasoning", None)
    obj.pop("reasoning_content", None)
    return value


# Segments a ThinkStream yields: ("reasoning", text), ("end_reasoning", ""), ("text", text).
Segment = tuple[Literal["reasoning", "end_reasoning", "text"], str]


def held_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag (a tag cut by a chunk)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkStream:
    """Incremental `<think>` splitter."""

    def __init__(self, open_in_prompt: OpenInPrompt = "auto") -> None:
        self._buf = ""
        self._state: Literal["undecided", "maybe_open", "text", "reasoning"]
        self._state = {"auto": "undecided", "yes": "maybe_open", "no": "text"}[open_in_prompt]  # type: ignore[assignment]
        self._block_has_text = False
        self.truncated = False

    def backend_parses_reasoning(self) -> None:
        """The backend sent reasoning in its own field: text needs no lone-`</think>` hold."""
        if self._state == "undecided":
            self._state = "text"

    def feed(self, chunk: str) -> list[Segment]:
        self._buf += chunk
        out: list[Segment] = []
        while self._buf:
            if not self._step(out):
                break
        return out

    def finish(self) -> list[Segment]:
        out: list[Segment] = []
        if self._state == "maybe_open":
            self._state = "reasoning"
        while self._buf and self._step(out):
            pass
        if self._buf:
            if self._state == "reasoning":
                self._reasoning(out, self._buf)
            else:
                out.append(("text", self._buf))
            self._buf = ""
        if self._state == "reasoning":
            if self._block_has_text:
                self.truncated = True
            self._end_block(out)
        return out

    def _step(self, out: list[Segment]) -> bool:
        """Consume what can be decided now; False when the rest must wait for more text."""
        buf = self._buf
        if self._state == "maybe_open":
            if buf.startswith(OPEN):
                self._buf = buf[len(OPEN) :]
            elif OPEN.startswith(buf):
                return False
            self._state = "reasoning"
            return True
        if self._state == "undecided":
            o, c = buf.find(OPEN), buf.find(CLOSE)
            if c != -1 and (o == -1 or c < o):
                self._reasoning(out, buf[:c])
                self._end_block(out)
                self._buf = buf[c + len(CLOSE) :]
                self._state = "text"
                return True
            if o != -1:
                self._text(out, buf[:o])
                self._buf = buf[o + len(OPEN) :]
                self._state = "reasoning"
                return True
            return False
        tag = OPEN if self._state == "text" else CLOSE
        i = buf.find(tag)
        if i == -1:
            keep = held_suffix(buf, tag)
            emit, self._buf = buf[: len(buf) - keep], buf[len(buf) - keep :]
            if self._state == "text":
                self._text(out, emit)
            else:
                self._reasoning(out, emit)
            return False
        if self._state == "text":
            self._text(out, buf[:i])
            self._state = "reasoning"
        else:
            self._reasoning(out, buf[:i])
            self._end_block(out)
            self._state = "text"
        self._buf = buf[i + len(tag) :]
        return True

    def _text(self, out: list[Segment], text: str) -> None:
        if text:
            out.append(("text", text))

    def _reasoning(self, out: list[Segment], text: str) -> None:
        if text:
            self._block_has_text = True
            out.append(("reasoning", text))

    def _end_block(self, out: list[Segment]) -> None:
        if self._block_has_text:
            out.append(("end_reasoning", ""))
        self._block_has_text = False

"""Split `<think>...</think>` reasoning out of generated text, whitespace kept byte for byte."""

from __future__ import annotations

from dataclasses import dataclass, field

OPEN = "<think>"
CLOSE = "</think>"


@dataclass
class ThinkSplit:
    reasoning: list[str] = field(default_factory=list)
    text: str = ""
    # True when the text ends inside an unclosed `<think>` (generation cut by the length limit).
    truncated_in_reasoning: bool = False


def split_think(text: str) -> ThinkSplit:
    """Every reasoning block in order, and the remaining text.

    Handles what tag regexes miss: a lone `</think>` (the chat template opened `<think>` in the
    prompt, so the text before it is reasoning) and an unclosed `<think>` at the end.
    Empty blocks (`<think></think>`) carry no reasoning and are dropped.
    """
    out = ThinkSplit()
    pos = 0
    first_open = text.find(OPEN)
    first_close = text.find(CLOSE)
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        _add(out, text[:first_close])
        pos = first_close + len(CLOSE)
    pieces: list[str] = []
    while True:
        start = text.find(OPEN, pos)
        if start == -1:
            pieces.append(text[pos:])
            break
        pieces.append(text[pos:start])
        end = text.find(CLOSE, start + len(OPEN))
        if end == -1:
            _add(out, text[start + len(OPEN) :])
            out.truncated_in_reasoning = True
            break
        _add(out, text[start + len(OPEN) : end])
        pos = end + len(CLOSE)
    out.text = "".join(pieces)
    return out


def _add(out: ThinkSplit, block: str) -> None:
    if block:
        out.reasoning.append(block)

"""Fed any chunking of a text, the incremental splitters give exactly what the whole-text ones do."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.translate.reasoning import ThinkSplit, ThinkStream, collect, split_think
from gateway.translate.tool_calls import HermesStream, split_hermes

PIECES = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    '{"name": "f", "arguments": {"a": 1}}',
    '{"name": "g"}',
    "not json",
    "<",
    "</",
    "<th",
    "ink>",
    "tool_",
    "a",
    "b c",
    " ",
    "\n",
    "é",
]

texts = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def run_think(chunks: list[str], mode: str) -> ThinkSplit:
    stream = ThinkStream(mode)  # type: ignore[arg-type]
    segments = [s for c in chunks for s in stream.feed(c)] + stream.finish()
    kinds = [k for k, _ in segments]
    last = max((i for i, k in enumerate(kinds) if k == "reasoning"), default=-1)
    assert last == -1 or "end_reasoning" in kinds[last + 1 :], "a reasoning block was never closed"
    return collect(segments, stream.truncated)


@settings(max_examples=400, deadline=None)
@given(
    texts,
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    st.sampled_from(["auto", "yes", "no"]),
)
def test_think_stream_matches_whole_text(text, cuts, mode):
    assert run_think(chunked(text, cuts), mode) == split_think(text, mode)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(texts)
def test_think_stream_char_by_char(text):
    assert run_think(list(text), "auto") == split_think(text)


@settings(max_examples=400, deadline=None)
@given(texts, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_hermes_stream_matches_whole_text(text, cuts):
    stream = HermesStream()
    segments = [s for c in chunked(text, cuts) for s in stream.feed(c)] + stream.finish()
    got_text = "".join(s[1] for s in segments if s[0] == "text")
    got_calls = [s[1] for s in segments if s[0] == "call"]
    assert (got_text, got_calls) == split_hermes(text)


def test_modes_differ_where_they_should():
    assert split_think("r</think>t", "auto").reasoning == ["r"]
    assert split_think("r</think>t", "no").text == "r</think>t"
    assert split_think("r</think>t", "yes").reasoning == ["r"]
    assert split_think("<think>r</think>t", "yes").reasoning == ["r"]
    assert split_think("all reasoning", "yes").truncated_in_reasoning


def test_no_mode_streams_text_without_holding():
    stream = ThinkStream("no")
    assert stream.feed("Hello wor") == [("text", "Hello wor")]
    assert stream.feed("ld <th") == [("text", "ld ")]  # only a possible tag is held
    assert stream.feed("ink>x") == [("reasoning", "x")]


def test_auto_mode_stops_holding_once_backend_parses_reasoning():
    stream = ThinkStream("auto")
    assert stream.feed("Hello") == []
    stream.backend_parses_reasoning()
    assert stream.feed(" there") == [("text", "Hello there")]

"""Checks every Response we emit against the openai package's own pydantic types."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response

USAGE_INTS = ("input_tokens", "output_tokens", "total_tokens")


def validate_response(body: dict[str, Any]) -> Response:
    response = Response.model_validate(body)
    usage = body["usage"]
    for key in USAGE_INTS:
        assert isinstance(usage[key], int), key
    assert isinstance(usage["input_tokens_details"]["cached_tokens"], int)
    assert isinstance(usage["input_tokens_details"]["cache_write_tokens"], int)
    assert isinstance(usage["output_tokens_details"]["reasoning_tokens"], int)
    ids = [item.get("id") for item in body["output"]]
    assert len(ids) == len(set(ids)), "output item ids must be unique"
    prefixes = {"reasoning": "rs_", "message": "msg_", "function_call": "fc_"}
    for item in body["output"]:
        assert item["id"].startswith(prefixes[item["type"]]), item
    assert body["id"].startswith("resp_")
    return response


_EVENT_ADAPTER: Any = None
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Split an SSE body into event payloads, checking each `event:` line matches `type`."""
    import orjson

    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        kind = next(line[7:] for line in lines if line.startswith("event: "))
        data = orjson.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        assert data["type"] == kind, (kind, data["type"])
        events.append(data)
    return events


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Assert every rule of spec/responses_streams.md; return the terminal response."""
    global _EVENT_ADAPTER
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    if _EVENT_ADAPTER is None:
        _EVENT_ADAPTER = TypeAdapter(ResponseStreamEvent)
    for event in events:
        _EVENT_ADAPTER.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[1]["type"] == "response.in_progress"
    for e in events[:2]:
        assert e["response"]["status"] == "in_progress" and e["response"]["output"] == []
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1 and events[-1] is terminals[0], "exactly one terminal event, last"

    done_items: list[dict[str, Any]] = []
    open_item: dict[str, Any] | None = None
    texts: dict[tuple[str, int], str] = {}
    part_open: set[tuple[str, int]] = set()
    for e in events[2:-1]:
        kind = e["type"]
        if kind == "response.output_item.added":
            assert open_item is None, "items are streamed one at a time"
            assert e["output_index"] == len(done_items)
            assert e["item"]["status"] == "in_progress"
            if e["item"]["type"] == "function_call":
                assert e["item"]["arguments"] == ""
            open_item = e["item"]
            texts = {}
            part_open = set()
            continue
        assert open_item is not None, f"{kind} outside an item"
        assert e["output_index"] == len(done_items)
        if kind == "response.output_item.done":
            item = e["item"]
            assert item["id"] == open_item["id"] and item["status"] in ("completed", "incomplete")
            assert not part_open, "a content part was left open"
            _check_item_text(item, texts)
            done_items.append(item)
            open_item = None
            continue
        assert e["item_id"] == open_item["id"]
        key_index = e.get("content_index", e.get("summary_index", 0))
        family = "summary" if "summary_index" in e else "content"
        key = (family, key_index)
        if kind in ("response.content_part.added", "response.reasoning_summary_part.added"):
            assert key not in part_open
            part_open.add(key)
            texts[key] = ""
        elif kind.endswith(".delta"):
            if kind == "response.function_call_arguments.delta":
                texts[("args", 0)] = texts.get(("args", 0), "") + e["delta"]
                continue
            assert key in part_open, f"{kind} before its part was added"
            texts[key] += e["delta"]
            if kind == "response.output_text.delta":
                assert isinstance(e["logprobs"], list)
        elif kind == "response.function_call_arguments.done":
            assert e["arguments"] == texts.get(("args", 0), "")
            assert e["name"] == open_item["name"] or e["name"]
            texts[("args_done", 0)] = e["arguments"]
        elif kind in ("response.content_part.done", "response.reasoning_summary_part.done"):
            assert key in part_open
            assert e["part"]["text"] == texts[key]
            part_open.discard(key)
        elif kind.endswith(".done"):
            assert key in part_open, f"{kind} after its part was closed"
            assert e["text"] == texts[key]
            if kind == "response.output_text.done":
                assert isinstance(e["logprobs"], list)
        else:
            raise AssertionError(f"unexpected event {kind}")
    assert open_item is None, "an item was left open"

    final = events[-1]["response"]
    expected_status = {
        "response.completed": "completed",
        "response.incomplete": "incomplete",
        "response.failed": "failed",
    }[events[-1]["type"]]
    assert final["status"] == expected_status
    trimmed = [{k: v for k, v in item.items() if k not in _TOKEN_KEYS} for item in final["output"]]
    assert trimmed == done_items, "the terminal response holds exactly the streamed items"
    if expected_status != "failed":
        validate_response(final)
    return final


_TOKEN_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")


def _check_item_text(item: dict[str, Any], texts: dict[tuple[str, int], str]) -> None:
    if item["type"] == "message":
        assert item["content"][0]["text"] == texts[("content", 0)]
    elif item["type"] == "reasoning":
        for i, part in enumerate(item["summary"]):
            if ("summary", i) in texts:
                assert part["text"] == texts[("summary", i)]
        for i, part in enumerate(item.get("content") or []):
            assert part["text"] == texts[("content", i)]
    else:
        assert item["arguments"] == texts.get(("args", 0), "") == texts.get(("args_done", 0))

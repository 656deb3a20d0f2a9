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

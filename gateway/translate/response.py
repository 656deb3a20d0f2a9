"""A vLLM chat completion -> a Responses `Response` (pure).

Items come out in the order reasoning -> message -> function_call(s), with ids minted here
(`rs_`, `msg_`, `fc_`); `call_id` is the backend's tool-call id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from gateway.config import ModelServerConfig
from gateway.translate.reasoning import reasoning_field, split_think
from gateway.translate.tokens import TokenInfo
from gateway.translate.tool_calls import split_hermes


class BackendProtocolError(Exception):
    """The backend answered 200 with a body that is not a chat completion."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


@dataclass
class Generated:
    """What one chat choice produced, split into Responses parts."""

    reasoning: list[str] = field(default_factory=list)
    text: str = ""
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)  # (call_id, name, args)
    finish_reason: str | None = None


def split_choice(completion: dict[str, Any], cfg: ModelServerConfig) -> Generated:
    try:
        choice = completion["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendProtocolError("backend response has no choices[0].message") from exc
    out = Generated(finish_reason=choice.get("finish_reason"))
    field_reasoning = reasoning_field(message)
    if field_reasoning:
        out.reasoning.append(field_reasoning)
    text = message.get("content") or ""
    if cfg.uses_reasoning_parser and text:
        # When the backend parsed reasoning itself, the text cannot start inside `<think>`.
        mode = (
            "no"
            if field_reasoning and cfg.think_open_in_prompt == "auto"
            else cfg.think_open_in_prompt
        )
        split = split_think(text, mode)
        out.reasoning.extend(split.reasoning)
        text = split.text
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        out.tool_calls.append(
            (call.get("id") or new_id("call"), fn.get("name", ""), fn.get("arguments") or "")
        )
    if cfg.tool_call_text_parser == "hermes" and text:
        text, calls = split_hermes(text)
        out.tool_calls.extend((new_id("call"), c.name, c.arguments) for c in calls)
    out.text = text
    return out


def output_items(
    gen: Generated,
    cfg: ModelServerConfig,
    *,
    logprobs: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if gen.reasoning:
        items.append(reasoning_item(new_id("rs"), gen.reasoning, cfg, "completed"))
    if gen.text or not (gen.reasoning or gen.tool_calls):
        items.append(message_item(new_id("msg"), gen.text, logprobs or [], "completed"))
    for call_id, name, arguments in gen.tool_calls:
        items.append(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "completed",
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
            }
        )
    return items


def reasoning_item(
    item_id: str, blocks: list[str], cfg: ModelServerConfig, status: str
) -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
    if cfg.reasoning_output in ("summary", "both"):
        item["summary"] = [{"type": "summary_text", "text": b} for b in blocks]
    if cfg.reasoning_output in ("content", "both"):
        item["content"] = [{"type": "reasoning_text", "text": b} for b in blocks]
    else:
        item["content"] = None
    item["encrypted_content"] = None
    item["status"] = status
    return item


def message_item(
    item_id: str, text: str, logprobs: list[dict[str, Any]], status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}],
    }


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any]:
    """Chat usage -> Responses usage: all five fields, integers, never null."""
    u = chat_usage or {}
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    input_tokens = int(u.get("prompt_tokens") or 0)
    output_tokens = int(u.get("completion_tokens") or 0)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
            "cache_write_tokens": 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": int(u.get("total_tokens") or input_tokens + output_tokens),
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def build_response(
    *,
    response_id: str,
    created_at: int,
    model: str,
    echo: dict[str, Any],
    output: list[dict[str, Any]],
    finish_reason: str | None,
    usage_body: dict[str, Any] | None,
) -> dict[str, Any]:
    incomplete = _INCOMPLETE.get(finish_reason or "")
    if incomplete and output:
        output[-1]["status"] = "incomplete"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "incomplete" if incomplete else "completed",
        "background": echo["background"],
        "completed_at": None if incomplete else created_at,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": echo["instructions"],
        "max_output_tokens": echo["max_output_tokens"],
        "max_tool_calls": echo["max_tool_calls"],
        "model": model,
        "output": output,
        "parallel_tool_calls": echo["parallel_tool_calls"],
        "previous_response_id": echo["previous_response_id"],
        "prompt_cache_key": echo["prompt_cache_key"],
        "reasoning": echo["reasoning"],
        "safety_identifier": echo["safety_identifier"],
        "service_tier": echo["service_tier"],
        "store": echo["store"],
        "temperature": echo["temperature"],
        "text": echo["text"],
        "tool_choice": echo["tool_choice"],
        "tools": echo["tools"],
        "top_logprobs": echo["top_logprobs"],
        "top_p": echo["top_p"],
        "truncation": echo["truncation"],
        "usage": usage(usage_body),
        "user": echo["user"],
        "metadata": echo["metadata"],
    }


def chat_to_response(
    completion: dict[str, Any],
    cfg: ModelServerConfig,
    echo: dict[str, Any],
    *,
    response_id: str,
    created_at: int,
    want_logprobs: bool = False,
    token_info: TokenInfo | None = None,
) -> dict[str, Any]:
    gen = split_choice(completion, cfg)
    logprobs = None
    if want_logprobs:
        logprobs = text_logprobs(completion["choices"][0].get("logprobs"), gen)
    output = output_items(gen, cfg, logprobs=logprobs)
    if token_info is not None:
        output[-1].update(token_info.as_fields())
    return build_response(
        response_id=response_id,
        created_at=created_at,
        model=cfg.model,
        echo=echo,
        output=output,
        finish_reason=gen.finish_reason,
        usage_body=completion.get("usage"),
    )


def empty_response(
    cfg: ModelServerConfig,
    echo: dict[str, Any],
    *,
    response_id: str,
    created_at: int,
    reason: str,
) -> dict[str, Any]:
    """The `incomplete` response with one empty message (context overflow, reasoning guard)."""
    return build_response(
        response_id=response_id,
        created_at=created_at,
        model=cfg.model,
        echo=echo,
        output=[message_item(new_id("msg"), "", [], "incomplete")],
        finish_reason=reason,
        usage_body=None,
    )


def convert_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    token = entry.get("token", "")
    return {
        "token": token,
        "bytes": entry.get("bytes") or list(token.encode()),
        "logprob": float(entry.get("logprob", 0.0)),
        "top_logprobs": [
            {
                "token": t.get("token", ""),
                "bytes": t.get("bytes") or list(t.get("token", "").encode()),
                "logprob": float(t.get("logprob", 0.0)),
            }
            for t in entry.get("top_logprobs") or []
        ],
    }


def text_logprobs(chat_logprobs: dict[str, Any] | None, gen: Generated) -> list[dict[str, Any]]:
    """Log-probs of the tokens that make up the message text.

    vLLM's log-probs cover every generated token (reasoning and tool calls too). When the output
    is only text they are all the text's; otherwise the text's span is located in the joined
    token strings and the tokens overlapping it are kept. Token strings written as `token_id:N`
    cannot be located, so then every token is returned.
    """
    entries = (chat_logprobs or {}).get("content") or []
    if not entries:
        return []
    if not gen.reasoning and not gen.tool_calls:
        return [convert_logprob(e) for e in entries]
    tokens = [e.get("token", "") for e in entries]
    joined = "".join(tokens)
    start = joined.rfind(gen.text) if gen.text else -1
    if start == -1:
        return [convert_logprob(e) for e in entries] if gen.text else []
    end = start + len(gen.text)
    kept = []
    pos = 0
    for entry, token in zip(entries, tokens, strict=True):
        t_start, pos = pos, pos + len(token)
        if pos > start and t_start < end:
            kept.append(convert_logprob(entry))
    return kept

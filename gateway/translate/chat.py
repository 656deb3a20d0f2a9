"""Preprocessing shared by `/v1/responses` and `/v1/chat/completions` before a body goes to vLLM."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.config import ModelServerConfig
from gateway.errors import invalid
from gateway.translate.reasoning import pop_reasoning_field
from gateway.translate.response import new_id
from gateway.translate.tokens import TokenInfo


def metadata_overrides(metadata: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """NeMo Gym's per-request overrides: `metadata.chat_template_kwargs` / `metadata.extra_body`,
    each a JSON-encoded object."""
    if not isinstance(metadata, dict):
        return {}, {}
    return (
        _json_object(metadata.get("chat_template_kwargs"), "metadata.chat_template_kwargs"),
        _json_object(metadata.get("extra_body"), "metadata.extra_body"),
    )


def _json_object(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        parsed = orjson.loads(value) if isinstance(value, str) else value
    except orjson.JSONDecodeError as exc:
        raise invalid(f"{param} is not valid JSON: {exc}", param) from exc
    if not isinstance(parsed, dict):
        raise invalid(f"{param} must encode a JSON object.", param)
    return parsed


def prepare_chat_body(
    chat: dict[str, Any], cfg: ModelServerConfig, metadata: Any
) -> dict[str, Any]:
    """Apply the model name, template kwargs, extra_body, role/reasoning rewrites, token-id
    flags and sampling overrides (which win over everything, as in NeMo Gym)."""
    chat["model"] = cfg.model
    meta_kwargs, meta_extra = metadata_overrides(metadata)

    kwargs = {**(cfg.chat_template_kwargs or {}), **meta_kwargs}
    request_kwargs = chat.get("chat_template_kwargs")
    if request_kwargs is not None:
        if not isinstance(request_kwargs, dict):
            raise invalid("chat_template_kwargs must be an object.", "chat_template_kwargs")
        kwargs.update(request_kwargs)
    if kwargs:
        chat["chat_template_kwargs"] = kwargs

    for key, value in {**(cfg.extra_body or {}), **meta_extra}.items():
        chat.setdefault(key, value)

    messages = chat.get("messages")
    if isinstance(messages, list):
        chat["messages"] = [_rewrite_message(m, cfg) for m in messages]

    if cfg.continue_final_assistant_message:
        chat["continue_final_message"] = True
        chat["add_generation_prompt"] = False

    if cfg.return_token_id_information:
        if chat.get("n", 1) != 1:
            raise invalid("Training mode returns token ids for exactly one choice (n=1).", "n")
        chat["logprobs"] = True
        chat["top_logprobs"] = chat.get("top_logprobs") or 0
        chat["return_tokens_as_token_ids"] = True
        if cfg.backend_returns_token_ids or cfg.request_prompt_and_generation_token_ids:
            chat["return_token_ids"] = True

    if cfg.sampling_overrides:
        chat.update(cfg.sampling_overrides)
    return chat


def _rewrite_message(message: Any, cfg: ModelServerConfig) -> Any:
    if not isinstance(message, dict):
        return message
    role = message.get("role")
    if role == "developer" and cfg.replace_developer_role_with_system:
        message = {**message, "role": "system"}
    elif role == "assistant" and ("reasoning" in message or "reasoning_content" in message):
        message = dict(message)
        reasoning = pop_reasoning_field(message)
        if reasoning is not None and cfg.uses_interleaved_reasoning:
            if cfg.reasoning_field in ("reasoning", "both"):
                message["reasoning"] = reasoning
            if cfg.reasoning_field in ("reasoning_content", "both"):
                message["reasoning_content"] = reasoning
    return message


def postprocess_chat_completion(
    completion: dict[str, Any], cfg: ModelServerConfig, tokens: TokenInfo | None
) -> dict[str, Any]:
    """Configured model name; NeMo Gym's inline `<think>` reasoning; token fields on the message."""
    completion["model"] = cfg.model
    for choice in completion.get("choices") or []:
        message = choice.get("message")
        if not isinstance(message, dict):
            continue
        if cfg.uses_reasoning_parser and cfg.chat_reasoning_output == "inline":
            reasoning = pop_reasoning_field(message)
            if reasoning:
                message["content"] = f"<think>{reasoning}</think>{message.get('content') or ''}"
        if tokens is not None:
            message.update(tokens.as_fields())
    return completion


class InlineReasoning:
    """NeMo Gym's chat output for streams: vLLM's reasoning deltas go back into `content`
    wrapped in `<think>...</think>` (only with `chat_reasoning_output: inline`)."""

    def __init__(self, cfg: ModelServerConfig) -> None:
        self.enabled = cfg.uses_reasoning_parser and cfg.chat_reasoning_output == "inline"
        self._open = False

    def rewrite(self, chunk: dict[str, Any]) -> None:
        if not self.enabled:
            return
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            reasoning = pop_reasoning_field(delta)
            prefix = ""
            if reasoning:
                prefix = reasoning if self._open else f"<think>{reasoning}"
                self._open = True
            elif self._open and (
                delta.get("content") or delta.get("tool_calls") or choice.get("finish_reason")
            ):
                prefix = "</think>"
                self._open = False
            if prefix:
                delta["content"] = prefix + (delta.get("content") or "")


def empty_chat_completion(model: str) -> dict[str, Any]:
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": []},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def empty_chat_chunk(model: str) -> dict[str, Any]:
    """`empty_chat_completion` as the one chunk of a stream (context overflow while streaming)."""
    empty = empty_chat_completion(model)
    return {
        "id": empty["id"],
        "object": "chat.completion.chunk",
        "created": empty["created"],
        "model": empty["model"],
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
    }

"""One request's path: translate, pick a backend, call it, translate back (I/O at the edges)."""

from __future__ import annotations

import time
from typing import Any, TypedDict

from gateway.config import ModelServerConfig
from gateway.errors import server_error
from gateway.routing.pool import BackendPool
from gateway.translate import response as responses
from gateway.translate.chat import prepare_chat_body
from gateway.translate.request import ChatPlan, responses_to_chat
from gateway.translate.response import BackendProtocolError, new_id
from gateway.translate.tokens import TokenDataError, TokenInfo, extract_token_info
from gateway.upstream import Backend, ContextLengthExceeded


class _ResponseIds(TypedDict):
    response_id: str
    created_at: int


# Request fields that change the rendered prompt, so `/tokenize` must see them too.
_TOKENIZE_FIELDS = ("messages", "tools", "chat_template_kwargs", "mm_processor_kwargs")


class Gateway:
    def __init__(self, cfg: ModelServerConfig, pool: BackendPool) -> None:
        self.cfg = cfg
        self.pool = pool

    async def create_response(self, body: dict[str, Any], session_key: str) -> dict[str, Any]:
        plan = responses_to_chat(body, self.cfg)
        return await self.run_plan(plan, session_key)

    async def run_plan(self, plan: ChatPlan, session_key: str) -> dict[str, Any]:
        cfg = self.cfg
        ids = _ResponseIds(response_id=new_id("resp"), created_at=int(time.time()))
        if plan.skip_backend:
            return responses.empty_response(cfg, plan.echo, reason="content_filter", **ids)
        backend = self.pool.pick(session_key)
        try:
            completion = await backend.chat_completion(plan.chat)
        except ContextLengthExceeded:
            if cfg.propagate_context_overflow_errors:
                raise
            return responses.empty_response(cfg, plan.echo, reason="length", **ids)
        tokens = await self._token_info(backend, plan.chat, completion)
        try:
            return responses.chat_to_response(
                completion,
                cfg,
                plan.echo,
                want_logprobs=plan.want_logprobs,
                token_info=tokens,
                **ids,
            )
        except BackendProtocolError as exc:
            raise server_error(502, str(exc), "bad_gateway") from exc

    async def chat_completion(self, body: dict[str, Any], session_key: str) -> dict[str, Any]:
        chat = prepare_chat_body(body, self.cfg, body.get("metadata"))
        backend = self.pool.pick(session_key)
        try:
            completion = await backend.chat_completion(chat)
        except ContextLengthExceeded:
            if self.cfg.propagate_context_overflow_errors:
                raise
            return _empty_chat_completion(self.cfg.model)
        tokens = await self._token_info(backend, chat, completion)
        return postprocess_chat_completion(completion, self.cfg, tokens)

    async def _token_info(
        self, backend: Backend, chat: dict[str, Any], completion: dict[str, Any]
    ) -> TokenInfo | None:
        if not self.cfg.return_token_id_information:
            return None
        try:
            info = extract_token_info(completion)
        except (TokenDataError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise server_error(502, f"Token data from the backend is unusable: {exc}") from exc
        if info.prompt_token_ids is None:
            body = {k: chat[k] for k in _TOKENIZE_FIELDS if k in chat}
            body["model"] = self.cfg.model
            if "required_prefix_token_ids" in chat:
                body["required_prefix_token_ids"] = chat["required_prefix_token_ids"]
            info.prompt_token_ids = await backend.tokenize(body)
        return info


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
            reasoning = message.pop("reasoning", None) or message.pop("reasoning_content", None)
            message.pop("reasoning_content", None)
            if reasoning:
                message["content"] = f"<think>{reasoning}</think>{message.get('content') or ''}"
        if tokens is not None:
            message.update(tokens.as_fields())
    return completion


def _empty_chat_completion(model: str) -> dict[str, Any]:
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

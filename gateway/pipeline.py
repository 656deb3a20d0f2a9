"""One request's path: translate, pick a backend, call it, translate back (I/O at the edges)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import anyio
import httpx
import orjson

from gateway.config import ModelServerConfig
from gateway.errors import GatewayError, server_error
from gateway.routing.pool import BackendPool
from gateway.translate import response as responses
from gateway.translate.chat import prepare_chat_body
from gateway.translate.request import ChatPlan, responses_to_chat
from gateway.translate.response import BackendProtocolError, new_id
from gateway.translate.stream import ResponseStream, UpstreamStreamError, encode_sse
from gateway.translate.tokens import TokenDataError, TokenInfo, extract_token_info
from gateway.upstream import Backend, ContextLengthExceeded, sse_data


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

    async def stream_response(self, body: dict[str, Any], session_key: str) -> AsyncIterator[bytes]:
        """Open the upstream stream first, so errors before the first byte stay HTTP errors;
        then return the Responses event stream."""
        cfg = self.cfg
        plan = responses_to_chat(body, cfg)
        streamer = ResponseStream(
            cfg,
            plan.echo,
            response_id=new_id("resp"),
            created_at=int(time.time()),
            want_logprobs=plan.want_logprobs,
        )
        if plan.skip_backend:
            streamer.finish_reason = "content_filter"
            return _replay([*streamer.start(), *streamer.close_items(), *streamer.terminal()])
        backend = self.pool.pick(session_key)
        chat = {**plan.chat, "stream": True, "stream_options": {"include_usage": True}}
        try:
            upstream = await backend.open_chat_stream(chat)
        except ContextLengthExceeded:
            if cfg.propagate_context_overflow_errors:
                raise
            return _replay([*streamer.start(), *streamer.context_overflow()])
        return self._relay_events(streamer, upstream, backend, chat)

    async def _relay_events(
        self,
        streamer: ResponseStream,
        upstream: httpx.Response,
        backend: Backend,
        chat: dict[str, Any],
    ) -> AsyncIterator[bytes]:
        try:
            yield b"".join(encode_sse(e) for e in streamer.start())
            try:
                ended = False
                async for data in sse_data(upstream):
                    if data == b"[DONE]":
                        ended = True
                        break
                    events = streamer.feed(orjson.loads(data))
                    if events:
                        yield b"".join(encode_sse(e) for e in events)
                if not ended:
                    raise UpstreamStreamError("the backend stream ended without [DONE]")
                events = streamer.close_items()
                events += streamer.terminal(
                    await self._token_info(backend, chat, streamer.token_completion())
                )
            except UpstreamStreamError as exc:
                events = streamer.fail(f"Backend error mid-stream: {exc}")
            except httpx.TimeoutException as exc:
                events = streamer.fail(f"Backend timed out mid-stream: {type(exc).__name__}")
            except httpx.TransportError as exc:
                events = streamer.fail(f"Backend dropped the stream: {exc!r}")
            except GatewayError as exc:
                events = streamer.fail(exc.message)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                events = streamer.fail(f"Backend sent an unreadable chunk: {exc!r}")
            yield b"".join(encode_sse(e) for e in events)
        finally:
            await _close_upstream(upstream)

    async def stream_chat_completion(
        self, body: dict[str, Any], session_key: str
    ) -> AsyncIterator[bytes]:
        chat = prepare_chat_body(body, self.cfg, body.get("metadata"))
        backend = self.pool.pick(session_key)
        try:
            upstream = await backend.open_chat_stream(chat)
        except ContextLengthExceeded:
            if self.cfg.propagate_context_overflow_errors:
                raise
            empty = _empty_chat_completion(self.cfg.model)
            choice = empty["choices"][0]
            chunk = {
                **{k: empty[k] for k in ("id", "created", "model")},
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": choice["finish_reason"],
                    }
                ],
            }
            return _replay_chat([chunk])
        return self._relay_chat(upstream)

    async def _relay_chat(self, upstream: httpx.Response) -> AsyncIterator[bytes]:
        inline = InlineReasoning(self.cfg)
        try:
            try:
                async for data in sse_data(upstream):
                    if data == b"[DONE]":
                        yield b"data: [DONE]\n\n"
                        return
                    chunk = orjson.loads(data)
                    if not chunk.get("error"):
                        chunk["model"] = self.cfg.model
                        inline.rewrite(chunk)
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                message = "the backend stream ended without [DONE]"
            except httpx.TimeoutException as exc:
                message = f"Backend timed out mid-stream: {type(exc).__name__}"
            except httpx.TransportError as exc:
                message = f"Backend dropped the stream: {exc!r}"
            error = server_error(502, message, "bad_gateway").body()
            yield b"data: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n"
        finally:
            await _close_upstream(upstream)

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
            reasoning = delta.pop("reasoning", None) or delta.pop("reasoning_content", None)
            delta.pop("reasoning_content", None)
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


async def _close_upstream(upstream: httpx.Response) -> None:
    # Runs when the client went away too: the task is being cancelled, and the backend must
    # still see its connection close at once so it stops generating.
    with anyio.CancelScope(shield=True):
        await upstream.aclose()


async def _replay(events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield b"".join(encode_sse(e) for e in events)


async def _replay_chat(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


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

"""One request's path: translate, choose a backend, call it, translate back (I/O at the edges).

A connection that fails before any byte moves to the session's next backend (bounded attempts,
backoff when the same backend is tried again); a request that has started streaming is never
retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway.config import ModelServerConfig
from gateway.errors import GatewayError, server_error
from gateway.metrics import Metrics
from gateway.routing.pool import BackendPool, BackendState, rendezvous_score
from gateway.translate import response as responses
from gateway.translate.chat import (
    InlineReasoning,
    empty_chat_chunk,
    empty_chat_completion,
    postprocess_chat_completion,
    prepare_chat_body,
)
from gateway.translate.request import responses_to_chat
from gateway.translate.response import BackendProtocolError, new_id
from gateway.translate.stream import ResponseStream, UpstreamStreamError, encode_sse
from gateway.translate.tokens import TokenDataError, TokenInfo, extract_token_info
from gateway.upstream import (
    Backend,
    BackendUnavailable,
    ContextLengthExceeded,
    StreamBroken,
    backoff_s,
    sse_data,
)

# Request fields that change the rendered prompt, so `/tokenize` must see them too.
_TOKENIZE_FIELDS = ("messages", "tools", "chat_template_kwargs", "mm_processor_kwargs")


@dataclass
class Exchange:
    """One request's bookkeeping: its session, the backend that served it, timings."""

    route: str
    session_key: str
    started: float
    backend: str = "none"
    first_output_at: float | None = None


class Gateway:
    def __init__(self, cfg: ModelServerConfig, pool: BackendPool, metrics: Metrics) -> None:
        self.cfg = cfg
        self.pool = pool
        self.metrics = metrics

    # --- backend choice and calls -----------------------------------------------------------

    def _headers(self, state: BackendState, key: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.cfg.forward_session_header:
            headers[self.cfg.forward_session_header] = key
        if self.cfg.data_parallel_size > 1:
            ranks = range(self.cfg.data_parallel_size)
            best = max(ranks, key=lambda r: rendezvous_score(key, f"{state.url}#{r}"))
            headers["X-data-parallel-rank"] = str(best)
        return headers

    async def _open(
        self, exchange: Exchange, body: dict[str, Any]
    ) -> tuple[BackendState, aiohttp.ClientResponse]:
        """Open a call on the first backend that connects; the caller must `_release` it."""
        candidates = self.pool.choose(exchange.session_key)
        content = orjson.dumps(body)
        attempts = self.cfg.max_retries + 1
        error: GatewayError | None = None
        for attempt in range(attempts):
            state = candidates[attempt % len(candidates)]
            if attempt >= len(candidates):
                await asyncio.sleep(backoff_s(self.cfg.retry_backoff_s, attempt))
            if attempt:
                self.metrics.retries.labels(state.url).inc()
            self._acquire(state)
            headers = self._headers(state, exchange.session_key)
            try:
                response = await state.backend.open(state.backend.chat_url, content, headers)
            except BackendUnavailable as exc:
                self._release(state)
                self.pool.record_failure(state)
                error = exc
                continue
            except GatewayError as exc:
                self._release(state)
                if exc.status >= 500:
                    self.pool.record_failure(state)
                raise
            self.pool.record_success(state)
            exchange.backend = state.url
            return state, response
        assert error is not None
        raise error

    def _acquire(self, state: BackendState) -> None:
        state.in_flight += 1
        self.metrics.in_flight.labels(state.url).inc()

    def _release(self, state: BackendState) -> None:
        state.in_flight -= 1
        self.metrics.in_flight.labels(state.url).dec()

    async def _call_json(
        self, exchange: Exchange, chat: dict[str, Any]
    ) -> tuple[Backend, dict[str, Any]]:
        state, response = await self._open(exchange, chat)
        try:
            return state.backend, await state.backend.read_json(response)
        except GatewayError as exc:
            if exc.status >= 500:
                self.pool.record_failure(state)
            raise
        finally:
            self._release(state)

    def _context_overflow(self, exc: ContextLengthExceeded, route: str) -> None:
        if self.cfg.propagate_context_overflow_errors:
            raise exc
        self.metrics.context_length.labels(route).inc()

    # --- /v1/responses ----------------------------------------------------------------------

    async def create_response(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        cfg = self.cfg
        plan = responses_to_chat(body, cfg)
        response_id, created_at = new_id("resp"), int(time.time())
        if plan.skip_backend:
            return responses.empty_response(
                cfg,
                plan.echo,
                response_id=response_id,
                created_at=created_at,
                reason="content_filter",
            )
        try:
            backend, completion = await self._call_json(exchange, plan.chat)
        except ContextLengthExceeded as exc:
            self._context_overflow(exc, "responses")
            return responses.empty_response(
                cfg, plan.echo, response_id=response_id, created_at=created_at, reason="length"
            )
        tokens = await self._token_info(backend, plan.chat, completion)
        try:
            return responses.chat_to_response(
                completion,
                cfg,
                plan.echo,
                response_id=response_id,
                created_at=created_at,
                want_logprobs=plan.want_logprobs,
                token_info=tokens,
            )
        except BackendProtocolError as exc:
            raise server_error(502, str(exc), "bad_gateway") from exc

    async def stream_response(
        self, body: dict[str, Any], exchange: Exchange
    ) -> AsyncIterator[bytes]:
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
        chat = {**plan.chat, "stream": True, "stream_options": {"include_usage": True}}
        try:
            state, upstream = await self._open(exchange, chat)
        except ContextLengthExceeded as exc:
            self._context_overflow(exc, "responses")
            return _replay([*streamer.start(), *streamer.context_overflow()])
        return await _started(self._relay_events(streamer, state, upstream, exchange, chat))

    async def _relay_events(
        self,
        streamer: ResponseStream,
        state: BackendState,
        upstream: aiohttp.ClientResponse,
        exchange: Exchange,
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
                        if exchange.first_output_at is None:
                            exchange.first_output_at = time.perf_counter()
                        yield b"".join(encode_sse(e) for e in events)
                if not ended:
                    raise UpstreamStreamError("the backend stream ended without [DONE]")
                events = streamer.close_items()
                tokens = await self._token_info(state.backend, chat, streamer.token_completion())
                events += streamer.terminal(tokens)
            except UpstreamStreamError as exc:
                events = streamer.fail(f"Backend error mid-stream: {exc}")
            except StreamBroken as exc:
                self.pool.record_failure(state)
                events = streamer.fail(str(exc))
            except GatewayError as exc:
                events = streamer.fail(exc.message)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                events = streamer.fail(f"Backend sent an unreadable chunk: {exc!r}")
            yield b"".join(encode_sse(e) for e in events)
        finally:
            _close_upstream(upstream)
            self._release(state)

    # --- /v1/chat/completions ---------------------------------------------------------------

    async def chat_completion(self, body: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        chat = prepare_chat_body(body, self.cfg, body.get("metadata"))
        try:
            backend, completion = await self._call_json(exchange, chat)
        except ContextLengthExceeded as exc:
            self._context_overflow(exc, "chat_completions")
            return empty_chat_completion(self.cfg.model)
        tokens = await self._token_info(backend, chat, completion)
        return postprocess_chat_completion(completion, self.cfg, tokens)

    async def stream_chat_completion(
        self, body: dict[str, Any], exchange: Exchange
    ) -> AsyncIterator[bytes]:
        chat = prepare_chat_body(body, self.cfg, body.get("metadata"))
        try:
            state, upstream = await self._open(exchange, chat)
        except ContextLengthExceeded as exc:
            self._context_overflow(exc, "chat_completions")
            return _replay_chat([empty_chat_chunk(self.cfg.model)])
        return await _started(self._relay_chat(state, upstream, exchange))

    async def _relay_chat(
        self, state: BackendState, upstream: aiohttp.ClientResponse, exchange: Exchange
    ) -> AsyncIterator[bytes]:
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
                    if exchange.first_output_at is None:
                        exchange.first_output_at = time.perf_counter()
                    yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                message = "the backend stream ended without [DONE]"
            except StreamBroken as exc:
                self.pool.record_failure(state)
                message = str(exc)
            error = server_error(502, message, "bad_gateway").body()
            yield b"data: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n"
        finally:
            _close_upstream(upstream)
            self._release(state)

    # --- training data ----------------------------------------------------------------------

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


async def _started(relay: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Run a relay to its first chunk now. A started async generator is finalised (its `finally`
    closes the upstream call and frees the backend slot) even if the client is gone before the
    response body is ever iterated; a never-started one would leak both."""
    first = await anext(relay)

    async def chained() -> AsyncIterator[bytes]:
        yield first
        async for chunk in relay:
            yield chunk

    return chained()


def _close_upstream(upstream: aiohttp.ClientResponse) -> None:
    """Give the connection back when the stream was read to the end; otherwise close it, which
    also tells the backend to stop generating (the client may have gone away)."""
    if upstream.content.at_eof():
        upstream.release()
    else:
        upstream.close()


async def _replay(events: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield b"".join(encode_sse(e) for e in events)


async def _replay_chat(chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"

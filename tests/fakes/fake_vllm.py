"""A fake vLLM OpenAI-compatible server for tests (fault injection) and benchmarks.

It reproduces the JSON bodies of vLLM 0.32's ``/v1/chat/completions`` (and a few side endpoints)
key for key, in the order vLLM's pydantic models serialize them:

* Non-streaming responses are a full ``model_dump()`` of ``ChatCompletionResponse`` (every field,
  ``null`` included), like vLLM's ``JSONResponse(content=response.model_dump())``.
* Streaming chunks are ``model_dump_json(exclude_unset=True)`` of ``ChatCompletionStreamResponse``:
  only the fields vLLM sets explicitly appear (so ``"logprobs":null,"finish_reason":null,
  "token_ids":null`` do appear on content chunks, ``prompt_token_ids`` appears on the first chunk
  only, ``stop_reason`` on the finish chunk only). The usage-only chunk is dumped with
  ``exclude_none`` too. A mid-stream error is ``json.dumps`` of ``ErrorResponse`` (Python's default
  ``", "``/``": "`` separators), followed by ``data: [DONE]``.

Generation model of the fake
----------------------------
The generated "text" is ``reasoning`` + ``content`` + a hermes-like rendering of each tool call
(``<tool_call>\\n{"name": "...", "arguments": ...}\\n</tool_call>``), followed by an end-of-sequence
token (``<|im_end|>``, id ``EOS_TOKEN_ID``) when the finish reason is ``stop`` or ``tool_calls``
(vLLM counts the EOS token in ``completion_tokens``, ``token_ids`` and logprobs). Text is split into
tokens by ``split_tokens`` (``\\S+\\s*|\\s+``: a word with its trailing blanks); a token's id is
``zlib.crc32(token) % 50000``. Streaming emits one chunk per token (or one per ``stream_chunks``
entry). The prompt is ``json(messages)`` (+ ``json(tools)`` when present); it counts
``max(1, len // 4)`` tokens, token ``i`` being the bytes ``[4i, 4i+4)``; ``/tokenize`` uses the same
rule, so its ``tokens`` equal the chat response's ``prompt_token_ids``.

Like vLLM, output is clamped to ``min(max_tokens, max_model_len - prompt_tokens)``: a reply longer
than that is cut and finishes with ``"length"``.

Queue semantics
---------------
Every ``POST /v1/chat/completions`` that passes authentication and JSON validation consumes one
scripted entry (FIFO; ``set_default`` when the queue is empty), whatever happens next (a 404 for a
wrong model or a context-length 400 consumes it too). A scripted ``ErrorReply`` is answered before
the model and context checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import re
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "EOS_TOKEN_ID",
    "ErrorReply",
    "FakeVLLM",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "prompt_token_ids",
    "serve_in_thread",
    "split_tokens",
    "token_id",
]

VOCAB_SIZE = 50000
EOS_TOKEN_ID = 151645  # Qwen's <|im_end|>; outside the range of the hashed text tokens
EOS_TOKEN = "<|im_end|>"
VLLM_VERSION = "0.32.0"

_TOKEN_RE = re.compile(r"\S+\s*|\s+")


# --------------------------------------------------------------------------------------------
# Public data model
# --------------------------------------------------------------------------------------------


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON string
    id: str | None = None  # default: "chatcmpl-tool-<32 hex>" like vLLM


@dataclass
class Reply:
    content: str | None = "Hello"
    reasoning: str | None = None  # goes to message.reasoning (vLLM 0.32 field)
    tool_calls: list[ToolCall] = field(default_factory=list)
    # "stop" | "length" | "tool_calls" | "content_filter". Like vLLM with auto tool choice, "stop"
    # becomes "tool_calls" when the reply has tool calls (unless the request names a function).
    finish_reason: str = "stop"
    prompt_tokens: int | None = None  # default: derived from the request (len(json) // 4, min 1)
    completion_tokens: int | None = None  # default: number of generated tokens (EOS included)
    reasoning_field: str = "reasoning"  # or "reasoning_content" to mimic older vLLM
    stream_delay_s: float = 0.0  # delay between streamed chunks
    stream_chunks: list[str] | None = None  # explicit chunking of content for streaming
    # Streaming: after N `data:` events (the role chunk counts) send vLLM's mid-stream error
    # payload, then `data: [DONE]`. N=0 sends the error as the first event.
    fail_after_chunks: int | None = None
    # Streaming: after N `data:` events close the connection abruptly (no [DONE], no last chunk).
    drop_after_chunks: int | None = None
    stall_s: float = 0.0  # sleep before answering at all (timeouts)
    # The mid-stream error of `fail_after_chunks` (default: vLLM's GenerationError shape,
    # "Internal server error" / "InternalServerError" / 500).
    fail_error: ErrorReply | None = None


@dataclass
class ErrorReply:
    status: int
    message: str
    type: str = "BadRequestError"
    param: str | None = None
    code: int | str | None = None  # default: the status int, as vLLM 0.32 does
    raw_body: bytes | None = None  # if set, send exactly these bytes instead
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"retry-after": "1"}
    stall_s: float = 0.0  # sleep before answering

    def body(self) -> dict[str, Any]:
        code = self.status if self.code is None else self.code
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": code}
        }


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case keys
    json: Any  # parsed body, or None (no body / not JSON)
    body: bytes = b""


# --------------------------------------------------------------------------------------------
# Deterministic "tokenizer"
# --------------------------------------------------------------------------------------------


def split_tokens(text: str) -> list[str]:
    """Split text into fake tokens (a word with its trailing blanks, or a run of blanks)."""
    return _TOKEN_RE.findall(text)


def token_id(token: str) -> int:
    """Stable id of a fake token."""
    return zlib.crc32(token.encode("utf-8")) % VOCAB_SIZE


def _prompt_source(body: dict[str, Any]) -> bytes:
    prompt = body.get("prompt")
    if isinstance(prompt, str) and body.get("messages") is None:
        return prompt.encode("utf-8")
    src = orjson.dumps(body.get("messages"))
    tools = body.get("tools")
    if tools:
        src += orjson.dumps(tools)
    return src


def _prompt_count(src: bytes) -> int:
    return max(1, len(src) // 4)


def prompt_token_ids(src: bytes, count: int | None = None) -> list[int]:
    """Ids of the prompt tokens: bytes [4i, 4i+4) hashed; extended deterministically if count is
    larger than the natural count (Reply.prompt_tokens override)."""
    natural = _prompt_count(src)
    n = natural if count is None else count
    ids = [zlib.crc32(src[4 * i : 4 * i + 4]) % VOCAB_SIZE for i in range(min(n, natural))]
    ids.extend(zlib.crc32(i.to_bytes(8, "little")) % VOCAB_SIZE for i in range(len(ids), n))
    return ids


def _logprob(tid: int, pos: int) -> float:
    return -round(((tid * 31 + pos * 17) % 5000) / 1000.0 + 0.001, 6)


# --------------------------------------------------------------------------------------------
# Generation plan
# --------------------------------------------------------------------------------------------


class _Ev:
    """One streaming step: a delta (None = vLLM's "parser not ready", sent only as an empty delta
    when return_token_ids) and the tokens it carries."""

    __slots__ = ("delta", "ids", "kind", "toks", "tool_index")

    def __init__(
        self, kind: str, delta: dict[str, Any] | None, toks: list[str], tool_index: int = -1
    ):
        self.kind = kind
        self.delta = delta
        self.toks = toks
        self.ids = [EOS_TOKEN_ID] * len(toks) if kind == "eos" else [token_id(t) for t in toks]
        self.tool_index = tool_index


def _tool_prefix(name: str) -> str:
    return '<tool_call>\n{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": '


_TOOL_SUFFIX = "}\n</tool_call>\n"


def _build_events(
    reply: Reply, stream: bool, tool_ids: list[str], with_eos: bool, reasoning_key: str
) -> list[_Ev]:
    evs: list[_Ev] = []
    if reply.reasoning:
        for tok in split_tokens(reply.reasoning):
            evs.append(_Ev("reasoning", {reasoning_key: tok}, [tok]))
    if stream and reply.stream_chunks is not None:
        for piece in reply.stream_chunks:
            evs.append(_Ev("content", {"content": piece}, split_tokens(piece)))
    elif reply.content:
        for tok in split_tokens(reply.content):
            evs.append(_Ev("content", {"content": tok}, [tok]))
    for k, tc in enumerate(reply.tool_calls):
        head = {
            "tool_calls": [
                {"id": tool_ids[k], "type": "function", "index": k, "function": {"name": tc.name}}
            ]
        }
        evs.append(_Ev("tool_head", head, split_tokens(_tool_prefix(tc.name)), k))
        for tok in split_tokens(tc.arguments):
            arg = {"tool_calls": [{"index": k, "function": {"arguments": tok}}]}
            evs.append(_Ev("tool_args", arg, [tok], k))
        evs.append(_Ev("tool_tail", None, split_tokens(_TOOL_SUFFIX), k))
    if with_eos:
        delta: dict[str, Any] = {} if reply.tool_calls else {"content": ""}
        evs.append(_Ev("eos", delta, [EOS_TOKEN]))
    return evs


def _truncate(evs: list[_Ev], budget: int) -> tuple[list[_Ev], bool]:
    """Keep at most `budget` tokens. Returns (events, truncated)."""
    total = sum(len(e.toks) for e in evs)
    if total <= budget:
        return evs, False
    out: list[_Ev] = []
    left = budget
    for ev in evs:
        if left <= 0:
            break
        if len(ev.toks) <= left:
            out.append(ev)
            left -= len(ev.toks)
            continue
        part = ev.toks[:left]
        text = "".join(part)
        delta: dict[str, Any] | None = None
        if ev.kind in ("reasoning", "content") and ev.delta is not None:
            delta = {next(iter(ev.delta)): text}
        elif ev.kind == "tool_args":
            delta = {"tool_calls": [{"index": ev.tool_index, "function": {"arguments": text}}]}
        out.append(_Ev(ev.kind, delta, part, ev.tool_index))
        left = 0
    return out, True


# --------------------------------------------------------------------------------------------
# ASGI plumbing
# --------------------------------------------------------------------------------------------


class _AbortConnection(Exception):
    """Raised inside the app to make uvicorn drop the connection mid-response."""


class _DropAbortLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _AbortConnection)


_filter_lock = threading.Lock()
_filter_installed = False


def _install_abort_log_filter() -> None:
    global _filter_installed
    with _filter_lock:
        if not _filter_installed:
            logging.getLogger("uvicorn.error").addFilter(_DropAbortLogs())
            _filter_installed = True


_JSON_CT = (b"content-type", b"application/json")
_SSE_CT = (b"content-type", b"text/event-stream; charset=utf-8")
_DONE = b"data: [DONE]\n\n"
_CHAT_PATH = "/v1/chat/completions"


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


async def _send_bytes(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: tuple[bytes, bytes] | None = _JSON_CT,
) -> None:
    hdrs = [] if content_type is None else [content_type]
    hdrs.append((b"content-length", str(len(body)).encode()))
    if headers:
        hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def _error_body(message: str, type_: str, code: int, param: str | None = None) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


async def _send_error_reply(send: Any, err: ErrorReply) -> None:
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    has_ct = any(k == b"content-type" for k, _ in extra)
    body = err.raw_body if err.raw_body is not None else _dumps(err.body())
    await _send_bytes(send, err.status, body, extra, None if has_ct else _JSON_CT)


async def _bad_request(send: Any, message: str) -> None:
    # vLLM's RequestValidationError handler: type is HTTPStatus.BAD_REQUEST.phrase.
    await _send_bytes(send, 400, _error_body(message, "Bad Request", 400))


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------


class FakeVLLM:
    """A scripted vLLM. ``app`` is the ASGI application (the instance is callable too)."""

    def __init__(
        self,
        model: str = "tiny",
        max_model_len: int = 2048,
        api_key: str | None = None,
        *,
        root: str | None = None,
        record: bool = True,
    ):
        self.model = model
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.root = root if root is not None else model
        self.record = record
        self.requests: list[RecordedRequest] = []
        # streaming responses (and stalled requests) whose client went away before the end
        self.disconnects = 0
        # streamed `data:` chunks handed to the server so far (uvicorn's `send` waits while the
        # socket is full, so this stalls when the reader does not read: back-pressure tests)
        self.chunks_sent = 0
        self._lock = threading.Lock()
        self._queue: deque[Reply | ErrorReply] = deque()
        self._default: Reply | ErrorReply = Reply()
        self.app = self  # an instance with an async __call__: uvicorn detects ASGI3

    # ---- test-facing API -----------------------------------------------------------------

    def script(self, *replies: Reply | ErrorReply) -> None:
        """Queue replies (FIFO) for the next chat-completion requests."""
        with self._lock:
            self._queue.extend(replies)

    def set_default(self, reply: Reply | ErrorReply) -> None:
        """Reply used when the queue is empty."""
        with self._lock:
            self._default = reply

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._default = Reply()
            self.requests.clear()
            self.disconnects = 0

    @property
    def pending(self) -> int:
        """Number of scripted replies not consumed yet."""
        with self._lock:
            return len(self._queue)

    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded chat-completion requests."""
        return [r for r in list(self.requests) if r.path == _CHAT_PATH]

    def _next_reply(self) -> Reply | ErrorReply:
        with self._lock:
            return self._queue.popleft() if self._queue else self._default

    def _count_disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1

    # ---- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        # websockets: not served (returning closes the connection)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        chunks: list[bytes] = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        raw = b"".join(chunks)
        parsed: Any = None
        bad_json = False
        if raw:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
        if self.record:
            self.requests.append(RecordedRequest(method, path, headers, parsed, raw))

        if (
            path.startswith("/v1")
            and self.api_key is not None
            and method != "OPTIONS"
            and headers.get("authorization") != f"Bearer {self.api_key}"
        ):
            await _send_bytes(send, 401, b'{"error":"Unauthorized"}')
            return

        if path == _CHAT_PATH:
            if method != "POST":
                await _send_bytes(send, 405, b'{"detail":"Method Not Allowed"}')
                return
            if err := self._validate_json(headers, parsed, bad_json, need_messages=True):
                await _bad_request(send, err)
                return
            await self._chat(parsed, headers, receive, send)
        elif path == "/v1/models":
            if method != "GET":
                await _send_bytes(send, 405, b'{"detail":"Method Not Allowed"}')
                return
            await _send_bytes(send, 200, _dumps(self._model_list()))
        elif path == "/health":
            if method != "GET":
                await _send_bytes(send, 405, b'{"detail":"Method Not Allowed"}')
                return
            await _send_bytes(send, 200, b"", content_type=None)
        elif path == "/version":
            await _send_bytes(send, 200, _dumps({"version": VLLM_VERSION}))
        elif path == "/tokenize":
            if method != "POST":
                await _send_bytes(send, 405, b'{"detail":"Method Not Allowed"}')
                return
            if err := self._validate_json(headers, parsed, bad_json, need_messages=False):
                await _bad_request(send, err)
                return
            await self._tokenize(parsed, send)
        else:
            await _send_bytes(send, 404, b'{"detail":"Not Found"}')

    @staticmethod
    def _validate_json(
        headers: dict[str, str], parsed: Any, bad_json: bool, need_messages: bool
    ) -> str | None:
        media = headers.get("content-type", "").lower().split(";", 1)[0].strip()
        if media != "application/json":
            return "[\"Unsupported Media Type: Only 'application/json' is allowed\"]"
        if bad_json:
            return "[{'type': 'json_invalid', 'loc': ('body',), 'msg': 'JSON decode error'}]"
        if not isinstance(parsed, dict):
            return "[{'type': 'model_attributes_type', 'loc': ('body',), 'msg': 'Input should be a valid dictionary or object to extract fields from'}]"
        if need_messages:
            if "messages" not in parsed:
                return "[{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}]"
            if not isinstance(parsed["messages"], list):
                return "[{'type': 'list_type', 'loc': ('body', 'messages'), 'msg': 'Input should be a valid list'}]"
            if parsed.get("stream_options") and not parsed.get("stream"):
                return (
                    "1 validation error for ChatCompletionRequest\n  Value error, Stream options "
                    "can only be defined when `stream=True`."
                )
        elif parsed.get("messages") is None and not isinstance(parsed.get("prompt"), str):
            return "[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]"
        return None

    # ---- side endpoints ----------------------------------------------------------------------

    def _model_list(self) -> dict[str, Any]:
        now = int(time.time())
        permission = {
            "id": f"modelperm-{uuid.uuid4().hex}",
            "object": "model_permission",
            "created": now,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": self.model,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": self.root,
            "parent": None,
            "max_model_len": self.max_model_len,
            "permission": [permission],
        }
        return {"object": "list", "data": [card]}

    def _model_not_found(self, model: Any) -> bytes:
        return _error_body(f"The model `{model}` does not exist.", "NotFoundError", 404, "model")

    async def _tokenize(self, body: dict[str, Any], send: Any) -> None:
        model = body.get("model")
        if model is not None and model != self.model:
            await _send_bytes(send, 404, self._model_not_found(model))
            return
        src = _prompt_source(body)
        ids = prompt_token_ids(src)
        strs = None
        if body.get("return_token_strs"):
            strs = [src[4 * i : 4 * i + 4].decode("utf-8", "replace") for i in range(len(ids))]
        out = {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids}
        out["token_strs"] = strs
        await _send_bytes(send, 200, _dumps(out))

    # ---- chat completions -------------------------------------------------------------------

    async def _chat(
        self, req: dict[str, Any], headers: dict[str, str], receive: Any, send: Any
    ) -> None:
        entry = self._next_reply()
        stream = bool(req.get("stream"))
        stall = entry.stall_s
        if stall > 0 and not await self._stall(stall, receive):
            self._count_disconnect()
            return
        if isinstance(entry, ErrorReply):
            await _send_error_reply(send, entry)
            return
        reply = entry

        model = req.get("model")
        if model is not None and model != self.model:
            await _send_bytes(send, 404, self._model_not_found(model))
            return

        L = self.max_model_len
        src = _prompt_source(req)
        n_prompt = reply.prompt_tokens if reply.prompt_tokens is not None else _prompt_count(src)
        if req.get("max_completion_tokens") is not None:
            out_param, max_out = "max_completion_tokens", req["max_completion_tokens"]
        else:
            out_param, max_out = "max_tokens", req.get("max_tokens")
        if isinstance(max_out, int) and max_out > L:
            msg = (
                f"{out_param}={max_out} cannot be greater than max_model_len={L}. "
                f"Please request fewer output tokens. (parameter={out_param}, value={max_out})"
            )
            await _send_bytes(send, 400, _error_body(msg, "BadRequestError", 400, out_param))
            return
        if n_prompt > L:
            msg = (
                f"This model's maximum context length is {L} tokens. However, your prompt "
                f"contains at least {L + 1} input tokens, which exceeds this limit even without "
                "any output tokens. Please reduce the length of the input prompt. "
                f"(parameter=input_tokens, value={L + 1})"
            )
            await _send_bytes(send, 400, _error_body(msg, "BadRequestError", 400, "input_tokens"))
            return
        budget = L - n_prompt
        if isinstance(max_out, int):
            budget = min(budget, max_out)
        if budget < 1:
            msg = f"max_tokens must be at least 1, got {budget}. (parameter=max_tokens, value={budget})"
            await _send_bytes(send, 400, _error_body(msg, "BadRequestError", 400, "max_tokens"))
            return

        rid = headers.get("x-request-id") or req.get("request_id") or uuid.uuid4().hex
        ctx = _ChatCtx(
            self,
            req,
            reply,
            request_id=f"chatcmpl-{rid}",
            src=src,
            n_prompt=n_prompt,
            budget=budget,
            stream=stream,
        )
        if stream:
            await ctx.stream(receive, send)
        else:
            await _send_bytes(send, 200, _dumps(ctx.full_response()))

    async def _stall(self, seconds: float, receive: Any) -> bool:
        """Sleep, watching for a client disconnect. False if the client went away."""
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), seconds)
            return not gone.is_set()
        finally:
            watcher.cancel()


async def _watch_disconnect(receive: Any, gone: asyncio.Event) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            gone.set()
            return


class _ChatCtx:
    """Everything about one chat completion once it is accepted."""

    def __init__(
        self,
        fake: FakeVLLM,
        req: dict[str, Any],
        reply: Reply,
        *,
        request_id: str,
        src: bytes,
        n_prompt: int,
        budget: int,
        stream: bool,
    ):
        self.fake = fake
        self.req = req
        self.reply = reply
        self.id = request_id
        self.created = int(time.time())
        self.model = fake.model
        self.src = src
        self.n_prompt = n_prompt
        self.want_ids = bool(req.get("return_token_ids"))
        top = req.get("top_logprobs", 0)
        self.want_lp = bool(req.get("logprobs")) and top is not None
        self.top_n = 20 if top == -1 else int(top or 0)
        self.as_ids = bool(req.get("return_tokens_as_token_ids"))
        self.single_tool = req.get("parallel_tool_calls") is False
        self.reasoning_key = reply.reasoning_field

        finish = reply.finish_reason
        if reply.tool_calls and finish == "stop" and not isinstance(req.get("tool_choice"), dict):
            finish = "tool_calls"
        self.tool_ids = [tc.id or f"chatcmpl-tool-{uuid.uuid4().hex}" for tc in reply.tool_calls]
        with_eos = finish in ("stop", "tool_calls")
        evs = _build_events(reply, stream, self.tool_ids, with_eos, self.reasoning_key)
        self.events, truncated = _truncate(evs, budget)
        self.truncated = truncated
        self.finish = "length" if truncated else finish
        self.n_generated = sum(len(e.toks) for e in self.events)

    # ---- shared pieces -------------------------------------------------------------------

    def _prompt_ids(self) -> list[int]:
        return prompt_token_ids(self.src, self.n_prompt)

    def _completion_tokens(self) -> int:
        ct = self.reply.completion_tokens
        return self.n_generated if ct is None else ct

    def _lp_content(self, toks: list[str], ids: list[int], start: int) -> list[dict[str, Any]]:
        out = []
        for j, (tok, tid) in enumerate(zip(toks, ids, strict=True)):
            pos = start + j
            lp = _logprob(tid, pos)
            shown = f"token_id:{tid}" if self.as_ids else tok
            tops: list[dict[str, Any]] = []
            if self.top_n > 0:
                tops.append({"token": shown, "logprob": lp, "bytes": list(shown.encode())})
                for k in range(1, self.top_n):
                    aid = (tid + 7919 * k) % VOCAB_SIZE
                    alt = f"token_id:{aid}" if self.as_ids else f" alt{aid}"
                    alp = round(lp - 0.5 * k - 0.25, 6)
                    tops.append({"token": alt, "logprob": alp, "bytes": list(alt.encode())})
            out.append(
                {"token": shown, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": tops}
            )
        return out

    # ---- non-streaming -----------------------------------------------------------------------

    def full_response(self) -> dict[str, Any]:
        reply = self.reply
        evs = self.events
        if self.truncated:
            reasoning = "".join(t for e in evs if e.kind == "reasoning" for t in e.toks) or None
            content: str | None = "".join(t for e in evs if e.kind == "content" for t in e.toks)
            if reply.content is None and not content:
                content = None
            done = {e.tool_index for e in evs if e.kind == "tool_tail"}
        else:
            reasoning = reply.reasoning
            content = reply.content
            done = set(range(len(reply.tool_calls)))
        tool_calls = [
            {
                "id": self.tool_ids[k],
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments},
            }
            for k, tc in enumerate(reply.tool_calls)
            if k in done
        ]
        if self.single_tool:
            tool_calls = tool_calls[:1]
        message = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": tool_calls,
            self.reasoning_key: reasoning,
        }
        gen_toks = [t for e in evs for t in e.toks]
        gen_ids = [i for e in evs for i in e.ids]
        logprobs = {"content": self._lp_content(gen_toks, gen_ids, 0)} if self.want_lp else None
        choice = {
            "index": 0,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": self.finish,
            "stop_reason": None,
            "token_ids": gen_ids if self.want_ids else None,
        }
        ct = self._completion_tokens()
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {
                "prompt_tokens": self.n_prompt,
                "total_tokens": self.n_prompt + ct,
                "completion_tokens": ct,
                "prompt_tokens_details": None,
            },
            "prompt_logprobs": None,
            "prompt_token_ids": self._prompt_ids() if self.want_ids else None,
            "kv_transfer_params": None,
        }

    # ---- streaming ---------------------------------------------------------------------------

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
        c: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            c["usage"] = usage
        return b"data: " + orjson.dumps(c) + b"\n\n"

    def _sse_events(self) -> Iterator[bytes]:
        so = self.req.get("stream_options")
        # vLLM's StreamOptions: include_usage defaults to True once stream_options is given
        if isinstance(so, dict):
            include_usage = bool(so.get("include_usage", True))
            continuous = include_usage and bool(so.get("continuous_usage_stats"))
        else:
            include_usage = continuous = False
        P = self.n_prompt

        # 1. role chunk (prompt_token_ids is set explicitly, so it shows even as null)
        first: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        }
        if continuous:
            first["usage"] = {"prompt_tokens": P, "total_tokens": P, "completion_tokens": 0}
        first["prompt_token_ids"] = self._prompt_ids() if self.want_ids else None
        yield b"data: " + orjson.dumps(first) + b"\n\n"

        # 2. one chunk per event; the last one carries the finish reason
        evs = list(self.events)
        if not evs:
            evs.append(_Ev("eos", {"content": ""}, []))
        done_tokens = 0
        last = len(evs) - 1
        for n, ev in enumerate(evs):
            is_last = n == last
            start = done_tokens
            done_tokens += len(ev.toks)
            delta = ev.delta
            if delta is None:
                if not is_last and not self.want_ids:
                    continue  # vLLM skips a step whose parser produced nothing
                delta = {}
            if self.single_tool and ev.tool_index > 0 and "tool_calls" in delta:
                delta = {**delta, "tool_calls": []}
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": (
                    {"content": self._lp_content(ev.toks, ev.ids, start)} if self.want_lp else None
                ),
                "finish_reason": self.finish if is_last else None,
            }
            if is_last:
                choice["stop_reason"] = None
            choice["token_ids"] = ev.ids if self.want_ids else None
            usage = None
            if continuous:
                usage = {
                    "prompt_tokens": P,
                    "total_tokens": P + done_tokens,
                    "completion_tokens": done_tokens,
                }
            yield self._chunk([choice], usage)

        # 3. usage-only chunk (exclude_unset + exclude_none)
        if include_usage:
            ct = self._completion_tokens()
            usage = {"prompt_tokens": P, "total_tokens": P + ct, "completion_tokens": ct}
            yield self._chunk([], usage)

    def _mid_stream_error(self) -> bytes:
        err = self.reply.fail_error or ErrorReply(
            500, "Internal server error", type="InternalServerError"
        )
        # vLLM: json.dumps(ErrorResponse.model_dump()), i.e. Python's default separators
        return b"data: " + json.dumps(err.body()).encode() + b"\n\n"

    async def stream(self, receive: Any, send: Any) -> None:
        reply = self.reply
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [_SSE_CT],
                }
            )
            sent = 0
            delay = reply.stream_delay_s
            fail_after, drop_after = reply.fail_after_chunks, reply.drop_after_chunks
            for data in itertools.chain(self._sse_events(), (_DONE,)):
                if fail_after is not None and sent >= fail_after:
                    body = self._mid_stream_error() + _DONE
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    break
                if drop_after is not None and sent >= drop_after:
                    raise _AbortConnection("fake vLLM: dropping the connection on purpose")
                if sent > 0 and delay > 0 and data is not _DONE:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), delay)
                if gone.is_set():
                    self.fake._count_disconnect()
                    return
                await send({"type": "http.response.body", "body": data, "more_body": True})
                if data is not _DONE:
                    sent += 1
                    self.fake.chunks_sent += 1
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any
) -> Iterator[str]:
    """Run any ASGI app under uvicorn in a daemon thread with its own event loop.

    Yields the base URL (``http://127.0.0.1:PORT``; port 0 picks a free port, read back from the
    bound socket). Stops the server on exit. Extra keyword arguments go to ``uvicorn.Config``.
    """
    import uvicorn

    _install_abort_log_filter()
    opts: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "auto",
        "timeout_graceful_shutdown": 2,
    }
    opts.update(config)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **opts))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn failed to start on {host}:{port}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start on {host}:{port} within 15 s")
        time.sleep(0.005)
    bound = server.servers[0].sockets[0].getsockname()[1]
    url_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    try:
        yield f"http://{url_host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description="Fake vLLM OpenAI-compatible server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--api-key", default=None)
    p.add_argument("--stream-delay-s", type=float, default=0.0)
    p.add_argument("--content-tokens", type=int, default=16)
    p.add_argument("--record", action="store_true", help="keep every request in memory")
    args = p.parse_args(argv)

    fake = FakeVLLM(args.model, args.max_model_len, args.api_key, record=args.record)
    # "tok " is one fake token, so streaming emits one chunk per word
    fake.set_default(
        Reply(content="tok " * args.content_tokens, stream_delay_s=args.stream_delay_s)
    )
    _install_abort_log_filter()
    uvicorn.run(
        fake.app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()

"""vLLM chat-completion chunks -> Responses stream events, as they arrive (pure state machine).

Event order follows `spec/responses_streams.md`: `response.created`, `response.in_progress`, then
each output item in turn (`output_item.added` -> part added -> deltas -> `.done` events ->
`output_item.done`), then exactly one terminal event. `sequence_number` counts from 0 without gaps;
each item keeps one `output_index` and one id. The terminal response holds every item, built with
the same functions as the non-streaming path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.config import ModelServerConfig
from gateway.translate.reasoning import Segment, ThinkStream, reasoning_field
from gateway.translate.response import (
    build_response,
    convert_logprob,
    message_item,
    new_id,
    reasoning_item,
    usage,
)
from gateway.translate.tokens import TokenInfo
from gateway.translate.tool_calls import HermesStream, TextToolCall

Event = dict[str, Any]
_INCOMPLETE_REASONS = ("length", "content_filter")


class UpstreamStreamError(Exception):
    """vLLM reported an error inside the stream (`data: {"error": ...}`)."""


def encode_sse(event: Event) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@dataclass
class _Item:
    kind: str  # "reasoning" | "message" | "function_call"
    id: str
    index: int
    blocks: list[list[str]] = field(default_factory=list)  # reasoning blocks / message text
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    backend_index: int | None = None
    block_open: bool = False


class ResponseStream:
    def __init__(
        self,
        cfg: ModelServerConfig,
        echo: dict[str, Any],
        *,
        response_id: str,
        created_at: int,
        want_logprobs: bool = False,
    ) -> None:
        self._cfg = cfg
        self._echo = echo
        self._id = response_id
        self._created_at = created_at
        self._want_logprobs = want_logprobs
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._current: _Item | None = None
        self._think = ThinkStream(cfg.think_open_in_prompt) if cfg.uses_reasoning_parser else None
        self._hermes = HermesStream() if cfg.tool_call_text_parser == "hermes" else None
        self._deferred_calls: list[TextToolCall] = []
        self._held_logprobs: list[dict[str, Any]] = []
        self._field_reasoning_open = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.prompt_token_ids: list[int] | None = None
        self.token_ids: list[int] = []
        self.logprob_entries: list[dict[str, Any]] = []
        self._has_token_ids = False
        self.done = False

    # --- events -----------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self, status: str) -> dict[str, Any]:
        response = build_response(
            response_id=self._id,
            created_at=self._created_at,
            model=self._cfg.model,
            echo=self._echo,
            output=[],
            finish_reason=None,
            usage_body=None,
        )
        response["status"] = status
        response["completed_at"] = None
        response["usage"] = None
        return response

    def start(self) -> list[Event]:
        return [
            self._event("response.created", response=self._snapshot("in_progress")),
            self._event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    # --- feeding ----------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """One parsed `data:` payload of vLLM's chat stream."""
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamStreamError(str(message or "backend error"))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("prompt_token_ids") is not None:
            self.prompt_token_ids = list(chunk["prompt_token_ids"])
        events: list[Event] = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            chunk_logprobs = (choice.get("logprobs") or {}).get("content") or []
            self.logprob_entries.extend(chunk_logprobs)
            if choice.get("token_ids") is not None:
                self._has_token_ids = True
                self.token_ids.extend(choice["token_ids"])
            reasoning = reasoning_field(delta)
            if reasoning:
                if self._think is not None:
                    self._think.backend_parses_reasoning()
                self._field_reasoning_open = True
                events += self._reasoning_delta(reasoning)
            content = delta.get("content")
            if content:
                text_logprobs = (
                    [convert_logprob(e) for e in chunk_logprobs] if self._want_logprobs else []
                )
                events += self._content(content, text_logprobs)
            for call in delta.get("tool_calls") or []:
                events += self._tool_call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _content(self, content: str, logprobs: list[dict[str, Any]]) -> list[Event]:
        events: list[Event] = []
        if self._field_reasoning_open:
            # reasoning from vLLM's own field is one block; content after it ends that block
            events += self._end_reasoning_block()
            self._field_reasoning_open = False
        segments: list[Segment] = self._think.feed(content) if self._think else [("text", content)]
        # Log-probs of text the splitter still holds wait for that text to come out.
        logprobs = self._held_logprobs + logprobs
        self._held_logprobs = []
        more, unused = self._segments(segments, logprobs)
        if unused and not any(kind == "reasoning" for kind, _ in segments):
            self._held_logprobs = unused
        return events + more

    def _segments(
        self, segments: list[Segment], logprobs: list[dict[str, Any]]
    ) -> tuple[list[Event], list[dict[str, Any]]]:
        """Events for the think splitter's output, and the logprobs no text piece took (they go
        with the first text piece)."""
        events: list[Event] = []
        for kind, piece in segments:
            if kind == "reasoning":
                events += self._reasoning_delta(piece)
            elif kind == "end_reasoning":
                events += self._end_reasoning_block()
            else:
                events += self._text(piece, logprobs)
                logprobs = []
        return events, logprobs

    def _text(self, text: str, logprobs: list[dict[str, Any]]) -> list[Event]:
        if self._hermes is None:
            return self._text_delta(text, logprobs)
        events: list[Event] = []
        for segment in self._hermes.feed(text):
            if segment[0] == "text":
                events += self._text_delta(segment[1], logprobs)
                logprobs = []
            else:
                self._deferred_calls.append(segment[1])
        return events

    # --- items ------------------------------------------------------------------------------

    def _open(self, kind: str, prefix: str, item: dict[str, Any]) -> tuple[_Item, list[Event]]:
        events = self._close_current()
        current = _Item(kind=kind, id=new_id(prefix), index=len(self._output))
        self._current = current
        item["id"] = current.id
        events.append(
            self._event("response.output_item.added", output_index=current.index, item=item)
        )
        return current, events

    def _ensure(self, kind: str) -> tuple[_Item, list[Event]]:
        if self._current is not None and self._current.kind == kind:
            return self._current, []
        if kind == "reasoning":
            shape: dict[str, Any] = {"type": "reasoning", "summary": [], "status": "in_progress"}
            if self._cfg.reasoning_output != "summary":
                shape["content"] = []
            return self._open(kind, "rs", shape)
        item, events = self._open(
            kind,
            "msg",
            {"type": "message", "role": "assistant", "status": "in_progress", "content": []},
        )
        events.append(
            self._event(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            )
        )
        item.blocks.append([])
        return item, events

    def _reasoning_delta(self, text: str) -> list[Event]:
        item, events = self._ensure("reasoning")
        k = len(item.blocks)
        ref = {"item_id": item.id, "output_index": item.index}
        if not item.block_open:
            item.blocks.append([])
            item.block_open = True
            k = len(item.blocks)
            if self._cfg.reasoning_output in ("summary", "both"):
                events.append(
                    self._event(
                        "response.reasoning_summary_part.added",
                        **ref,
                        summary_index=k - 1,
                        part={"type": "summary_text", "text": ""},
                    )
                )
            if self._cfg.reasoning_output in ("content", "both"):
                events.append(
                    self._event(
                        "response.content_part.added",
                        **ref,
                        content_index=k - 1,
                        part={"type": "reasoning_text", "text": ""},
                    )
                )
        item.blocks[-1].append(text)
        if self._cfg.reasoning_output in ("summary", "both"):
            events.append(
                self._event(
                    "response.reasoning_summary_text.delta", **ref, summary_index=k - 1, delta=text
                )
            )
        if self._cfg.reasoning_output in ("content", "both"):
            events.append(
                self._event("response.reasoning_text.delta", **ref, content_index=k - 1, delta=text)
            )
        return events

    def _end_reasoning_block(self, item: _Item | None = None) -> list[Event]:
        item = item or self._current
        if item is None or item.kind != "reasoning" or not item.block_open:
            return []
        item.block_open = False
        k = len(item.blocks) - 1
        text = "".join(item.blocks[-1])
        ref = {"item_id": item.id, "output_index": item.index}
        events = []
        if self._cfg.reasoning_output in ("summary", "both"):
            events.append(
                self._event(
                    "response.reasoning_summary_text.done", **ref, summary_index=k, text=text
                )
            )
            events.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    **ref,
                    summary_index=k,
                    part={"type": "summary_text", "text": text},
                )
            )
        if self._cfg.reasoning_output in ("content", "both"):
            events.append(
                self._event("response.reasoning_text.done", **ref, content_index=k, text=text)
            )
            events.append(
                self._event(
                    "response.content_part.done",
                    **ref,
                    content_index=k,
                    part={"type": "reasoning_text", "text": text},
                )
            )
        return events

    def _text_delta(self, text: str, logprobs: list[dict[str, Any]]) -> list[Event]:
        if not text:
            return []
        item, events = self._ensure("message")
        item.blocks[0].append(text)
        item.logprobs.extend(logprobs)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                delta=text,
                logprobs=logprobs,
            )
        )
        return events

    def _tool_call_delta(self, call: dict[str, Any]) -> list[Event]:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        events: list[Event] = []
        item = self._current
        if item is None or item.kind != "function_call" or item.backend_index != index:
            if self._field_reasoning_open:
                events += self._end_reasoning_block()
                self._field_reasoning_open = False
            item, opened = self._open_call(call.get("id") or new_id("call"), fn.get("name") or "")
            item.backend_index = index
            events += opened
        elif fn.get("name") and not item.name:
            item.name = fn["name"]
        if fn.get("arguments"):
            events.append(self._arguments_delta(item, fn["arguments"]))
        return events

    def _open_call(self, call_id: str, name: str) -> tuple[_Item, list[Event]]:
        item, events = self._open(
            "function_call",
            "fc",
            {
                "type": "function_call",
                "status": "in_progress",
                "call_id": call_id,
                "name": name,
                "arguments": "",
            },
        )
        item.call_id, item.name = call_id, name
        return item, events

    def _arguments_delta(self, item: _Item, piece: str) -> Event:
        item.arguments.append(piece)
        return self._event(
            "response.function_call_arguments.delta",
            item_id=item.id,
            output_index=item.index,
            delta=piece,
        )

    def _close_current(self, status: str = "completed") -> list[Event]:
        item = self._current
        if item is None:
            return []
        self._current = None
        ref = {"item_id": item.id, "output_index": item.index}
        events: list[Event] = []
        if item.kind == "reasoning":
            events += self._end_reasoning_block(item)
            blocks = ["".join(b) for b in item.blocks]
            done = reasoning_item(item.id, blocks, self._cfg, status)
        elif item.kind == "message":
            text = "".join(item.blocks[0])
            events.append(
                self._event(
                    "response.output_text.done",
                    **ref,
                    content_index=0,
                    text=text,
                    logprobs=item.logprobs,
                )
            )
            events.append(
                self._event(
                    "response.content_part.done",
                    **ref,
                    content_index=0,
                    part={
                        "type": "output_text",
                        "text": text,
                        "annotations": [],
                        "logprobs": item.logprobs,
                    },
                )
            )
            done = message_item(item.id, text, item.logprobs, status)
        else:
            arguments = "".join(item.arguments)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    **ref,
                    name=item.name,
                    arguments=arguments,
                )
            )
            done = {
                "id": item.id,
                "type": "function_call",
                "status": status,
                "call_id": item.call_id,
                "name": item.name,
                "arguments": arguments,
            }
        self._output.append(done)
        events.append(self._event("response.output_item.done", output_index=item.index, item=done))
        return events

    # --- the end ----------------------------------------------------------------------------

    def close_items(self) -> list[Event]:
        """Flush the splitters and close every item; call once the upstream stream ended."""
        events: list[Event] = []
        if self._think is not None:
            held, self._held_logprobs = self._held_logprobs, []
            events += self._segments(self._think.finish(), held)[0]
        if self._hermes is not None:
            for segment in self._hermes.finish():
                if segment[0] == "text":
                    events += self._text_delta(segment[1], [])
        calls, self._deferred_calls = self._deferred_calls, []
        cut = self.finish_reason in _INCOMPLETE_REASONS
        if not calls and self._current is None and not self._output:
            # nothing at all came: one empty message, as in the non-streaming path
            _, opened = self._ensure("message")
            events += opened
        events += self._close_current("incomplete" if cut and not calls else "completed")
        for n, call in enumerate(calls):
            item, opened = self._open_call(new_id("call"), call.name)
            events += opened
            events.append(self._arguments_delta(item, call.arguments))
            last = n == len(calls) - 1
            events += self._close_current("incomplete" if cut and last else "completed")
        return events

    def token_completion(self) -> dict[str, Any]:
        """The token data seen so far, shaped like a chat completion for `extract_token_info`."""
        return {
            "prompt_token_ids": self.prompt_token_ids,
            "choices": [
                {
                    "message": {},
                    "logprobs": {"content": self.logprob_entries},
                    "token_ids": self.token_ids if self._has_token_ids else None,
                }
            ],
        }

    def terminal(self, token_info: TokenInfo | None = None) -> list[Event]:
        """The one terminal event: `response.completed` or `response.incomplete`."""
        self.done = True
        output = self._output
        if token_info is not None and output:
            output[-1] = {**output[-1], **token_info.as_fields()}
        # build_response marks the last item incomplete on a cut, as close_items already did
        response = build_response(
            response_id=self._id,
            created_at=self._created_at,
            model=self._cfg.model,
            echo=self._echo,
            output=output,
            finish_reason=self.finish_reason,
            usage_body=self.usage,
        )
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return [self._event(kind, response=response)]

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        """Close what is open and end with `response.failed`."""
        events = self._close_current("incomplete")
        self.done = True
        response = self._snapshot("failed")
        response["output"] = self._output
        response["error"] = {"code": code, "message": message}
        response["usage"] = usage(self.usage)
        events.append(self._event("response.failed", response=response))
        return events

    def context_overflow(self) -> list[Event]:
        """The empty `incomplete` outcome of a context-length 400, as a well-formed stream."""
        self.finish_reason = "length"
        return [*self.close_items(), *self.terminal()]

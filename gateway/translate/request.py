"""Responses create params -> a vLLM chat-completions body (pure: validation + translation).

Every field of the request is either translated, echoed, or rejected with a 400 that names it;
nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config import ModelServerConfig
from gateway.errors import invalid, unsupported
from gateway.translate.chat import prepare_chat_body
from gateway.translate.validate import (
    check_keys,
    expect_bool,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_str,
    expect_str_or_none,
)

LOGPROBS_INCLUDE = "message.output_text.logprobs"
TOKEN_FIELDS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")

# Top-level Responses parameters and what we do with them.
_ECHO_ONLY = {
    "store",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
    "max_tool_calls",
    "prompt_cache_retention",
    "stream_options",
}
_HANDLED = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "temperature",
    "top_p",
    "top_logprobs",
    "text",
    "reasoning",
    "include",
    "metadata",
    "stream",
    "truncation",
    "background",
    "chat_template_kwargs",
}
_REJECTED = {
    "conversation": "conversation (the Conversations API)",
    "prompt": "prompt (stored prompt templates)",
    "previous_response_id": "previous_response_id (no response store is configured)",
    "context_management": "context_management",
    "moderation": "moderation",
    "prompt_cache_options": "prompt_cache_options",
}
# vLLM sampling/engine parameters a client may add at the top level (the OpenAI SDK's
# `extra_body`); they are forwarded to vLLM unchanged, which validates them.
VLLM_PASSTHROUGH = {
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "length_penalty",
    "min_tokens",
    "ignore_eos",
    "logit_bias",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "include_stop_str_in_output",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "priority",
    "cache_salt",
    "required_prefix_token_ids",
    "mm_processor_kwargs",
    "truncate_prompt_tokens",
    "bad_words",
    "allowed_token_ids",
    "vllm_xargs",
    "kv_transfer_params",
}


@dataclass
class ChatPlan:
    """What the Responses request becomes: the chat body, and what the Response must echo."""

    chat: dict[str, Any]
    echo: dict[str, Any]
    want_logprobs: bool = False
    stream: bool = False
    # Set when the request must not reach the backend (NeMo Gym's sequential-reasoning guard).
    skip_backend: bool = False


def responses_to_chat(body: dict[str, Any], cfg: ModelServerConfig) -> ChatPlan:
    for key in body:
        if key in _REJECTED:
            if body[key] is not None:
                raise unsupported(key, _REJECTED[key])
        elif key not in _HANDLED and key not in _ECHO_ONLY and key not in VLLM_PASSTHROUGH:
            raise invalid(f"Unknown parameter: '{key}'.", key, "unknown_parameter")

    if body.get("background"):
        raise unsupported("background", "background mode")
    stream = expect_bool(body.get("stream", False), "stream") or False
    truncation = body.get("truncation")
    if truncation not in (None, "disabled", "auto"):
        raise invalid("truncation must be 'auto' or 'disabled'.", "truncation")
    if truncation == "auto":
        raise unsupported("truncation", "truncation 'auto'")

    instructions = expect_str_or_none(body.get("instructions"), "instructions")
    if "input" not in body:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    metadata = _metadata(body.get("metadata"))
    include = _include(body.get("include"))
    want_logprobs = LOGPROBS_INCLUDE in include

    chat: dict[str, Any] = {"messages": input_to_messages(body["input"], instructions, cfg)}

    tools = _tools(body.get("tools"))
    tool_choice = body.get("tool_choice")
    chat_tools, chat_tool_choice = _tool_choice(tool_choice, tools)
    if chat_tools:
        chat["tools"] = chat_tools
        if chat_tool_choice is not None:
            chat["tool_choice"] = chat_tool_choice
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = expect_bool(
                body["parallel_tool_calls"], "parallel_tool_calls"
            )
    elif chat_tool_choice == "required":
        raise invalid("tool_choice 'required' needs at least one tool.", "tool_choice")

    max_output_tokens = body.get("max_output_tokens")
    if max_output_tokens is not None:
        chat["max_tokens"] = expect_int(max_output_tokens, "max_output_tokens", minimum=1)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = expect_number(body[key], key)

    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None:
        top_logprobs = expect_int(top_logprobs, "top_logprobs", minimum=0, maximum=20)
    if want_logprobs:
        chat["logprobs"] = True
        chat["top_logprobs"] = top_logprobs or 0

    text = body.get("text")
    if text is not None:
        response_format = _text_format(text)
        if response_format is not None:
            chat["response_format"] = response_format

    reasoning = body.get("reasoning")
    template_kwargs: dict[str, Any] = {}
    if reasoning is not None:
        effort = _reasoning(reasoning)
        if effort == "none":
            template_kwargs["enable_thinking"] = False
        elif effort is not None:
            chat["reasoning_effort"] = effort

    if body.get("user") is not None:
        chat["user"] = expect_str(body["user"], "user")
    for key in VLLM_PASSTHROUGH:
        if key in body:
            chat[key] = body[key]
    if "chat_template_kwargs" in body and body["chat_template_kwargs"] is not None:
        template_kwargs.update(expect_dict(body["chat_template_kwargs"], "chat_template_kwargs"))
    if template_kwargs:
        chat["chat_template_kwargs"] = template_kwargs

    skip = not cfg.sequential_reasoning_allowed and _ends_with_empty_assistant(chat["messages"])
    chat = prepare_chat_body(chat, cfg, metadata)

    echo = {
        "instructions": instructions,
        "tools": [_echo_tool(t) for t in tools],
        "tool_choice": tool_choice if tool_choice is not None else "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls")
        if body.get("parallel_tool_calls") is not None
        else True,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": max_output_tokens,
        "max_tool_calls": body.get("max_tool_calls"),
        "metadata": metadata,
        "text": text if text is not None else {"format": {"type": "text"}},
        "reasoning": reasoning if reasoning is not None else {"effort": None, "summary": None},
        "truncation": truncation or "disabled",
        "top_logprobs": top_logprobs,
        "store": body.get("store"),
        "user": body.get("user"),
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "service_tier": "default",
        "background": False,
        "previous_response_id": None,
    }
    return ChatPlan(
        chat=chat, echo=echo, want_logprobs=want_logprobs, stream=stream, skip_backend=skip
    )


# ---------------------------------------------------------------------------------------------
# input items


@dataclass
class _AssistantTurn:
    """Consecutive assistant-side items (reasoning, assistant messages, function calls)."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, Any] | None = None

    def to_message(self, cfg: ModelServerConfig) -> dict[str, Any]:
        text = "".join(self.text)
        message: dict[str, Any] = {"role": "assistant"}
        reasoning = "\n\n".join(self.reasoning)
        if self.reasoning and cfg.preserve_reasoning_in_assistant_content:
            text = "".join(f"<think>{r}</think>" for r in self.reasoning) + text
        message["content"] = text if (text or not self.tool_calls) else None
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.reasoning and not cfg.preserve_reasoning_in_assistant_content:
            # prepare_chat_body renames this to the field(s) the backend expects
            message["reasoning"] = reasoning
        if self.tokens:
            message.update(self.tokens)
        return message


_MESSAGE_KEYS = {"type", "role", "content", "id", "status", "phase", *TOKEN_FIELDS}
_FUNCTION_CALL_KEYS = {
    "type",
    "call_id",
    "name",
    "arguments",
    "id",
    "status",
    "namespace",
    "caller",
    *TOKEN_FIELDS,
}
_FUNCTION_OUTPUT_KEYS = {"type", "call_id", "output", "id", "status", "name", "namespace", "caller"}
_REASONING_KEYS = {"type", "id", "summary", "content", "encrypted_content", "status", *TOKEN_FIELDS}
_ROLES = ("user", "assistant", "system", "developer")
_ITEM_STATUS = (None, "in_progress", "completed", "incomplete")


def input_to_messages(
    value: Any, instructions: str | None, cfg: ModelServerConfig
) -> list[dict[str, Any]]:
    """Responses `input` (+ `instructions`) -> chat messages."""
    if isinstance(value, str):
        items: list[Any] = [{"role": "user", "content": value}]
    else:
        items = expect_list(value, "input")

    messages: list[dict[str, Any]] = []
    turn: _AssistantTurn | None = None
    system_parts: list[str] = [] if instructions is None else [instructions]
    leading = instructions is not None  # still inside the leading run of system/developer items

    def flush() -> None:
        nonlocal turn
        if turn is not None:
            messages.append(turn.to_message(cfg))
            turn = None

    for i, raw in enumerate(items):
        p = f"input[{i}]"
        item = expect_dict(raw, p)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            check_keys(item, _MESSAGE_KEYS, p)
            role = item.get("role")
            if role not in _ROLES:
                raise invalid(f"Invalid role {role!r}: expected one of {_ROLES}.", f"{p}.role")
            _item_status(item, p)
            if item.get("phase") is not None:
                raise unsupported(f"{p}.phase", "message phase")
            if role == "assistant":
                leading = False
                turn = turn or _AssistantTurn()
                turn.text.append(_assistant_text(item.get("content"), f"{p}.content"))
                _take_tokens(turn, item, p)
                continue
            if any(k in item for k in TOKEN_FIELDS):
                raise invalid("Token ids belong on assistant-side items.", f"{p}.{TOKEN_FIELDS[0]}")
            flush()
            if leading and role in ("system", "developer"):
                system_parts.append(_plain_text(item.get("content"), f"{p}.content"))
                continue
            leading = False
            chat_role = role
            if role == "developer" and cfg.replace_developer_role_with_system:
                chat_role = "system"
            messages.append(
                {"role": chat_role, "content": _user_content(item.get("content"), f"{p}.content")}
            )
        elif kind == "function_call":
            _check_tool_item(item, _FUNCTION_CALL_KEYS, p)
            leading = False
            turn = turn or _AssistantTurn()
            turn.tool_calls.append(
                {
                    "id": expect_str(item.get("call_id"), f"{p}.call_id"),
                    "type": "function",
                    "function": {
                        "name": expect_str(item.get("name"), f"{p}.name"),
                        "arguments": expect_str(item.get("arguments"), f"{p}.arguments"),
                    },
                }
            )
            _take_tokens(turn, item, p)
        elif kind == "reasoning":
            check_keys(item, _REASONING_KEYS, p)
            _item_status(item, p)
            if item.get("encrypted_content") is not None:
                raise unsupported(f"{p}.encrypted_content", "reasoning encrypted_content")
            leading = False
            turn = turn or _AssistantTurn()
            text = _reasoning_text(item, p)
            if text:
                turn.reasoning.append(text)
            _take_tokens(turn, item, p)
        elif kind == "function_call_output":
            _check_tool_item(item, _FUNCTION_OUTPUT_KEYS, p)
            leading = False
            flush()
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": expect_str(item.get("call_id"), f"{p}.call_id"),
                    "content": _tool_output(item.get("output"), f"{p}.output"),
                }
            )
        elif kind == "item_reference":
            raise unsupported(f"{p}.type", "item_reference (no response store is configured)")
        elif kind is None:
            raise invalid(
                "Input item needs a 'type' (or a 'role').",
                f"{p}.type",
                "missing_required_parameter",
            )
        else:
            raise invalid(f"Input item type {kind!r} is not supported.", f"{p}.type")
    flush()
    if system_parts:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
    return messages


def _check_tool_item(item: dict[str, Any], keys: set[str], p: str) -> None:
    check_keys(item, keys, p)
    _item_status(item, p)
    for key in ("namespace", "caller"):  # tool namespaces: not served
        if item.get(key) is not None:
            raise unsupported(f"{p}.{key}")


def _item_status(item: dict[str, Any], p: str) -> None:
    if item.get("status") not in _ITEM_STATUS:
        raise invalid(f"Invalid status {item.get('status')!r}.", f"{p}.status")


def _take_tokens(turn: _AssistantTurn, item: dict[str, Any], p: str) -> None:
    present = [k for k in TOKEN_FIELDS if item.get(k) is not None]
    if not present:
        return
    if len(present) != len(TOKEN_FIELDS):
        missing = next(k for k in TOKEN_FIELDS if k not in present)
        raise invalid(
            "Partial token information: all three token fields are needed.", f"{p}.{missing}"
        )
    prompt = _int_list(item["prompt_token_ids"], f"{p}.prompt_token_ids")
    gen = _int_list(item["generation_token_ids"], f"{p}.generation_token_ids")
    logp = expect_list(item["generation_log_probs"], f"{p}.generation_log_probs")
    for j, v in enumerate(logp):
        expect_number(v, f"{p}.generation_log_probs[{j}]")
    if len(gen) != len(logp):
        raise invalid(
            "generation_token_ids and generation_log_probs differ in length.",
            f"{p}.generation_log_probs",
        )
    turn.tokens = {
        "prompt_token_ids": prompt,
        "generation_token_ids": gen,
        "generation_log_probs": logp,
    }


def _int_list(value: Any, p: str) -> list[int]:
    values = expect_list(value, p)
    for j, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool):
            raise invalid("Expected an integer token id.", f"{p}[{j}]", "invalid_type")
    return values


def _reasoning_text(item: dict[str, Any], p: str) -> str:
    """The reasoning to replay: raw content if present, else the summary texts."""
    if item.get("content") is not None:
        texts = _part_texts(item["content"], "reasoning_text", f"{p}.content")
        if any(texts):
            return "".join(texts)
    if "summary" not in item:
        raise invalid(
            "Missing required parameter: 'summary'.", f"{p}.summary", "missing_required_parameter"
        )
    if item["summary"] is None:
        return ""
    return "\n\n".join(t for t in _part_texts(item["summary"], "summary_text", f"{p}.summary") if t)


def _part_texts(parts: Any, kind: str, p: str) -> list[str]:
    """The `text` of each `{type: kind, text}` part of a reasoning item."""
    texts = []
    for j, raw in enumerate(expect_list(parts, p)):
        pp = f"{p}[{j}]"
        part = expect_dict(raw, pp)
        check_keys(part, {"type", "text"}, pp)
        if part.get("type") != kind:
            raise invalid(f"Expected a '{kind}' part.", f"{pp}.type")
        texts.append(expect_str(part.get("text"), f"{pp}.text"))
    return texts


def _plain_text(content: Any, p: str) -> str:
    """Text of a system/developer message folded into the leading system message."""
    if isinstance(content, str):
        return content
    parts = _user_content(content, p)
    assert isinstance(parts, list)
    texts = []
    for j, part in enumerate(parts):
        if part["type"] != "text":
            raise invalid("System and developer messages hold text only.", f"{p}[{j}].type")
        texts.append(part["text"])
    return "".join(texts)


def _assistant_text(content: Any, p: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, raw in enumerate(expect_list(content, p)):
        pp = f"{p}[{j}]"
        part = expect_dict(raw, pp)
        kind = part.get("type")
        if kind in ("output_text", "input_text", "text"):
            check_keys(part, {"type", "text", "annotations", "logprobs"}, pp)
            texts.append(expect_str(part.get("text"), f"{pp}.text"))
        elif kind == "refusal":
            check_keys(part, {"type", "refusal"}, pp)
            texts.append(expect_str(part.get("refusal"), f"{pp}.refusal"))
        else:
            raise invalid(
                f"Content part type {kind!r} is not valid in an assistant message.", f"{pp}.type"
            )
    return "".join(texts)


def _user_content(content: Any, p: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for j, raw in enumerate(expect_list(content, p)):
        pp = f"{p}[{j}]"
        part = expect_dict(raw, pp)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            check_keys(part, {"type", "text", "annotations", "logprobs"}, pp)
            parts.append({"type": "text", "text": expect_str(part.get("text"), f"{pp}.text")})
        elif kind == "input_image":
            check_keys(part, {"type", "image_url", "file_id", "detail"}, pp)
            if part.get("file_id") is not None:
                raise unsupported(f"{pp}.file_id", "input_image file_id (no Files API)")
            url = expect_str(part.get("image_url"), f"{pp}.image_url")
            detail = part.get("detail") or "auto"
            if detail not in ("low", "high", "auto"):
                raise invalid(f"Image detail {detail!r} is not supported.", f"{pp}.detail")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
        elif kind == "input_file":
            raise unsupported(f"{pp}.type", "input_file content")
        else:
            raise invalid(f"Content part type {kind!r} is not supported.", f"{pp}.type")
    return parts


def _tool_output(output: Any, p: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    parts = []
    for j, raw in enumerate(expect_list(output, p)):
        pp = f"{p}[{j}]"
        part = expect_dict(raw, pp)
        if part.get("type") != "input_text":
            raise unsupported(f"{pp}.type", f"function_call_output part {part.get('type')!r}")
        check_keys(part, {"type", "text"}, pp)
        parts.append({"type": "text", "text": expect_str(part.get("text"), f"{pp}.text")})
    return parts


def _ends_with_empty_assistant(messages: list[dict[str, Any]]) -> bool:
    last = messages[-1] if messages else None
    return bool(
        last
        and last["role"] == "assistant"
        and not last.get("content")
        and not last.get("tool_calls")
    )


# ---------------------------------------------------------------------------------------------
# parameters


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    meta = expect_dict(value, "metadata")
    if len(meta) > 16:
        raise invalid("metadata holds at most 16 keys.", "metadata")
    for key, v in meta.items():
        if len(key) > 64:
            raise invalid("metadata keys are at most 64 characters.", f"metadata.{key}")
        if not isinstance(v, str):
            raise invalid("metadata values must be strings.", f"metadata.{key}", "invalid_type")
        if len(v) > 512 and key not in ("chat_template_kwargs", "extra_body"):
            raise invalid("metadata values are at most 512 characters.", f"metadata.{key}")
    return meta


_INCLUDABLE = {
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    LOGPROBS_INCLUDE,
}


def _include(value: Any) -> list[str]:
    if value is None:
        return []
    values = expect_list(value, "include")
    for j, v in enumerate(values):
        if v not in _INCLUDABLE:
            raise invalid(f"Unknown include value {v!r}.", f"include[{j}]")
        if v != LOGPROBS_INCLUDE:
            raise unsupported(f"include[{j}]", f"include {v!r}")
    return values


_FUNCTION_TOOL_KEYS = {
    "type",
    "name",
    "parameters",
    "strict",
    "description",
    "defer_loading",
    "allowed_callers",
    "output_schema",
}


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    tools = expect_list(value, "tools")
    for j, raw in enumerate(tools):
        p = f"tools[{j}]"
        tool = expect_dict(raw, p)
        if tool.get("type") != "function":
            raise unsupported(f"{p}.type", f"tool type {tool.get('type')!r}")
        check_keys(tool, _FUNCTION_TOOL_KEYS, p)
        expect_str(tool.get("name"), f"{p}.name")
        if tool.get("parameters") is not None:
            expect_dict(tool["parameters"], f"{p}.parameters")
        for key in ("defer_loading", "allowed_callers", "output_schema"):
            if tool.get(key):
                raise unsupported(f"{p}.{key}")
    return tools


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"parameters": None, "strict": None, **tool}


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
    """(chat tools, chat tool_choice); `allowed_tools` narrows the tool list."""
    names = {t["name"] for t in tools}
    if choice is None or choice in ("auto", "none", "required"):
        return [_chat_tool(t) for t in tools], choice
    choice = expect_dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "function":
        check_keys(choice, {"type", "name"}, "tool_choice")
        name = expect_str(choice.get("name"), "tool_choice.name")
        if name not in names:
            raise invalid(f"tool_choice names {name!r}, which is not in tools.", "tool_choice.name")
        return [_chat_tool(t) for t in tools], {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        check_keys(choice, {"type", "mode", "tools"}, "tool_choice")
        mode = choice.get("mode")
        if mode not in ("auto", "required"):
            raise invalid("allowed_tools mode must be 'auto' or 'required'.", "tool_choice.mode")
        allowed: set[str] = set()
        for j, raw in enumerate(expect_list(choice.get("tools"), "tool_choice.tools")):
            pp = f"tool_choice.tools[{j}]"
            ref = expect_dict(raw, pp)
            if ref.get("type") != "function":
                raise unsupported(f"{pp}.type", f"allowed tool type {ref.get('type')!r}")
            name = expect_str(ref.get("name"), f"{pp}.name")
            if name not in names:
                raise invalid(f"Allowed tool {name!r} is not in tools.", f"{pp}.name")
            allowed.add(name)
        return [_chat_tool(t) for t in tools if t["name"] in allowed], mode
    if isinstance(kind, str):
        raise unsupported("tool_choice", f"tool_choice type {kind!r}")
    raise invalid("Invalid tool_choice.", "tool_choice")


def _text_format(text: Any) -> dict[str, Any] | None:
    text = expect_dict(text, "text")
    check_keys(text, {"format", "verbosity"}, "text")
    if text.get("verbosity") is not None:
        raise unsupported("text.verbosity")
    fmt = text.get("format")
    if fmt is None:
        return None
    fmt = expect_dict(fmt, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        check_keys(fmt, {"type"}, "text.format")
        return None
    if kind == "json_object":
        check_keys(fmt, {"type"}, "text.format")
        return {"type": "json_object"}
    if kind == "json_schema":
        check_keys(fmt, {"type", "name", "schema", "strict", "description"}, "text.format")
        schema: dict[str, Any] = {
            "name": expect_str(fmt.get("name"), "text.format.name"),
            "schema": expect_dict(fmt.get("schema"), "text.format.schema"),
        }
        if fmt.get("strict") is not None:
            schema["strict"] = expect_bool(fmt["strict"], "text.format.strict")
        if fmt.get("description") is not None:
            schema["description"] = expect_str(fmt["description"], "text.format.description")
        return {"type": "json_schema", "json_schema": schema}
    raise invalid(f"Unknown text.format type {kind!r}.", "text.format.type")


_EFFORTS = (None, "none", "minimal", "low", "medium", "high", "xhigh", "max")


def _reasoning(value: Any) -> str | None:
    reasoning = expect_dict(value, "reasoning")
    check_keys(reasoning, {"effort", "summary", "generate_summary", "context", "mode"}, "reasoning")
    effort = reasoning.get("effort")
    if effort not in _EFFORTS:
        raise invalid(f"Invalid reasoning effort {effort!r}.", "reasoning.effort")
    if reasoning.get("summary") not in (None, "auto", "concise", "detailed"):
        raise invalid("Invalid reasoning summary.", "reasoning.summary")
    for key in ("context", "mode", "generate_summary"):
        if reasoning.get(key) is not None:
            raise unsupported(f"reasoning.{key}")
    return effort

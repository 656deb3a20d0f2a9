"""The fake vLLM's wire shapes, over real HTTP (uvicorn in a thread, httpx)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.fake_vllm import (
    EOS_TOKEN_ID,
    ErrorReply,
    FakeVLLM,
    Reply,
    ToolCall,
    serve_in_thread,
    split_tokens,
    token_id,
)

MSGS = [{"role": "user", "content": "Say hello to the nice people"}]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeVLLM, str]]:
    fake = FakeVLLM(model="tiny", max_model_len=2048)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture()
def fake(server: tuple[FakeVLLM, str]) -> FakeVLLM:
    server[0].reset()
    return server[0]


@pytest.fixture()
def client(server: tuple[FakeVLLM, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[1], timeout=10) as c:
        yield c


def chat(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSGS, **body})


def sse(client: httpx.Client, **body: object) -> list[str]:
    """The `data:` payloads of a streamed chat completion, in order."""
    payloads = []
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "tiny", "messages": MSGS, "stream": True, **body},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        raw = r.read().decode()
    for block in raw.split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            payloads.append(block[len("data: ") :])
    return payloads


def test_non_stream_body_matches_vllm(fake: FakeVLLM, client: httpx.Client) -> None:
    r = chat(client)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == [
        "id",
        "object",
        "created",
        "model",
        "choices",
        "service_tier",
        "system_fingerprint",
        "usage",
        "prompt_logprobs",
        "prompt_token_ids",
        "kv_transfer_params",
    ]
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 32
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert list(choice) == [
        "index",
        "message",
        "logprobs",
        "finish_reason",
        "stop_reason",
        "token_ids",
    ]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hello",
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": [],
        "reasoning": None,
    }
    assert list(choice["message"])[-1] == "reasoning"
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None and choice["token_ids"] is None
    usage = body["usage"]
    assert list(usage) == [
        "prompt_tokens",
        "total_tokens",
        "completion_tokens",
        "prompt_tokens_details",
    ]
    prompt_tokens = len(json.dumps(MSGS, separators=(",", ":"))) // 4
    # "Hello" + the EOS token
    assert usage == {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + 2,
        "completion_tokens": 2,
        "prompt_tokens_details": None,
    }
    ChatCompletion.model_validate(body)
    rec = fake.requests[-1]
    assert (rec.method, rec.path, rec.json["model"]) == ("POST", "/v1/chat/completions", "tiny")
    assert rec.headers["content-type"] == "application/json"


def test_reasoning_tool_calls_and_old_field(fake: FakeVLLM, client: httpx.Client) -> None:
    fake.script(
        Reply(
            content=None,
            reasoning="Need the weather.",
            tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', id="call_1")],
        ),
        Reply(reasoning="hmm", reasoning_field="reasoning_content"),
    )
    body = chat(client).json()
    msg = body["choices"][0]["message"]
    assert msg["content"] is None and msg["reasoning"] == "Need the weather."
    assert msg["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    ChatCompletion.model_validate(body)

    msg = chat(client).json()["choices"][0]["message"]
    assert "reasoning" not in msg and msg["reasoning_content"] == "hmm"


def test_stream_sequence_with_usage_and_done(fake: FakeVLLM, client: httpx.Client) -> None:
    fake.script(Reply(content="Hello there world", reasoning="think"))
    events = sse(client, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert len({c["created"] for c in chunks}) == 1
    for c in chunks:
        assert list(c)[:5] == ["id", "object", "created", "model", "choices"]
        assert c["object"] == "chat.completion.chunk" and c["model"] == "tiny"
        ChatCompletionChunk.model_validate(c)

    first = chunks[0]
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert list(first) == ["id", "object", "created", "model", "choices", "prompt_token_ids"]
    assert first["prompt_token_ids"] is None

    middle = chunks[1:-2]
    assert [c["choices"][0]["delta"] for c in middle] == [
        {"reasoning": "think"},
        {"content": "Hello "},
        {"content": "there "},
        {"content": "world"},
    ]
    for c in middle:
        assert list(c) == ["id", "object", "created", "model", "choices"]
        assert list(c["choices"][0]) == ["index", "delta", "logprobs", "finish_reason", "token_ids"]
        assert c["choices"][0]["finish_reason"] is None

    finish = chunks[-2]["choices"][0]
    assert finish == {
        "index": 0,
        "delta": {"content": ""},
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": None,
        "token_ids": None,
    }

    usage_chunk = chunks[-1]
    assert list(usage_chunk) == ["id", "object", "created", "model", "choices", "usage"]
    assert usage_chunk["choices"] == []
    assert list(usage_chunk["usage"]) == ["prompt_tokens", "total_tokens", "completion_tokens"]
    assert usage_chunk["usage"]["completion_tokens"] == 5  # think, 3 words, EOS


def test_stream_without_usage_and_explicit_chunks(fake: FakeVLLM, client: httpx.Client) -> None:
    fake.script(Reply(stream_chunks=["He", "llo"]))
    events = sse(client)
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]"
    assert all(c["choices"] for c in chunks)  # no usage chunk without stream_options
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "He"},
        {"content": "llo"},
        {"content": ""},
    ]


def test_stream_tool_call_deltas(fake: FakeVLLM, client: httpx.Client) -> None:
    fake.script(
        Reply(
            content=None,
            tool_calls=[ToolCall("f", '{"a": 1}'), ToolCall("g", "{}")],
            finish_reason="tool_calls",
        )
    )
    chunks = [json.loads(e) for e in sse(client)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    heads = [tc for tc in calls if "id" in tc]
    assert [list(h) for h in heads] == [["id", "type", "index", "function"]] * 2
    assert [(h["index"], h["function"]) for h in heads] == [(0, {"name": "f"}), (1, {"name": "g"})]
    assert all(h["id"].startswith("chatcmpl-tool-") and len(h["id"]) == 46 for h in heads)
    args = {0: "", 1: ""}
    for tc in calls:
        if "id" not in tc:
            assert list(tc) == ["index", "function"]
            args[tc["index"]] += tc["function"]["arguments"]
    assert args == {0: '{"a": 1}', 1: "{}"}
    assert deltas[-1] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    for c in chunks:
        ChatCompletionChunk.model_validate(c)


def test_mid_stream_error_payload(fake: FakeVLLM, client: httpx.Client) -> None:
    fake.script(Reply(content="a b c d", fail_after_chunks=2))
    events = sse(client)
    assert len(events) == 4
    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "a "}
    assert events[2] == (
        '{"error": {"message": "Internal server error", "type": "InternalServerError", '
        '"param": null, "code": 500}}'
    )
    assert events[3] == "[DONE]"

    fake.script(Reply(fail_after_chunks=0, fail_error=ErrorReply(400, "bad", param="x")))
    assert sse(client) == [
        '{"error": {"message": "bad", "type": "BadRequestError", "param": "x", "code": 400}}',
        "[DONE]",
    ]


def test_drop_after_chunks_breaks_the_body(fake: FakeVLLM, client: httpx.Client) -> None:
    fake.script(Reply(content="a b c d", drop_after_chunks=2))
    got = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream(
            "POST", "/v1/chat/completions", json={"model": "tiny", "messages": MSGS, "stream": True}
        ) as r,
    ):
        for part in r.iter_bytes():
            got += part
    assert got.count(b"data: ") == 2 and b"[DONE]" not in got


def test_client_disconnect_is_counted(
    fake: FakeVLLM, server: tuple[FakeVLLM, str], client: httpx.Client
) -> None:
    fake.script(Reply(content="x " * 50, stream_delay_s=0.05))
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "tiny", "messages": MSGS, "stream": True}
    ) as r:
        lines = r.iter_lines()
        next(lines)
    deadline = time.monotonic() + 5
    while fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == 1


def test_error_bodies(server: tuple[FakeVLLM, str], fake: FakeVLLM, client: httpx.Client) -> None:
    r = chat(client, model="other")
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "message": "The model `other` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }
    r = chat(client, max_tokens=5000)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "max_tokens=5000 cannot be greater than max_model_len=2048. Please request "
            "fewer output tokens. (parameter=max_tokens, value=5000)",
            "type": "BadRequestError",
            "param": "max_tokens",
            "code": 400,
        }
    }
    fake.script(ErrorReply(503, "busy", type="ServiceUnavailable", headers={"retry-after": "1"}))
    r = chat(client, stream=True)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {
        "error": {"message": "busy", "type": "ServiceUnavailable", "param": None, "code": 503}
    }
    fake.script(ErrorReply(502, "", raw_body=b"upstream gone"))
    r = chat(client)
    assert (r.status_code, r.content) == (502, b"upstream gone")


def test_context_length_overflow() -> None:
    fake = FakeVLLM(max_model_len=10)
    with serve_in_thread(fake.app) as url:
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "x" * 200}]},
        )
        assert r.status_code == 400
        assert r.content == (
            b'{"error":{"message":"This model\'s maximum context length is 10 tokens. However, '
            b"your prompt contains at least 11 input tokens, which exceeds this limit even "
            b"without any output tokens. Please reduce the length of the input prompt. "
            b'(parameter=input_tokens, value=11)","type":"BadRequestError",'
            b'"param":"input_tokens","code":400}}'
        )
        # Output is clamped to the room left (max_model_len - prompt): finish_reason "length"
        fake.script(Reply(content="one two three four five six seven"))
        body = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "tiny", "messages": [], "max_tokens": 3}
        ).json()
        assert body["choices"][0]["message"]["content"] == "one two three "
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 3


def test_unauthorized_raw_body() -> None:
    fake = FakeVLLM(api_key="sekret")
    with serve_in_thread(fake.app) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": MSGS})
        assert (r.status_code, r.content) == (401, b'{"error":"Unauthorized"}')
        r = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert (r.status_code, r.content) == (401, b'{"error":"Unauthorized"}')
        assert httpx.get(f"{url}/health").status_code == 200  # not under /v1
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": MSGS},
            headers={"Authorization": "Bearer sekret"},
        )
        assert r.status_code == 200


def test_token_ids_and_logprobs(fake: FakeVLLM, client: httpx.Client) -> None:
    req = {
        "logprobs": True,
        "top_logprobs": 2,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }
    body = chat(client, **req).json()
    choice = body["choices"][0]
    expected_ids = [token_id("Hello"), EOS_TOKEN_ID]
    assert choice["token_ids"] == expected_ids
    content = choice["logprobs"]["content"]
    assert [e["token"] for e in content] == [f"token_id:{i}" for i in expected_ids]
    for e in content:
        assert list(e) == ["token", "logprob", "bytes", "top_logprobs"]
        assert e["logprob"] < 0
        assert len(e["top_logprobs"]) == 2
        assert e["top_logprobs"][0]["token"] == e["token"]
        assert list(e["top_logprobs"][0]) == ["token", "logprob", "bytes"]
    assert content[0]["bytes"] == list(b"Hello")
    ChatCompletion.model_validate(body)

    prompt_ids = body["prompt_token_ids"]
    assert len(prompt_ids) == body["usage"]["prompt_tokens"]
    tok = client.post("/tokenize", json={"model": "tiny", "messages": MSGS}).json()
    assert tok == {
        "count": len(prompt_ids),
        "max_model_len": 2048,
        "tokens": prompt_ids,
        "token_strs": None,
    }

    # Streaming: prompt_token_ids on the first chunk, token_ids/logprobs on each chunk, and
    # together they equal the non-streamed ones.
    chunks = [json.loads(e) for e in sse(client, **req)[:-1]]
    assert chunks[0]["prompt_token_ids"] == prompt_ids
    assert all("prompt_token_ids" not in c for c in chunks[1:])
    streamed = [i for c in chunks[1:] for i in c["choices"][0]["token_ids"]]
    lp_tokens = [e["token"] for c in chunks[1:] for e in c["choices"][0]["logprobs"]["content"]]
    assert streamed == expected_ids
    assert lp_tokens == [f"token_id:{i}" for i in expected_ids]
    for c in chunks:
        ChatCompletionChunk.model_validate(c)

    # Without return_tokens_as_token_ids the logprob tokens are the text pieces.
    body = chat(client, logprobs=True).json()
    assert [e["token"] for e in body["choices"][0]["logprobs"]["content"]] == [
        "Hello",
        "<|im_end|>",
    ]
    assert body["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []


def test_models_health_tokenize(fake: FakeVLLM, client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert list(card) == [
        "id",
        "object",
        "created",
        "owned_by",
        "root",
        "parent",
        "max_model_len",
        "permission",
    ]
    assert (card["id"], card["owned_by"], card["parent"], card["max_model_len"]) == (
        "tiny",
        "vllm",
        None,
        2048,
    )
    assert card["permission"][0]["object"] == "model_permission"
    health = client.get("/health")
    assert (health.status_code, health.content) == (200, b"")
    tok = client.post("/tokenize", json={"prompt": "abcdefgh", "return_token_strs": True}).json()
    assert tok["count"] == 2 and tok["token_strs"] == ["abcd", "efgh"]
    assert split_tokens("a  b\n") == ["a  ", "b\n"]


def test_stall_times_out_and_counts_the_disconnect(fake: FakeVLLM, client: httpx.Client) -> None:
    fake.script(Reply(stall_s=5))
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSGS}, timeout=0.3)
    deadline = time.monotonic() + 3
    while fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == 1
    assert time.monotonic() - t0 < 3
    assert chat(client).json()["choices"][0]["message"]["content"] == "Hello"

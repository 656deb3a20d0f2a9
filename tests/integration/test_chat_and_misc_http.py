"""`/v1/chat/completions`, `/v1/models`, `/health` and session affinity over real HTTP."""

from __future__ import annotations

import httpx
from openai.types.chat import ChatCompletion

from tests.fakes.fake_vllm import FakeVLLM, Reply


def test_chat_completions_same_preprocessing(stack):
    s = stack(
        chat_template_kwargs={"enable_thinking": False},
        extra_body={"top_k": 4},
        sampling_overrides={"temperature": 0.0},
        replace_developer_role_with_system=True,
    )
    s.fake.script(Reply(content="done", reasoning="thought"))
    completion = s.client.chat.completions.create(
        model="other",
        messages=[{"role": "developer", "content": "d"}, {"role": "user", "content": "hi"}],
        temperature=1.0,
    )
    ChatCompletion.model_validate(completion.model_dump())
    assert completion.model == "tiny"
    # NeMo Gym's default: reasoning goes back inline as <think> in content
    assert completion.choices[0].message.content == "<think>thought</think>done"
    sent = s.last_chat_body()
    assert sent["model"] == "tiny" and sent["temperature"] == 0.0 and sent["top_k"] == 4
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["messages"][0] == {"role": "system", "content": "d"}


def test_chat_completions_reasoning_field_kept_when_configured(stack):
    s = stack(chat_reasoning_output="field")
    s.fake.script(Reply(content="done", reasoning="thought"))
    body = s.post(
        "/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": "q"}]}
    ).json()
    assert body["choices"][0]["message"]["content"] == "done"
    assert body["choices"][0]["message"]["reasoning"] == "thought"


def test_chat_completions_training_and_context_length(stack):
    s = stack(fakes=[FakeVLLM(model="tiny", max_model_len=64)], return_token_id_information=True)
    body = s.post(
        "/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": "q"}]}
    ).json()
    message = body["choices"][0]["message"]
    assert len(message["generation_token_ids"]) == len(message["generation_log_probs"]) > 0
    assert message["prompt_token_ids"]
    long = s.post(
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "w " * 500}]},
    )
    assert long.status_code == 200
    choice = long.json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] is None
    ChatCompletion.model_validate(long.json())


def test_chat_completions_bad_input(stack):
    s = stack()
    r = s.post("/v1/chat/completions", {"model": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_models_and_health(stack):
    s = stack(n_backends=2)
    models = s.http.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    health = s.http.get("/health").json()
    assert health["status"] == "ok"
    assert [b["healthy"] for b in health["backends"]] == [True, True]


def test_health_reports_dead_backend(stack):
    s = stack(base_url=["http://127.0.0.1:9/v1"])
    health = s.http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert s.http.get("/v1/models").status_code == 503


def test_session_cookie_keeps_a_client_on_one_backend(stack):
    s = stack(n_backends=4)
    with httpx.Client(base_url=s.url) as client:  # forwards cookies, like NeMo Gym's agents
        first = client.post("/v1/responses", json={"input": "turn 1"})
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and s.cfg.session_cookie in cookie
        for i in range(5):
            r = client.post("/v1/responses", json={"input": f"turn {i}"})
            assert "set-cookie" not in r.headers
            client.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            )
    counts = [len(f.chat_requests()) for f in s.fakes]
    assert sorted(counts) == [0, 0, 0, 11]


def test_session_header_and_forged_cookie(stack):
    s = stack(n_backends=4)
    for _ in range(4):
        r = s.post("/v1/responses", {"input": "x"}, headers={"X-Session-ID": "episode-42"})
        assert "set-cookie" not in r.headers
    assert sorted(len(f.chat_requests()) for f in s.fakes) == [0, 0, 0, 4]
    forged = s.post(
        "/v1/responses", {"input": "x"}, headers={"cookie": f"{s.cfg.session_cookie}=abc.def"}
    )
    assert s.cfg.session_cookie in forged.headers["set-cookie"]  # not trusted: a fresh session


def test_many_sessions_spread_over_backends(stack):
    s = stack(n_backends=2)
    for i in range(40):
        s.post("/v1/responses", {"input": "x"}, headers={"X-Session-ID": f"s{i}"})
    counts = [len(f.chat_requests()) for f in s.fakes]
    assert min(counts) >= 8, counts

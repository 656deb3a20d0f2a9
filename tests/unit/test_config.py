import textwrap

import pytest

from gateway.config import ConfigError, load_config


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_nemo_gym_nesting_with_env_yaml(tmp_path):
    cfg_path = write(
        tmp_path,
        "c.yaml",
        """
        policy_model:
          responses_api_models:
            vllm_model:
              entrypoint: app.py
              base_url: ${policy_base_url}
              api_key: ${policy_api_key}
              model: ${policy_model_name}
              return_token_id_information: true
              uses_reasoning_parser: true
              chat_template_kwargs: null
        """,
    )
    env = write(
        tmp_path,
        "env.yaml",
        """
        policy_base_url: [http://a:8000/v1, http://b:8000/v1/]
        policy_api_key: k
        policy_model_name: m
        """,
    )
    cfg = load_config(cfg_path, env)
    assert cfg.base_url == ["http://a:8000/v1", "http://b:8000/v1"]
    assert (cfg.api_key, cfg.model, cfg.return_token_id_information) == ("k", "m", True)


def test_flat_config_and_overrides(tmp_path):
    cfg_path = write(tmp_path, "c.yaml", "base_url: http://x/v1\nmodel: a\n")
    cfg = load_config(cfg_path, None, ["model=b", "+sampling_overrides.temperature=0.5"])
    assert cfg.model == "b"
    assert cfg.sampling_overrides == {"temperature": 0.5}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("base_url: http://x/v1\nmodel: a\nbogus_key: 1\n", "bogus_key"),
        ("base_url: http://x/v1\nmodel: a\nis_responses_native: true\n", "is_responses_native"),
        ("model: a\n", "no model server block"),
        ("base_url: 3\nmodel: a\n", "base_url"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, "c.yaml", text), None)


def test_missing_interpolation_is_a_clear_error(tmp_path):
    path = write(
        tmp_path,
        "c.yaml",
        "p:\n  responses_api_models:\n    vllm_model:\n      base_url: ${policy_base_url}\n      model: m\n",
    )
    with pytest.raises(ConfigError, match="policy_base_url"):
        load_config(path, None)

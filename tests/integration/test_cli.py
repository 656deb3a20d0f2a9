"""The `gateway` command line, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_make_tiny_model(tmp_path):
    out = tmp_path / "tiny"
    result = run("make-tiny-model", str(out), "--scripted")
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert config["head_dim"] == 32 and config["num_hidden_layers"] == 2
    tokenizer = json.loads((out / "tokenizer_config.json").read_text())
    assert "<think>" in tokenizer["chat_template"] and "<tool_call>" in tokenizer["chat_template"]
    assert tokenizer["eos_token"] == "<|im_end|>"
    assert (out / "model.safetensors").stat().st_size > 1_000_000


def test_serve_config_error_is_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_url: http://x/v1\nmodel: m\nnot_a_key: 1\n")
    result = run("serve", "--config", str(bad), "--env", str(tmp_path / "none.yaml"))
    assert result.returncode == 2
    assert "not_a_key" in result.stderr

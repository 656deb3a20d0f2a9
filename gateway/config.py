"""Configuration: NeMo Gym's `vllm_model` field names, loaded from YAML + env.yaml + dotted overrides.

A config file holds one model-server block, either flat (`base_url: ...` at the top) or in NeMo Gym's
nesting (`policy_model: responses_api_models: vllm_model: {...}`). `${policy_base_url}`-style values
resolve against the merged config, which includes `env.yaml` (NeMo Gym's merge order: config files,
then env.yaml, then command-line overrides).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MODEL_SERVER_TYPE = "responses_api_models"


class ConfigError(Exception):
    """A config the gateway cannot run with; the message says which key and why."""


class ModelServerConfig(BaseModel):
    """One model server: NeMo Gym's `VLLMModelConfig` keys plus the gateway's own."""

    model_config = ConfigDict(extra="forbid")

    # --- NeMo Gym `vllm_model` keys (same names, same meaning) ---
    base_url: list[str]
    api_key: str | None = None
    model: str
    return_token_id_information: bool = False
    request_prompt_and_generation_token_ids: bool = False
    uses_reasoning_parser: bool = True
    uses_interleaved_reasoning: bool = True
    preserve_reasoning_in_assistant_content: bool = False
    replace_developer_role_with_system: bool = False
    sequential_reasoning_allowed: bool = True
    continue_final_assistant_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    sampling_overrides: dict[str, Any] | None = None
    extra_body: dict[str, Any] | None = None
    default_headers: dict[str, str] = Field(default_factory=dict)
    propagate_context_overflow_errors: bool = False
    # NeMo Gym keys accepted so its configs load unchanged; the features behind them are not
    # served by this gateway, so a non-default value is a config error rather than ignored.
    is_responses_native: bool = False
    use_completions_api: bool = False
    render_chat_template: bool = False
    supply_prefix_token_ids: bool = False
    audio_root: str | None = None
    tokenizer: str | None = None
    endpoint_file: str | None = None
    endpoint_stale_grace_s: float = 300.0
    endpoint_connection_retries: int = 8
    endpoint_check_interval_s: float = 10.0
    forward_request_chat_template_kwargs: bool = False
    # NeMo Gym server keys (process level)
    entrypoint: str | None = None
    name: str | None = None
    host: str | None = None
    port: int | None = None
    num_workers: int | None = None
    domain: str | None = None
    description: str | None = None

    # --- The gateway's own keys ---
    # How reasoning is rendered in output items: `summary` (NeMo Gym's shape, the default),
    # `content` (raw `reasoning_text` parts, vLLM native's shape), or `both`.
    reasoning_output: Literal["summary", "content", "both"] = "summary"
    # Field that carries prior-turn reasoning on assistant messages sent to vLLM
    # (`reasoning` for vLLM >= 0.16, `reasoning_content` for older servers).
    reasoning_field: Literal["reasoning", "reasoning_content", "both"] = "reasoning"
    # Whether the chat template opens `<think>` in the prompt (then the output starts inside
    # reasoning): `auto` detects it from a lone `</think>` (streamed text is held until a tag
    # decides), `yes` / `no` state it and stream every token at once.
    think_open_in_prompt: Literal["auto", "yes", "no"] = "auto"
    # `/v1/chat/completions` output: `inline` puts reasoning back into `content` as
    # `<think>...</think>` (NeMo Gym's behaviour, when uses_reasoning_parser), `field` keeps
    # vLLM's `reasoning` field.
    chat_reasoning_output: Literal["inline", "field"] = "inline"
    # Parse `<tool_call>{json}</tool_call>` text when the backend runs without a tool parser.
    tool_call_text_parser: Literal["hermes"] | None = None
    # Ask vLLM for inline token ids (`return_token_ids`, vLLM >= 0.10) in training mode.
    backend_returns_token_ids: bool = True
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0
    max_retries: int = 3
    retry_backoff_s: float = 0.1
    max_connections_per_backend: int = 2048
    max_request_bytes: int = 64 * 1024 * 1024
    # --- routing over several backends ---
    # `session` (rendezvous hashing of the session key), `round_robin`, `least_inflight`.
    routing_policy: Literal["session", "round_robin", "least_inflight"] = "session"
    # Per-backend in-flight limit (per gateway worker); 0 = unlimited.
    max_inflight_per_backend: int = 0
    # When a session's owner is at its limit: `true` spills to the next choice (load first),
    # `false` answers 429 (cache stickiness first).
    spill_when_saturated: bool = True
    # `retry-after` seconds on the 429 sent when every backend is saturated.
    saturated_retry_after_s: int = 1
    health_check_interval_s: float = 5.0  # 0 disables active probes
    health_check_timeout_s: float = 2.0
    eject_after_failures: int = 3
    # An ejected backend stays out at least this long, even if `/health` answers.
    eject_cooldown_s: float = 10.0
    # Header carrying the session key to the backend (for a router in front of vLLM); null: none.
    forward_session_header: str | None = "X-Session-ID"
    # >1: pin vLLM's data-parallel rank per session with `X-data-parallel-rank`.
    data_parallel_size: int = 1
    # Add `x-gateway-backend: <url>` to answers (which replica served; for debugging and benches).
    expose_backend_header: bool = False
    # Bearer key for `/admin/*`; falls back to $GATEWAY_ADMIN_KEY; admin is off without one.
    admin_key: str | None = None
    session_header: str = "X-Session-ID"
    session_cookie: str = "gateway_session"
    # Signs the affinity cookie; falls back to $GATEWAY_SESSION_SECRET, then a random per-launch secret.
    session_secret: str | None = None

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            # may be empty: backends can come from the launcher or the admin endpoint
            return [str(v).rstrip("/") for v in value]
        return value

    @model_validator(mode="after")
    def _reject_unserved_features(self) -> ModelServerConfig:
        unserved = {
            "is_responses_native": self.is_responses_native,
            "use_completions_api": self.use_completions_api,
            "render_chat_template": self.render_chat_template,
            "supply_prefix_token_ids": self.supply_prefix_token_ids,
            "endpoint_file": self.endpoint_file is not None,
        }
        on = [k for k, v in unserved.items() if v]
        if on:
            raise ValueError(f"not supported by this gateway: {', '.join(on)} (leave unset)")
        return self


def _load_yaml(path: str | Path) -> DictConfig:
    loaded = OmegaConf.load(path)
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def merge_configs(
    paths: Sequence[str | Path],
    env_path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> DictConfig:
    """Merge config files, then env.yaml, then `a.b=c` overrides (NeMo Gym's order)."""
    parts: list[DictConfig] = [_load_yaml(p) for p in paths]
    if env_path is not None and Path(env_path).exists():
        parts.append(_load_yaml(env_path))
    if overrides:
        parts.append(OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    merged = OmegaConf.merge(*parts) if parts else OmegaConf.create({})
    assert isinstance(merged, DictConfig)
    return merged


def find_model_servers(merged: DictConfig) -> dict[str, str]:
    """Instance name -> dotted path of every `<name>: responses_api_models: <impl>:` block."""
    found: dict[str, str] = {}
    for name, node in merged.items():
        if isinstance(node, DictConfig) and MODEL_SERVER_TYPE in node:
            impls = node[MODEL_SERVER_TYPE]
            if isinstance(impls, DictConfig):
                for impl in impls:
                    found[str(name)] = ".".join((str(name), MODEL_SERVER_TYPE, str(impl)))
    return found


def model_server_config(merged: DictConfig, server_name: str | None = None) -> ModelServerConfig:
    """Pick one model-server block out of a merged config (flat or nested) and validate it."""
    if "base_url" in merged and server_name is None:
        block: Any = OmegaConf.to_container(merged, resolve=True)
        env_keys = {"policy_base_url", "policy_api_key", "policy_model_name", "config_paths"}
        block = {k: v for k, v in block.items() if k not in env_keys}
        label = "config"
    else:
        servers = find_model_servers(merged)
        if server_name is not None:
            if server_name not in servers:
                raise ConfigError(
                    f"no model server named {server_name!r}; found: {sorted(servers) or 'none'}"
                )
            path = servers[server_name]
        elif len(servers) == 1:
            path = next(iter(servers.values()))
        elif not servers:
            raise ConfigError(
                "no model server block found: expected `base_url` at the top level or "
                "`<name>: responses_api_models: vllm_model: {...}`"
            )
        else:
            raise ConfigError(f"several model servers ({sorted(servers)}); choose one by name")
        node = OmegaConf.select(merged, path)
        try:
            block = OmegaConf.to_container(node, resolve=True)
        except Exception as exc:  # OmegaConf raises several types for missing interpolations
            raise ConfigError(f"{path}: {exc}") from exc
        label = path
    try:
        return ModelServerConfig.model_validate(block)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{label}: {problems}") from exc


def load_config(
    path: str | Path,
    env_path: str | Path | None = "env.yaml",
    overrides: Sequence[str] = (),
    server_name: str | None = None,
) -> ModelServerConfig:
    """Load one model-server config the way `gateway serve --config FILE --env env.yaml` does."""
    try:
        merged = merge_configs([path], env_path, overrides)
        return model_server_config(merged, server_name)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path}: {exc}") from exc

"""Token ids and log-probs for RL training, taken from what vLLM returned (pure).

Sources, in order: a complete bundle on the message (`prompt_token_ids`, `generation_token_ids`,
`generation_log_probs`), vLLM's inline `prompt_token_ids` + choice `token_ids`, then log-prob tokens
written as `token_id:N`. The prompt ids may be missing; the caller then asks `/tokenize`.
Mismatched or partial data raises: a trainer must never get a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BUNDLE_FIELDS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")


class TokenDataError(Exception):
    """The backend's token data is missing, partial, or inconsistent."""


@dataclass
class TokenInfo:
    prompt_token_ids: list[int] | None
    generation_token_ids: list[int]
    generation_log_probs: list[float]

    def as_fields(self) -> dict[str, Any]:
        return {
            "prompt_token_ids": self.prompt_token_ids,
            "generation_token_ids": self.generation_token_ids,
            "generation_log_probs": self.generation_log_probs,
        }


def extract_token_info(completion: dict[str, Any]) -> TokenInfo:
    choice = completion["choices"][0]
    message = choice.get("message") or {}
    present = [f for f in BUNDLE_FIELDS if message.get(f) is not None]
    if present:
        if len(present) != len(BUNDLE_FIELDS):
            raise TokenDataError(f"partial token metadata on the message: only {present}")
        info = TokenInfo(
            list(message["prompt_token_ids"]),
            list(message["generation_token_ids"]),
            list(message["generation_log_probs"]),
        )
        _check_lengths(info)
        return info

    entries = (choice.get("logprobs") or {}).get("content")
    if entries is None:
        raise TokenDataError(
            "cannot extract token ids or log-probs: the backend returned no logprobs "
            "(is it a vLLM OpenAI server?)"
        )
    log_probs = [float(e["logprob"]) for e in entries]
    from_logprobs = [_token_id(e.get("token")) for e in entries]
    inline = choice.get("token_ids")
    if inline is not None:
        gen_ids = list(inline)
        known = [t for t in from_logprobs if t is not None]
        if len(known) == len(from_logprobs) and known != gen_ids:
            raise TokenDataError("token_ids disagree with the token ids in logprobs")
    elif all(t is not None for t in from_logprobs):
        gen_ids = [t for t in from_logprobs if t is not None]
    else:
        raise TokenDataError(
            "cannot extract generation token ids: logprob tokens are not 'token_id:N' and "
            "the backend returned no token_ids"
        )
    prompt = completion.get("prompt_token_ids")
    info = TokenInfo(list(prompt) if prompt is not None else None, gen_ids, log_probs)
    _check_lengths(info)
    return info


def _token_id(token: Any) -> int | None:
    if isinstance(token, str) and token.startswith("token_id:"):
        try:
            return int(token[9:])
        except ValueError:
            return None
    return None


def _check_lengths(info: TokenInfo) -> None:
    if len(info.generation_token_ids) != len(info.generation_log_probs):
        raise TokenDataError(
            f"{len(info.generation_token_ids)} generation token ids but "
            f"{len(info.generation_log_probs)} log-probs"
        )

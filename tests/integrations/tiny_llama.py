"""A tiny random Llama saved with a tokenizer, for engine tests on CPU (needs torch, transformers).

Head dim 64 (vLLM's CPU attention refuses 16 and 32). The LM head is scaled up so the top logit
leads the next by a wide margin: fp32 greedy decoding is then the same through any attention
implementation (plain decode or draft verification), not a coin toss between near-ties.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import suffixspec.default_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def make_tiny_llama(out: Path, seed: int = 0, head_scale: float = 8.0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    data = Path(suffixspec.default_model.__file__).with_name("data")
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        model.lm_head.weight.mul_(head_scale)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(data / name, out / name)
    return out


if __name__ == "__main__":
    print(make_tiny_llama(Path(sys.argv[1])))

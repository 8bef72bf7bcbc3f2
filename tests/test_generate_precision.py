"""The exactness guarantee, as stated in the README and checked by `tests/exactness.py`: exact in
float32; in bfloat16 identical except at near-ties of the plain step's logits."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
from exactness import NEAR_TIE_ULPS, check_greedy_exactness, ulp  # noqa: E402

VOCAB = 128
NEW = 40


def tiny_llama(dtype: torch.dtype, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=None,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # varied continuations instead of one repeated token
        model.lm_head.weight.mul_(6.0)
    return model.to(dtype).eval()


def prompts_of(seed: int, lengths=(6, 23, 14)) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def speculative(model, **kwargs):
    """A warm-cache speculative run of a batch (the cache is warmed on the same prompts first)."""

    def run(prompts, max_new_tokens):
        cache = suffixspec.SuffixCache()
        suffixspec.generate(model, prompts, max_new_tokens=max_new_tokens, cache=cache, pad_token_id=0)
        out = suffixspec.generate(
            model, prompts, max_new_tokens=max_new_tokens, cache=cache, pad_token_id=0, **kwargs
        )
        return out.generated

    return run


def test_ulp_units():
    assert ulp(torch.float32, 3.0) == 0.0
    assert ulp(torch.bfloat16, 1.0) == 2.0**-7
    assert ulp(torch.bfloat16, -5.0) == 2.0**-5
    assert ulp(torch.float16, 1.5) == 2.0**-10


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tree", [False, True])
def test_float32_is_exact(seed, tree):
    model = tiny_llama(torch.float32, seed)
    report = check_greedy_exactness(
        model,
        prompts_of(seed),
        speculative(model, spec=suffixspec.SpecConfig(use_tree_spec=tree)),
        NEW,
        pad_token_id=0,
    )
    assert report.departures == []
    assert report.checked_tokens == 3 * NEW


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tree", [False, True])
def test_bfloat16_departs_only_at_near_ties(seed, tree):
    model = tiny_llama(torch.bfloat16, seed)
    report = check_greedy_exactness(
        model,
        prompts_of(seed),
        speculative(model, spec=suffixspec.SpecConfig(use_tree_spec=tree)),
        NEW,
        pad_token_id=0,
    )
    report.assert_ok()
    assert report.checked_tokens == 3 * NEW


def test_a_real_departure_is_caught():
    """The criterion can fail: a run that emits the plain runner-up token at a clear step."""
    model = tiny_llama(torch.bfloat16, 0)
    prompts = prompts_of(0, lengths=(9,))

    def wrong(prompts, max_new_tokens):
        plain = speculative(model)(prompts, max_new_tokens)
        return [[(t + 1) % VOCAB for t in row] for row in plain]

    report = check_greedy_exactness(model, prompts, wrong, 8, max_departures=64, pad_token_id=0)
    assert len(report.departures) == 8  # every step departs, and each one is recorded
    assert any(not d.within_bound for d in report.departures)
    with pytest.raises(AssertionError, match=f"{NEAR_TIE_ULPS} ulps"):
        report.assert_ok()

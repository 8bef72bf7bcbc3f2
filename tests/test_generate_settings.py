"""Settings `model.generate` honours are honoured or refused, never silently dropped, in
`suffixspec.generate` and the `custom_generate` hook alike; inputs as `model.generate` takes them."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
import suffixspec.hf  # noqa: E402
from suffixspec.errors import InvalidParameterError  # noqa: E402
from suffixspec.generation import SuffixProposer  # noqa: E402
from suffixspec.generation.config import SpecConfig  # noqa: E402
from tiny_models import plain_greedy_tokens, random_prompts, tiny_model  # noqa: E402

NEW = 24
HOOK = suffixspec.hf.generate


def llama():
    return tiny_model("LlamaForCausalLM")


def prompts_of(lengths, seed=0):
    return random_prompts(lengths, seed)


def plain(model, prompt, new=NEW, **kw):
    return plain_greedy_tokens(model, prompt, new, **kw)


def padded(prompts, pad=0):
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


class SlowProposer(SuffixProposer):
    """Takes `delay` seconds per step, so that a deadline falls between steps."""

    def __init__(self, delay):
        super().__init__(suffixspec.SuffixCache(), SpecConfig())
        self.delay = delay

    def propose(self, *args):
        time.sleep(self.delay)
        return super().propose(*args)


def test_max_time_stops_at_a_step_boundary_with_a_prefix_of_plain_output():
    model = llama()
    prompts = prompts_of([6, 13])
    refs = [plain(model, p, new=200) for p in prompts]
    out = suffixspec.generate(
        model, prompts, max_new_tokens=200, max_time=0.1, proposer=SlowProposer(0.02), pad_token_id=0
    )
    for generated, ref, stats in zip(out.generated, refs, out.stats, strict=True):
        assert 1 <= len(generated) < 200
        assert generated == ref[: len(generated)]
        assert stats.finish_reason == "time"
    assert out.stats[0].steps <= 10  # 0.1 s of 0.02 s steps, and the step that crossed it


def test_max_time_in_the_hook():
    model = llama()
    ids = torch.tensor(prompts_of([9]))
    ref = model.generate(ids, max_new_tokens=NEW, do_sample=False)
    out = model.generate(ids, max_new_tokens=NEW, do_sample=False, max_time=0.0, custom_generate=HOOK)
    assert out.shape[1] == ids.shape[1] + 1  # the prefill's token, then the deadline
    assert torch.equal(out, ref[:, : out.shape[1]])
    full = model.generate(ids, max_new_tokens=NEW, do_sample=False, max_time=60.0, custom_generate=HOOK)
    assert torch.equal(full, ref)


@pytest.mark.parametrize(
    "setting",
    [
        dict(stop_strings=["w5"]),
        dict(output_scores=True, return_dict_in_generate=True),
        dict(output_logits=True, return_dict_in_generate=True),
        dict(encoder_repetition_penalty=1.3),
        dict(encoder_no_repeat_ngram_size=2),
    ],
    ids=lambda d: next(iter(d)),
)
def test_unimplemented_settings_are_refused_in_both_paths(setting):
    model = llama()
    (prompt,) = prompts_of([7])
    name = next(iter(setting))
    cache = suffixspec.SuffixCache()
    config = transformers.GenerationConfig(**setting)
    with pytest.raises(InvalidParameterError, match=name):
        suffixspec.generate(model, [prompt], max_new_tokens=4, generation_config=config, cache=cache)
    assert len(cache.cached_requests) == 0 and len(cache.active_requests) == 0
    # transformers drops `tokenizer` for a callable custom_generate, so it refuses stop strings
    # itself (a ValueError) before the hook runs; everything else reaches the hook's check.
    error, match = (ValueError, "stop strings") if name == "stop_strings" else (InvalidParameterError, name)
    with pytest.raises(error, match=match):
        model.generate(torch.tensor([prompt]), max_new_tokens=4, custom_generate=HOOK, **setting)


def test_padding_is_inferred_from_the_pad_id_as_model_generate_does():
    model = llama()
    prompts = prompts_of([5, 12, 9], seed=3)
    ids, _ = padded(prompts)
    ref = model.generate(ids, max_new_tokens=NEW, do_sample=False, pad_token_id=0)  # infers the mask
    out = suffixspec.generate(model, ids, max_new_tokens=NEW, pad_token_id=0)
    assert out.generated == [plain(model, p) for p in prompts]
    assert torch.equal(out.sequences, ref)


@pytest.mark.parametrize("kind", ["bool", "float", "numpy-bool", "list"])
def test_bool_and_float_masks_are_accepted(kind):
    model = llama()
    prompts = prompts_of([4, 10], seed=4)
    ids, mask = padded(prompts)
    as_kind = {
        "bool": mask.bool(),
        "float": mask.float(),
        "numpy-bool": mask.numpy().astype(bool),
        "list": mask.tolist(),
    }[kind]
    out = suffixspec.generate(model, ids, attention_mask=as_kind, max_new_tokens=NEW, pad_token_id=0)
    assert out.generated == [plain(model, p) for p in prompts]


def test_masks_holding_other_values_are_refused():
    ids, mask = padded(prompts_of([4, 10]))
    with pytest.raises(InvalidParameterError, match="0 and 1"):
        suffixspec.generate(llama(), ids, attention_mask=mask * 0.5, max_new_tokens=2, pad_token_id=0)


def test_gpt2_default_eos_outside_a_small_vocabulary_behaves_like_model_generate():
    """Issue 9 item 7: GPT-2's default EOS 50256 with a 512-token vocabulary."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    assert config.eos_token_id == 50256
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    prompt = np.random.default_rng(0).integers(3, 512, 10).tolist()
    ref = model.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False)
    out = suffixspec.generate(model, [prompt], max_new_tokens=NEW)
    assert torch.equal(out.sequences, ref)
    # Two prompts: the out-of-vocabulary pad id (the EOS fallback) only fills the output.
    prompts = [prompt, prompt[:4]]
    out = suffixspec.generate(model, prompts, max_new_tokens=NEW)
    assert out.generated == [plain(model, p) for p in prompts]

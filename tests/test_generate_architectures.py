"""Lossless on every architecture suffixspec serves, refused with the reason everywhere else.

The allow-list lives in `suffixspec.generation.support`; this file is what verifies it. CI runs
a bounded sample (a few served architectures, few examples each, and a sample of the class
enumeration); `pytest --full` runs every served architecture and every causal-LM class of the
installed transformers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
from suffixspec.errors import IncompatibleModelError  # noqa: E402
from suffixspec.generation import Proposer  # noqa: E402
from suffixspec.generation.compat import inspect_model  # noqa: E402
from suffixspec.generation.support import REFUSED, SERVED, refusal_reason  # noqa: E402
from tiny_models import VOCAB, causal_lm_classes, tiny_model  # noqa: E402

# Served attention variants beyond a class's defaults (each also verified below).
VARIANTS: dict[str, dict] = {
    "GPTNeoForCausalLM": dict(attention_types=[[["global"], 2]]),
    "FalconForCausalLM": dict(alibi=False, new_decoder_architecture=True, num_kv_heads=2),
    "Qwen2ForCausalLM": dict(use_sliding_window=True, max_window_layers=1),
    "Phi3ForCausalLM": dict(sliding_window=8),
}
# The bounded sample CI runs by default: one per family of attention handling (rotary + GQA,
# sliding windows, per-layer-type masks with soft-capping, learned absolute positions).
CI_SAMPLE = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Gemma2ForCausalLM",
    "GPT2LMHeadModel",
    "GPTNeoForCausalLM",
)


def served_model(name: str) -> torch.nn.Module:
    return tiny_model(name, **VARIANTS.get(name, {}))


def archs() -> list:
    return [
        pytest.param(name, marks=() if name in CI_SAMPLE else pytest.mark.slow) for name in sorted(SERVED)
    ]


class AdversarialProposer(Proposer):
    """Branching trees around the known plain continuation: wrong siblings before and after
    the right token, the right chain cut at a random depth, then wrong continuations."""

    def __init__(self, refs: dict[tuple[int, ...], list[int]], seed: int):
        self.refs = refs
        self.rng = np.random.default_rng(seed)
        self.truth: dict[object, list[int]] = {}

    def start(self, req_id, prompt):
        self.truth[req_id] = self.refs[tuple(int(t) for t in prompt)]

    def extend(self, req_id, tokens):
        pass

    def finish(self, req_id):
        del self.truth[req_id]

    def propose(self, req_ids, contexts, budgets, max_depths):
        trees = []
        for req, ctx, budget in zip(req_ids, contexts, budgets, strict=True):
            truth = self.truth[req][len(ctx) :]
            tokens: list[int] = []
            parents: list[int] = []
            parent = -1
            for depth in range(int(self.rng.integers(0, len(truth) + 1))):
                right = truth[depth]
                wrong = [int(t) for t in self.rng.integers(0, VOCAB, size=int(self.rng.integers(0, 3)))]
                wrong = [t for t in wrong if t != right]
                order = [*wrong, right] if self.rng.random() < 0.5 else [right, *wrong]
                for t in order:
                    tokens.append(t)
                    parents.append(parent)
                    if t == right:
                        here = len(tokens) - 1
                parent = here
            if tokens and self.rng.random() < 0.7:  # a wrong tail under the right chain
                tokens.append(int(self.rng.integers(0, VOCAB)))
                parents.append(parent)
            tokens, parents = tokens[:budget], parents[:budget]
            trees.append(suffixspec.TokenTree(np.asarray(tokens, np.int32), np.asarray(parents, np.int32)))
        return trees


def plain(model, prompt, new):
    return model.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, pad_token_id=0)[
        0, len(prompt) :
    ].tolist()


case = st.fixed_dictionaries(
    {
        "lengths": st.lists(st.integers(1, 24), min_size=1, max_size=4),
        "new": st.integers(1, 24),
        "drafts": st.sampled_from(["path", "tree", "adversarial"]),
        "warm": st.booleans(),
        "seed": st.integers(0, 2**16),
    }
)


def check_lossless(name: str, c: dict) -> None:
    model = served_model(name)
    gen = torch.Generator().manual_seed(c["seed"])
    prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in c["lengths"]]
    refs = [plain(model, p, c["new"]) for p in prompts]
    kw = dict(max_new_tokens=c["new"], pad_token_id=0)
    if c["drafts"] == "adversarial":
        proposer = AdversarialProposer(
            {tuple(p): p + r for p, r in zip(prompts, refs, strict=True)}, c["seed"]
        )
        out = suffixspec.generate(model, prompts, proposer=proposer, **kw)
    else:
        cache = suffixspec.SuffixCache()
        spec = suffixspec.SpecConfig(use_tree_spec=c["drafts"] == "tree")
        if c["warm"]:  # half the prompts seen before: rows accept different amounts
            suffixspec.generate(model, prompts[::2], cache=cache, spec=spec, **kw)
        out = suffixspec.generate(model, prompts, cache=cache, spec=spec, **kw)
    assert out.generated == refs


@pytest.mark.parametrize("name", archs())
def test_served_architectures_are_lossless(name):
    examples = 6 if name in CI_SAMPLE else 30

    @settings(max_examples=examples, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(case)
    def lossless(c):
        check_lossless(name, c)

    lossless()


@pytest.mark.parametrize("name", sorted(SERVED))
def test_served_tiny_models_have_wide_logit_gaps(name):
    """Guards the property test itself: a model that repeats one token would verify nothing."""
    model = served_model(name)
    gen = torch.Generator().manual_seed(0)
    outputs = [plain(model, torch.randint(3, VOCAB, (12,), generator=gen).tolist(), 24) for _ in range(3)]
    assert len({t for out in outputs for t in out}) >= 6


def test_gpt_neo_local_attention_is_refused_and_its_issue_case_stays_correct():
    """Issue 9 item 1: local layers window by KV slot index; served GPT-Neo is all-global."""
    local = transformers.GPTNeoForCausalLM(
        transformers.GPTNeoConfig(
            vocab_size=128, hidden_size=64, num_layers=2, num_heads=4,
            attention_types=[[["global", "local"], 1]], window_size=8, bos_token_id=1, eos_token_id=None,
        )
    ).eval()  # fmt: skip
    with pytest.raises(IncompatibleModelError, match="local"):
        suffixspec.generate(local, [[5, 6, 7]], max_new_tokens=4)
    model = served_model("GPTNeoForCausalLM")
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (5, 20)]
        out = suffixspec.generate(model, prompts, max_new_tokens=40, pad_token_id=0)
        assert out.generated == [plain(model, p, 40) for p in prompts]


def test_falcon_alibi_is_refused_with_the_reason():
    model = tiny_model("FalconForCausalLM", alibi=True)
    with pytest.raises(IncompatibleModelError, match="alibi"):
        suffixspec.generate(model, [[5, 6, 7]], max_new_tokens=4)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_audited_refusals_name_their_reason(name):
    model = tiny_model(name)
    with pytest.raises(IncompatibleModelError, match=REFUSED[name].split()[0]):
        inspect_model(model)


def test_subclasses_outside_transformers_are_refused():
    class Mine(transformers.LlamaForCausalLM):
        pass

    model = Mine(served_model("LlamaForCausalLM").config).eval()
    with pytest.raises(IncompatibleModelError, match="not one of transformers' own"):
        suffixspec.generate(model, [[5, 6, 7]], max_new_tokens=4)


# -- the enumeration: every causal-LM class of the installed transformers --------------------------

ENUMERATION_SAMPLE = ("BloomForCausalLM", "FalconForCausalLM", "MambaForCausalLM", "OPTForCausalLM")


def enumerated() -> list:
    return [
        pytest.param(name, marks=() if name in ENUMERATION_SAMPLE else pytest.mark.slow)
        for name in sorted(causal_lm_classes())
    ]


@pytest.mark.parametrize("name", enumerated())
def test_every_causal_lm_class_is_served_refused_or_unbuildable(name):
    try:
        model = tiny_model(name)
    except Exception as exc:  # not buildable from a tiny config: nothing to serve or refuse
        pytest.skip(f"{name} cannot be built from a tiny config: {type(exc).__name__}: {exc}")
    reason = refusal_reason(model)
    if name in SERVED and reason is None:
        check_lossless(name, dict(lengths=[5, 17, 9], new=16, drafts="tree", warm=True, seed=0))
    else:
        with pytest.raises(IncompatibleModelError):
            suffixspec.generate(model, [[5, 6, 7]], max_new_tokens=2)

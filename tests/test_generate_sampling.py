"""Speculative sampling is distributed exactly as plain sampling (chi-square at a fixed seed)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import suffixspec  # noqa: E402
from suffixspec.generation import Proposer  # noqa: E402

lp = transformers.generation.logits_process

VOCAB = 10
PROMPT = [3, 7, 1, 4]
SAMPLES = 3000
NEW = 3


@functools.cache
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=None,
        pad_token_id=0,
    )
    m = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # peakier distributions than the near-uniform random init
        m.lm_head.weight.mul_(20.0)
    return m


def warpers(temperature=None, top_k=None, top_p=None) -> list:
    out = []
    if temperature is not None and temperature != 1.0:
        out.append(lp.TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(lp.TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        out.append(lp.TopPLogitsWarper(top_p))
    return out


@functools.cache
def conditionals(settings: tuple) -> np.ndarray:
    """`p[t1, t2, j]`: target distribution of generated token j+1 after PROMPT + (t1, t2)[:j]."""
    seqs = torch.tensor([[*PROMPT, a, b] for a, b in itertools.product(range(VOCAB), repeat=2)])
    with torch.no_grad():
        logits = model()(seqs).logits[:, len(PROMPT) - 1 :, :].float()  # [V*V, 3, V]
    scores = logits.reshape(-1, VOCAB)
    for w in warpers(**dict(settings)):
        scores = w(None, scores)
    return torch.softmax(scores, -1).reshape(VOCAB, VOCAB, NEW, VOCAB).double().numpy()


def target_joint(settings: tuple) -> np.ndarray:
    p = conditionals(settings)
    first = p[0, 0, 0]  # does not depend on (t1, t2)
    second = p[:, 0, 1]  # [t1, t2]
    third = p[:, :, 2]  # [t1, t2, t3]
    return first[:, None, None] * second[:, :, None] * third


def chi_square_p_value(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's test, bins with expected count < 5 pooled; p-value from the chi-square tail."""
    counts, probs = counts.ravel(), probs.ravel()
    assert counts[probs == 0].sum() == 0, "sampled a token the target distribution excludes"
    expected = probs * counts.sum()
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    dof = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), torch.tensor(stat / 2.0)))


class RankedProposer(Proposer):
    """Two-level trees whose children are chosen by their target probability rank: `ranks`
    picks, for each child, the k-th most probable token (0 = most probable; -1 = least), so
    drafts can be made to hit, to miss (tokens the warpers remove), or a mix in any order."""

    def __init__(self, settings: tuple, ranks: list[int], grand_ranks: list[int]):
        self.p = conditionals(settings)
        self.ranks, self.grand_ranks = ranks, grand_ranks
        self.drafted = 0

    def start(self, req_id, prompt):
        pass

    def extend(self, req_id, tokens):
        pass

    def finish(self, req_id):
        pass

    def _by_rank(self, dist, ranks):
        order = np.argsort(-dist, kind="stable")
        return [int(order[r]) for r in ranks]

    def propose(self, req_ids, contexts, budgets, max_depths):
        trees = []
        for ctx, budget in zip(contexts, budgets, strict=True):
            gen = [int(t) for t in ctx[len(PROMPT) :]]
            if budget <= 0 or len(gen) != 1:
                trees.append(suffixspec.TokenTree(np.zeros(0, np.int32), np.zeros(0, np.int32)))
                continue
            t1 = gen[0]
            tokens, parents = [], []
            for child in self._by_rank(self.p[t1, 0, 1], self.ranks):
                tokens.append(child)
                parents.append(-1)
                node = len(tokens) - 1
                for grand in self._by_rank(self.p[t1, child, 2], self.grand_ranks):
                    tokens.append(grand)
                    parents.append(node)
            tokens, parents = tokens[:budget], parents[:budget]
            self.drafted += len(tokens)
            trees.append(suffixspec.TokenTree(np.asarray(tokens, np.int32), np.asarray(parents, np.int32)))
        return trees


def sample_joint(settings: tuple, seed: int, **kwargs) -> tuple[np.ndarray, suffixspec.GenerationOutput]:
    out = suffixspec.generate(
        model(), [PROMPT] * SAMPLES, max_new_tokens=NEW, do_sample=True, seed=seed, **dict(settings), **kwargs
    )
    counts = np.zeros((VOCAB,) * NEW, dtype=np.int64)
    for g in out.generated:
        counts[tuple(g)] += 1
    return counts, out


CASES = {
    # name: (sampling settings, child ranks, grandchild ranks)
    "plain-hit": ((), [0, 1], [0]),
    "temperature-topk-miss": ((("temperature", 0.7), ("top_k", 4)), [-1, -2, 5], [-1]),
    "temperature-topp-mixed": ((("temperature", 1.3), ("top_p", 0.8)), [3, 0, 1], [1, 0]),
    "all-warpers-hit": ((("temperature", 0.9), ("top_k", 5), ("top_p", 0.9)), [0, 1, 2], [0, 1]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_speculative_samples_follow_the_target_distribution(case):
    settings, ranks, grand_ranks = CASES[case]
    proposer = RankedProposer(settings, ranks, grand_ranks)
    counts, out = sample_joint(settings, seed=1234, proposer=proposer)
    assert proposer.drafted > 0
    accepted = sum(s.accepted_tokens for s in out.stats)
    if "hit" in case:
        assert accepted > SAMPLES // 3  # drafts really were accepted
    if case == "temperature-topk-miss":
        assert accepted == 0  # every drafted token lies outside the top-k: always rejected
    assert chi_square_p_value(counts, target_joint(settings)) > 1e-3


def test_suffix_cache_drafts_keep_the_distribution():
    settings = (("temperature", 0.8), ("top_k", 6))
    cache = suffixspec.SuffixCache()
    # Seed the cache with likely continuations so that drafts exist and often hit.
    p = conditionals(settings)
    rng = np.random.default_rng(0)

    def draw(dist):
        return int(rng.choice(VOCAB, p=dist / dist.sum()))

    for i in range(40):
        t1 = draw(p[0, 0, 0])
        t2 = draw(p[t1, 0, 1])
        t3 = draw(p[t1, t2, 2])
        cache.start_request(f"seed{i}", PROMPT)
        cache.add_active_response(f"seed{i}", [t1, t2, t3])
        cache.stop_request(f"seed{i}")
    spec = suffixspec.SpecConfig(use_tree_spec=True, min_token_prob=0.0)
    counts, out = sample_joint(settings, seed=99, cache=cache, spec=spec)
    assert sum(s.accepted_tokens for s in out.stats) > SAMPLES // 4
    assert chi_square_p_value(counts, target_joint(settings)) > 1e-3


def test_the_chi_square_check_detects_a_wrong_distribution():
    settings = (("temperature", 0.7),)
    counts, _ = sample_joint((("temperature", 1.0),), seed=5)
    assert chi_square_p_value(counts, target_joint(settings)) < 1e-6


def test_seed_makes_sampling_reproducible():
    kw = dict(max_new_tokens=8, do_sample=True, top_k=5)
    a = suffixspec.generate(model(), [PROMPT] * 4, seed=7, **kw)
    b = suffixspec.generate(model(), [PROMPT] * 4, seed=7, **kw)
    c = suffixspec.generate(model(), [PROMPT] * 4, generator=torch.Generator().manual_seed(8), **kw)
    assert a.generated == b.generated
    assert a.generated != c.generated


def test_greedy_ignores_sampling_settings():
    ref = model().generate(torch.tensor([PROMPT]), max_new_tokens=8, do_sample=False)
    out = suffixspec.generate(model(), [PROMPT], max_new_tokens=8, do_sample=False, temperature=0.5, top_k=2)
    assert torch.equal(out.sequences, ref)

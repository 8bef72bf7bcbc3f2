"""Every architecture the engine serves is exact through its paged attention, and every other one
is refused before it can answer wrongly.

Per class of ``PAGED_ARCHITECTURES`` (fp32, the tiny configs of ``tiny_models``: sliding windows of
8 positions where the class has them, Gemma 2's logit soft-capping): greedy output through the
engine equals ``model.generate`` of each request alone, with branching drafts whose accepted
nodes must be compacted, prompts entering in chunks and requests preempted by a small pool.
Sliding windows and soft-capping are also checked against brute force at the attention level."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from suffixspec import (
    Engine,
    IncompatibleModelError,
    InvalidParameterError,
    RequestFailedError,
    RequestParams,
)
from suffixspec.engine import architectures
from suffixspec.engine.architectures import PAGED_ARCHITECTURES
from suffixspec.generation.support import SERVED
from suffixspec.kernels import paged, reference
from suffixspec.kernels.plan import plan
from test_engine import _prompts, check_branching_drafts
from tiny_models import SERVED_CONFIGS, plain_greedy_tokens, tiny_model

NEW = 20

#: Served classes, plus configurations whose attention options must visibly matter: a short
#: window, and a strong soft-cap on sharpened attention (tiny random models' attention scores are
#: so small that any cap leaves them as they are; queries and keys x10 make a cap of 1 bite).
VARIANTS: dict[str, tuple[str, dict[str, Any], float]] = {
    **{name: (name, SERVED_CONFIGS.get(name, {}), 1.0) for name in sorted(PAGED_ARCHITECTURES)},
    "Gemma2ForCausalLM[sharp,softcap=1,window=4]": (
        "Gemma2ForCausalLM",
        {**SERVED_CONFIGS["Gemma2ForCausalLM"], "attn_logit_softcapping": 1.0, "sliding_window": 4},
        10.0,
    ),
    "MistralForCausalLM[window=3]": ("MistralForCausalLM", {"sliding_window": 3}, 1.0),
}


@functools.cache
def _model(variant: str) -> torch.nn.Module:
    name, overrides, sharpen = VARIANTS[variant]
    model = tiny_model(name, **overrides)
    if sharpen != 1.0:
        model = copy.deepcopy(model)  # tiny_model's instances are shared
        with torch.no_grad():
            for module in model.modules():
                for proj in ("q_proj", "k_proj"):
                    if hasattr(module, proj):
                        getattr(module, proj).weight.mul_(sharpen)
    return model


@functools.cache
def _reference(variant: str, prompt: tuple[int, ...]) -> list[int]:
    with torch.no_grad():
        return plain_greedy_tokens(_model(variant), list(prompt), NEW)


def test_the_unreachable_classes_are_ones_generate_serves() -> None:
    # Kept in step with generation.support: a class generate stops serving leaves this list too.
    assert set(architectures.UNREACHABLE) <= SERVED
    assert SERVED - set(architectures.UNREACHABLE) == PAGED_ARCHITECTURES


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exact_with_branching_drafts_chunked_prefill_and_preemption(variant: str) -> None:
    check_branching_drafts(
        _model(variant),
        lambda prompt: _reference(variant, prompt),
        _prompts(11, 5, lo=6, hi=34),  # longer than the windows: they cut into every request
        new=NEW,
        num_blocks=10,
        max_running=5,
    )


def test_soft_capping_without_eager_attention_is_refused() -> None:
    # transformers 5.17's sdpa attention drops the cap silently: the model would not be itself.
    try:
        model = tiny_model("Gemma2ForCausalLM", attn_implementation="sdpa")
    except ValueError as e:  # later transformers releases refuse sdpa for Gemma 2 themselves
        pytest.skip(f"this transformers release builds no sdpa Gemma 2: {e}"[:200])
    with pytest.raises(IncompatibleModelError, match="attn_implementation='eager'"):
        Engine(model, num_blocks=8)


@pytest.mark.parametrize(
    ("variant", "backend_reason"),
    [
        ("LlamaForCausalLM", None),
        ("MistralForCausalLM", "sliding-window layers"),
        ("Gemma2ForCausalLM", "sliding-window layers"),
        ("Qwen2ForCausalLM", None),  # a window in its config, but no sliding layer
    ],
)
def test_sliding_windows_and_soft_capping_run_on_the_torch_reference(
    variant: str, backend_reason: Any
) -> None:
    model = _model(variant)
    assert architectures.torch_only_reason(model) == backend_reason
    assert Engine(model, num_blocks=8, attention="torch").attention_backend == "torch"
    assert Engine(model, num_blocks=8).attention_backend == "torch"  # auto, on a CPU
    if backend_reason is not None:
        with pytest.raises(IncompatibleModelError, match="CUDA kernel's paged mode"):
            Engine(model, num_blocks=8, attention="cuda")


@pytest.mark.parametrize("name", sorted(architectures.UNREACHABLE))
def test_classes_whose_attention_bypasses_the_paged_path_are_refused(name: str) -> None:
    # generate serves them (their own attention with a 4-D mask); the engine cannot, and says why.
    model = tiny_model(name, **({"attention_types": [[["global"], 2]]} if "Neo" in name else {}))
    with pytest.raises(IncompatibleModelError, match="paged") as error:
        Engine(model)
    assert architectures.UNREACHABLE[name] in str(error.value)


def test_a_model_whose_layers_skip_the_paged_path_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-step check behind the allow-list: GPT-Neo (all-global layers) computes attention
    in its own modules, so they would run over the step's tokens alone (no cache). Let through,
    it must end the step's requests with the reason, emit no token and leave the pool whole."""
    model = tiny_model("GPTNeoForCausalLM", attention_types=[[["global"], 2]])
    monkeypatch.setattr(architectures, "PAGED_ARCHITECTURES", PAGED_ARCHITECTURES | {"GPTNeoForCausalLM"})
    engine = Engine(model, num_blocks=16)
    engine.add_request("a", [5, 6, 7, 8], RequestParams(max_new_tokens=4))
    outputs = engine.step()
    assert [o.finish_reason for o in outputs] == ["error"]
    error = outputs[0].error
    assert isinstance(error, RequestFailedError)
    assert isinstance(error.__cause__, IncompatibleModelError)
    assert "did not run through the engine's paged attention" in str(error.__cause__)
    assert outputs[0].token_ids == []
    assert not engine.has_unfinished()
    assert engine.scheduler.num_free_blocks == engine.scheduler.num_blocks


def _positions(tree_mask: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor:
    return context_lens.long()[:, None] + tree_mask.sum(-1) - 1


@pytest.mark.parametrize("window", [1, 2, 5, 64])
@pytest.mark.parametrize("softcap", [None, 0.5])
def test_paged_window_and_softcap_match_brute_force(window: int, softcap: Any) -> None:
    """Each query attends to exactly the keys at positions ``(q - window, q]`` among those it
    sees (its context and its tree ancestors), with scores soft-capped: computed key by key."""
    gen = torch.Generator().manual_seed(window)
    batch, n, hq, hkv, dim, block = 3, 5, 4, 2, 8, 8
    parents = [[-1, 0, 0, 1, 3], [-1, -1, 1, 2, 2], [-1, 0, 1, 2, 3]]
    tree_mask = torch.zeros(batch, n, n, dtype=torch.bool)
    for b, ps in enumerate(parents):
        for i, p in enumerate(ps):
            if p >= 0:
                tree_mask[b, i] = tree_mask[b, p].clone()
            tree_mask[b, i, i] = True
    context_lens = torch.tensor([0, 7, 19], dtype=torch.int32)
    num_blocks = 16
    key_cache = torch.randn(num_blocks, block, hkv, dim, generator=gen)
    value_cache = torch.randn(num_blocks, block, hkv, dim, generator=gen)
    tables = torch.randperm(num_blocks, generator=gen)[: batch * 4].view(batch, 4).to(torch.int32)
    cache = paged.PagedKV(key_cache, value_cache, tables, context_lens)
    q = torch.randn(batch, hq, n, dim, generator=gen)
    out = paged.tree_attention(q, cache, plan(tree_mask=tree_mask), 0.3, window=window, softcap=softcap)

    pos = _positions(tree_mask, context_lens)
    flat_k = key_cache.view(-1, hkv, dim)
    flat_v = value_cache.view(-1, hkv, dim)
    for b in range(batch):
        ctx = int(context_lens[b])
        slots = [int(tables[b, s // block]) * block + s % block for s in range(ctx + n)]
        for i in range(n):
            keys = [s for s in range(ctx)] + [ctx + j for j in range(n) if tree_mask[b, i, j]]
            key_pos = [s if s < ctx else int(pos[b, s - ctx]) for s in keys]
            keys = [s for s, kp in zip(keys, key_pos, strict=True) if kp > int(pos[b, i]) - window]
            for h in range(hq):
                k = flat_k[[slots[s] for s in keys], h // (hq // hkv)]
                v = flat_v[[slots[s] for s in keys], h // (hq // hkv)]
                scores = (k @ q[b, h, i]) * 0.3
                if softcap is not None:
                    scores = torch.tanh(scores / softcap) * softcap
                expected = torch.softmax(scores, -1) @ v
                torch.testing.assert_close(out[b, i, h], expected, rtol=1e-5, atol=1e-5)


def test_softcap_bends_the_reference_scores() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3, 8, generator=gen) * 4 for _ in range(3))
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    plain = reference.tree_attention(q, k, v, mask)
    capped = reference.tree_attention(q, k, v, mask, softcap=1e-3)
    assert not torch.allclose(plain, capped)
    # A cap of 1e-3 leaves scores within +-1e-3: attention is then uniform over the keys.
    torch.testing.assert_close(
        capped, v.mean(2, keepdim=True).transpose(1, 2).expand_as(capped), atol=0.05, rtol=0
    )


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_windows_are_refused(bad: Any) -> None:
    cache = paged.random_paged_kv(1, 1, [4], 1, 8, 8)
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    with pytest.raises(InvalidParameterError, match="window"):
        paged.tree_attention(torch.zeros(1, 2, 1, 8), cache, plan(tree_mask=mask), window=bad)


def test_context_positions_are_slot_indices() -> None:
    """The window's positions: context slot ``p`` is position ``p``; a tree node sits one past
    its parent; a chunk token one past the previous one."""
    tree_mask = torch.tensor([[[1, 0, 0], [1, 1, 0], [1, 0, 1]]], dtype=torch.bool)
    assert _positions(tree_mask, torch.tensor([4], dtype=torch.int32)).tolist() == [[4, 5, 5]]
    assert np.array_equal(
        _positions(torch.tril(torch.ones(1, 3, 3, dtype=torch.bool)), torch.tensor([0])), [[0, 1, 2]]
    )
